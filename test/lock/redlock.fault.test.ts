import { getEventListeners } from 'node:events';
import type { Redis } from 'ioredis';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { isClosedError, systemClock, type Clock, type Timer } from '../../src/core/index.js';
import {
  Redlock,
  isLockLostError,
  isLockReleasedError,
  isLockTakenError,
  isQuorumUnavailableError,
  type Lock,
  type NodeVote,
  type RedlockOptions,
} from '../../src/lock/index.js';
import { unmarked } from '../../src/lock/scripts.js';
import { within } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// Fault injection, contention and fencing against five real redis-server processes: nodes
// paused (SIGSTOP), killed and restarted empty, keys deleted behind a holder's back. Timing
// assertions only bound "how long until" something happens, with wide margins; everything
// else is behaviour. After every test: no timer left on the Redlocks' clock (unref'd ones
// included, which process.getActiveResourcesInfo() does not list), no ref'd Timeout beyond the
// baseline, and every Redlock closed.

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const now = (): number => performance.now();

/**
 * The system clock, counting the timers scheduled on it that have neither run nor been
 * cancelled. Given to every Redlock, so a timer the lock leaves behind shows up here.
 */
class TrackingClock implements Clock {
  readonly #pending = new Map<object, number>();
  now(): number {
    return systemClock.now();
  }
  setTimer(callback: () => void, delayMs: number): Timer {
    const key = {};
    this.#pending.set(key, delayMs);
    const inner = systemClock.setTimer(() => {
      this.#pending.delete(key);
      callback();
    }, delayMs);
    const timer: Timer = {
      cancel: () => {
        this.#pending.delete(key);
        inner.cancel();
      },
      unref: () => {
        inner.unref();
        return timer;
      },
    };
    return timer;
  }
  /** Delays of the timers still pending (for failure messages). */
  get pending(): number[] {
    return [...this.#pending.values()];
  }
}

const refTimeouts = (): number =>
  process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

/** When and why `signal` aborts (bounded). */
function abortOf(signal: AbortSignal, ms: number): Promise<{ reason: unknown; at: number }> {
  if (signal.aborted) return Promise.resolve({ reason: signal.reason as unknown, at: now() });
  return within(
    new Promise((resolve) => {
      signal.addEventListener(
        'abort',
        () => {
          resolve({ reason: signal.reason, at: now() });
        },
        { once: true },
      );
    }),
    ms,
    'the abort',
  );
}

/** Polls `condition` every 5 ms until it holds (bounded). */
async function until(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = now() + ms;
  while (!condition()) {
    if (now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(5);
  }
}

const votesOf = (error: unknown): readonly NodeVote[] => (error as { votes: NodeVote[] }).votes;
const nodesVoting = (error: unknown, vote: NodeVote['vote']): number[] =>
  votesOf(error)
    .filter((v) => v.vote === vote)
    .map((v) => v.node);

describeRedis('Redlock fault injection against five real redis-server processes', () => {
  const redis = useRedis({ count: 5 });
  const NODES = [0, 1, 2, 3, 4];
  const NODE_TIMEOUT = 100;

  let clock = new TrackingClock();
  let opened: Redlock[] = [];
  let clients: Redis[] = [];
  let settleMs = NODE_TIMEOUT;
  let timeoutsBefore = 0;

  /** Five fresh ioredis clients (one per node), closed after the test. */
  const freshClients = (): Redis[] => {
    const fresh = redis().clients({ maxRetriesPerRequest: 1 });
    clients.push(...fresh);
    return fresh;
  };

  /** A Redlock on its own connections (like a separate process), closed after the test. */
  const redlockOf = (
    options: Partial<RedlockOptions> = {},
    on: readonly Redis[] = freshClients(),
  ): Redlock => {
    const redlock = new Redlock({
      clients: on,
      clock,
      nodeTimeoutMs: NODE_TIMEOUT,
      retryDelayMs: 10,
      retryJitterMs: 10,
      ...options,
    });
    settleMs = Math.max(settleMs, options.nodeTimeoutMs ?? NODE_TIMEOUT);
    opened.push(redlock);
    return redlock;
  };

  /** Waits until every given client answers (its queued commands — stragglers — have run). */
  const drain = async (of: readonly Redis[]): Promise<void> => {
    await within(
      Promise.all(
        of.map(async (c) => {
          await until(() => c.status === 'ready', 10_000, 'reconnect');
          await c.ping();
        }),
      ),
      15_000,
      'draining the clients',
    );
  };

  /** Who holds `key` where, and for how much longer (every node must be running). */
  const holders = async (key: string): Promise<{ node: number; token: string; pttl: number }[]> => {
    const inspect = redis().clients({ maxRetriesPerRequest: 1 });
    clients.push(...inspect);
    const found = await Promise.all(
      inspect.map(async (c, node) => ({
        node,
        token: unmarked((await c.get(key)) ?? ''),
        pttl: await c.pttl(key),
      })),
    );
    return found.filter((f) => f.token !== '');
  };
  const nodesOf = (held: readonly { node: number }[]): number[] => held.map((h) => h.node);

  beforeEach(() => {
    clock = new TrackingClock();
    opened = [];
    clients = [];
    settleMs = NODE_TIMEOUT;
    timeoutsBefore = refTimeouts();
  });

  afterEach(async () => {
    for (const redlock of opened.splice(0)) {
      await redlock.close();
      await redlock.close(); // twice is harmless
    }
    for (const i of NODES) {
      const state = redis().node(i).state;
      if (state === 'paused') redis().resume(i);
      if (state === 'killed') await redis().restart(i);
    }
    // Per-node calls still in flight end at their node timeout, at the latest.
    await sleep(settleMs + 50);
    const timers = clock.pending;
    const refs = refTimeouts();
    for (const c of clients.splice(0)) c.disconnect();
    await redis().flushAll();
    expect(timers, 'timers left on the Redlock clock (their delays)').toEqual([]);
    expect(refs, 'ref’d Timeouts left').toBeLessThanOrEqual(timeoutsBefore);
  });

  // ---------------------------------------------------------------------------------------------
  // Mutual exclusion and fencing under contention.

  it('mutual exclusion under contention: 20 clients × 10 read–sleep–write sections stay exact, never overlap, and fence in order', async () => {
    const CLIENTS = 20;
    const SECTIONS = 10;
    const redlocks = Array.from({ length: CLIENTS }, () =>
      // A generous node timeout: this test is about exclusion, and twenty fresh connections
      // on a loaded two-core machine turned first answers into timeouts (QuorumUnavailableError).
      redlockOf({ retryCount: 100_000, retryDelayMs: 20, retryJitterMs: 20, nodeTimeoutMs: 1_000 }),
    );
    let shared = 0;
    const intervals: { start: number; end: number }[] = [];
    const tokens: number[] = [];
    const releases: unknown[] = [];
    await Promise.all(
      redlocks.map(async (redlock) => {
        for (let i = 0; i < SECTIONS; i++) {
          const lock = await redlock.acquire('counter', { ttlMs: 5_000 });
          const start = now();
          tokens.push(lock.fencingToken);
          const read = shared;
          await sleep(Math.random() * 3);
          expect(lock.signal.aborted).toBe(false);
          expect(lock.validUntil).toBeGreaterThan(now());
          shared = read + 1;
          intervals.push({ start, end: now() });
          releases.push(await lock.release());
        }
      }),
    );
    expect(shared).toBe(CLIENTS * SECTIONS);
    intervals.sort((a, b) => a.start - b.start);
    for (let i = 1; i < intervals.length; i++) {
      const previous = intervals[i - 1] as { end: number };
      expect((intervals[i] as { start: number }).start).toBeGreaterThanOrEqual(previous.end);
    }
    for (let i = 1; i < tokens.length; i++) {
      expect(tokens[i], `token #${i}`).toBeGreaterThan(tokens[i - 1] as number);
    }
    expect(new Set(releases.map((r) => JSON.stringify(r)))).toEqual(
      new Set([JSON.stringify({ released: true, expired: false })]),
    );
  });

  it('fencing tokens strictly increase across ~1500 contended handoffs while random minority nodes pause and resume', async () => {
    const RESOURCES = ['fence:0', 'fence:1', 'fence:2', 'fence:3'];
    const WORKERS_PER_RESOURCE = 4;
    const TARGET = 1_500;
    const MINIMUM = 600; // a slow box may not reach the target in time; this many still mean something
    const deadline = now() + 14_000;
    const paused = new Set<number>();
    const tokens = new Map<string, number[]>(RESOURCES.map((r) => [r, []]));
    const holder = new Map<string, number>();
    const overlaps: string[] = [];
    const unexpected: unknown[] = [];
    let total = 0;
    let duringOnePaused = 0;
    let duringTwoPaused = 0;
    let refused = 0;
    const run = { done: false };

    // The fault loop: every 30–120 ms, pause a random running node (never more than two at a
    // time: Redlock's assumptions hold) or resume a paused one.
    const faults = (async () => {
      for (;;) {
        await sleep(30 + Math.random() * 90);
        if (run.done) break;
        const resume = paused.size === 2 || (paused.size > 0 && Math.random() < 0.5);
        if (resume) {
          const node = [...paused][Math.floor(Math.random() * paused.size)] as number;
          redis().resume(node);
          paused.delete(node);
        } else {
          const running = NODES.filter((i) => !paused.has(i));
          const node = running[Math.floor(Math.random() * running.length)] as number;
          redis().pause(node);
          paused.add(node);
        }
      }
      for (const node of paused) redis().resume(node);
      paused.clear();
    })();

    const worker = async (resource: string, id: number): Promise<void> => {
      const redlock = redlockOf({ nodeTimeoutMs: 80, retryDelayMs: 5, retryJitterMs: 10 });
      while (!run.done) {
        if (now() > deadline) {
          run.done = true;
          break;
        }
        let lock: Lock;
        try {
          lock = await redlock.acquire(resource, { ttlMs: 3_000, retryCount: 20 });
        } catch (error) {
          if (isLockTakenError(error) || isQuorumUnavailableError(error)) refused++;
          else unexpected.push(error);
          continue;
        }
        // The critical section: record the token in acquisition order, yield, check.
        if (holder.has(resource)) overlaps.push(`${resource}: ${id} while ${holder.get(resource)}`);
        holder.set(resource, id);
        (tokens.get(resource) as number[]).push(lock.fencingToken);
        if (paused.size >= 1) duringOnePaused++;
        if (paused.size === 2) duringTwoPaused++;
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (holder.get(resource) !== id) overlaps.push(`${resource}: ${id} displaced`);
        if (lock.signal.aborted) overlaps.push(`${resource}: ${id} lost its lock in the section`);
        holder.delete(resource);
        if (++total >= TARGET) run.done = true;
        await lock.release();
      }
    };

    await Promise.all(
      RESOURCES.flatMap((resource, r) =>
        Array.from({ length: WORKERS_PER_RESOURCE }, (_, w) =>
          worker(resource, r * WORKERS_PER_RESOURCE + w),
        ),
      ),
    );
    run.done = true;
    await faults;

    expect(unexpected).toEqual([]);
    expect(overlaps).toEqual([]);
    for (const [resource, list] of tokens) {
      for (let i = 1; i < list.length; i++) {
        expect(list[i], `${resource} token #${i}`).toBeGreaterThan(list[i - 1] as number);
      }
    }
    console.info(
      `fencing under faults: ${total} acquisitions (${duringOnePaused} with ≥1 node paused, ` +
        `${duringTwoPaused} with 2 paused), ${refused} refusals`,
    );
    expect(total).toBeGreaterThanOrEqual(MINIMUM);
    expect(duringOnePaused).toBeGreaterThan(0);
    expect(duringTwoPaused).toBeGreaterThan(0);
  }, 30_000);

  // ---------------------------------------------------------------------------------------------
  // Paused nodes.

  it.each([[[2]], [[0, 4]]])(
    'with nodes %j paused: the live quorum grants without waiting on the hung nodes, others are refused as "taken", and nothing is left behind',
    async (pausedNodes) => {
      const NT = 500;
      const aClients = freshClients();
      const bClients = freshClients();
      const a = redlockOf({ nodeTimeoutMs: NT, retryCount: 0 }, aClients);
      const b = redlockOf({ nodeTimeoutMs: NT, retryCount: 0 }, bClients);
      // The first acquisition on a deployment whose nodes have no fencing incarnation keys yet
      // waits for every node (or the node timeout) before bootstrapping them: it must tell a new
      // deployment from a majority that lost its counters. A deployment does that once.
      await (await a.acquire('warm-up', { retryCount: 5 })).release();
      for (const i of pausedNodes) redis().pause(i);

      let t = now();
      const lock = await a.acquire('minority', { ttlMs: 10_000 });
      expect(now() - t, 'decided by the live quorum, not by the node timeout').toBeLessThan(NT / 2);
      expect(lock.validUntil - now()).toBeGreaterThan(10_000 - NT);

      t = now();
      const taken = await b.acquire('minority').catch((e: unknown) => e);
      expect(isLockTakenError(taken), String(taken)).toBe(true);
      expect(nodesVoting(taken, 'taken').length).toBeGreaterThanOrEqual(3);
      // A node the first acquire was decided without may still run b's attempt first (Redis
      // serves its connections in no promised order): b may win that node, never a quorum.
      expect(nodesVoting(taken, 'granted').length).toBeLessThan(3);
      expect(now() - t, 'bounded by one node timeout (the undo waits for every node)').toBeLessThan(
        NT + 1_500,
      );

      t = now();
      await expect(lock.release()).resolves.toEqual({ released: true, expired: false });
      expect(now() - t).toBeLessThan(NT + 1_500);

      // Resumed, the hung nodes run what was queued for them — every attempt's script and then
      // its release — so no key is left anywhere and the lock is free at once.
      for (const i of pausedNodes) redis().resume(i);
      await drain([...aClients, ...bClients]);
      expect(await holders(a.keyOf('minority'))).toEqual([]);
      const next = await b.acquire('minority');
      expect(next.fencingToken).toBeGreaterThan(lock.fencingToken);
      await next.release();
    },
  );

  it('a round is timed out at its own node timeout, not at that of an earlier round that armed the one timer of the rounds', async () => {
    const NT = 400;
    const redlock = redlockOf({ nodeTimeoutMs: NT, retryCount: 0 });
    // An answered acquire: the timer of the rounds' timeouts stays armed for it, about NT from
    // now (see Quorum#watch).
    const lock = await redlock.acquire('watchdog');
    await sleep(NT / 2);
    for (const i of [0, 2, 3]) redis().pause(i);
    // One round (a release is never retried), with a majority that does not answer.
    const t = now();
    const outcome = await within(lock.release(), 20_000, 'release with 3 of 5 paused');
    const took = now() - t;
    expect(outcome).toEqual({ released: false, expired: false });
    // The timer fired for the earlier round about NT / 2 after t: this round must not have been
    // timed out then (a timer may fire up to a tick before its time: 20 ms of slack), and was
    // timed out at its own deadline (a generous bound: a loaded machine).
    expect(took).toBeGreaterThanOrEqual(NT - 20);
    expect(took).toBeLessThan(10 * NT + 2_000);
  });

  it('with 3 of 5 paused: QuorumUnavailableError promptly, naming the failed nodes, and nothing left behind', async () => {
    const NT = 200;
    const own = freshClients();
    // A huge retry budget and a long retry delay: only giving up on the quorum can be prompt.
    const redlock = redlockOf(
      { nodeTimeoutMs: NT, retryCount: 1_000, retryDelayMs: 5_000, retryJitterMs: 50 },
      own,
    );
    const pausedNodes = [0, 2, 3];
    for (const i of pausedNodes) redis().pause(i);

    let t = now();
    const error = await within(
      redlock.acquire('majority').catch((e: unknown) => e),
      20_000,
      'acquire with 3 of 5 paused',
    );
    expect(isQuorumUnavailableError(error), String(error)).toBe(true);
    expect(now() - t, 'a few node timeouts, not retries').toBeLessThan(10 * NT + 2_000);
    expect((error as { resources: string[] }).resources).toEqual(['majority']);
    expect(votesOf(error)).toHaveLength(5);
    expect(nodesVoting(error, 'error')).toEqual(pausedNodes);
    for (const v of votesOf(error).filter((x) => x.vote === 'error')) {
      expect(v.error).toMatch(/timed out/);
    }
    expect(nodesVoting(error, 'granted')).toEqual([1, 4]);

    // using() never runs its routine without the lock.
    let ran = false;
    const viaUsing = await within(
      redlock
        .using('majority', {}, () => {
          ran = true;
          return Promise.resolve();
        })
        .catch((e: unknown) => e),
      20_000,
      'using() with 3 of 5 paused',
    );
    expect(isQuorumUnavailableError(viaUsing)).toBe(true);
    expect(ran).toBe(false);

    // Every node hung: still a typed failure after a few rounds, five failed votes. (With no
    // node granting, the loop waits its retry delay between those rounds, so this one uses a
    // usual delay; the bound is a handful of retries, not the retry budget.)
    const RETRY = 200;
    const quick = redlockOf(
      { nodeTimeoutMs: NT, retryCount: 1_000, retryDelayMs: RETRY, retryJitterMs: 50 },
      own,
    );
    redis().pause(1);
    redis().pause(4);
    t = now();
    const all = await within(
      quick.acquire('majority').catch((e: unknown) => e),
      20_000,
      'acquire with 5 of 5 paused',
    );
    expect(isQuorumUnavailableError(all)).toBe(true);
    expect(nodesVoting(all, 'error')).toEqual(NODES);
    expect(now() - t).toBeLessThan(10 * NT + 5 * (RETRY + 50) + 2_000);

    for (const i of NODES) redis().resume(i);
    await drain(own);
    expect(await holders(redlock.keyOf('majority'))).toEqual([]);
    const lock = await redlock.acquire('majority', { retryCount: 0 });
    await lock.release();
  });

  // ---------------------------------------------------------------------------------------------
  // Killed and restarted nodes.

  it('a minority killed and restarted empty after ≥ ttl: exclusion holds, the holder keeps its quorum, tokens still increase', async () => {
    const TTL = 600;
    const killed = [1, 3];
    const aClients = freshClients();
    const bClients = freshClients();
    const a = redlockOf({}, aClients);
    const b = redlockOf({ retryCount: 0 }, bClients);
    const key = a.keyOf('phoenix');

    const held = await a.using('phoenix', { ttlMs: TTL }, async (signal, lock) => {
      for (const i of killed) await redis().kill(i);
      const downSince = now();
      let refusals = 0;
      // Down for longer than a ttl — the holder's automatic extensions carry it on the rest.
      while (now() - downSince < TTL + 150) {
        const attempt = await b.acquire('phoenix').catch((e: unknown) => e);
        expect(isLockTakenError(attempt), String(attempt)).toBe(true);
        refusals++;
        await sleep(40);
      }
      expect(refusals).toBeGreaterThan(0);
      for (const i of killed) await redis().restart(i);
      await drain(killed.flatMap((i) => [aClients[i] as Redis, bClients[i] as Redis]));
      // The restarted nodes are empty and would grant; the other three still hold the lock.
      expect(nodesOf(await holders(key))).toEqual([0, 2, 4]);
      for (let k = 0; k < 3; k++) {
        const attempt = await b.acquire('phoenix').catch((e: unknown) => e);
        expect(isLockTakenError(attempt), String(attempt)).toBe(true);
        expect(nodesVoting(attempt, 'taken').length).toBeGreaterThanOrEqual(3);
        await sleep(40);
      }
      await lock.extend(TTL);
      expect(signal.aborted).toBe(false);
      expect(lock.signal.aborted).toBe(false);
      return lock.fencingToken;
    });

    const next = await b.acquire('phoenix');
    // The restarted nodes lost their fencing counters; the survivors' carry the order on.
    expect(next.fencingToken).toBeGreaterThan(held);
    await next.release();
  });

  // ---------------------------------------------------------------------------------------------
  // Keys deleted behind the holder's back.

  it("keys deleted on every node inside using(): the routine's signal aborts with LockLostError within one extension interval, well before the validity deadline", async () => {
    const TTL = 2_000;
    const redlock = redlockOf();
    const other = redlockOf({ retryCount: 0 });
    const seen = await redlock.using('vanish', { ttlMs: TTL }, async (signal, lock) => {
      // After the first automatic extension the next one is a full interval (~ttl/2) away.
      const first = lock.validUntil;
      await until(() => lock.validUntil !== first, 3 * TTL, 'the first extension');
      const deadline = lock.validUntil;
      const flushedAt = now();
      await redis().flushAll();
      const { reason, at } = await abortOf(signal, 3 * TTL);
      return { deadline, flushedAt, reason, at, lockLost: lock.signal.aborted };
    });
    expect(isLockLostError(seen.reason), String(seen.reason)).toBe(true);
    expect(seen.lockLost).toBe(true);
    // One extension interval is ~(ttl − drift)/2 ≈ 990 ms; the deadline was ~1980 ms away.
    expect(seen.at - seen.flushedAt).toBeLessThan(TTL * 0.75);
    expect(seen.at).toBeLessThan(seen.deadline);
    const next = await other.acquire('vanish');
    await next.release();
  });

  it('keys deleted on a minority of nodes do not cost the holder its lock', async () => {
    const TTL = 500;
    const redlock = redlockOf();
    const other = redlockOf({ retryCount: 0 });
    await redlock.using('dent', { ttlMs: TTL }, async (signal, lock) => {
      await redis().flush(0);
      await redis().flush(4);
      // Two more extensions, each refused by the flushed nodes and granted by the rest.
      for (let k = 0; k < 2; k++) {
        const before = lock.validUntil;
        await until(() => lock.validUntil !== before, 3 * TTL, 'an extension');
      }
      expect(signal.aborted).toBe(false);
      const attempt = await other.acquire('dent').catch((e: unknown) => e);
      expect(isLockTakenError(attempt), String(attempt)).toBe(true);
    });
  });

  // ---------------------------------------------------------------------------------------------
  // Error paths.

  it('an expired lock: extend fails, release reports { released: false, expired: true } and never throws', async () => {
    const redlock = redlockOf();
    const lock = await redlock.acquire('expired', { ttlMs: 150 });
    const { reason } = await abortOf(lock.signal, 2_000);
    expect(isLockLostError(reason)).toBe(true);
    await sleep(100); // gone from Redis too
    await expect(lock.extend()).rejects.toSatisfy(isLockLostError);
    await expect(lock.release()).resolves.toEqual({ released: false, expired: true });
    await expect(lock.release()).resolves.toEqual({ released: false, expired: true });
  });

  it('a lock lost by a failed extension: the signal aborts with that error; release still deletes its keys and reports { released: true, expired: true }', async () => {
    const own = freshClients();
    const redlock = redlockOf({}, own);
    const other = redlockOf({ retryCount: 0 });
    const lock = await redlock.acquire('lost', { ttlMs: 10_000 });
    for (const i of [0, 1, 2]) redis().pause(i);
    const error = await lock.extend().catch((e: unknown) => e);
    expect(isLockLostError(error)).toBe(true);
    expect(lock.signal.aborted).toBe(true);
    expect(lock.signal.reason).toBe(error);
    for (const i of [0, 1, 2]) redis().resume(i);
    await drain(own);
    await expect(lock.release()).resolves.toEqual({ released: true, expired: true });
    const next = await other.acquire('lost');
    await next.release();
  });

  it('release with a majority paused reports { released: false, expired: false } (nothing says it expired: it did not) within a node timeout, and the queued releases clean up on resume', async () => {
    const NT = 300;
    const own = freshClients();
    const redlock = redlockOf({ nodeTimeoutMs: NT }, own);
    const other = redlockOf({ retryCount: 0 });
    const lock = await redlock.acquire('cut-off', { ttlMs: 10_000 });
    for (const i of [1, 2, 3]) redis().pause(i);
    const t = now();
    const result = await within(lock.release(), 10_000, 'release with 3 of 5 paused');
    expect(result).toEqual({ released: false, expired: false });
    expect(now() - t).toBeLessThan(NT + 1_500);
    expect(lock.signal.aborted).toBe(true);
    expect(isLockReleasedError(lock.signal.reason)).toBe(true);
    for (const i of [1, 2, 3]) redis().resume(i);
    await drain(own);
    const next = await other.acquire('cut-off');
    await next.release();
  });

  it("using() keeps the routine's error — thrown, after the lock was lost, or with a release that cannot reach a quorum — and releases", async () => {
    const own = freshClients();
    const redlock = redlockOf({ retryCount: 0 }, own);
    const others = freshClients();
    const other = redlockOf({ retryCount: 0 }, others);
    // Connected first: with no retries, a first call that also waits for connections to open
    // could time out on a loaded machine (100 ms per node), and this test is not about that.
    await Promise.all([...own, ...others].map((c) => c.ping()));
    const failure = new Error('routine failed');
    const free = async (): Promise<void> => {
      const lock = await other.acquire('boom');
      await lock.release();
    };

    await expect(redlock.using('boom', {}, () => Promise.reject(failure))).rejects.toBe(failure);
    await free();

    // Thrown synchronously by a non-async routine.
    await expect(
      redlock.using('boom', {}, () => {
        throw failure;
      }),
    ).rejects.toBe(failure);
    await free();

    // After the lock was lost under it.
    const afterLoss = redlock.using('boom', { ttlMs: 300 }, async (signal) => {
      await redis().flushAll();
      await abortOf(signal, 3_000);
      throw failure;
    });
    await expect(afterLoss).rejects.toBe(failure);
    await free();

    // The release in `finally` cannot reach a quorum: still the routine's error, promptly.
    const cutOff = redlock.using('boom', {}, () => {
      for (const i of [0, 1, 2]) redis().pause(i);
      return Promise.reject(failure);
    });
    await expect(within(cutOff, 5_000, 'using() with a cut-off release')).rejects.toBe(failure);
    for (const i of [0, 1, 2]) redis().resume(i);
    await drain(own);
    await free();
  });

  it.each([true, false])(
    "an abort while waiting for a held lock rejects with the signal's reason at once (notifications: %s), leaving no listener",
    async (notifications) => {
      const holder = redlockOf();
      // Without the abort the waiter would sleep 10 s between attempts.
      const waiter = redlockOf({
        notifications,
        retryCount: 1_000,
        retryDelayMs: 10_000,
        retryJitterMs: 0,
      });
      const lock = await holder.acquire('wait', { ttlMs: 30_000 });
      const controller = new AbortController();
      const reason = new Error('gave up');
      const waiting = waiter
        .acquire('wait', { signal: controller.signal })
        .catch((e: unknown) => e);
      await sleep(150); // it has tried, and now waits
      const t = now();
      controller.abort(reason);
      expect(await waiting).toBe(reason);
      expect(now() - t).toBeLessThan(1_000);
      expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
      await lock.release();
    },
  );

  it('an already-aborted signal rejects with its reason before any round (every node hung)', async () => {
    const redlock = redlockOf({ nodeTimeoutMs: 1_000 });
    for (const i of NODES) redis().pause(i);
    const reason = new Error('too late');
    const t = now();
    await expect(redlock.acquire('early', { signal: AbortSignal.abort(reason) })).rejects.toBe(
      reason,
    );
    let ran = false;
    await expect(
      redlock.using('early', { signal: AbortSignal.abort(reason) }, () => {
        ran = true;
        return Promise.resolve();
      }),
    ).rejects.toBe(reason);
    expect(ran).toBe(false);
    expect(now() - t).toBeLessThan(500); // a round would have taken the 1 s node timeout
  });

  it("aborting the caller's signal during using() aborts the routine's signal with that reason; the lock is released and no listener is left", async () => {
    const redlock = redlockOf();
    const other = redlockOf({ retryCount: 0 });
    const controller = new AbortController();
    const reason = new Error('shutting down');
    const seen = await redlock.using(
      'stop',
      { signal: controller.signal },
      async (signal, lock) => {
        setTimeout(() => {
          controller.abort(reason);
        }, 20);
        const aborted = await abortOf(signal, 3_000);
        expect(lock.signal.aborted).toBe(false); // the lock itself was not lost
        return aborted.reason;
      },
    );
    expect(seen).toBe(reason);
    const next = await other.acquire('stop');
    await next.release();
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });

  it('disposing twice is harmless, for locks and Redlocks; a closed Redlock refuses, its locks release', async () => {
    const redlock = redlockOf({ retryCount: 0 });
    const lock = await redlock.acquire('dispose');
    await lock[Symbol.asyncDispose]();
    await lock[Symbol.asyncDispose]();
    await expect(lock.release()).resolves.toMatchObject({ released: false });
    await expect(lock.extend()).rejects.toSatisfy(isLockReleasedError);
    let held: Lock | undefined;
    {
      await using again = await redlock.acquire('dispose');
      held = again;
      await again.release(); // and again when the block ends
    }
    expect(held.signal.aborted).toBe(true);
    const last = await redlock.acquire('dispose');
    await redlock.close();
    await redlock[Symbol.asyncDispose]();
    await expect(redlock.acquire('dispose')).rejects.toSatisfy(isClosedError);
    await expect(last.release()).resolves.toMatchObject({ released: true });
  });

  it('release() during an in-flight extend() leaves no timer behind', async () => {
    const redlock = redlockOf();
    const lock = await redlock.acquire('race', { ttlMs: 5_000 });
    await Promise.allSettled([lock.extend(5_000), lock.release()]);
    expect(lock.signal.aborted).toBe(true);
    await sleep(NODE_TIMEOUT + 50);
    expect(clock.pending).toEqual([]);
  });
});
