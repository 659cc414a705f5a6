import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Redlock, isLockTakenError } from '../../src/lock/index.js';
import { SEM_ACQUIRE, SEM_RELEASE } from '../../src/lock/scripts.js';
import { type CommandMonitor, monitorCommands } from '../support/monitor.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// The semaphore's side of test/lock/noscript-order.test.ts. A node that lost its script cache
// (restarted empty, or SCRIPT FLUSH) answers a permit's SEM_ACQUIRE (EVALSHA) with NOSCRIPT, and
// the channel then sends the script itself (EVAL) — after whatever was sent to the node
// meanwhile. A release (or a failed attempt's undo) decided without that node can reach it
// first, find nothing, and the acquire's EVAL then takes the slot there until the ttl: one
// permit fewer on that node for everyone else.

/** Markers the counted connection sends before and after the counted calls. */
const START = 'keel-count-start';
const END = 'keel-count-end';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('a late semaphore grant sent by the NOSCRIPT fallback after the release', () => {
  const redis = useRedis({ count: 3 });

  afterEach(async () => {
    for (let i = 0; i < 3; i++) if (redis().node(i).state === 'paused') redis().resume(i);
    await redis().flushAll();
  });

  /** How many slots each node has taken in the semaphore set `key`. */
  const slotsPerNode = (key: string): Promise<number[]> =>
    Promise.all([0, 1, 2].map((node) => redis().client(node).zcard(key)));

  /** Node 2 forgets every script, then learns only the release script (as another client would). */
  const forgetAcquire = async (slow: Redis): Promise<void> => {
    await slow.script('FLUSH');
    await slow.script('LOAD', SEM_RELEASE.source);
  };

  for (const batching of [true, false]) {
    it(`is released on that node (batching: ${String(batching)})`, async () => {
      const clients = redis().clients();
      const slow = clients[2] as Redis;
      // Generous: the test is about order, not time; the ttl outlives the test.
      const redlock = new Redlock({ clients, nodeTimeoutMs: 5_000, ttlMs: 60_000, batching });
      const semaphore = redlock.semaphore(`sem-noscript:${String(batching)}`, { permits: 1 });
      const key = `${redlock.keyOf(semaphore.name)}:semaphore`;
      await (await semaphore.acquire()).release(); // every node answers once
      await forgetAcquire(slow);
      redis().pause(2);
      const permit = await semaphore.acquire(); // decided by nodes 0 and 1
      await permit.release(); // decided by nodes 0 and 1; node 2 has acquire + release queued
      redis().resume(2); // NOSCRIPT for the acquire, the release runs, then the acquire's EVAL
      await semaphore.close();
      await redlock.close();
      expect(await slotsPerNode(key), 'slots taken per node after acquire + release').toEqual([
        0, 0, 0,
      ]);
    });
  }

  it('is undone on that node when the acquisition failed', async () => {
    const clients = redis().clients();
    const slow = clients[2] as Redis;
    const redlock = new Redlock({ clients, nodeTimeoutMs: 5_000, ttlMs: 60_000 });
    const semaphore = redlock.semaphore('sem-noscript:failed', { permits: 1 });
    const key = `${redlock.keyOf(semaphore.name)}:semaphore`;
    await (await semaphore.acquire()).release();
    // Someone else holds the one permit on nodes 0 and 1 (slot 0, expiring far in the future).
    for (const i of [0, 1]) await redis().client(i).zadd(key, 1e15, '0:another-holder');
    await forgetAcquire(slow);
    redis().pause(2);
    // Refused by nodes 0 and 1; the undo goes to node 2 behind the acquire; resumed a little
    // later, node 2 answers NOSCRIPT, runs the undo (nothing to remove), then the acquire's EVAL.
    const resumed = sleep(100).then(() => {
      redis().resume(2);
    });
    const error = await semaphore.acquire({ retryCount: 0 }).catch((e: unknown) => e);
    expect(isLockTakenError(error), String(error)).toBe(true);
    await resumed;
    await semaphore.close();
    await redlock.close();
    expect(await slotsPerNode(key), 'slots taken per node').toEqual([1, 1, 0]);
  });
});

// Its own servers, so nothing the tests above did to theirs (pauses, SCRIPT FLUSH, clients left
// connected) can reach it. Counted per connection, from MONITOR: the server-wide counters
// (INFO commandstats) counted whatever else connected to the server, and CI twice read 402
// EVALSHA on one node where the test's own calls made 400 — a cause this machine never showed.
describeRedis('an uncontended semaphore', () => {
  const redis = useRedis({ count: 3 });

  it('acquire + release sends one EVALSHA each per node and nothing else', async () => {
    const clients = redis().clients();
    const monitors = await Promise.all(
      [0, 1, 2].map((node) => monitorCommands(redis().client(node))),
    );
    // Generous: a round timed out on a loaded machine would be retried (and counted).
    const redlock = new Redlock({ clients, nodeTimeoutMs: 5_000, ttlMs: 60_000 });
    const semaphore = redlock.semaphore('sem-noscript:count', { permits: 3 });
    // Cached beforehand: on a fresh server the first acquisition's EVALSHA is answered NOSCRIPT,
    // and a node outside its quorum would send its EVAL fallback (and perhaps release the late
    // grant) inside the count.
    for (const c of clients)
      for (const s of [SEM_ACQUIRE, SEM_RELEASE]) await c.script('LOAD', s.source);
    await (await semaphore.acquire()).release();
    await Promise.all(clients.map((c) => c.echo(START)));
    const CYCLES = 200;
    for (let i = 0; i < CYCLES; i++) await (await semaphore.acquire()).release();
    await Promise.all(clients.map((c) => c.echo(END)));
    await redlock.close();
    for (let node = 0; node < 3; node++) {
      const monitor = monitors[node] as CommandMonitor;
      const sent = await monitor.between(START, END);
      monitor.stop();
      const own = sent.filter((c) => c.own).map((c) => c.command);
      const others = sent.filter((c) => !c.own).map((c) => `${c.source} ${c.command}`);
      const detail = `node ${node}; the Redlock's connection sent ${own.length} commands (${[...new Set(own)].join(', ')}); other connections meanwhile: ${others.length === 0 ? 'none' : others.join('; ')}`;
      expect(own.filter((c) => c === 'evalsha').length, `EVALSHA, ${detail}`).toBe(2 * CYCLES);
      expect(own.length, `commands in all, ${detail}`).toBe(2 * CYCLES);
    }
  });
});
