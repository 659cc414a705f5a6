import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { systemClock, type Clock, type Timer } from '../../src/core/index.js';
import {
  Redlock,
  isLockLostError,
  isLockReleasedError,
  isLockTakenError,
  isLockTooSlowError,
  isQuorumUnavailableError,
  type Lock,
  type ReleaseResult,
} from '../../src/lock/index.js';
import { BATCH, unmarked } from '../../src/lock/scripts.js';
import { throughNet, type Net } from '../support/latency.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// Model-based tests of Redlock against five real redis-server processes. fast-check generates
// sequences of acquire / concurrent acquire / extend / release / wait / expire / pause / resume /
// network latency / keys deleted on a minority / keys wiped on every running node, from three
// Redlock clients ("processes", each on its own connections), and checks after every step:
//
// - never two *valid* holders of one resource (valid: signal not aborted, deadline ahead, not
//   released, keys not wiped by the test), and no two validity intervals overlap;
// - a returned lock has validity above `minValidityMs` when it is returned, and its token is on
//   a quorum of nodes;
// - fencing tokens strictly increase, per resource, in the order locks are returned;
// - extend and release do exactly what the nodes allow: an extension succeeds iff a quorum still
//   holds the token; a release never throws, reports expiry, and never touches another
//   holder's keys.
//
// Latency is injected on the way to each node (a delay in front of an ioredis client, in
// order, like a slow link), which makes some grants too slow to be returned.

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const now = (): number => performance.now();

const NODES = [0, 1, 2, 3, 4];
const QUORUM = 3;
const PROCS = 3;
const RESOURCES = ['x', 'y'] as const;
/** Above the largest injected latency (160 ms) with room for a busy machine's scheduling. */
const NODE_TIMEOUT = 300;
const MIN_VALIDITY = 100;
const LATENCIES = [0, 0, 10, 60, 160] as const;
/** A lock this far from its deadline cannot expire during one round (latency + slack). */
const MARGIN = NODE_TIMEOUT + 40;

/** The system clock, counting timers that have neither run nor been cancelled. */
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
  get pending(): number[] {
    return [...this.#pending.values()];
  }
}

async function until(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = now() + ms;
  while (!condition()) {
    if (now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(5);
  }
}

interface Handle {
  readonly id: number;
  readonly proc: number;
  readonly resources: readonly string[];
  readonly lock: Lock;
  readonly returnedAt: number;
  /** Learned from the nodes right after the lock was returned. */
  token: string | undefined;
  released: boolean;
  /** The test deleted its keys on every running node (outside Redlock's fault model). */
  wiped: boolean;
  /** When it stopped counting as held: release called, or keys wiped. */
  endedAt: number | undefined;
  abortedAt: number | undefined;
}

/** Model and system at once: fast-check's `check` reads it, `run` drives and updates it. */
interface World {
  readonly redlocks: readonly Redlock[];
  readonly handles: Handle[];
  readonly paused: Set<number>;
  readonly lastFence: Map<string, number>;
}

type Cmd = fc.AsyncCommand<World, World>;

/** What the runs exercised (printed, so a property that stopped reaching its cases shows). */
const stats = {
  commands: 0,
  granted: 0,
  refused: 0,
  extended: 0,
  extensionsRefused: 0,
  released: 0,
  releasedExpired: 0,
  minorityDeletes: 0,
  wipes: 0,
  pauses: 0,
  /** Refusals although a quorum granted the last attempt: too slow to leave enough validity. */
  tooSlow: 0,
};

describeRedis('Redlock model-based properties against five real redis-server processes', () => {
  const redis = useRedis({ count: 5 });
  const net: Net = {
    latency: [0, 0, 0, 0, 0],
    inflight: [0, 0, 0, 0, 0],
    calls: NODES.map(() => new Set()),
  };
  const clock = new TrackingClock();
  let procClients: Redis[][] = [];
  let inspect: Redis[] = [];

  beforeAll(() => {
    procClients = Array.from({ length: PROCS }, () =>
      redis()
        .clients({ maxRetriesPerRequest: 1 })
        .map((client, node) => throughNet(client, node, net)),
    );
    inspect = redis().clients({ maxRetriesPerRequest: 1 });
  });

  // Load every lock script on every node first: a node's first EVALSHA of a script fails with
  // NOSCRIPT and costs a second round trip (EVAL), which under injected latency would make the
  // step-by-step expectations below depend on which script a node has seen. (FLUSHALL between
  // runs keeps the script cache.)
  beforeAll(async () => {
    // A generous node timeout: first connections on a busy machine may take a while.
    const warm = new Redlock({
      clients: procClients[0] as Redis[],
      clock,
      retryCount: 0,
      nodeTimeoutMs: 5_000,
    });
    // The batch script too (calls of one tick to a node go out as one batch).
    await Promise.all(inspect.map((c) => c.script('LOAD', BATCH.source)));
    const lock = await warm.acquire('warm-up');
    await lock.extend();
    await lock.release();
    // Counters out of step on one node: the next grant runs the fencing sync round too.
    await (inspect[0] as Redis).incr(`${warm.keyOf('warm-up')}:fence`);
    const synced = await warm.acquire('warm-up');
    await synced.release();
    await warm.close();
    await redis().flushAll();
  });

  afterAll(async () => {
    // Nothing the Redlocks scheduled outlives the properties.
    await sleep(NODE_TIMEOUT + 50);
    expect(clock.pending, 'timers left on the Redlock clock').toEqual([]);
  });

  const running = (w: World): number[] => NODES.filter((i) => !w.paused.has(i));

  /** Waits until no script call to these nodes is in flight (stragglers have landed). */
  const settled = (nodes: readonly number[]): Promise<void> =>
    until(() => nodes.every((i) => net.inflight[i] === 0), 10_000, 'calls in flight');

  /** Per running node: the value of every key, or undefined. */
  const snapshot = async (w: World, keys: readonly string[]): Promise<Map<number, string[]>> => {
    const out = new Map<number, string[]>();
    await Promise.all(
      running(w).map(async (node) => {
        const values = await Promise.all(keys.map((k) => (inspect[node] as Redis).get(k)));
        out.set(
          node,
          values.map((v) => unmarked(v ?? '')),
        );
      }),
    );
    return out;
  };

  const keysOf = (w: World, resources: readonly string[]): string[] =>
    resources.map((r) => (w.redlocks[0] as Redlock).keyOf(r));

  /** Running nodes holding `token` on every one of `keys`. */
  const holding = (snap: Map<number, string[]>, token: string): number => {
    let n = 0;
    for (const values of snap.values()) if (values.every((v) => v === token)) n++;
    return n;
  };

  const isValid = (h: Handle, at: number): boolean =>
    !h.released && !h.wiped && !h.lock.signal.aborted && h.lock.validUntil > at;

  const overlapping = (a: readonly string[], b: readonly string[]): boolean =>
    a.some((r) => b.includes(r));

  /** Checks a freshly returned lock and records it. */
  const returned = async (w: World, proc: number, lock: Lock, at: number): Promise<void> => {
    // Validity above the minimum when returned (1 ms for the microtasks between its check and ours).
    expect(lock.validUntil - at, 'validity when returned').toBeGreaterThan(MIN_VALIDITY - 1);
    for (const other of w.handles) {
      if (overlapping(other.resources, lock.resources) && isValid(other, at)) {
        throw new Error(
          `two valid holders: #${other.id} (proc ${other.proc}, [${other.resources.join()}]) ` +
            `and a new lock of proc ${proc} on [${lock.resources.join()}]`,
        );
      }
    }
    for (const r of lock.resources) {
      const token = lock.fencingTokens[r] as number;
      const last = w.lastFence.get(r) ?? 0;
      expect(token, `fencing token of ${r}`).toBeGreaterThan(last);
      w.lastFence.set(r, token);
    }
    const h: Handle = {
      id: w.handles.length,
      proc,
      resources: lock.resources,
      lock,
      returnedAt: at,
      token: undefined,
      released: false,
      wiped: false,
      endedAt: undefined,
      abortedAt: undefined,
    };
    lock.signal.addEventListener(
      'abort',
      () => {
        h.abortedAt ??= now();
      },
      { once: true },
    );
    w.handles.push(h);
    stats.granted++;
    // Its token is on a quorum of running nodes (paused nodes cannot have granted it).
    const snap = await snapshot(w, keysOf(w, lock.resources));
    if (isValid(h, now())) {
      const counts = new Map<string, number>();
      for (const values of snap.values()) {
        const v = values[0] as string;
        if (v !== '' && values.every((x) => x === v)) counts.set(v, (counts.get(v) ?? 0) + 1);
      }
      const token = [...counts].find(([, n]) => n >= QUORUM)?.[0];
      expect(token, `lock #${h.id} on a quorum of nodes`).toBeDefined();
      h.token = token;
    }
  };

  const acquireOutcome = (error: unknown): void => {
    // Not getting the lock is fine — as long as it is said with a typed error.
    if (
      !isLockTakenError(error) &&
      !isQuorumUnavailableError(error) &&
      !isLockTooSlowError(error)
    ) {
      throw error;
    }
    stats.refused++;
    // Granted by a quorum too late is its own error now, not "taken".
    if (isLockTooSlowError(error)) stats.tooSlow++;
  };

  const checkInvariants = (w: World): void => {
    stats.commands++;
    const at = now();
    for (const r of RESOURCES) {
      const valid = w.handles.filter((h) => h.resources.includes(r) && isValid(h, at));
      expect(valid.length, `valid holders of ${r}`).toBeLessThanOrEqual(1);
    }
  };

  class Acquire implements Cmd {
    constructor(
      readonly proc: number,
      readonly resources: readonly string[],
      readonly ttlMs: number,
      readonly retryCount: number,
    ) {}
    check = (): boolean => true;
    async run(w: World): Promise<void> {
      const redlock = w.redlocks[this.proc] as Redlock;
      try {
        const lock = await redlock.acquire(this.resources, {
          ttlMs: this.ttlMs,
          retryCount: this.retryCount,
        });
        await returned(w, this.proc, lock, now());
      } catch (error) {
        acquireOutcome(error);
      }
      checkInvariants(w);
    }
    toString = (): string =>
      `acquire(p${this.proc}, [${this.resources.join()}], ttl ${this.ttlMs}, retries ${this.retryCount})`;
  }

  /** Several processes reach for the same resources at the same moment. */
  class Race implements Cmd {
    constructor(
      readonly procs: readonly number[],
      readonly resources: readonly string[],
      readonly ttlMs: number,
    ) {}
    check = (): boolean => true;
    async run(w: World): Promise<void> {
      const checks: Promise<void>[] = [];
      await Promise.all(
        this.procs.map((proc) =>
          (w.redlocks[proc] as Redlock)
            .acquire(this.resources, { ttlMs: this.ttlMs, retryCount: 1 })
            .then(
              (lock) => {
                checks.push(returned(w, proc, lock, now()));
              },
              (error: unknown) => {
                acquireOutcome(error);
              },
            ),
        ),
      );
      await Promise.all(checks);
      checkInvariants(w);
    }
    toString = (): string =>
      `race([${this.procs.map((p) => `p${p}`).join()}], [${this.resources.join()}], ttl ${this.ttlMs})`;
  }

  class Extend implements Cmd {
    constructor(
      readonly pick: number,
      readonly ttlMs: number,
    ) {}
    check = (w: Readonly<World>): boolean => w.handles.length > 0;
    async run(w: World): Promise<void> {
      const h = w.handles[this.pick % w.handles.length] as Handle;
      const at = now();
      let expected: boolean | undefined;
      if (h.released || h.wiped || h.lock.signal.aborted) expected = false;
      else if (h.token !== undefined && h.lock.validUntil - at > MARGIN) {
        await settled(running(w));
        const snap = await snapshot(w, keysOf(w, h.resources));
        // Paused nodes cannot answer: only running nodes still holding the token can agree.
        expected = holding(snap, h.token) >= QUORUM;
      }
      let tooShort = false as boolean; // set in the rejection handler
      const outcome = await h.lock.extend(this.ttlMs).then(
        () => true,
        (error: unknown) => {
          // Lost, or (a handle released before) released: never anything else.
          if (!isLockLostError(error) && !(h.released && isLockReleasedError(error))) throw error;
          tooShort = isLockLostError(error) && error.kind === 'extension-too-short';
          return false;
        },
      );
      const after = now();
      if (tooShort) {
        // Refused for the validity the round left (latency), not for the nodes' answers: the
        // handle's deadline says how little that was.
        expect(h.lock.validUntil - after, `extend #${h.id} too short`).toBeLessThanOrEqual(
          MIN_VALIDITY,
        );
      } else if (expected !== undefined) expect(outcome, `extend #${h.id}`).toBe(expected);
      // An extension that succeeds leaves more than the minimum validity (1 ms for microtasks).
      if (outcome) expect(h.lock.validUntil - after).toBeGreaterThan(MIN_VALIDITY - 1);
      if (outcome) stats.extended++;
      else stats.extensionsRefused++;
      if (outcome) {
        // An extension that succeeds keeps the lock valid: a lock lost while the round was in
        // flight rejects instead.
        expect(h.lock.signal.aborted).toBe(false);
        expect(h.lock.validUntil).toBeLessThanOrEqual(now() + this.ttlMs);
      } else {
        expect(h.lock.signal.aborted).toBe(true);
        // A release is not a loss: a handle released before says so, unless it was lost first.
        const reason: unknown = h.lock.signal.reason;
        expect(isLockLostError(reason) || (h.released && isLockReleasedError(reason))).toBe(true);
      }
      checkInvariants(w);
    }
    toString = (): string => `extend(#${this.pick}, ttl ${this.ttlMs})`;
  }

  class Release implements Cmd {
    constructor(readonly pick: number) {}
    check = (w: Readonly<World>): boolean => w.handles.length > 0;
    async run(w: World): Promise<void> {
      const h = w.handles[this.pick % w.handles.length] as Handle;
      await settled(running(w));
      // Other holders of these resources, and how many nodes hold their token right now.
      const others = w.handles.filter(
        (o) =>
          o !== h &&
          o.token !== undefined &&
          overlapping(o.resources, h.resources) &&
          isValid(o, now()),
      );
      const before = new Map<Handle, number>();
      for (const o of others) {
        before.set(o, holding(await snapshot(w, keysOf(w, o.resources)), o.token as string));
      }
      const snap = await snapshot(w, keysOf(w, h.resources));
      const mine = h.token === undefined ? 0 : holding(snap, h.token);
      // Running nodes that do not hold it: they answer "not mine"; paused ones say nothing.
      const notMine = snap.size - mine;
      const at = now();
      const wasReleased = h.released;
      const clearlyValid =
        !h.released &&
        !h.wiped &&
        !h.lock.signal.aborted &&
        h.token !== undefined &&
        h.lock.validUntil - at > MARGIN;
      const lapsed = h.lock.signal.aborted || at >= h.lock.validUntil;
      if (!h.released) h.endedAt ??= at;
      h.released = true;

      const result: ReleaseResult = await h.lock.release(); // must never throw
      if (result.released) stats.released++;
      if (result.expired) stats.releasedExpired++;
      // Running nodes whose answer had not come back when the round ended: a straggler of a
      // round decided without it, or a call that ran past the node timeout (on a loaded machine
      // even the largest injected latency plus scheduling can pass it). Nothing but microtasks
      // ran since the round ended, so no answer landed in between. Those nodes said nothing to
      // the round, so the counts it was judged on leave them out. Only this release's own call
      // (the one naming its token) counts: other calls may be in flight to a node that did
      // answer, such as the lock's periodic incarnation check, sent about once a second to
      // every node (it made a node that had answered look late, stop 33's CI failure).
      const releasing = (node: number): boolean =>
        h.token !== undefined &&
        [...(net.calls?.[node] ?? [])].some((args) => args.includes(h.token as string));
      let lateMine = 0;
      let lateNotMine = 0;
      for (const [node, values] of snap) {
        if (!releasing(node)) continue;
        if (h.token !== undefined && values.every((v) => v === h.token)) lateMine++;
        else lateNotMine++;
      }
      const answeredMine = mine - lateMine;
      const answeredNotMine = notMine - lateNotMine;

      // Neither released nor expired only when the round could not tell: too few answers.
      if (!wasReleased && !result.expired && !result.released) {
        expect(
          answeredNotMine,
          `release #${h.id}: undecided with ${notMine} nodes saying not mine`,
        ).toBeLessThanOrEqual(NODES.length - QUORUM);
        expect(
          answeredMine,
          `release #${h.id}: undecided with ${answeredMine} nodes holding it`,
        ).toBeLessThan(QUORUM);
      }
      if (wasReleased) expect(result.released).toBe(false);
      else if (h.wiped) expect(result).toEqual({ released: false, expired: true });
      else if (clearlyValid) {
        // Released by a quorum of holders; expired when more nodes than a quorum can spare
        // said "not mine"; else undecided (paused nodes cannot answer).
        // Answers the round had (a decided round's stragglers, or timed-out calls, left out).
        const ok = answeredMine >= QUORUM;
        expect(
          result,
          `release #${h.id} (${answeredMine} held it, ${answeredNotMine} did not)`,
        ).toEqual({
          released: ok,
          expired: !ok && answeredNotMine > NODES.length - QUORUM,
        });
      } else if (lapsed) expect(result.expired).toBe(true);
      expect(h.lock.signal.aborted).toBe(true);

      // Nobody else's keys were touched.
      for (const [o, count] of before) {
        if (o.lock.validUntil <= now()) continue;
        const after = holding(await snapshot(w, keysOf(w, o.resources)), o.token as string);
        expect(after, `#${o.id}'s keys after #${h.id} released`).toBeGreaterThanOrEqual(count);
      }
      // Its own keys are gone from every running node.
      if (h.token !== undefined) {
        const token = h.token;
        await settled(running(w));
        const snap = await snapshot(w, keysOf(w, h.resources));
        for (const [node, values] of snap) {
          expect(values.includes(token), `#${h.id}'s key on node ${node} after release`).toBe(
            false,
          );
        }
      }
      checkInvariants(w);
    }
    toString = (): string => `release(#${this.pick})`;
  }

  class Wait implements Cmd {
    constructor(readonly ms: number) {}
    check = (): boolean => true;
    async run(w: World): Promise<void> {
      await sleep(this.ms);
      checkInvariants(w);
    }
    toString = (): string => `wait(${this.ms})`;
  }

  /** Waits until a handle's validity has run out. */
  class Expire implements Cmd {
    constructor(readonly pick: number) {}
    check = (w: Readonly<World>): boolean => w.handles.length > 0;
    async run(w: World): Promise<void> {
      const h = w.handles[this.pick % w.handles.length] as Handle;
      const wait = Math.min(h.lock.validUntil + 20 - now(), 600);
      if (wait > 0) await sleep(wait);
      checkInvariants(w);
    }
    toString = (): string => `expire(#${this.pick})`;
  }

  class Pause implements Cmd {
    constructor(readonly node: number) {}
    check = (w: Readonly<World>): boolean => w.paused.size < 3 && !w.paused.has(this.node);
    run(w: World): Promise<void> {
      redis().pause(this.node);
      w.paused.add(this.node);
      stats.pauses++;
      checkInvariants(w);
      return Promise.resolve();
    }
    toString = (): string => `pause(${this.node})`;
  }

  class Resume implements Cmd {
    constructor(readonly node: number) {}
    check = (w: Readonly<World>): boolean => w.paused.has(this.node);
    run(w: World): Promise<void> {
      redis().resume(this.node);
      w.paused.delete(this.node);
      checkInvariants(w);
      return Promise.resolve();
    }
    toString = (): string => `resume(${this.node})`;
  }

  class Latency implements Cmd {
    constructor(
      readonly node: number,
      readonly ms: number,
    ) {}
    check = (): boolean => true;
    run(w: World): Promise<void> {
      net.latency[this.node] = this.ms;
      checkInvariants(w);
      return Promise.resolve();
    }
    toString = (): string => `latency(${this.node}, ${this.ms} ms)`;
  }

  /** The whole network slows down (or recovers) at once. */
  class SlowAll implements Cmd {
    constructor(readonly ms: number) {}
    check = (): boolean => true;
    run(w: World): Promise<void> {
      net.latency.fill(this.ms);
      checkInvariants(w);
      return Promise.resolve();
    }
    toString = (): string => `slowAll(${this.ms} ms)`;
  }

  /**
   * Deletes a resource's lock key on some running nodes — but only where whoever holds it
   * keeps it on a quorum of running nodes (so this is a minority fault Redlock must absorb).
   */
  class DeleteMinority implements Cmd {
    constructor(
      readonly resource: string,
      readonly nodes: readonly number[],
    ) {}
    check = (): boolean => true;
    async run(w: World): Promise<void> {
      await settled(running(w));
      const key = (w.redlocks[0] as Redlock).keyOf(this.resource);
      const snap = await snapshot(w, [key]);
      const counts = new Map<string, number>();
      for (const values of snap.values()) {
        const v = values[0] ?? '';
        if (v !== '') counts.set(v, (counts.get(v) ?? 0) + 1);
      }
      const [top, count] = [...counts].sort((a, b) => b[1] - a[1])[0] ?? ['', 0];
      const targets = this.nodes.filter((i) => (snap.get(i)?.[0] ?? '') !== '');
      const lost = targets.filter((i) => snap.get(i)?.[0] === top).length;
      if (targets.length > 0 && count - lost >= QUORUM) {
        await Promise.all(targets.map((i) => (inspect[i] as Redis).del(key)));
        stats.minorityDeletes++;
      }
      checkInvariants(w);
    }
    toString = (): string => `deleteMinority(${this.resource}, [${this.nodes.join()}])`;
  }

  /**
   * Deletes a resource's lock key on every running node (at least a quorum of them). That is
   * data loss outside Redlock's fault model, so the holders of the resource stop counting as
   * valid here; what is checked is what follows: their extensions fail, their releases report
   * expiry and never touch the next holder's keys.
   */
  class Wipe implements Cmd {
    constructor(readonly resource: string) {}
    check = (w: Readonly<World>): boolean => NODES.length - w.paused.size >= QUORUM;
    async run(w: World): Promise<void> {
      await settled(running(w));
      const key = (w.redlocks[0] as Redlock).keyOf(this.resource);
      await Promise.all(running(w).map((i) => (inspect[i] as Redis).del(key)));
      stats.wipes++;
      const at = now();
      for (const h of w.handles) {
        if (!h.released && h.resources.includes(this.resource)) {
          h.wiped = true;
          h.endedAt ??= at;
        }
      }
      checkInvariants(w);
    }
    toString = (): string => `wipe(${this.resource})`;
  }

  const procArb = fc.nat({ max: PROCS - 1 });
  const nodeArb = fc.nat({ max: NODES.length - 1 });
  const resourcesArb = fc.constantFrom<readonly string[]>(['x'], ['y'], ['x', 'y'], ['y', 'x']);
  const ttlArb = fc.constantFrom(250, 600, 1_500);

  const acquireArb = fc
    .tuple(procArb, resourcesArb, ttlArb, fc.nat({ max: 1 }))
    .map(([p, r, ttl, retries]) => new Acquire(p, r, ttl, retries));
  const commandsArb = fc.commands(
    [
      acquireArb,
      acquireArb,
      acquireArb,
      fc
        .tuple(fc.uniqueArray(procArb, { minLength: 2, maxLength: PROCS }), resourcesArb, ttlArb)
        .map(([procs, r, ttl]) => new Race(procs, r, ttl)),
      fc.tuple(fc.nat(), ttlArb).map(([pick, ttl]) => new Extend(pick, ttl)),
      fc.tuple(fc.nat(), ttlArb).map(([pick, ttl]) => new Extend(pick, ttl)),
      fc.nat().map((pick) => new Release(pick)),
      fc.nat().map((pick) => new Release(pick)),
      fc.integer({ min: 10, max: 150 }).map((ms) => new Wait(ms)),
      fc.nat().map((pick) => new Expire(pick)),
      nodeArb.map((node) => new Pause(node)),
      nodeArb.map((node) => new Resume(node)),
      fc.tuple(nodeArb, fc.constantFrom(...LATENCIES)).map(([n, ms]) => new Latency(n, ms)),
      fc.constantFrom(...LATENCIES).map((ms) => new SlowAll(ms)),
      fc
        .tuple(
          fc.constantFrom(...RESOURCES),
          fc.uniqueArray(nodeArb, { minLength: 1, maxLength: 2 }),
        )
        .map(([r, nodes]) => new DeleteMinority(r, nodes)),
      fc.constantFrom(...RESOURCES).map((r) => new Wipe(r)),
    ],
    { maxCommands: 12, size: 'max' },
  );

  /** The network each run starts on: fast, mixed, or slow enough to eat most of a short ttl. */
  const latencyProfileArb = fc.oneof(
    fc.constant([0, 0, 0, 0, 0]),
    fc.array(fc.constantFrom(...LATENCIES), { minLength: 5, maxLength: 5 }),
    fc.constant([160, 160, 160, 0, 0]),
    fc.constant([160, 160, 160, 160, 160]),
  );

  /** A fresh world: three Redlocks, every node running, no latency, no keys. */
  const openWorld = (): World => ({
    redlocks: procClients.map(
      (clients) =>
        new Redlock({
          clients,
          clock,
          nodeTimeoutMs: NODE_TIMEOUT,
          minValidityMs: MIN_VALIDITY,
          retryDelayMs: 15,
          retryJitterMs: 15,
        }),
    ),
    handles: [],
    paused: new Set(),
    lastFence: new Map(),
  });

  /** Releases what is left (never throwing), closes the Redlocks, and resets every node. */
  const closeWorld = async (w: World): Promise<void> => {
    for (const node of w.paused) redis().resume(node);
    w.paused.clear();
    net.latency.fill(0);
    for (const h of w.handles) {
      if (!h.released) {
        h.endedAt ??= now();
        h.released = true;
        await h.lock.release();
      }
    }
    for (const redlock of w.redlocks) await redlock.close();
    await settled(NODES);
    await redis().flushAll();
  };

  /** No two validity intervals of one resource overlap. */
  const checkIntervals = (w: World): void => {
    for (const r of RESOURCES) {
      const spans = w.handles
        .filter((h) => h.resources.includes(r))
        .map((h) => ({
          id: h.id,
          start: h.returnedAt,
          end: Math.min(h.endedAt ?? Infinity, h.abortedAt ?? Infinity, h.lock.validUntil),
        }))
        .sort((a, b) => a.start - b.start);
      let latest = -Infinity;
      let latestId = -1;
      for (const s of spans) {
        expect(s.start, `#${s.id} started while #${latestId} held ${r}`).toBeGreaterThanOrEqual(
          latest,
        );
        if (s.end > latest) {
          latest = s.end;
          latestId = s.id;
        }
      }
    }
  };

  it('random acquire / extend / release / expire / pause / resume / latency / key loss from three clients: never two valid holders, validity above the minimum, fencing in order, releases never touch another holder', async () => {
    await fc.assert(
      fc.asyncProperty(latencyProfileArb, commandsArb, async (profile, cmds) => {
        const world = openWorld();
        profile.forEach((ms, node) => (net.latency[node] = ms));
        try {
          await fc.asyncModelRun(() => ({ model: world, real: world }), cmds);
        } finally {
          await closeWorld(world);
        }
        checkIntervals(world);
      }),
      { numRuns: 30, skipAllAfterTimeLimit: 90_000 },
    );
    console.info(`redlock model: ${JSON.stringify(stats)}`);
    expect(stats.granted).toBeGreaterThan(0);
  }, 150_000);

  // The shrunk counterexample of stop 33's CI failure, kept as an example: node 0 paused,
  // nodes 1–2 slow, two processes race, the winner extends and releases. The release's round
  // lasts over 160 ms, so the lock's periodic incarnation check (about once a second) usually
  // goes out during it, queued behind the release on the slow nodes; the model once took that
  // call for the release's own straggler and expected an undecided release.
  it('a release judged on its own answers while other calls are in flight to the same nodes', async () => {
    const world = openWorld();
    [160, 160, 160, 0, 0].forEach((ms, node) => (net.latency[node] = ms));
    try {
      await fc.asyncModelRun(
        () => ({ model: world, real: world }),
        [new Pause(0), new Race([0, 1], ['x'], 600), new Extend(0, 1500), new Release(0)],
      );
    } finally {
      await closeWorld(world);
    }
  }, 30_000);

  it('an extension that completes after the deadline does not resolve for a lost lock', async () => {
    const world = openWorld();
    let lock: Lock | undefined;
    try {
      net.latency.fill(100); // keys land 100 ms after the round starts, so they outlive it
      lock = await (world.redlocks[0] as Redlock).acquire('x', { ttlMs: 600 });
      await sleep(lock.validUntil - now() - 20); // extend 20 ms before the deadline
      const outcome = await lock.extend(600).then(
        () => 'extended',
        (e: unknown) => e,
      );
      expect(lock.signal.aborted).toBe(true); // the deadline passed mid-round
      expect(isLockLostError(outcome)).toBe(true);
    } finally {
      await lock?.release();
      await closeWorld(world);
    }
  });

  it('a release by a former holder (expired, or its keys wiped) never deletes the new holder’s keys', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<'expire' | 'wipe'>('expire', 'wipe'),
        fc.uniqueArray(nodeArb, { maxLength: 2 }),
        fc.constantFrom(200, 400),
        fc.boolean(),
        async (how, pausedNodes, ttlMs, extendFirst) => {
          const world = openWorld();
          const held: Lock[] = [];
          try {
            const [first, second, third] = world.redlocks as [Redlock, Redlock, Redlock];
            const key = first.keyOf('x');
            /** Running nodes holding the most common value of the key. */
            const topCount = async (): Promise<number> => {
              await settled(running(world));
              const values = await Promise.all(
                running(world).map((i) => (inspect[i] as Redis).get(key)),
              );
              const counts = new Map<string, number>();
              for (const raw of values) {
                if (raw === null) continue;
                const v = unmarked(raw);
                counts.set(v, (counts.get(v) ?? 0) + 1);
              }
              return Math.max(0, ...counts.values());
            };
            const old = await first.acquire('x', { ttlMs, retryCount: 0 });
            held.push(old);
            for (const i of pausedNodes) {
              redis().pause(i);
              world.paused.add(i);
            }
            if (how === 'expire') {
              await sleep(old.validUntil - now() + 30);
              expect(old.signal.aborted).toBe(true);
            } else {
              await settled(running(world));
              await Promise.all(running(world).map((i) => (inspect[i] as Redis).del(key)));
            }
            const fresh = await second.acquire('x', { ttlMs: 5_000, retryCount: 3 });
            held.push(fresh);
            expect(fresh.fencingToken).toBeGreaterThan(old.fencingToken);
            const before = await topCount();
            expect(before).toBeGreaterThanOrEqual(QUORUM);
            if (extendFirst) await expect(old.extend()).rejects.toSatisfy(isLockLostError);
            await expect(old.release()).resolves.toEqual({ released: false, expired: true });
            await expect(old.release()).resolves.toMatchObject({ released: false });
            expect(await topCount()).toBe(before);
            // The new holder still holds: others are refused, and it extends.
            const refused = await third.acquire('x', { retryCount: 0 }).catch((e: unknown) => e);
            expect(isLockTakenError(refused), String(refused)).toBe(true);
            await fresh.extend(5_000);
            expect(fresh.signal.aborted).toBe(false);
            await expect(fresh.release()).resolves.toEqual({ released: true, expired: false });
          } finally {
            for (const lock of held) await lock.release();
            await closeWorld(world);
          }
        },
      ),
      { numRuns: 10, skipAllAfterTimeLimit: 60_000 },
    );
  }, 120_000);
});
