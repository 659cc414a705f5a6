/**
 * Redis paused (SIGSTOP: connections open, nothing answers) while a consumer works or closes.
 */
import { afterEach, expect, it } from 'vitest';
import { Queue } from '../../src/queue/index.js';
import { until, within } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

describeRedis('keel/queue with Redis paused', () => {
  const redis = useRedis({ count: 1 });
  const opened: { close(): Promise<void> }[] = [];

  afterEach(async () => {
    if (redis().node(0).state === 'paused') redis().resume(0);
    for (const q of opened.splice(0)) await q.close();
    await redis().flushAll();
  });

  for (const ordered of [false, true]) {
    it(`${ordered ? 'ordered' : 'unordered'}: close() while Redis is paused settles (within closeTimeoutMs, its grace and one visibility timeout), and nothing it held is lost`, async () => {
      const client = redis().client(0, { maxRetriesPerRequest: null });
      const queue = new Queue({ client });
      opened.push(queue);
      const seen: string[] = [];
      const consumer = queue.consume(
        'orders',
        'g',
        async (m) => {
          seen.push(m.id);
          if (seen.length === 1) await new Promise((resolve) => setTimeout(resolve, 200));
        },
        { ordered, visibilityMs: 1000, closeTimeoutMs: 300 },
      );
      await queue.send('orders', { n: 1 }, { id: 'm1' });
      await until(() => expect(seen).toEqual(['m1']), 10_000);
      redis().pause(0);
      await within(consumer.close(), 10_000, 'close() with Redis paused');
      redis().resume(0);
      // Whatever close() could not ack or hand back is reclaimed by another consumer.
      const admin = redis().client(0);
      queue.consume(
        'orders',
        'g',
        (m) => {
          seen.push(m.id);
        },
        { ordered, visibilityMs: 1000 },
      );
      await queue.send('orders', { n: 2 }, { id: 'm2' });
      await until(async () => {
        expect(new Set(seen)).toEqual(new Set(['m1', 'm2']));
        expect(Number((await admin.xpending(queue.keys('orders', 0).stream, 'g'))[0])).toBe(0);
      }, 15_000);
    });
  }
});
