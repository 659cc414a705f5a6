import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Redlock, isLockTakenError } from '../../src/lock/index.js';
import { ACQUIRE, SEM_ACQUIRE } from '../../src/lock/scripts.js';
import { until } from '../support/helpers.js';
import { afterScript, readLate } from '../support/resend.js';
import { cutOff } from '../support/cut-off.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// A failed attempt is undone where it may have landed (README). With ioredis's
// `maxRetriesPerRequest` (here 1), a command issued while the client reconnects is failed
// outright once two reconnection attempts in a row failed — an undo too, never sent. The node
// then kept the failed attempt's key (a permit's slot) until its ttl, and refused everyone else
// there: with one more node down, nobody could take the resource for the whole ttl.

/** How late nodes 1 and 2 answer the acquisition (after node 0 was cut off). */
const LATE_MS = 150;
describeRedis('an undo the client gave up on (ioredis maxRetriesPerRequest)', () => {
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

  /**
   * A Redlock whose node 0 is cut off (its reconnections refused) right after it answered the
   * script `sha`, until `heal()`; nodes 1 and 2 answer that call late, so the attempt's undo is
   * issued while node 0's client cannot reconnect.
   */
  const setUp = (sha: string) => {
    const options = { maxRetriesPerRequest: 1, retryStrategy: () => 20 };
    const own = [0, 1, 2].map((i) => redis().client(i, options));
    clients.push(...own);
    const node0 = own[0] as Redis;
    const link = cutOff(node0);
    let cut = 0;
    const faulty = [
      afterScript(node0, sha, () => {
        cut++;
        // Once the call's answer was read (the grant landed): reconnections are refused.
        void node0.ping().finally(() => {
          link.cut();
        });
      }),
      afterScript(own[1] as Redis, sha, (c) => readLate(c, LATE_MS)),
      afterScript(own[2] as Redis, sha, (c) => readLate(c, LATE_MS)),
    ];
    const redlock = new Redlock({
      clients: faulty.map((f) => f.client),
      ttlMs: 60_000,
      nodeTimeoutMs: 2_000,
      retryDelayMs: 10,
      batching: false,
      notifications: false,
    });
    opened.push(redlock);
    return {
      redlock,
      arm: () => faulty.forEach((f) => f.arm()),
      cut: () => cut,
      heal: link.heal,
    };
  };

  it('is sent again once the node is reachable: a failed acquisition leaves no key behind', async () => {
    const { redlock, arm, cut, heal } = setUp(ACQUIRE.sha);
    const resource = 'undo-unreachable:lock';
    const key = redlock.keyOf(resource);
    await (await redlock.acquire(resource)).release(); // scripts cached, counters made
    for (const i of [1, 2]) await (clients[i] as Redis).set(key, 'another holder', 'PX', 60_000);
    arm();
    const error = await redlock.acquire(resource, { retryCount: 0 }).catch((e: unknown) => e);
    expect(isLockTakenError(error), String(error)).toBe(true);
    expect(cut()).toBe(1);
    const node0 = redis().client(0);
    clients.push(node0);
    expect(await node0.exists(key), 'the grant landed on node 0').toBe(1);
    heal();
    await until(async () => {
      expect(await node0.exists(key), 'the lock key on node 0').toBe(0);
    }, 5_000);
  });

  // Bounded by close(): the Redlock's clients are yours, and nothing of it reaches a node after
  // close() — the key then stays until its ttl (as the README says).
  it('is not sent again after close(): the node keeps the key until its ttl', async () => {
    const { redlock, arm, cut, heal } = setUp(ACQUIRE.sha);
    const resource = 'undo-unreachable:closed';
    const key = redlock.keyOf(resource);
    await (await redlock.acquire(resource)).release();
    for (const i of [1, 2]) await (clients[i] as Redis).set(key, 'another holder', 'PX', 60_000);
    arm();
    const error = await redlock.acquire(resource, { retryCount: 0 }).catch((e: unknown) => e);
    expect(isLockTakenError(error), String(error)).toBe(true);
    expect(cut()).toBe(1);
    await redlock.close();
    heal();
    const own = clients[0] as Redis;
    await until(() => {
      expect(own.status).toBe('ready');
    }, 5_000);
    // Answered after anything the client sent when it became ready.
    await own.ping();
    const node0 = redis().client(0);
    clients.push(node0);
    expect(await node0.exists(key), 'the lock key on node 0').toBe(1);
  });

  it('is sent again once the node is reachable: a failed permit acquisition leaves no slot behind', async () => {
    const { redlock, arm, cut, heal } = setUp(SEM_ACQUIRE.sha);
    const semaphore = redlock.semaphore('undo-unreachable', { permits: 1 });
    const set = `${redlock.keyOf('undo-unreachable')}:semaphore`;
    await (await semaphore.acquire()).release();
    for (const i of [1, 2]) {
      await (clients[i] as Redis).zadd(set, Date.now() + 60_000, `0:${'f'.repeat(40)}`);
    }
    arm();
    const error = await semaphore.acquire({ retryCount: 0 }).catch((e: unknown) => e);
    expect(isLockTakenError(error), String(error)).toBe(true);
    expect(cut()).toBe(1);
    const node0 = redis().client(0);
    clients.push(node0);
    expect(await node0.zcard(set), 'the grant landed on node 0').toBe(1);
    heal();
    await until(async () => {
      expect(await node0.zcard(set), 'permit slots on node 0').toBe(0);
    }, 5_000);
  });
});
