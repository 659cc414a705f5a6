import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { isInvalidOptionError, type InvalidOptionError } from '../../src/core/index.js';
import { MemoryLock, Redlock, type Lock } from '../../src/lock/index.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// Inputs the option layer let through to Redis (the fuzz suite's clients never reach a node):
// names Redis cannot tell apart, and an extension's ttl beyond what acquire() accepts.

/** What `run` rejected or threw with, asserted to be an InvalidOptionError naming `option`. */
async function refused(run: () => unknown, option: string): Promise<InvalidOptionError> {
  let error: unknown;
  try {
    await run();
  } catch (e) {
    error = e;
  }
  expect(isInvalidOptionError(error), `expected InvalidOptionError, got ${String(error)}`).toBe(
    true,
  );
  expect((error as InvalidOptionError).option).toBe(option);
  return error as InvalidOptionError;
}

describeRedis('lock inputs that reach the nodes (three real redis-server processes)', () => {
  const redis = useRedis({ count: 3 });
  let opened: Redlock[] = [];
  let clients: Redis[] = [];
  const redlockOf = (keyPrefix?: string): Redlock => {
    const own = redis().clients();
    clients.push(...own);
    const redlock = new Redlock({
      clients: own,
      // Generous: a first round also waits for the connections (this test is not about time).
      nodeTimeoutMs: 2_000,
      retryDelayMs: 10,
      ...(keyPrefix === undefined ? {} : { keyPrefix }),
    });
    opened.push(redlock);
    return redlock;
  };

  afterEach(async () => {
    await Promise.all(opened.map((r) => r.close()));
    for (const c of clients) c.disconnect();
    opened = [];
    clients = [];
    await redis().flushAll();
  });

  // A lone surrogate cannot be encoded in UTF-8: the client sends U+FFFD (EF BF BD) for each,
  // so '\uD800', '\uDC00' and '\uFFFD' are one key on the node. Two such names in one lock were
  // one key twice: the acquire granted, and the release, deleting it once, reported the lock
  // lost ({ released: false, expired: true }); one such name silently shared its lock and its
  // fencing counter with every other.
  it('resource names with a lone surrogate are refused before anything is sent, naming them', async () => {
    const redlock = redlockOf();
    for (const bad of ['\uD800', 'sku:\uDC00', ['ok', 'x\uDBFF'], ['\uD800', '\uDC00']]) {
      await refused(() => redlock.acquire(bad, { retryCount: 0 }), 'resources');
      await refused(() => redlock.using(bad, () => Promise.resolve()), 'resources');
    }
    expect(await redis().client(0).dbsize()).toBe(0);
    // Well-formed names — astral characters (surrogate pairs) and U+FFFD itself — are locks.
    const lock = await redlock.acquire(['\uD83D\uDE00', '\uFFFD'], { retryCount: 0 });
    expect(await lock.release()).toEqual({ released: true, expired: false });
  });

  it('a semaphore name or key prefix with a lone surrogate is refused, naming it', async () => {
    const redlock = redlockOf();
    await refused(() => redlock.semaphore('pool\uD800', { permits: 2 }), 'name');
    // Not a string at all: named too (a Symbol threw a plain TypeError making its key).
    await refused(() => redlock.semaphore(Symbol('pool') as never, { permits: 2 }), 'name');
    await refused(() => redlockOf('app\uDFFF:'), 'keyPrefix');
  });

  // The fencing repair copies onto a restarted node every integer key it finds under the
  // prefix named `…:fence` (SCAN MATCH `<keyPrefix>*:fence`). An empty prefix put every key of
  // the node under it: a foreign `billing:fence` was copied onto the restarted node as if it
  // were a counter (see fencing.test.ts). Neither a key's name nor its value tells Keel's
  // counters apart from foreign ones, so the prefix must give the Redlock a namespace.
  it("keyPrefix '' is refused, naming keyPrefix (the repair would copy foreign keys)", async () => {
    const error = await refused(() => redlockOf(''), 'keyPrefix');
    expect(error.message).toContain('non-empty');
    expect(redlockOf(':').keyOf('r')).toBe(':{r}');
  });

  // Redlock's majority assumes N independent servers. One client listed twice (or two clients
  // of one server) gave one server two votes: with [a, a, b], server a alone granted a lock
  // that b — the only other server — refused.
  it('the same client, or the same server, listed twice in clients is refused, naming both', async () => {
    const [a, b] = redis().clients();
    clients.push(a as Redis, b as Redis);
    await (b as Redis).set('keel:lock:{twice}', 'another holder', 'PX', 60_000);
    const twice = await refused(
      () => new Redlock({ clients: [a as Redis, a as Redis, b as Redis] }),
      'clients',
    );
    expect(twice.message).toContain('clients 0 and 1');
    const sameServer = redis().client(0);
    clients.push(sameServer);
    const server = await refused(
      () => new Redlock({ clients: [b as Redis, a as Redis, sameServer] }),
      'clients',
    );
    expect(server.message).toContain(`clients 1 and 2 are both 127.0.0.1:${redis().port(0)}`);
  });

  // A RESP2 client in subscriber mode can run no script: its node failed every round, and the
  // lock went on with one node less than configured, saying so only in each round's votes. (A
  // RESP3 client — ioredis's default — runs commands while subscribed, and is a node as any.)
  it('a client in (RESP2) subscriber mode is refused, naming it; a subscribed RESP3 client serves', async () => {
    const own = [redis().client(0), redis().client(1, { protocol: 2 }), redis().client(2)];
    clients.push(...own);
    await (own[1] as Redis).subscribe('somewhere');
    const error = await refused(() => new Redlock({ clients: own }), 'clients');
    expect(error.message).toContain('client 1 is in subscriber mode');
    const resp3 = redis().clients();
    clients.push(...resp3);
    for (const c of resp3) await c.subscribe('somewhere');
    const redlock = new Redlock({ clients: resp3, nodeTimeoutMs: 2_000 });
    opened.push(redlock);
    const lock = await redlock.acquire('subscribed', { retryCount: 0 });
    expect(await lock.release()).toEqual({ released: true, expired: false });
  });

  it('extend() refuses a ttl beyond 86 400 000 ms, as acquire() does: the lock stays held and valid', async () => {
    const redlock = redlockOf();
    const lock = await redlock.acquire('extend-range', { ttlMs: 10_000 });
    const signal = lock.signal;
    const validUntil = lock.validUntil;
    // 2^33 ms (past 2^31 − 1 ms of validity) overflowed Node's timers (the loss timer fired at once: the lock was
    // reported lost); 1e20 overflowed Redis's PEXPIRE (every node failed the script: the lock
    // was reported lost, "refused by a quorum").
    for (const ttl of [86_400_001, 2 ** 33, Number.MAX_SAFE_INTEGER, 1e20]) {
      await refused(() => lock.extend(ttl), 'ttlMs');
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(signal.aborted).toBe(false);
    expect(lock.validUntil).toBe(validUntil);
    await lock.extend(86_400_000);
    expect(await lock.release()).toEqual({ released: true, expired: false });

    const semaphore = redlock.semaphore('extend-range', { permits: 1 });
    const permit: Lock = await semaphore.acquire();
    await refused(() => permit.extend(2 ** 33), 'ttlMs');
    expect(permit.signal.aborted).toBe(false);
    expect(await permit.release()).toEqual({ released: true, expired: false });
  });

  // `null` where the options go: Redlock read `options.signal` first and threw a plain
  // TypeError; MemoryLock took it for no options. `using()` already refused it, naming options.
  it('acquire(resources, null) is refused, naming options (Redlock and MemoryLock alike)', async () => {
    const redlock = redlockOf();
    const memory = new MemoryLock();
    for (const service of [redlock, memory]) {
      const error = await refused(
        () => service.acquire('inputs:null-options', null as unknown as object),
        'options',
      );
      expect(error.message).toContain('acquire');
      await refused(
        () =>
          service.using('inputs:null-options', null as unknown as object, () => Promise.resolve(1)),
        'options',
      );
    }
    await memory.close();
  });

  // keyOf() made a key of anything (`keel:lock:{undefined}`, `{[object Object]}`, a lone
  // surrogate that acquire() refuses) and threw a plain TypeError for a Symbol.
  it('keyOf() refuses what acquire() would refuse as a resource name, naming resource', async () => {
    const redlock = redlockOf();
    for (const bad of [undefined, null, 5, {}, Symbol('r'), 'a\uD800']) {
      const error = await refused(() => redlock.keyOf(bad as string), 'resource');
      expect(error.message).toContain('Redlock.keyOf');
    }
    expect(redlock.keyOf('order:42')).toBe('keel:lock:{order:42}');
  });

  it('MemoryLock: extend() refuses a ttl beyond 86 400 000 ms too', async () => {
    const memory = new MemoryLock();
    const lock = await memory.acquire('extend-range');
    await refused(() => lock.extend(2 ** 33), 'ttlMs');
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(lock.signal.aborted).toBe(false);
    expect(await lock.release()).toEqual({ released: true, expired: false });
  });
});
