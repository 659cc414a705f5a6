/**
 * An unordered consumer of a topic with several partitions reads them all, in turn: a backlog
 * on one partition is not kept waiting behind blocking reads of empty ones, and a partition
 * whose messages keep the consumer busy (its acks go out with the next read) does not starve
 * the others. (Found by the queue chaos suite run for 60 s: one partition's backlog grew by
 * thousands while the others were drained, and then drained at a few messages a second.)
 */
import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Queue } from '../../src/queue/index.js';
import { partitionOf } from '../../src/queue/codec.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

/** A message key that lands on partition `p` of `partitions`. */
function keyOn(p: number, partitions: number): string {
  for (let i = 0; ; i++) if (partitionOf(`key${i}`, partitions) === p) return `key${i}`;
}

describeRedis('keel/queue: an unordered consumer reads every partition in turn', () => {
  const redis = useRedis({ count: 1 });
  const opened: { close(): Promise<void> }[] = [];
  let client: Redis;
  const queueOf = (partitions: number): Queue => {
    client = redis().client(0);
    const queue = new Queue({ client, partitions });
    opened.push(queue);
    return queue;
  };

  afterEach(async () => {
    for (const q of opened.splice(0)) await q.close();
    await redis().flushAll();
  });

  it('a backlog on one partition is not kept waiting behind blocking reads of the empty ones', async () => {
    // Every message fails at once and is dead-lettered (maxAttempts 1): its slot frees without
    // an ack to ride with the next read, so each next read is the consumer's own. With a
    // blockMs of 40 s, one blocking read of an empty partition (10 s of the 40) would outlast
    // the wait below; reads of empty partitions block only once a whole round found nothing.
    const queue = queueOf(4);
    const key = keyOn(2, 4);
    for (let i = 0; i < 60; i++) await queue.send('orders', { i }, { key });
    let failed = 0;
    const consumer = queue.consume(
      'orders',
      'g',
      () => {
        failed++;
        throw new Error('refused');
      },
      { concurrency: 4, maxAttempts: 1, blockMs: 40_000 },
    );
    await until(() => expect(failed).toBe(60), 15_000);
    await until(async () => expect(await queue.deadLetters('orders')).toHaveLength(60), 15_000);
    await consumer.close();
  });

  it('a partition that keeps the consumer busy does not starve the others', async () => {
    // 200 messages on partition 0 and 10 on partition 1, handlers that succeed at once: every
    // slot that frees comes with an ack, and the ack's read used to be of the ack's partition
    // only — partition 1 waited until partition 0 was empty.
    const queue = queueOf(2);
    const busy = keyOn(0, 2);
    const other = keyOn(1, 2);
    for (let i = 0; i < 200; i++) await queue.send('orders', { i }, { key: busy });
    for (let i = 0; i < 10; i++) await queue.send('orders', { i }, { key: other });
    const order: string[] = [];
    const consumer = queue.consume<{ i: number }>(
      'orders',
      'g',
      (m) => {
        order.push(m.key ?? '');
      },
      { concurrency: 2 },
    );
    await until(() => expect(order).toHaveLength(210), 15_000);
    // Partition 1's ten were all handled before the first half of partition 0's were.
    expect(order.lastIndexOf(other), `order: ${order.join(' ')}`).toBeLessThan(110);
    await consumer.close();
  });

  it('a NOGROUP on the read that rides with an ack recreates that partition’s group', async () => {
    // Concurrency 1 over 2 partitions, a backlog on partition 0: each freed slot comes with an
    // ack, and the read that rides with it falls on partition 1 every time (the reads of the
    // loop's own turns, between, fall on partition 0). If partition 1's group is gone (Redis
    // restarted without persistence, the stream deleted), that read fails with NOGROUP; the
    // consumer's own read recreates a missing group, the read with an ack must too — else
    // partition 1 is not read again until partition 0 is empty.
    const queue = queueOf(2);
    const busy = keyOn(0, 2);
    const other = keyOn(1, 2);
    for (let i = 0; i < 400; i++) await queue.send('orders', { i }, { key: busy });
    const order: string[] = [];
    const consumer = queue.consume<{ i: number }>(
      'orders',
      'g',
      async (m) => {
        order.push(m.key ?? '');
        await new Promise((resolve) => setTimeout(resolve, 5));
      },
      { concurrency: 1 },
    );
    await until(() => expect(order.length).toBeGreaterThan(20), 15_000);
    await client.call('XGROUP', 'DESTROY', queue.keys('orders', 1).stream, 'g');
    await queue.send('orders', { i: -1 }, { key: other });
    await until(() => expect(order).toHaveLength(401), 30_000);
    // Handled while partition 0 still had most of its backlog.
    expect(order.indexOf(other)).toBeLessThan(200);
    await consumer.close();
  });
});
