/**
 * Queue observability (issue 15): one scripted scenario against a real redis-server, read off
 * the `keel:queue:*` diagnostics channels — a message sent, a duplicate send, its handler
 * failing twice and dead-lettering on the third attempt — with wall-clock times.
 */
import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Queue } from '../../src/queue/index.js';
import { recordChannels } from '../support/channels.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

describeRedis('queue observability (real redis-server)', () => {
  const redis = useRedis({ count: 1 });
  const opened: { close(): Promise<void> }[] = [];
  let client: Redis;

  afterEach(async () => {
    for (const q of opened.splice(0)) await q.close();
    await redis().flushAll();
  });

  it('publishes send, handled (per attempt) and dead-letter for a message that always fails', async () => {
    const channels = recordChannels([
      'keel:queue:send',
      'keel:queue:handled',
      'keel:queue:dead-letter',
      'keel:queue:error',
    ]);
    try {
      const before = Date.now();
      client = redis().client(0);
      const queue = new Queue({ client });
      opened.push(queue);
      const typed: unknown[] = [];
      const consumer = queue.consume(
        'orders',
        'billing',
        () => {
          throw new Error('always fails');
        },
        { maxAttempts: 3, backoff: () => 5, consumer: 'c1', visibilityMs: 1000 },
      );
      consumer.onDeadLetter((e) => typed.push(e));
      const sent = await queue.send('orders', { n: 1 }, { id: 'order-1' });
      await queue.send('orders', { n: 1 }, { id: 'order-1' });
      await until(() => expect(channels.of('keel:queue:dead-letter')).toHaveLength(1), 10_000);

      expect(channels.of('keel:queue:send')).toEqual([
        { topic: 'orders', id: sent.id, status: 'sent', time: expect.any(Number) as number },
        { topic: 'orders', id: sent.id, status: 'duplicate', time: expect.any(Number) as number },
      ]);
      const handled = channels.of('keel:queue:handled');
      expect(handled.map((m) => [m.attempt, m.outcome])).toEqual([
        [1, 'failed'],
        [2, 'failed'],
        [3, 'failed'],
      ]);
      for (const m of handled) {
        expect(m).toMatchObject({ topic: 'orders', group: 'billing', id: sent.id });
        expect(m.durationMs as number).toBeGreaterThanOrEqual(0);
      }
      const [letter] = channels.of('keel:queue:dead-letter');
      expect(letter).toMatchObject({ id: sent.id, attempts: 3, reason: 'failed' });
      expect(letter?.consumers).toContain('c1');
      // The typed event and the channel are fed from one place.
      await until(() => expect(typed).toHaveLength(1), 5_000);
      expect(typed[0]).toBe(letter);
      expect(channels.of('keel:queue:error')).toEqual([]);
      for (const { message } of channels.published) {
        expect(message.time as number).toBeGreaterThanOrEqual(before);
        expect(message.time as number).toBeLessThanOrEqual(Date.now());
      }
    } finally {
      channels.dispose();
    }
  });
});
