import { afterEach, expect, it } from 'vitest';
import {
  Redlock,
  isLockTakenError,
  isQuorumUnavailableError,
  type QuarantineEvent,
} from '../../src/lock/index.js';
import { invalidOption } from '../support/helpers.js';
import { throughNet, type Net } from '../support/latency.js';
import { describeRedis, useRedis } from '../support/vitest.js';

describeRedis('Semaphore against five real redis-server processes', () => {
  const redis = useRedis({ count: 5 });
  const opened: Redlock[] = [];
  const redlockOf = (options: Partial<ConstructorParameters<typeof Redlock>[0]> = {}): Redlock => {
    const redlock = new Redlock({
      clients: redis().clients({ maxRetriesPerRequest: 1 }),
      retryDelayMs: 5,
      retryJitterMs: 5,
      ...options,
    });
    opened.push(redlock);
    return redlock;
  };

  afterEach(async () => {
    for (const r of opened.splice(0)) await r.close();
    for (let i = 0; i < 5; i++) if (redis().node(i).state === 'paused') redis().resume(i);
    await redis().flushAll();
  });

  // Permits, wake-ups, contention, server time and extension: see the shared suite
  // (shared-suite.ts), run on these five nodes by redlock.test.ts and on Redis Cluster.

  it('quarantines malformed entries planted in Redis and reports them', async () => {
    const redlock = redlockOf({ retryCount: 0 });
    const pool = redlock.semaphore('planted', { permits: 2 });
    const key = `${redlock.keyOf('planted')}:semaphore`;
    const far = Date.now() + 60_000;
    for (let i = 0; i < 5; i++) {
      await redis().client(i).zadd(key, far, 'not-a-permit');
      await redis().client(i).zadd(key, far, '1:real-holder');
    }
    const seen: QuarantineEvent[] = [];
    using quarantine = pool.onQuarantine((event) => seen.push(event));
    const permit = await pool.acquire(); // the planted real holder takes 1 of 2; garbage counts for nothing
    expect(seen.length).toBeGreaterThanOrEqual(3);
    expect(seen[0]).toMatchObject({ semaphore: 'planted', entries: 1, key: `${key}:quarantine` });
    expect(await redis().client(0).smembers(`${key}:quarantine`)).toEqual(['not-a-permit']);
    expect(isLockTakenError(await pool.acquire().catch((e: unknown) => e))).toBe(true);
    await permit.release();
    quarantine.dispose();
  });

  it('holders granted by different quorums never exceed the limit (each permit is a slot with one holder)', async () => {
    // Three holders of a 3-permit semaphore, each granted by a different quorum of the five
    // nodes (planted as the scripts write them). No node holds more than two of them, so a
    // per-node count would admit a fourth holder on every node; slot by slot, each of the
    // three slots is held on three nodes, free on two — never on a quorum.
    const redlock = redlockOf({ retryCount: 3 });
    const pool = redlock.semaphore('quorums', { permits: 3 });
    const key = `${redlock.keyOf('quorums')}:semaphore`;
    const far = Date.now() + 60_000;
    const holders = [
      { slot: 0, nodes: [0, 1, 2] },
      { slot: 1, nodes: [2, 3, 4] },
      { slot: 2, nodes: [0, 3, 4] },
    ];
    for (const [i, h] of holders.entries()) {
      for (const node of h.nodes)
        await redis().client(node).zadd(key, far, `${h.slot}:holder-${i}`);
    }
    const fourth = await pool.acquire().catch((e: unknown) => e);
    expect(isLockTakenError(fourth), String(fourth)).toBe(true);
    // Free one slot on a quorum (holder 1 expired there): now a permit is there to take.
    for (const node of [2, 3, 4]) await redis().client(node).zrem(key, '1:holder-1');
    const permit = await pool.acquire();
    await permit.release();
  });

  it('a release that reaches three nodes late still hands the permit to the waiter it woke', async () => {
    // The flaky "a release wakes a waiter at once" (shared-suite.ts) on a loaded machine: the
    // release lands on the nodes one after another, and the first wakes the waiter. Here the
    // holder's release reaches nodes 0-1 at once and nodes 2-4 1.5 s later; the waiter's calls
    // to nodes 2-4 take 60 ms, so each of its rounds meanwhile sees nodes 0-1 grant and 2-4
    // refuse — a split vote (a semaphore's refusals name no holder). Quick retries back off
    // from 5 ms; when each counted as a retry, the five were spent in a few hundred ms and the
    // waiter gave up with LockTakenError long before the release reached a quorum.
    const netOf = (latency: number[]): Net => ({ latency, inflight: [0, 0, 0, 0, 0] });
    const clientsThrough = (net: Net) =>
      redis()
        .clients({ maxRetriesPerRequest: 1 })
        .map((c, i) => throughNet(c, i, net));
    const holderNet = netOf([0, 0, 0, 0, 0]);
    const pool = redlockOf({ clients: clientsThrough(holderNet), nodeTimeoutMs: 5_000 }).semaphore(
      'landing',
      { permits: 1 },
    );
    const waiterPool = redlockOf({
      clients: clientsThrough(netOf([0, 0, 60, 60, 60])),
      nodeTimeoutMs: 1_000,
      retryDelayMs: 20_000,
      retryJitterMs: 0,
      retryCount: 5,
    }).semaphore('landing', { permits: 1 });
    const held = await pool.acquire({ ttlMs: 30_000 });
    const waiting = waiterPool
      .acquire({ ttlMs: 30_000, signal: AbortSignal.timeout(15_000) })
      .catch((e: unknown) => e);
    await new Promise((resolve) => setTimeout(resolve, 400)); // refused, subscribed, waiting
    for (const i of [2, 3, 4]) holderNet.latency[i] = 1_500;
    const released = held.release();
    const next = await waiting;
    expect(next, String(next)).toHaveProperty('permits', 1);
    await released;
    await (next as { release(): Promise<unknown> }).release();
  });

  it('with 3 of 5 nodes paused: QuorumUnavailableError, promptly', async () => {
    const pool = redlockOf({ nodeTimeoutMs: 100, retryCount: 3 }).semaphore('down', { permits: 4 });
    for (const i of [0, 1, 2]) redis().pause(i);
    const error = await pool.acquire().catch((e: unknown) => e);
    expect(isQuorumUnavailableError(error)).toBe(true);
  });

  it('rejects bad names and options, naming them', async () => {
    const redlock = redlockOf();
    expect(invalidOption(() => redlock.semaphore('', { permits: 1 })).option).toBe('name');
    expect(invalidOption(() => redlock.semaphore('x', { permits: 0 })).option).toBe('permits');
    expect(invalidOption(() => redlock.semaphore('x', {} as { permits: number })).option).toBe(
      'permits',
    );
    const pool = redlock.semaphore('x', { permits: 2 });
    await expect(pool.acquire({ permits: 3 })).rejects.toThrow(/invalid option "permits"/);
    await expect(pool.acquire({ ttlMs: 0 })).rejects.toThrow(/invalid option "ttlMs"/);
  });
});
