import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Redlock } from '../../src/lock/index.js';
import { ACQUIRE, SEM_ACQUIRE } from '../../src/lock/scripts.js';
import { until } from '../support/helpers.js';
import { afterScript, readLate, type FaultyClient } from '../support/resend.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// An acquisition whose signal aborts while its round is under way, a round that then wins:
// the acquisition resolved with the lock (a permit) all the same, and using() ran its routine
// with the caller's signal already aborted. A caller that aborted has stopped waiting — it may
// never look at the promise again — so the lock stayed held on every node until its ttl. Now
// the won lock is released and the acquisition rejects with the signal's reason.

/** How late every node answers the armed call: the abort comes while it is under way. */
const LATE_MS = 300;

describeRedis('an acquisition aborted while its winning round is under way', () => {
  const redis = useRedis({ count: 3 });
  let opened: Redlock[] = [];
  let clients: Redis[] = [];

  afterEach(async () => {
    await Promise.all(opened.map((r) => r.close()));
    for (const c of clients) c.disconnect();
    opened = [];
    clients = [];
    await redis().flushAll();
  });

  /** A Redlock whose nodes all answer the next call of `sha` late, once armed. */
  const setUp = (sha: string) => {
    const own = redis().clients();
    clients.push(...own);
    const faulty: FaultyClient[] = own.map((c) => afterScript(c, sha, (x) => readLate(x, LATE_MS)));
    const redlock = new Redlock({
      clients: faulty.map((f) => f.client),
      ttlMs: 60_000,
      nodeTimeoutMs: 5_000,
      batching: false,
    });
    opened.push(redlock);
    const inspect = redis().clients();
    clients.push(...inspect);
    return { redlock, inspect, arm: () => faulty.forEach((f) => f.arm()) };
  };

  /** A signal that aborts once every node has the armed call (it waits for the late read). */
  const abortSoon = (): { signal: AbortSignal; reason: Error } => {
    const controller = new AbortController();
    const reason = new Error('the caller gave up');
    setTimeout(() => controller.abort(reason), 20);
    return { signal: controller.signal, reason };
  };

  it('acquire() rejects with the reason and leaves no key on any node', async () => {
    const { redlock, inspect, arm } = setUp(ACQUIRE.sha);
    const key = redlock.keyOf('aborted');
    await (await redlock.acquire('aborted')).release(); // scripts cached, counters made
    arm();
    const { signal, reason } = abortSoon();
    const outcome = await redlock.acquire('aborted', { signal }).catch((e: unknown) => e);
    expect(outcome).toBe(reason);
    await until(async () => {
      for (const c of inspect) expect(await c.exists(key), 'the lock key').toBe(0);
    }, 5_000);
    expect(redlock.stats().held).toBe(0);
    // And the resource is free: the next acquisition wins at once.
    const next = await redlock.acquire('aborted', { retryCount: 0 });
    await next.release();
  });

  it('using() does not run the routine, and leaves no key on any node', async () => {
    const { redlock, inspect, arm } = setUp(ACQUIRE.sha);
    const key = redlock.keyOf('aborted-using');
    await (await redlock.acquire('aborted-using')).release();
    arm();
    const { signal, reason } = abortSoon();
    let ran = false;
    const outcome = await redlock
      .using('aborted-using', { signal }, () => {
        ran = true;
        return Promise.resolve();
      })
      .catch((e: unknown) => e);
    expect(outcome).toBe(reason);
    expect(ran).toBe(false);
    await until(async () => {
      for (const c of inspect) expect(await c.exists(key), 'the lock key').toBe(0);
    }, 5_000);
  });

  it('Semaphore.acquire() rejects with the reason and leaves no slot on any node', async () => {
    const { redlock, inspect, arm } = setUp(SEM_ACQUIRE.sha);
    const semaphore = redlock.semaphore('aborted', { permits: 1 });
    const set = `${redlock.keyOf('aborted')}:semaphore`;
    await (await semaphore.acquire()).release();
    arm();
    const { signal, reason } = abortSoon();
    const outcome = await semaphore.acquire({ signal }).catch((e: unknown) => e);
    expect(outcome).toBe(reason);
    await until(async () => {
      for (const c of inspect) expect(await c.zcard(set), 'permit slots').toBe(0);
    }, 5_000);
  });
});
