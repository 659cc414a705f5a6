import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import {
  MemoryLock,
  isLockLostError,
  isLockReleasedError,
  isLockTakenError,
  type Lock,
  type LockLostError,
  type ReleaseResult,
} from '../../src/lock/index.js';
import { LOSS_MARGIN_MS as M } from '../../src/lock/lock.js';

// Model-based tests of MemoryLock on a ManualClock: fast-check drives the lock and a small
// reference model with the same random commands (acquire / extend / release / advance time, from
// several owners) and compares them after every step. Time moves only when a command says so,
// so every expectation is exact — down to the millisecond a lock stops being valid. The store
// holds a lock until its deadline (`validUntil`); the handle counts it lost M ms before
// (LOSS_MARGIN_MS: its signal aborts and extend() refuses from `validUntil − M` on).

const RESOURCES = ['a', 'b', 'c'] as const;
const OWNERS = 3;

interface ModelHandle {
  readonly owner: number;
  readonly resources: readonly string[];
  validUntil: number;
  released: boolean;
  /** Lost (its loss moment passed) before its release. */
  lostBeforeRelease: boolean;
}

interface Model {
  now: number;
  readonly handles: ModelHandle[];
  /** Last fencing token handed out per resource. */
  readonly fences: Map<string, number>;
}

interface Real {
  readonly clock: ManualClock;
  readonly locks: MemoryLock;
  /** Same order as `Model.handles`. */
  readonly handles: Lock[];
}

type Cmd = fc.AsyncCommand<Model, Real>;

const heldBy = (m: Model, resource: string): ModelHandle | undefined =>
  m.handles.find((h) => !h.released && h.validUntil > m.now && h.resources.includes(resource));

/** A handle is valid while its signal has not aborted and its deadline is in the future. */
const isValid = (lock: Lock, now: number): boolean => !lock.signal.aborted && lock.validUntil > now;

/** The invariants that must hold after every command. */
async function checkInvariants(m: Model, r: Real): Promise<void> {
  expect(r.clock.now()).toBe(m.now);
  // Every resource the model says is held really is: a probe from a fourth party is refused.
  for (const resource of RESOURCES) {
    if (heldBy(m, resource) === undefined) continue;
    const probe = await r.locks.acquire(resource, { retryCount: 0 }).catch((e: unknown) => e);
    expect(isLockTakenError(probe), `${resource} should be held`).toBe(true);
  }
  for (const resource of RESOURCES) {
    const valid = r.handles.filter(
      (lock) => lock.resources.includes(resource) && isValid(lock, m.now),
    );
    expect(valid.length, `valid holders of ${resource}`).toBeLessThanOrEqual(1);
  }
  m.handles.forEach((h, i) => {
    const lock = r.handles[i] as Lock;
    // Lost exactly at its loss moment (the loss timer), or when released — never earlier or later.
    const lost = h.released ? h.lostBeforeRelease : m.now >= h.validUntil - M;
    expect(lock.signal.aborted, `handle ${i} aborted`).toBe(h.released || lost);
    expect(lock.validUntil).toBe(h.validUntil);
    // A release is not a loss: released handles say so, unless they were lost first.
    if (lost) expect(isLockLostError(lock.signal.reason)).toBe(true);
    else if (h.released) expect(isLockReleasedError(lock.signal.reason)).toBe(true);
  });
}

class Acquire implements Cmd {
  constructor(
    readonly owner: number,
    readonly resources: readonly string[],
    readonly ttlMs: number,
  ) {}
  check = (): boolean => true;
  async run(m: Model, r: Real): Promise<void> {
    const free = this.resources.every((res) => heldBy(m, res) === undefined);
    const outcome = await r.locks
      .acquire(this.resources, { ttlMs: this.ttlMs, retryCount: 0 })
      .catch((e: unknown) => e);
    if (!free) {
      expect(isLockTakenError(outcome), String(outcome)).toBe(true);
    } else {
      expect(isLockTakenError(outcome), String(outcome)).toBe(false);
      const lock = outcome as Lock;
      expect(lock.resources).toEqual(this.resources);
      expect(lock.validUntil).toBe(m.now + this.ttlMs);
      for (const res of this.resources) {
        const previous = m.fences.get(res) ?? 0;
        // Fencing tokens strictly increase per resource — by exactly one per acquisition here.
        expect(lock.fencingTokens[res]).toBe(previous + 1);
        m.fences.set(res, previous + 1);
      }
      expect(lock.fencingToken).toBe(lock.fencingTokens[this.resources[0] as string]);
      m.handles.push({
        owner: this.owner,
        resources: this.resources,
        validUntil: m.now + this.ttlMs,
        released: false,
        lostBeforeRelease: false,
      });
      r.handles.push(lock);
    }
    await checkInvariants(m, r);
  }
  toString = (): string =>
    `acquire(owner ${this.owner}, [${this.resources.join(',')}], ${this.ttlMs})`;
}

class Extend implements Cmd {
  constructor(
    readonly pick: number,
    readonly ttlMs: number,
  ) {}
  check = (m: Readonly<Model>): boolean => m.handles.length > 0;
  async run(m: Model, r: Real): Promise<void> {
    const i = this.pick % m.handles.length;
    const h = m.handles[i] as ModelHandle;
    const lock = r.handles[i] as Lock;
    const held = !h.released && m.now < h.validUntil - M;
    // An extension within the loss margin is too short to count: lost, the store's new
    // (earlier) deadline taken.
    const ok = held && this.ttlMs > M;
    const outcome = await lock.extend(this.ttlMs).then(
      () => 'extended',
      (e: unknown) => e,
    );
    if (ok) {
      expect(outcome).toBe('extended');
      h.validUntil = m.now + this.ttlMs;
    } else if (held) {
      expect(isLockLostError(outcome), String(outcome)).toBe(true);
      expect((outcome as LockLostError).kind).toBe('extension-too-short');
      h.validUntil = Math.min(h.validUntil, m.now + this.ttlMs);
    } else if (h.released && !h.lostBeforeRelease) {
      expect(isLockReleasedError(outcome), String(outcome)).toBe(true);
    } else {
      expect(isLockLostError(outcome), String(outcome)).toBe(true);
    }
    await checkInvariants(m, r);
  }
  toString = (): string => `extend(#${this.pick}, ${this.ttlMs})`;
}

class Release implements Cmd {
  constructor(readonly pick: number) {}
  check = (m: Readonly<Model>): boolean => m.handles.length > 0;
  async run(m: Model, r: Real): Promise<void> {
    const i = this.pick % m.handles.length;
    const h = m.handles[i] as ModelHandle;
    const lock = r.handles[i] as Lock;
    // Expired: lost by the handle (its loss moment passed); released: the store still held it.
    const lost = h.released ? h.lostBeforeRelease : m.now >= h.validUntil - M;
    const expired = lost || m.now >= h.validUntil;
    // Never throws, whether expired, re-acquired by someone else, or released already.
    const result: ReleaseResult = await lock.release();
    expect(result).toEqual({ released: !h.released && m.now < h.validUntil, expired });
    if (!h.released) h.lostBeforeRelease = lost;
    h.released = true;
    await checkInvariants(m, r);
  }
  toString = (): string => `release(#${this.pick})`;
}

class Advance implements Cmd {
  constructor(readonly ms: number) {}
  check = (): boolean => true;
  run(m: Model, r: Real): Promise<void> {
    r.clock.advance(this.ms);
    m.now += this.ms;
    return checkInvariants(m, r);
  }
  toString = (): string => `advance(${this.ms})`;
}

/**
 * Moves time to a handle's deadline or its loss moment (M ms before), or a millisecond either
 * side: the boundary cases.
 */
class AdvanceToDeadline implements Cmd {
  constructor(
    readonly pick: number,
    readonly offset: number,
  ) {}
  check = (m: Readonly<Model>): boolean => m.handles.length > 0;
  run(m: Model, r: Real): Promise<void> {
    const h = m.handles[this.pick % m.handles.length] as ModelHandle;
    const target = h.validUntil + this.offset;
    if (target > m.now) {
      r.clock.advanceTo(target);
      m.now = target;
    }
    return checkInvariants(m, r);
  }
  toString = (): string => `advanceToDeadline(#${this.pick}, ${this.offset})`;
}

const resourcesArb = fc.constantFrom<readonly string[]>(
  ['a'],
  ['b'],
  ['c'],
  ['a', 'b'],
  ['b', 'a'],
  ['c', 'a', 'b'],
);
const ttlArb = fc.integer({ min: 1, max: 200 });

const commandsArb = fc.commands(
  [
    fc
      .tuple(fc.nat({ max: OWNERS - 1 }), resourcesArb, ttlArb)
      .map(([owner, resources, ttl]) => new Acquire(owner, resources, ttl)),
    fc.tuple(fc.nat(), ttlArb).map(([pick, ttl]) => new Extend(pick, ttl)),
    fc.nat().map((pick) => new Release(pick)),
    fc.integer({ min: 0, max: 150 }).map((ms) => new Advance(ms)),
    fc
      .tuple(fc.nat(), fc.constantFrom(-1, 0, 1, -M - 1, -M, -M + 1))
      .map(([pick, offset]) => new AdvanceToDeadline(pick, offset)),
  ],
  { maxCommands: 60 },
);

describe('MemoryLock model (ManualClock)', () => {
  it('matches the model: one valid holder at most, exact validity, strictly increasing fencing tokens, expired releases reported and never thrown', async () => {
    await fc.assert(
      fc.asyncProperty(commandsArb, async (cmds) => {
        const clock = new ManualClock();
        const real: Real = {
          clock,
          locks: new MemoryLock({ clock, retryCount: 0, random: () => 0 }),
          handles: [],
        };
        const model: Model = { now: 0, handles: [], fences: new Map() };
        await fc.asyncModelRun(() => ({ model, real }), cmds);
        // Releasing everything leaves no timer behind.
        for (const lock of real.handles) await lock.release();
        expect(clock.pendingTimers).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('a stale release (the lock expired and another owner took it) never touches the new holder', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 100 }),
        fc.integer({ min: 0, max: 100 }),
        fc.integer({ min: M + 1, max: 100 }),
        async (ttl, late, ttl2) => {
          const clock = new ManualClock();
          const locks = new MemoryLock({ clock, retryCount: 0 });
          const old = await locks.acquire(['a', 'b'], { ttlMs: ttl });
          clock.advance(ttl + late);
          expect(old.signal.aborted).toBe(true);
          const fresh = await locks.acquire(['b', 'a'], { ttlMs: ttl2 });
          expect(fresh.fencingToken).toBeGreaterThan(old.fencingToken);
          await expect(old.extend()).rejects.toSatisfy(isLockLostError);
          await expect(old.release()).resolves.toEqual({ released: false, expired: true });
          // The new holder still holds both resources: nobody else gets them, and it extends.
          expect(isLockTakenError(await locks.acquire('a').catch((e: unknown) => e))).toBe(true);
          expect(isLockTakenError(await locks.acquire('b').catch((e: unknown) => e))).toBe(true);
          await fresh.extend(ttl2);
          expect(fresh.signal.aborted).toBe(false);
          await expect(fresh.release()).resolves.toEqual({ released: true, expired: false });
          expect(clock.pendingTimers).toBe(0);
        },
      ),
      { numRuns: 100 },
    );
  });
});

/** Counts the extension rounds the using() engine runs. */
class CountingMemoryLock extends MemoryLock {
  extensions = 0;
  override extendKeys(
    keys: readonly string[],
    token: string,
    ttlMs: number,
  ): Promise<number | undefined> {
    this.extensions++;
    return super.extendKeys(keys, token, ttlMs);
  }
}

describe('MemoryLock using() (ManualClock)', () => {
  // The routine moves the clock itself in random steps; the extensions run on the same clock.
  // A competitor tries the resource after every step: it must fail exactly while the routine's
  // signal says the lock is held.
  it('holds while extensions are allowed, loses it within the maxHoldMs / maxExtensions bounds, excludes others throughout, and leaves no timer', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2 * M, max: 200 }),
        fc.integer({ min: 1, max: 1000 }),
        fc.option(fc.integer({ min: 0, max: 8 }), { nil: undefined }),
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 20 }),
        async (ttl, maxHoldMs, maxExtensions, steps) => {
          const clock = new ManualClock();
          const locks = new CountingMemoryLock({ clock, ttlMs: ttl, retryCount: 0 });
          const options =
            maxExtensions === undefined ? { maxHoldMs } : { maxHoldMs, maxExtensions };
          const seen = await locks.using('r', options, async (signal, lock) => {
            const start = clock.now();
            let lostAt: number | undefined;
            let reason: unknown;
            signal.addEventListener('abort', () => {
              lostAt = clock.now();
              reason = signal.reason;
            });
            let i = 0;
            // Run past every possible end of the hold, then a little more.
            const horizon = Math.max(ttl, maxHoldMs) + ttl * 2;
            while (clock.now() - start <= horizon) {
              await clock.advanceAsync(steps[i++ % steps.length] as number);
              const other = await locks.acquire('r').catch((e: unknown) => e);
              // The signal aborts at the loss moment; the store frees the lock at the deadline.
              expect(signal.aborted, 'lost from the loss moment on').toBe(
                clock.now() >= lock.validUntil - M,
              );
              if (clock.now() >= lock.validUntil) {
                expect(isLockTakenError(other), 'free once past the deadline').toBe(false);
                await (other as Lock).release();
              } else {
                expect(isLockTakenError(other), 'excluded until the deadline').toBe(true);
              }
            }
            return { start, lostAt, reason, extensions: locks.extensions };
          });
          const { start, lostAt, reason, extensions } = seen;
          expect(lostAt).toBeDefined();
          expect(isLockLostError(reason)).toBe(true);
          const held = (lostAt as number) - start;
          const cap = maxExtensions ?? 1000;
          expect(extensions).toBeLessThanOrEqual(cap);
          // Extensions come at half the validity: k of them keep the lock for ttl + k·ttl/2.
          expect(held).toBeLessThanOrEqual(ttl + (extensions * ttl) / 2);
          // Held at least until the last extension that stays within maxHoldMs could run.
          if (cap >= Math.ceil((2 * maxHoldMs) / ttl)) {
            expect(held).toBeGreaterThanOrEqual(Math.min(ttl, maxHoldMs - ttl / 2) - M);
          }
          // Bounded by maxHoldMs (or by the first ttl, when maxHoldMs is shorter).
          expect(held).toBeLessThanOrEqual(Math.max(ttl, maxHoldMs));
          expect(clock.pendingTimers).toBe(0);
        },
      ),
      { numRuns: 150 },
    );
  });

  it("keeps the routine's error, releases, and leaves no timer", async () => {
    const clock = new ManualClock();
    const locks = new MemoryLock({ clock, ttlMs: 100, retryCount: 0 });
    const failure = new Error('routine failed');
    let held: Lock | undefined;
    const outcome = await locks
      .using('r', {}, async (_signal, lock) => {
        held = lock;
        await clock.advanceAsync(120); // one extension at 50, one at 100
        throw failure;
      })
      .catch((e: unknown) => e);
    expect(outcome).toBe(failure);
    expect(held?.signal.aborted).toBe(true);
    const next = await locks.acquire('r');
    await next.release();
    expect(clock.pendingTimers).toBe(0);
  });

  it('using() never holds longer than maxHoldMs (when maxHoldMs >= ttl)', async () => {
    for (const [ttl, maxHoldMs] of [
      [200, 300],
      [100, 1000],
      [100, 120],
    ] as const) {
      const clock = new ManualClock();
      const locks = new MemoryLock({ clock, ttlMs: ttl, retryCount: 0 });
      const lostAt = await locks.using('r', { maxHoldMs }, async (signal) => {
        while (!signal.aborted) await clock.advanceAsync(1);
        return clock.now();
      });
      expect(lostAt, `ttl ${ttl}, maxHoldMs ${maxHoldMs}`).toBeLessThanOrEqual(maxHoldMs);
    }
  });
});

describe('MemoryLock handle races', () => {
  it('release() while an extend() is in flight leaves no timer behind', async () => {
    const clock = new ManualClock();
    const locks = new MemoryLock({ clock, ttlMs: 1000, retryCount: 0 });
    const lock = await locks.acquire('r');
    const [extended, released] = await Promise.allSettled([lock.extend(1000), lock.release()]);
    expect(released).toEqual({ status: 'fulfilled', value: { released: true, expired: false } });
    expect(extended.status).toBeDefined();
    expect(lock.signal.aborted).toBe(true);
    expect(clock.pendingTimers).toBe(0);
  });

  it('disposing twice is harmless', async () => {
    const clock = new ManualClock();
    const locks = new MemoryLock({ clock, retryCount: 0 });
    const lock = await locks.acquire('r');
    await lock[Symbol.asyncDispose]();
    await lock[Symbol.asyncDispose]();
    await expect(lock.release()).resolves.toEqual({ released: false, expired: false });
    expect(clock.pendingTimers).toBe(0);
    {
      await using again = await locks.acquire('r');
      expect(again.fencingToken).toBe(lock.fencingToken + 1);
      await again.release(); // and once more when the block ends
    }
    expect(clock.pendingTimers).toBe(0);
  });
});
