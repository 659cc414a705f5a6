import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Redlock, isLockTakenError } from '../../src/lock/index.js';
import { RELEASE } from '../../src/lock/scripts.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// A node that lost its script cache (restarted empty, or SCRIPT FLUSH) answers an acquire's
// EVALSHA with NOSCRIPT, and the channel then sends the script itself (EVAL). That EVAL goes
// out after whatever the caller sent to the node meanwhile: a release decided without that
// node can reach it first (its script cached there, e.g. by another client) and find nothing
// to delete; the acquire's EVAL then sets the key, which would stay until its ttl — and the
// next acquirer of the resource would find that node saying "taken".

describeRedis('a late grant sent by the NOSCRIPT fallback after the release', () => {
  const redis = useRedis({ count: 3 });

  afterEach(async () => {
    for (let i = 0; i < 3; i++) if (redis().node(i).state === 'paused') redis().resume(i);
    await redis().flushAll();
  });

  for (const batching of [true, false]) {
    it(`is released on that node (batching: ${String(batching)})`, async () => {
      const clients = redis().clients();
      const slow = clients[2] as Redis;
      // Generous: the test is about order, not time; the ttl outlives the test.
      const redlock = new Redlock({ clients, nodeTimeoutMs: 5_000, ttlMs: 60_000, batching });
      const resource = `noscript-order:${String(batching)}`;
      const key = redlock.keyOf(resource);
      // A first cycle while every node answers (the fencing counters' first grants).
      await (await redlock.acquire(resource)).release();
      // Node 2 forgets every script, then learns only the release script (as if another client
      // had released something there): the acquire needs EVAL, the release does not.
      await slow.script('FLUSH');
      await slow.script('LOAD', RELEASE.source);
      redis().pause(2);
      const lock = await redlock.acquire(resource); // decided by nodes 0 and 1
      await lock.release(); // decided by nodes 0 and 1; node 2 has acquire + release queued
      redis().resume(2); // NOSCRIPT for the acquire, the release runs, then the acquire's EVAL
      await redlock.close();
      const held: number[] = [];
      for (let i = 0; i < 3; i++) held.push(await redis().client(i).exists(key));
      expect(held, 'the lock key per node after acquire + release').toEqual([0, 0, 0]);

      // And the resource is free everywhere: the next acquirer gets every node's grant.
      const again = new Redlock({ clients, nodeTimeoutMs: 5_000 });
      const next = await again.acquire(resource, { retryCount: 0 });
      await next.release();
      await again.close();
    });
  }

  it('is undone on that node when the acquisition failed', async () => {
    const clients = redis().clients();
    const slow = clients[2] as Redis;
    const redlock = new Redlock({ clients, nodeTimeoutMs: 5_000, ttlMs: 60_000 });
    const resource = 'noscript-order:failed';
    const key = redlock.keyOf(resource);
    await (await redlock.acquire(resource)).release();
    // Someone else holds the resource on nodes 0 and 1 (what ACQUIRE refuses is any value).
    for (const i of [0, 1]) await redis().client(i).set(key, 'another holder', 'PX', 60_000);
    await slow.script('FLUSH');
    await slow.script('LOAD', RELEASE.source);
    redis().pause(2);
    // Refused by nodes 0 and 1; the undo goes to node 2 behind the acquire, and the acquisition
    // waits for it before it gives up: resumed a little later, node 2 answers NOSCRIPT, runs
    // the undo (nothing to delete), then the acquire's EVAL.
    const resumed = new Promise<void>((resolve) =>
      setTimeout(() => {
        redis().resume(2);
        resolve();
      }, 100),
    );
    const error = await redlock.acquire(resource, { retryCount: 0 }).catch((e: unknown) => e);
    expect(isLockTakenError(error), String(error)).toBe(true);
    await resumed;
    await redlock.close();
    expect(await redis().client(2).exists(key), 'the lock key on node 2').toBe(0);
  });
});
