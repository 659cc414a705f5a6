/**
 * `concurrency` bounds the handlers in flight whatever brings the messages: a read, or the
 * sweep's reclaim of a dead consumer's messages, racing each other.
 */
import { afterEach, expect, it } from 'vitest';
import { Queue } from '../../src/queue/index.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

describeRedis('keel/queue concurrency bound', () => {
  const redis = useRedis({ count: 1 });
  const opened: { close(): Promise<void> }[] = [];

  afterEach(async () => {
    for (const q of opened.splice(0)) await q.close();
    await redis().flushAll();
  });

  it('a reclaimed message and a new one read while it runs never make more than `concurrency` handlers run at once', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const stream = queue.keys('orders', 0).stream;
    // m1 was delivered to a consumer that died before acking it.
    await admin.xgroup('CREATE', stream, 'g', '0', 'MKSTREAM');
    await queue.send('orders', 1, { id: 'm1' });
    await admin.xreadgroup('GROUP', 'g', 'dead', 'COUNT', 1, 'STREAMS', stream, '>');
    let running = 0;
    let peak = 0;
    const started: string[] = [];
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    queue.consume(
      'orders',
      'g',
      async (m) => {
        running++;
        peak = Math.max(peak, running);
        started.push(m.id);
        if (m.id === 'm1') await released;
        running--;
      },
      { concurrency: 1, visibilityMs: 300, blockMs: 5000 },
    );
    // The sweep reclaims m1 while the consumer's blocking read (COUNT 1) waits for new messages.
    await until(() => expect(started).toEqual(['m1']), 10_000);
    await queue.send('orders', 2, { id: 'm2' });
    // m2 must wait for m1's slot. (Bounded: on a loaded machine m2 may simply not be read yet,
    // which can only make this test pass, never fail wrongly.)
    await until(() => expect(started).toContain('m2'), 1500).catch(() => undefined);
    release();
    await until(() => expect(started).toEqual(['m1', 'm2']), 10_000);
    expect(peak).toBe(1);
  });
});
