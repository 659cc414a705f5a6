import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Redlock, isLockReleasedError, isLockTakenError } from '../../src/lock/index.js';
import { ACQUIRE, RELEASE, SEM_ACQUIRE } from '../../src/lock/scripts.js';
import { until } from '../support/helpers.js';
import { afterScript, dropAfterWrite, dropTwiceAroundReady, readLate } from '../support/resend.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// ioredis sends again what was unanswered when a connection dropped — but not always in the
// order it was sent: when the next connection drops too, right as it becomes ready, ioredis
// queues those commands behind the ones issued while it was reconnecting (see
// `dropTwiceAroundReady` in test/support/resend.ts), and the node runs them after. An
// acquisition's grant, its reply lost that way, then ran on the node after the undo of its
// failed attempt (sent later), and held the key (a permit's slot) there until its ttl: the next
// acquirers found that node saying "taken".

/** How long node 0's client waits before each reconnect: the undo is issued meanwhile. */
const RECONNECT_MS = 300;
/** How late nodes 1 and 2 answer the acquisition (after node 0's connection dropped). */
const LATE_MS = 150;

describeRedis('a grant sent again after its undo (ioredis reorders what it resends)', () => {
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
   * A Redlock whose node 0 drops twice around a reconnect after `sha` (or, with `source`, after
   * the `EVAL` of that script: its fallback after `NOSCRIPT`), and 1, 2 answer late.
   */
  const setUp = (sha: string, source?: string) => {
    const own = [
      redis().client(0, { retryStrategy: () => RECONNECT_MS }),
      redis().client(1),
      redis().client(2),
    ];
    clients.push(...own);
    const faulty = [
      source === undefined
        ? afterScript(own[0] as Redis, sha, dropTwiceAroundReady)
        : afterScript(own[0] as Redis, source, dropTwiceAroundReady, 'eval'),
      afterScript(own[1] as Redis, sha, (c) => readLate(c, LATE_MS)),
      afterScript(own[2] as Redis, sha, (c) => readLate(c, LATE_MS)),
    ];
    const redlock = new Redlock({
      clients: faulty.map((f) => f.client),
      ttlMs: 60_000,
      nodeTimeoutMs: 3_000,
      retryDelayMs: 10,
      batching: false,
    });
    opened.push(redlock);
    return { redlock, faulty, arm: () => faulty.forEach((f) => f.arm()) };
  };

  it('is undone on that node: a failed acquisition leaves no key behind', async () => {
    const { redlock, faulty, arm } = setUp(ACQUIRE.sha);
    const resource = 'resend-order:lock';
    const key = redlock.keyOf(resource);
    await (await redlock.acquire(resource)).release(); // scripts cached, counters made
    // Someone else holds the resource on nodes 1 and 2: the attempt fails there.
    for (const i of [1, 2]) await (clients[i] as Redis).set(key, 'another holder', 'PX', 60_000);
    arm();
    const error = await redlock.acquire(resource, { retryCount: 0 }).catch((e: unknown) => e);
    expect(isLockTakenError(error), String(error)).toBe(true);
    expect(faulty.map((f) => f.faults)).toEqual([1, 1, 1]);
    const node0 = redis().client(0);
    clients.push(node0);
    await until(async () => {
      expect(await node0.exists(key), 'the lock key on node 0').toBe(0);
    }, 5_000);
  });

  // The same through the NOSCRIPT fallback: node 0 lost its script cache, so the acquisition's
  // EVALSHA is answered NOSCRIPT and the channel sends the script itself (EVAL); that EVAL's
  // connection drops twice around the reconnect, and ioredis sends it again behind the undo
  // issued meanwhile (its script cached: no fallback of its own to put it back in order). The
  // EVAL's answer was not known as a second copy's (only EVALSHA's were), so the grant it
  // landed after the undo was not undone, and held node 0 until its ttl.
  it('is undone on that node when it was the EVAL after NOSCRIPT that was sent again', async () => {
    const { redlock, faulty, arm } = setUp(ACQUIRE.sha, ACQUIRE.source);
    const resource = 'resend-order:noscript';
    const key = redlock.keyOf(resource);
    await (await redlock.acquire(resource)).release(); // scripts cached, counters made
    for (const i of [1, 2]) await (clients[i] as Redis).set(key, 'another holder', 'PX', 60_000);
    // Node 0 forgets every script but the release's (as if another client had released there).
    const node0 = redis().client(0);
    clients.push(node0);
    await node0.script('FLUSH');
    await node0.script('LOAD', RELEASE.source);
    arm();
    const error = await redlock.acquire(resource, { retryCount: 0 }).catch((e: unknown) => e);
    expect(isLockTakenError(error), String(error)).toBe(true);
    expect(faulty.map((f) => f.faults)).toEqual([1, 1, 1]);
    await until(async () => {
      expect(await node0.exists(key), 'the lock key on node 0').toBe(0);
    }, 5_000);
  });

  // A release through the NOSCRIPT fallback whose EVAL ran, its reply lost with the connection:
  // ioredis sent it again, and the second copy found the key gone. That answer was not known as
  // a second copy's, so it counted as "not held" there: with the node that never granted, too
  // few said yes, and a valid lock's release reported { released: false, expired: true }.
  it('a release whose EVAL after NOSCRIPT ran and was sent again counts as released there', async () => {
    const own = [redis().client(0), redis().client(1), redis().client(2)];
    clients.push(...own);
    const node0 = afterScript(own[0] as Redis, RELEASE.source, dropAfterWrite, 'eval');
    const redlock = new Redlock({
      clients: [node0.client, own[1] as Redis, own[2] as Redis],
      ttlMs: 60_000,
      nodeTimeoutMs: 5_000,
      batching: false,
    });
    opened.push(redlock);
    const resource = 'resend-order:noscript-release';
    const key = redlock.keyOf(resource);
    await (await redlock.acquire(resource)).release(); // scripts cached, counters made
    await (own[2] as Redis).set(key, 'another holder', 'PX', 60_000);
    const lock = await redlock.acquire(resource, { retryCount: 0 }); // nodes 0 and 1
    await (own[0] as Redis).script('FLUSH'); // the release's EVALSHA: NOSCRIPT there
    node0.arm();
    const released = await lock.release();
    expect(node0.faults).toBe(1);
    expect(released).toEqual({ released: true, expired: false });
    expect(lock.signal.aborted && !isLockReleasedError(lock.signal.reason)).toBe(false);
  });

  it('is released on that node: a failed permit acquisition leaves no slot behind', async () => {
    const { redlock, faulty, arm } = setUp(SEM_ACQUIRE.sha);
    const semaphore = redlock.semaphore('resend-order', { permits: 1 });
    const set = `${redlock.keyOf('resend-order')}:semaphore`;
    await (await semaphore.acquire()).release();
    // Someone else holds the one permit (slot 0) on nodes 1 and 2.
    for (const i of [1, 2]) {
      await (clients[i] as Redis).zadd(set, Date.now() + 60_000, `0:${'f'.repeat(40)}`);
    }
    arm();
    const error = await semaphore.acquire({ retryCount: 0 }).catch((e: unknown) => e);
    expect(isLockTakenError(error), String(error)).toBe(true);
    expect(faulty.map((f) => f.faults)).toEqual([1, 1, 1]);
    const node0 = redis().client(0);
    clients.push(node0);
    await until(async () => {
      expect(await node0.zcard(set), 'permit slots on node 0').toBe(0);
    }, 5_000);
  });

  // A release issued while the node's client was reconnecting waits in ioredis's offline queue;
  // written on the next connection, it ran there — and when that connection dropped with its
  // reply unread, ioredis sent it again, and the second copy found the key gone. That answer was
  // not known as a second copy's (only calls written at once were), so it counted as "not
  // held": with the node that never granted, too few said yes, and a valid lock's release
  // reported { released: false, expired: true } and aborted its signal as lost.
  it('a release queued while the node reconnects, run and then sent again, counts as released there', async () => {
    const own = [
      redis().client(0, { retryStrategy: () => RECONNECT_MS }),
      redis().client(1),
      redis().client(2),
    ];
    clients.push(...own);
    const node0 = own[0] as Redis;
    const redlock = new Redlock({
      clients: own,
      ttlMs: 60_000,
      nodeTimeoutMs: 5_000,
      retryDelayMs: 10,
      batching: false,
    });
    opened.push(redlock);
    const resource = 'resend-order:queued-release';
    const key = redlock.keyOf(resource);
    await (await redlock.acquire(resource)).release(); // scripts cached, counters made
    // Someone else holds it on node 2: the lock is granted by nodes 0 and 1.
    await (own[2] as Redis).set(key, 'another holder', 'PX', 60_000);
    const lock = await redlock.acquire(resource, { retryCount: 0 });
    // Node 0's connection drops; the release is issued while it reconnects (queued), and the
    // connection it is then written on drops too, once it has run there.
    let dropped = 0;
    node0.once('close', () => {
      node0.once('ready', () => {
        dropped++;
        dropAfterWrite(node0);
      });
    });
    (node0 as unknown as { stream: { destroy(): void } }).stream.destroy();
    await until(() => {
      expect(node0.status).not.toBe('ready');
    }, 5_000);
    const released = await lock.release();
    expect(dropped).toBe(1);
    expect(released).toEqual({ released: true, expired: false });
    expect(lock.signal.aborted && !isLockReleasedError(lock.signal.reason)).toBe(false);
  });
});
