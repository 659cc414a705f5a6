/**
 * What the queue asks of Redis per message, counted with `INFO commandstats` (commands inside
 * scripts included): the default path batches acks (one script call per batch, not per
 * message), and the ordered path acks a message in the same script call that fetches the next.
 * Counts, not timings: they do not depend on the machine's load.
 */
import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Queue } from '../../src/queue/index.js';
import { until } from '../support/helpers.js';
import { redisCost, redisCounters } from '../support/redis-cost.js';
import { describeRedis, useRedis } from '../support/vitest.js';

describeRedis('keel/queue cost per message', () => {
  const redis = useRedis({ count: 1 });
  const opened: { close(): Promise<void> }[] = [];
  let admin: Redis;

  afterEach(async () => {
    for (const q of opened.splice(0)) await q.close();
    await redis().flushAll();
  });

  const N = 400;
  const payload = { orderId: 12345, sku: 'ABC-123', qty: 2, note: 'x'.repeat(40) };

  /** Sends N messages, then consumes them all; the cost from the first send to the last ack. */
  async function measure(ordered: boolean, concurrency: number) {
    admin = redis().client(0);
    const queue = new Queue({ client: redis().client(0) });
    opened.push(queue);
    const stream = queue.keys('cost', 0).stream;
    // The group exists before the sends, so nothing is missed.
    await admin.xgroup('CREATE', stream, 'g', '0', 'MKSTREAM');
    const before = await redisCounters(admin);
    await queue.sendMany(
      'cost',
      Array.from({ length: N }, () => ({ payload })),
    );
    let handled = 0;
    queue.consume(
      'cost',
      'g',
      () => {
        handled++;
      },
      { ordered, concurrency },
    );
    await until(() => expect(handled).toBe(N), 30_000);
    await until(async () => expect(await admin.xlen(stream)).toBe(0), 10_000);
    return redisCost(before, await redisCounters(admin));
  }

  it('default path, concurrency 50: acks go out in batches — far fewer than one script call, and at most 6 commands, per message', async () => {
    const cost = await measure(false, 50);
    expect(cost.byCommand.get('xadd')).toBe(N);
    expect(cost.scripts).toBeLessThanOrEqual(N / 4);
    expect(cost.commands).toBeLessThanOrEqual(6 * N);
  });

  it('concurrency 1: at most one script call per message (the ack rides with the next read)', async () => {
    const cost = await measure(false, 1);
    expect(cost.scripts).toBeLessThanOrEqual(N + 20);
  });

  it('ordered: one script call per message — the ack and the next message in one call', async () => {
    const cost = await measure(true, 1);
    expect(cost.scripts).toBeLessThanOrEqual(N + 40);
  });
});
