import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import {
  Redlock,
  isLockTakenError,
  isQuorumUnavailableError,
  type Lock,
  type NodeVote,
  type Permit,
  type RedlockOptions,
} from '../../src/lock/index.js';
import { FENCE_TAG } from '../../src/lock/scripts.js';
import { within } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// Node faults the chaos suite does not script, on one node or a minority of five real
// redis-server processes, while locks and permits are acquired, extended and released, and
// while a node is being repaired: a node out of memory under `noeviction` (the README's advice
// for lock nodes), SCRIPT FLUSH over and over, a busy node (DEBUG SLEEP) and CLIENT PAUSE,
// connections killed mid-repair and mid-semaphore, and an ACL that takes scripting away. Each
// test states what the README promises under the fault; timing only bounds "how long until".

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `condition` every 10 ms until it holds; throws after `ms`. */
async function until(condition: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
}

const votesOf = (error: unknown): readonly NodeVote[] => (error as { votes: NodeVote[] }).votes;

/** A fencing counter's value as a token (a counter past its incarnation check holds + 2^50). */
const tokenOf = (raw: string | null): number => {
  const value = Number(raw ?? 0);
  return value > FENCE_TAG ? value - FENCE_TAG : value;
};

/**
 * Mutual exclusion and fencing order as the holders of one process see them: a holder that
 * enters while another one's lock on the resource is still valid is an overlap; tokens must
 * increase from one holder to the next.
 */
class Ledger {
  readonly #inside = new Map<string, Set<Lock>>();
  readonly #last = new Map<string, number>();
  overlaps = 0;
  inversions = 0;
  entries = 0;
  enter(resource: string, lock: Lock): void {
    this.entries++;
    const inside = this.#inside.get(resource) ?? new Set<Lock>();
    this.#inside.set(resource, inside);
    for (const other of inside) if (other.remainingMs() > 0) this.overlaps++;
    inside.add(lock);
    const last = this.#last.get(resource) ?? 0;
    if (lock.fencingToken <= last) this.inversions++;
    this.#last.set(resource, Math.max(last, lock.fencingToken));
  }
  leave(resource: string, lock: Lock): void {
    this.#inside.get(resource)?.delete(lock);
  }
}

/** At most `permits` permits of a semaphore held (and valid) at once, as one process sees it. */
class PermitLedger {
  readonly #inside = new Set<Permit>();
  most = 0;
  entries = 0;
  constructor(readonly permits: number) {}
  enter(permit: Permit): void {
    this.entries++;
    this.#inside.add(permit);
    let held = 0;
    for (const p of this.#inside) {
      if (p.remainingMs() > 0) held += p.permits;
    }
    this.most = Math.max(this.most, held);
  }
  leave(permit: Permit): void {
    this.#inside.delete(permit);
  }
}

describeRedis('lock and semaphore under node faults the chaos suite does not script', () => {
  // DEBUG is refused by default since Redis 7.0 (`enable-debug-command`); local connections
  // may use it here.
  const redis = useRedis({ count: 5, args: ['--enable-debug-command', 'local'] });
  const NODES = [0, 1, 2, 3, 4];
  let opened: Redlock[] = [];
  let clients: Redis[] = [];

  /**
   * Five fresh clients (one per node) that reconnect quickly, closed after the test. Each
   * command is tried on up to 20 connections (ioredis's default `maxRetriesPerRequest`): with
   * fewer, a connection killed twice in a row rejects what was queued meanwhile unsent — a
   * release then never reaches that node, and its keys stay until their ttl, as for a node
   * that is down (see the README on `release()`).
   */
  const clientsOf = (): Redis[] => {
    const fresh = redis().clients({ retryStrategy: () => 20 });
    clients.push(...fresh);
    return fresh;
  };
  let admins = new Map<number, Redis>();
  /** The test's admin connection to node `i` (closed after the test). */
  const admin = (i: number): Redis => {
    let c = admins.get(i);
    if (c === undefined) {
      c = redis().client(i);
      admins.set(i, c);
      clients.push(c);
    }
    return c;
  };
  /** A Redlock on its own connections (like a separate process), closed after the test. */
  const redlockOf = (options: Partial<RedlockOptions> = {}, on = clientsOf()): Redlock => {
    const redlock = new Redlock({
      clients: on,
      nodeTimeoutMs: 300,
      retryDelayMs: 10,
      retryJitterMs: 10,
      ...options,
    });
    opened.push(redlock);
    return redlock;
  };

  /** Node `i` is full: `noeviction`, and `maxmemory` at `bytes` (1: below any usage). */
  const fill = async (i: number, bytes = 1): Promise<void> => {
    const c = admin(i);
    await c.config('SET', 'maxmemory-policy', 'noeviction');
    await c.config('SET', 'maxmemory', String(bytes));
  };
  const usedMemory = async (i: number): Promise<number> =>
    Number(/used_memory:(\d+)/.exec(await admin(i).info('memory'))?.[1]);

  /** Lock keys and fencing counters of `resources` present on node `i`. */
  const present = async (i: number, redlock: Redlock, resources: readonly string[]) => {
    const keys = resources.flatMap((r) => [redlock.keyOf(r), `${redlock.keyOf(r)}:fence`]);
    return admin(i).exists(...keys);
  };

  afterEach(async () => {
    await Promise.all(opened.map((r) => r.close()));
    for (const i of NODES) {
      const c = redis().client(i);
      await c.config('SET', 'maxmemory', '0');
      await c.acl('SETUSER', 'default', '+@all');
      await c.flushall();
      c.disconnect();
    }
    for (const c of clients) c.disconnect();
    opened = [];
    clients = [];
    admins = new Map();
  });

  // ---------------------------------------------------------------------------------------------
  // Out of memory, with noeviction.

  it('a full node (noeviction) takes no new lock or counter: acquire, extend and release go on without it, tokens keep increasing, and permits stay within the limit', async () => {
    const redlock = redlockOf();
    const warm = await redlock.acquire('oom:a');
    const before = warm.fencingToken;
    await warm.release();
    await fill(0);

    const single = await redlock.acquire('oom:a');
    expect(single.fencingToken).toBeGreaterThan(before);
    await single.extend(5_000);
    expect(await single.release()).toEqual({ released: true, expired: false });

    const multi = ['oom:m1', 'oom:m2', 'oom:m3'];
    const lock = await redlock.acquire(multi);
    expect(await present(0, redlock, multi), 'keys of the lock on the full node').toBe(0);
    for (const i of [1, 2, 3, 4]) expect(await present(i, redlock, multi)).toBe(6);
    await lock.extend(5_000);
    expect(await lock.release()).toEqual({ released: true, expired: false });
    const again = await redlock.acquire(multi, { retryCount: 0 });
    for (const r of multi)
      expect(again.fencingTokens[r]).toBeGreaterThan(lock.fencingTokens[r] ?? 0);
    await again.release();

    const semaphore = redlock.semaphore('oom:s', { permits: 2 });
    const first = await semaphore.acquire();
    const second = await semaphore.acquire();
    const third = await semaphore.acquire({ retryCount: 0 }).catch((e: unknown) => e);
    expect(isLockTakenError(third), String(third)).toBe(true);
    // (The full node may grant permits: a script's first write that takes no memory — the
    // semaphore's sweep of expired entries — lets Redis run its later writes past the limit.)
    await first.extend(5_000);
    expect(await first.release()).toEqual({ released: true, expired: false });
    expect(await second.release()).toEqual({ released: true, expired: false });
  });

  it('full nodes (noeviction) that are a majority: acquire fails promptly with QuorumUnavailableError naming each as a script error (OOM); a lock held from before still extends and releases there', async () => {
    const redlock = redlockOf();
    const held = await redlock.acquire('oom:held', { ttlMs: 10_000 });
    for (const i of [0, 1, 2]) await fill(i);
    const error = await within(
      redlock.acquire('oom:new', { retryCount: 3 }).catch((e: unknown) => e),
      10_000,
      'the acquisition',
    );
    expect(isQuorumUnavailableError(error), String(error)).toBe(true);
    // The other nodes granted, or were not waited for (`pending`) once three had failed.
    const failed = votesOf(error).filter((v) => v.vote === 'error' && v.kind !== 'pending');
    expect(failed.map((v) => v.node).sort()).toEqual([0, 1, 2]);
    for (const v of failed) {
      expect(v.kind).toBe('script-error');
      expect(v.error).toMatch(/^OOM command not allowed/);
      expect(v.address).toBe(`127.0.0.1:${redis().port(v.node)}`);
    }
    for (const i of [0, 1, 2]) expect(await present(i, redlock, ['oom:new'])).toBe(0);
    // PEXPIRE and DEL take no memory: a full node still extends and releases what it holds.
    await held.extend(10_000);
    expect(await held.release()).toEqual({ released: true, expired: false });
    for (const i of NODES) expect(await admin(i).exists(redlock.keyOf('oom:held'))).toBe(0);
  });

  it('a repair cut short by a full node never marks the node intact with counters missing; once memory frees up it is repaired whole, and tokens keep increasing', async () => {
    const redlock = redlockOf({ nodeTimeoutMs: 2_000 });
    const names = Array.from({ length: 3_000 }, (_, i) => `oomrep:${i}`);
    // Two grants: every counter exists on every node, tagged (see ACQUIRE).
    await (await redlock.acquire(names)).release();
    const last = await redlock.acquire(names);
    await last.release();
    const node = admin(0);
    await node.flushall(); // node 0 lost its counters and its incarnation key
    await fill(0, (await usedMemory(0)) + 100_000);
    // The Redlock's connection drops and comes back: its reconnect check repairs node 0, and
    // the copy of 3 000 counters fills it part-way.
    await node.call('CLIENT', 'KILL', 'TYPE', 'normal');
    const fenceKeys = names.map((r) => `${redlock.keyOf(r)}:fence`);
    const state = async (): Promise<{ marked: boolean; counters: number }> => ({
      marked: (await node.exists('keel:lock:incarnation')) === 1,
      counters: await node.exists(...fenceKeys),
    });
    await until(
      async () => {
        const s = await state();
        expect(s.marked && s.counters < names.length, 'marked with counters missing').toBe(false);
        return s.counters > 0;
      },
      10_000,
      'the repair copied counters',
    );
    // Out of memory now: the copy stopped part-way, and the node stays unmarked through every
    // recheck (five, a second apart) — sampled the whole time.
    const cut = await state();
    expect(cut.counters).toBeLessThan(names.length);
    const watchedUntil = performance.now() + 6_000;
    while (performance.now() < watchedUntil) {
      const s = await state();
      expect(s.marked && s.counters < names.length, 'marked with counters missing').toBe(false);
      await sleep(50);
    }
    // Acquisitions go on meanwhile (node 0 votes with an OOM error), tokens increasing.
    const during = await redlock.acquire(names.slice(0, 2));
    expect(during.fencingTokens['oomrep:0']).toBeGreaterThan(last.fencingTokens['oomrep:0'] ?? 0);
    await during.release();

    await node.config('SET', 'maxmemory', '0');
    // An acquisition that meets the unmarked node has it repaired.
    await until(
      async () => {
        await (await redlock.acquire('oomrep:0')).release();
        return (await state()).marked;
      },
      15_000,
      'node 0 repaired',
    );
    const counters = await node.mget(...fenceKeys);
    for (let i = 0; i < names.length; i++) {
      expect(tokenOf(counters[i] ?? null), fenceKeys[i]).toBeGreaterThanOrEqual(
        last.fencingTokens[names[i] as string] ?? 0,
      );
    }
    const after = await redlock.acquire(names.slice(0, 2));
    expect(after.fencingTokens['oomrep:1']).toBeGreaterThan(during.fencingTokens['oomrep:1'] ?? 0);
    await after.release();
  });

  // ---------------------------------------------------------------------------------------------
  // Traffic under a fault loop: SCRIPT FLUSH, DEBUG SLEEP, CLIENT PAUSE, CLIENT KILL.

  /**
   * Three Redlocks (each on its own connections) run lock and permit cycles on a few resources
   * while `fault` runs over and over; then checks exclusion, token order, the permit limit, that
   * only the expected errors came, and that nothing is left held on any node.
   */
  async function underFaults(
    tag: string,
    minFaults: number,
    fault: (round: number) => Promise<void>,
  ): Promise<{ faults: number; entries: number }> {
    // A long ttl: a key left behind by a bug must still be there when the nodes are read.
    const redlocks = [0, 1, 2].map(() =>
      redlockOf({ ttlMs: 20_000, retryCount: 1_000, nodeTimeoutMs: 100 }),
    );
    const resources = [`${tag}:r0`, `${tag}:r1`];
    const ledger = new Ledger();
    const permits = new PermitLedger(2);
    const unexpected: unknown[] = [];
    const releases: { released: boolean; expired: boolean }[] = [];
    const cycles = 8;
    const traffic = { running: true };
    let faults = 0;
    // Every loop makes `cycles` cycles, and goes on until the fault has struck `minFaults` times.
    const more = (n: number): boolean => n < cycles || faults < minFaults;
    const faulting = (async () => {
      while (traffic.running) {
        await fault(faults++);
        await sleep(15);
      }
    })();
    const work = redlocks.flatMap((redlock, r) => {
      const semaphore = redlock.semaphore(`${tag}:sem`, { permits: 2 });
      const lockLoops = [0, 1, 2].map(async (k) => {
        for (let n = 0; more(n); n++) {
          const resource = resources[(r + k + n) % 2] as string;
          try {
            await redlock.using(resource, async (_signal, lock) => {
              ledger.enter(resource, lock);
              await sleep(3);
              ledger.leave(resource, lock);
            });
          } catch (error) {
            if (!isLockTakenError(error) && !isQuorumUnavailableError(error))
              unexpected.push(error);
          }
        }
      });
      const semLoops = [0, 1].map(async () => {
        for (let n = 0; more(n); n++) {
          try {
            const permit = await semaphore.acquire();
            permits.enter(permit);
            await sleep(3);
            permits.leave(permit);
            const valid = permit.remainingMs() > 0;
            const result = await permit.release();
            if (valid) releases.push(result);
          } catch (error) {
            if (!isLockTakenError(error) && !isQuorumUnavailableError(error))
              unexpected.push(error);
          }
        }
      });
      return [...lockLoops, ...semLoops];
    });
    await within(Promise.all(work), 120_000, 'the traffic');
    traffic.running = false;
    await faulting;
    expect(unexpected, 'errors other than taken / unavailable').toEqual([]);
    expect(ledger.overlaps, 'holders that overlapped a valid lock').toBe(0);
    expect(ledger.inversions, 'tokens that did not increase').toBe(0);
    expect(permits.most, 'permits held at once').toBeLessThanOrEqual(2);
    // A permit released while valid: a quorum deleted it, and nothing said it had expired.
    expect(releases.filter((r) => r.expired)).toEqual([]);
    // Closing waits for the stragglers (late grants are undone, queued calls answered).
    await Promise.all(redlocks.map((r) => r.close()));
    const first = redlocks[0] as Redlock;
    const left = async (): Promise<string[]> => {
      const found: string[] = [];
      for (const i of NODES) {
        const c = admin(i);
        for (const resource of resources) {
          const key = first.keyOf(resource);
          const value = await c.get(key);
          if (value !== null) found.push(`node ${i} ${key} = ${value} (pttl ${await c.pttl(key)})`);
        }
        const set = `${first.keyOf(`${tag}:sem`)}:semaphore`;
        const members = await c.zrange(set, '0', '-1', 'WITHSCORES');
        if (members.length > 0) found.push(`node ${i} ${set}: ${members.join(' ')}`);
      }
      return found;
    };
    await until(
      async () => {
        for (const i of NODES) {
          const c = admin(i);
          for (const resource of resources)
            if ((await c.exists(first.keyOf(resource))) !== 0) return false;
          if ((await c.zcard(`${first.keyOf(`${tag}:sem`)}:semaphore`)) !== 0) return false;
        }
        return true;
      },
      5_000,
      'every lock key and permit gone from every node',
    ).catch(async (error: unknown) => {
      throw new Error(`${String(error)}:\n${(await left()).join('\n')}`);
    });
    return { faults, entries: ledger.entries + permits.entries };
  }

  it('SCRIPT FLUSH over and over on two nodes during traffic: exclusion, token order and the permit limit hold, and nothing is left held', async () => {
    for (const i of [0, 1]) await admin(i).config('RESETSTAT');
    const { faults, entries } = await underFaults('flush', 20, async (round) => {
      await admin(round % 2).script('FLUSH');
    });
    expect(faults).toBeGreaterThanOrEqual(20);
    expect(entries).toBeGreaterThan(0);
    // The traffic did meet the flushed caches (EVALSHA answered NOSCRIPT, EVAL followed).
    let noscript = 0;
    for (const i of [0, 1]) {
      const stats = await admin(i).info('errorstats');
      noscript += Number(/errorstat_NOSCRIPT:count=(\d+)/.exec(stats)?.[1] ?? 0);
    }
    expect(noscript).toBeGreaterThan(0);
  });

  it('a busy node (DEBUG SLEEP 0.3) and paused clients (CLIENT PAUSE WRITE / ALL) on one node during traffic: the same holds', async () => {
    const { faults, entries } = await underFaults('busy', 6, async (round) => {
      const c = admin(round % 2);
      switch (round % 3) {
        case 0:
          await c.call('DEBUG', 'SLEEP', '0.3');
          return;
        case 1:
          await c.call('CLIENT', 'PAUSE', '300', 'WRITE');
          await sleep(300);
          return;
        default:
          await c.call('CLIENT', 'PAUSE', '300', 'ALL');
          await sleep(300);
      }
    });
    expect(faults).toBeGreaterThanOrEqual(6);
    expect(entries).toBeGreaterThan(0);
  });

  it('connections killed over and over (CLIENT KILL TYPE normal) on one node at a time during traffic: the same holds', async () => {
    const { faults, entries } = await underFaults('kill', 20, async (round) => {
      await admin(round % 2).call('CLIENT', 'KILL', 'TYPE', 'normal');
    });
    expect(faults).toBeGreaterThanOrEqual(20);
    expect(entries).toBeGreaterThan(0);
  });

  it('connections killed over and over during a repair: the node is never marked with counters missing, and ends repaired whole', async () => {
    const redlock = redlockOf({ nodeTimeoutMs: 2_000 });
    const names = Array.from({ length: 3_000 }, (_, i) => `killrep:${i}`);
    await (await redlock.acquire(names)).release();
    const last = await redlock.acquire(names);
    await last.release();
    const node = admin(0);
    await node.flushall();
    const fenceKeys = names.map((r) => `${redlock.keyOf(r)}:fence`);
    const state = async (): Promise<{ marked: boolean; counters: number }> => ({
      marked: (await node.exists('keel:lock:incarnation')) === 1,
      counters: await node.exists(...fenceKeys),
    });
    // Each kill is a reconnect, and each reconnect a check that repairs node 0.
    let kills = 0;
    let sawPartial = false;
    while (kills < 40) {
      await node.call('CLIENT', 'KILL', 'TYPE', 'normal');
      kills++;
      const s = await state();
      expect(s.marked && s.counters < names.length, 'marked with counters missing').toBe(false);
      if (s.counters > 0 && s.counters < names.length) sawPartial = true;
      if (s.marked) break;
      await sleep(20);
    }
    await until(
      async () => {
        const s = await state();
        expect(s.marked && s.counters < names.length, 'marked with counters missing').toBe(false);
        if (!s.marked) await (await redlock.acquire('killrep:0')).release();
        return s.marked;
      },
      15_000,
      'node 0 repaired',
    );
    const counters = await node.mget(...fenceKeys);
    for (let i = 0; i < names.length; i++) {
      expect(tokenOf(counters[i] ?? null), fenceKeys[i]).toBeGreaterThanOrEqual(
        last.fencingTokens[names[i] as string] ?? 0,
      );
    }
    const after = await redlock.acquire(names.slice(0, 2));
    expect(after.fencingTokens['killrep:1']).toBeGreaterThan(last.fencingTokens['killrep:1'] ?? 0);
    await after.release();
    console.log(`repair under kills: ${kills} kills, copy seen part-way: ${String(sawPartial)}`);
  });

  // ---------------------------------------------------------------------------------------------
  // An ACL that takes scripting away.

  it('nodes whose user loses scripting (ACL -@scripting): a minority costs nothing; a majority fails promptly with QuorumUnavailableError naming each node (NOPERM), for locks and permits', async () => {
    const redlock = redlockOf();
    const semaphore = redlock.semaphore('acl:s', { permits: 1 });
    const held = await redlock.acquire('acl:held', { ttlMs: 10_000 });
    await admin(0).acl('SETUSER', 'default', '-@scripting');
    const lock = await redlock.acquire('acl:a');
    await lock.extend(5_000);
    expect(await lock.release()).toEqual({ released: true, expired: false });
    const permit = await semaphore.acquire();
    expect(await permit.release()).toEqual({ released: true, expired: false });

    for (const i of [1, 2]) await admin(i).acl('SETUSER', 'default', '-@scripting');
    for (const attempt of [
      () => redlock.acquire('acl:b', { retryCount: 5 }),
      () => semaphore.acquire({ retryCount: 5 }),
    ]) {
      const error = await within(
        attempt().catch((e: unknown) => e),
        10_000,
        'the acquisition',
      );
      expect(isQuorumUnavailableError(error), String(error)).toBe(true);
      const failed = votesOf(error).filter((v) => v.vote === 'error' && v.kind !== 'pending');
      expect(failed.map((v) => v.node).sort()).toEqual([0, 1, 2]);
      for (const v of failed) {
        expect(v.kind).toBe('script-error');
        expect(v.error).toMatch(/^NOPERM/);
        expect(v.address).toBe(`127.0.0.1:${redis().port(v.node)}`);
      }
    }
    // The lock held from before: its release cannot reach a quorum, and says so.
    expect(await within(held.release(), 10_000, 'the release')).toEqual({
      released: false,
      expired: false,
    });
  });
});
