/**
 * The promises of `timeout()` inside a pipeline, on every path a call can take: the timeout
 * alone, directly outside a circuit breaker (whose outcome counting it may take over), directly
 * inside a retry (whose failure handling it may take over), cooperative and aggressive, with and
 * without a caller's signal — it fires at the deadline and not before, the function's signal
 * aborts on the deadline and on the caller's abort, the breaker counts every outcome (also one
 * that comes after an aggressive deadline), and no timer is left once the calls settled.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { CircuitBreaker } from '../../src/breaker/index.js';
import {
  isTimeoutError,
  pipeline,
  retry,
  timeout,
  type Policy,
} from '../../src/resilience/index.js';

const noWait = { type: 'none' } as const;

type Strategy = 'cooperative' | 'aggressive';

/** The pipelines a timeout can sit in, each with the breaker (if any) it holds. */
function shapes(clock: ManualClock, strategy: Strategy, maxAttempts: number) {
  const make = (name: string) => new CircuitBreaker({ name, clock });
  const t = () => timeout({ ms: 100, strategy, clock });
  const r = () => retry({ maxAttempts, backoff: noWait, clock });
  const b1 = make('rtb');
  const b2 = make('tb');
  const b3 = make('rbt');
  return [
    { name: 'retry, timeout, breaker', policy: pipeline(r(), t(), b1), breaker: b1 },
    { name: 'timeout, breaker', policy: pipeline(t(), b2), breaker: b2 },
    { name: 'retry, breaker, timeout', policy: pipeline(r(), b3, t()), breaker: b3 },
    { name: 'retry, timeout', policy: pipeline(r(), t()), breaker: undefined },
    { name: 'timeout', policy: t(), breaker: undefined },
  ] as const;
}

/** A function that never settles unless its signal aborts (then rejects with the reason). */
function hanging(signals: AbortSignal[]) {
  return (signal: AbortSignal): Promise<string> =>
    new Promise((_, reject) => {
      signals.push(signal);
      signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
    });
}

/** Lets promise reactions and then the end-of-tick callbacks run. */
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe.each(['cooperative', 'aggressive'] as const)('timeout %s in a pipeline', (strategy) => {
  it('fires at the deadline, not before, with a TimeoutError on the signal and (retry 1) the call', async () => {
    const clock = new ManualClock();
    for (const shape of shapes(clock, strategy, 1)) {
      const signals: AbortSignal[] = [];
      let outcome: unknown = 'pending';
      void shape.policy.execute(hanging(signals)).then(
        (v) => (outcome = v),
        (e: unknown) => (outcome = e),
      );
      await clock.advanceAsync(99);
      expect(outcome, shape.name).toBe('pending');
      expect(signals[0]?.aborted, shape.name).toBe(false);
      await clock.advanceAsync(1);
      await tick();
      expect(signals[0]?.aborted, shape.name).toBe(true);
      expect(isTimeoutError(signals[0]?.reason), shape.name).toBe(true);
      expect(isTimeoutError(outcome), shape.name).toBe(true);
      expect(clock.pendingTimers, shape.name).toBe(0);
    }
  });

  it('a call that times out is retried, and the retry can succeed; the breaker counts both', async () => {
    const clock = new ManualClock();
    for (const shape of shapes(clock, strategy, 2)) {
      if (!shape.name.startsWith('retry')) continue;
      const signals: AbortSignal[] = [];
      const hang = hanging(signals);
      let calls = 0;
      const done = shape.policy.execute((signal) => (++calls === 1 ? hang(signal) : 'ok'));
      await clock.advanceAsync(100);
      await expect(done, shape.name).resolves.toBe('ok');
      expect(calls, shape.name).toBe(2);
      expect(signals[0]?.aborted, shape.name).toBe(true);
      if (shape.breaker !== undefined) {
        expect(shape.breaker.metrics(), shape.name).toMatchObject({
          successfulTotal: 1,
          failedTotal: 1,
        });
      }
      await tick();
      expect(clock.pendingTimers, shape.name).toBe(0);
    }
  });

  it("the caller's abort aborts the function's signal and ends the call with the caller's reason", async () => {
    const clock = new ManualClock();
    for (const shape of shapes(clock, strategy, 3)) {
      const signals: AbortSignal[] = [];
      const controller = new AbortController();
      const done = shape.policy
        .execute(hanging(signals), { signal: controller.signal })
        .catch((e: unknown) => e);
      await clock.advanceAsync(10);
      const reason = new Error('caller gave up');
      controller.abort(reason);
      expect(await done, shape.name).toBe(reason);
      expect(signals.length, shape.name).toBe(1);
      expect(signals[0]?.aborted, shape.name).toBe(true);
      await tick();
      expect(clock.pendingTimers, shape.name).toBe(0);
    }
  });

  it('calls in time keep their values and errors, the breaker counts each, no timer remains', async () => {
    const clock = new ManualClock();
    for (const shape of shapes(clock, strategy, 1)) {
      const seen: AbortSignal[] = [];
      const ok = (signal: AbortSignal): Promise<number> => {
        seen.push(signal);
        return Promise.resolve(7);
      };
      const plainOk = (): Promise<number> => Promise.resolve(8);
      const bad = (): Promise<number> => Promise.reject(new Error('bad'));
      const results = await Promise.allSettled([
        shape.policy.execute(ok),
        shape.policy.execute(plainOk),
        shape.policy.execute(bad),
      ]);
      await shape.policy.execute(ok);
      await clock.advanceAsync(1);
      await shape.policy.execute(plainOk);
      expect(
        results.map((r) => r.status),
        shape.name,
      ).toEqual(['fulfilled', 'fulfilled', 'rejected']);
      expect((results[0] as PromiseFulfilledResult<number>).value).toBe(7);
      expect((results[1] as PromiseFulfilledResult<number>).value).toBe(8);
      if (shape.breaker !== undefined) {
        expect(shape.breaker.metrics(), shape.name).toMatchObject({
          successfulTotal: 4,
          failedTotal: 1,
        });
      }
      await tick();
      expect(clock.pendingTimers, shape.name).toBe(0);
      // Long after: the deadlines of those calls abort nothing they were given.
      await clock.advanceAsync(1000);
      expect(
        seen.every((s) => !s.aborted),
        shape.name,
      ).toBe(true);
    }
  });
});

describe('timeout aggressive outside a breaker', () => {
  it('the breaker still counts an outcome that comes after the deadline', async () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({ name: 'late', clock });
    const policy: Policy = pipeline(timeout({ ms: 100, strategy: 'aggressive', clock }), breaker);
    // Binds the breaker's hot path.
    await policy.execute(() => 1);
    let fail!: (e: Error) => void;
    const done = policy
      .execute(() => new Promise((_, reject) => (fail = reject)))
      .catch((e: unknown) => e);
    await clock.advanceAsync(100);
    expect(isTimeoutError(await done)).toBe(true);
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 1, failedTotal: 0 });
    fail(new Error('late'));
    await tick();
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 1, failedTotal: 1 });
  });
});

describe('what a pipeline holds on to', () => {
  it('keeps no reference to the function of a call after the call settled', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const policy = pipeline(retry(), timeout({ ms: 1000 }), new CircuitBreaker({ name: 'ref' }));
    const refs: WeakRef<object>[] = [];
    const call = async (): Promise<void> => {
      const payload = { big: new Array(1000).fill(1) };
      const fn = (): Promise<number> => Promise.resolve(payload.big.length);
      refs.push(new WeakRef(fn));
      await policy.execute(fn);
    };
    await call();
    // WeakRefs keep their target until the job that made them ends; two ticks and a GC later,
    // a function nothing holds is gone.
    await tick();
    await tick();
    gc();
    await tick();
    expect(refs[0]?.deref()).toBeUndefined();
  });
});

describe('timeout() on the system clock when performance.now is replaced', () => {
  // Fake timers (vitest's, Jest's, sinon's) replace performance.now; the deadline queue then
  // runs on the replacement, so the deadline must be computed on it too — not on a clock read
  // through process.hrtime() and calibrated against the original (review finding, session 11).
  it('a call that ends well before its deadline is not timed out when the clock was moved', async () => {
    const policy = timeout({ ms: 200, strategy: 'aggressive' });
    await expect(policy.execute(() => Promise.resolve('warm'))).resolves.toBe('warm');
    // eslint-disable-next-line @typescript-eslint/unbound-method -- called with .call(performance)
    const original = performance.now;
    const shifted = (): number => original.call(performance) + 10_000;
    performance.now = shifted;
    try {
      // A later millisecond: not the warm call's bucket.
      await new Promise((resolve) => setTimeout(resolve, 5));
      const call = policy.execute(
        () => new Promise<string>((resolve) => setTimeout(() => resolve('ok'), 20)),
      );
      await expect(call).resolves.toBe('ok');
    } finally {
      performance.now = original;
    }
    await expect(policy.execute(() => Promise.resolve('after'))).resolves.toBe('after');
  });
});
