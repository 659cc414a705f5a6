/**
 * What the queue asks of Redis per message, counted with `INFO commandstats` (commands inside
 * scripts included): the default path batches acks (one script call per batch, not per
 * message) and deletes acked entries in batches, and the ordered path acks a message in the
 * same script call that fetches the next.
 * Counts, not timings: they do not depend on the machine's load.
 */
import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Queue, idempotent } from '../../src/queue/index.js';
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
  async function measure(ordered: boolean, concurrency: number, dedup = false) {
    admin = redis().client(0);
    const client = redis().client(0);
    const queue = new Queue({ client });
    opened.push(queue);
    const stream = queue.keys('cost', 0).stream;
    // The group exists before the sends, so nothing is missed.
    await admin.xgroup('CREATE', stream, 'g', '0', 'MKSTREAM');
    const before = await redisCounters(admin);
    await queue.sendMany(
      'cost',
      Array.from({ length: N }, (_, i) => ({ payload, ...(dedup ? { id: `m${i}` } : {}) })),
    );
    let handled = 0;
    const count = (): void => {
      handled++;
    };
    const apply = idempotent({ client }, (_m, effect) => {
      effect.call('INCR', ['{cost}:effects']);
      count();
    });
    queue.consume('cost', 'g', dedup ? apply : count, { ordered, concurrency });
    await until(() => expect(handled).toBe(N), 30_000);
    await until(async () => expect(await admin.xlen(stream)).toBe(0), 10_000);
    return redisCost(before, await redisCounters(admin));
  }

  it('a plain sendMany (no ids, no delays, one stream) is one MULTI … EXEC of its XADDs: no script call', async () => {
    admin = redis().client(0);
    const queue = new Queue({ client: redis().client(0) });
    opened.push(queue);
    const before = await redisCounters(admin);
    await queue.sendMany(
      'cost',
      Array.from({ length: N }, () => ({ payload })),
    );
    const cost = redisCost(before, await redisCounters(admin));
    // A script's redis.call('XADD', …) costs the server about as much again as the XADD.
    expect(cost.scripts).toBe(0);
    expect(cost.byCommand.get('xadd')).toBe(N);
    expect(cost.byCommand.get('multi')).toBe(1);
    expect(cost.byCommand.get('exec')).toBe(1);
    expect(await admin.xlen(queue.keys('cost', 0).stream)).toBe(N);
  });

  it('default path, concurrency 50: acks go out in batches — far fewer than one script call, and fewer than 1.5 commands, per message', async () => {
    const cost = await measure(false, 50);
    expect(cost.byCommand.get('xadd')).toBe(N);
    expect(cost.scripts).toBeLessThanOrEqual(N / 10);
    // Acked entries go with XTRIM MINID below the group's oldest pending entry (whole stream
    // nodes at once), not with XDEL, which looks every id up in its node — that only when a
    // message is still pending below them (a batch acked while others are in flight: rare here).
    expect(cost.byCommand.get('xdel') ?? 0).toBeLessThanOrEqual(2);
    // Measured 1.13 per message: the XADD, and a share of each batch's read and ack script.
    expect(cost.commands).toBeLessThanOrEqual(1.5 * N);
  });

  it('concurrency 1: at most one script call and about 5 commands per message (the ack rides with the next read; acked entries are deleted 16 at a time)', async () => {
    const cost = await measure(false, 1);
    expect(cost.scripts).toBeLessThanOrEqual(N + 20);
    // XADD, XREADGROUP, EVALSHA, XPENDING, XACK per message; XINFO + XDEL per 16 (5.14 measured).
    expect(cost.commands).toBeLessThanOrEqual(5.5 * N);
    expect(cost.byCommand.get('xinfo|groups') ?? 0).toBeLessThanOrEqual(N / 8);
    expect(cost.byCommand.get('xdel') ?? 0).toBeLessThanOrEqual(2);
  });

  it('dedup + idempotent consumer, concurrency 50: about one script call and at most 6.5 commands per message', async () => {
    const cost = await measure(false, 50, true);
    // The effect script (SET NX, INCR) per message — the processed record is taken first, no
    // EXISTS — and, per batch, the send script (SET NX + XADD per message) and the acks.
    expect(cost.byCommand.get('incr')).toBe(N);
    expect(cost.byCommand.get('exists') ?? 0).toBe(0);
    expect(cost.scripts).toBeLessThanOrEqual(1.1 * N);
    expect(cost.commands).toBeLessThanOrEqual(6.5 * N);
  });

  it('ordered: one script call per message — the ack and the next message in one call', async () => {
    const cost = await measure(true, 1);
    expect(cost.scripts).toBeLessThanOrEqual(N + 40);
  });
});
