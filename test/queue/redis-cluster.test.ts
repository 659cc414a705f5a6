/**
 * keel/queue on a real 3-master Redis Cluster: every partition's keys (stream, delayed set,
 * DLQ, dedup records, leases) share one hash tag, so each script runs on one slot; partitions
 * spread over the masters.
 */
import { expect, it } from 'vitest';
import { Queue, idempotent } from '../../src/queue/index.js';
import { partitionOf } from '../../src/queue/codec.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedisCluster } from '../support/vitest.js';

describeRedis('keel/queue on a Redis Cluster (3 masters)', () => {
  const cluster = useRedisCluster();

  it('sends (dedup, delay), consumes, retries, dead-letters and orders per key across partitions on several masters', async () => {
    const client = cluster().client();
    const queue = new Queue({ client, partitions: 6 });
    try {
      const masters = new Set<number>();
      for (let p = 0; p < 6; p++)
        masters.add(await cluster().masterOf(queue.keys('orders', p).stream));
      expect(masters.size).toBeGreaterThan(1);

      const handled: string[] = [];
      const order = new Map<string, number[]>();
      const effect = idempotent<{ key: string; seq: number }>({ client }, (m, fx) => {
        fx.call('HINCRBY', ['{fx}:count'], m.id, 1);
      });
      queue.consume<{ key: string; seq: number; poison?: boolean }>(
        'orders',
        'g',
        async (m) => {
          if (m.payload.poison === true) throw new Error('poison');
          if (m.attempt === 1 && m.payload.seq % 4 === 1) throw new Error('transient');
          await effect(m);
          handled.push(m.id);
          order.set(m.payload.key, [...(order.get(m.payload.key) ?? []), m.payload.seq]);
        },
        { ordered: true, concurrency: 6, maxAttempts: 2, backoff: () => 5, visibilityMs: 3000 },
      );
      const keys = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
      for (let seq = 0; seq < 6; seq++) {
        for (const key of keys) {
          await queue.send(
            'orders',
            { key, seq },
            { key, id: `${key}-${seq}`, delayMs: seq === 5 ? 50 : 0 },
          );
        }
      }
      expect(
        (await queue.send('orders', { key: 'a', seq: 0 }, { key: 'a', id: 'a-0' })).status,
      ).toBe('duplicate');
      await queue.send('orders', { key: 'z', seq: 0, poison: true }, { key: 'z', id: 'z-0' });
      await until(() => {
        for (const key of keys) expect(order.get(key)).toEqual([0, 1, 2, 3, 4, 5]);
      }, 30_000);
      await until(
        async () => expect((await queue.deadLetters('orders')).map((l) => l.id)).toEqual(['z-0']),
        30_000,
      );
      expect(handled).toHaveLength(48);
    } finally {
      await queue.close();
      client.disconnect();
    }
  });

  it('sendMany over partitions on several masters: one script per partition, results in input order', async () => {
    const client = cluster().client();
    const queue = new Queue({ client, partitions: 6 });
    try {
      const items = Array.from({ length: 30 }, (_, n) => ({
        payload: n,
        key: `k${n}`,
        ...(n % 2 === 0 ? { id: `m${n}` } : {}),
        ...(n % 5 === 0 ? { delayMs: 60_000 } : {}),
      }));
      const results = await queue.sendMany('batch', items);
      expect(results.map((r) => r.partition)).toEqual(items.map((i) => partitionOf(i.key, 6)));
      expect(results.filter((_, n) => n % 2 === 0).map((r) => r.id)).toEqual(
        items.filter((_, n) => n % 2 === 0).map((i) => i.id),
      );
      expect(results.map((r) => r.status)).toEqual(
        items.map((_, n) => (n % 5 === 0 ? 'delayed' : 'sent')),
      );
      const again = await queue.sendMany(
        'batch',
        items.filter((item) => item.id !== undefined),
      );
      expect(new Set(again.map((r) => r.status))).toEqual(new Set(['duplicate']));
    } finally {
      await queue.close();
      client.disconnect();
    }
  });

  it('unordered consumer on the Cluster: reclaim after a visibility timeout', async () => {
    const client = cluster().client();
    const queue = new Queue({ client, partitions: 3 });
    try {
      const attempts: number[] = [];
      queue.consume(
        'jobs',
        'g',
        async (m) => {
          attempts.push(m.attempt);
          if (m.attempt === 1) {
            await new Promise<void>((resolve) =>
              m.signal.addEventListener('abort', () => resolve()),
            );
            throw m.signal.reason;
          }
        },
        { visibilityMs: 300, sweepMs: 50, blockMs: 100 },
      );
      await queue.send('jobs', 1);
      await until(() => expect(attempts).toEqual([1, 2]), 20_000);
    } finally {
      await queue.close();
      client.disconnect();
    }
  });
});
