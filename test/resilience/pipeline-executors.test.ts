/**
 * `pipeline(retry, timeout, breaker)` runs a call that needs its deadline — an aggressive
 * timeout, or a cooperative one whose function takes the signal — on a specialised executor
 * (src/resilience/fused.ts) once the breaker is on its hot path. These tests run every path
 * of both executors (each test checks the executor did run) against what the stages promise:
 * values and errors pass through, the breaker counts every attempt (also one that ends after
 * an aggressive deadline), failures and timeouts are retried, the deadline aborts the signal
 * and not before, a caller's signal still aborts, and no timer is left.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { CircuitBreaker, isBreakerOpenError } from '../../src/breaker/index.js';
import { DeadlineQueue } from '../../src/breaker/deadlines.js';
import {
  AggressiveExecutor,
  CooperativeExecutor,
  PlainExecutor,
} from '../../src/resilience/fused.js';
import {
  RetryBudget,
  isTimeoutError,
  pipeline,
  retry,
  retryChannel,
  timeout,
  type RetryEvent,
} from '../../src/resilience/index.js';

type Strategy = 'cooperative' | 'aggressive';

/** Lets promise reactions and then the end-of-tick callbacks run. */
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** The pipeline, its breaker on its hot path (bound by a first call), and a spy on its executor. */
async function setup(strategy: Strategy, maxAttempts = 2) {
  const clock = new ManualClock();
  const breaker = new CircuitBreaker({ name: `fused-${strategy}`, clock, minimumCalls: 20 });
  const policy = pipeline(
    retry({ maxAttempts, backoff: { type: 'none' }, clock }),
    timeout({ ms: 100, strategy, clock }),
    breaker,
  );
  const executor = strategy === 'aggressive' ? AggressiveExecutor : CooperativeExecutor;
  const run = vi.spyOn(executor.prototype, 'run');
  await policy.execute(() => 0);
  run.mockClear();
  return { clock, breaker, policy, run };
}

/** `body` as a function that declares the signal (`fn.length` 1), whatever it does with it. */
function takingSignal<R>(body: () => R): (signal: AbortSignal) => R {
  return (signal) => (signal.aborted ? body() : body());
}

/** A function of the signal that never settles unless its signal aborts. */
function hanging(signals: AbortSignal[]) {
  return (signal: AbortSignal): Promise<string> =>
    new Promise((_, reject) => {
      signals.push(signal);
      signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
    });
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe.each(['cooperative', 'aggressive'] as const)(
  'pipeline(retry, timeout %s, breaker) on its executor',
  (strategy) => {
    it('a success keeps its value, is counted, and leaves no timer; its signal never aborts', async () => {
      const { clock, breaker, policy, run } = await setup(strategy);
      const seen: AbortSignal[] = [];
      const values = await Promise.all(
        [1, 2, 3].map((n) =>
          policy.execute((signal) => {
            seen.push(signal);
            return Promise.resolve(n);
          }),
        ),
      );
      expect(values).toEqual([1, 2, 3]);
      expect(run).toHaveBeenCalledTimes(3);
      expect(breaker.metrics()).toMatchObject({ successfulTotal: 4, failedTotal: 0 });
      await tick();
      expect(clock.pendingTimers).toBe(0);
      await clock.advanceAsync(1000);
      expect(seen.every((s) => !s.aborted)).toBe(true);
    });

    it('a failure (rejected or thrown) is counted and retried through the stages', async () => {
      const { breaker, policy, run } = await setup(strategy, 3);
      let calls = 0;
      const value = await policy.execute((signal) => {
        calls++;
        if (calls === 1) return Promise.reject(new Error('first'));
        if (calls === 2) throw new Error('second');
        return signal.aborted ? 'aborted' : 'third';
      });
      expect(value).toBe('third');
      expect(calls).toBe(3);
      expect(run).toHaveBeenCalledTimes(1);
      expect(breaker.metrics()).toMatchObject({ successfulTotal: 2, failedTotal: 2 });
    });

    it('calls of one function in one tick, then of another, each retry their own function', async () => {
      const { breaker, policy, run } = await setup(strategy, 2);
      const tries = new Map<string, number>();
      // The invocations of each function that fail: the first attempt of every call.
      const failing: Record<string, number[]> = { a: [1, 2, 5], b: [1] };
      const flaky = (name: string) => (signal: AbortSignal) => {
        const n = (tries.get(name) ?? 0) + 1;
        tries.set(name, n);
        if (failing[name]?.includes(n) === true) return Promise.reject(new Error(name));
        return signal.aborted ? '' : name;
      };
      const a = flaky('a');
      const first = await Promise.all([policy.execute(a), policy.execute(a)]);
      const b = flaky('b');
      const second = await Promise.all([policy.execute(b), policy.execute(a)]);
      expect(first).toEqual(['a', 'a']);
      expect(second).toEqual(['b', 'a']);
      expect(Object.fromEntries(tries)).toEqual({ a: 6, b: 2 });
      expect(run).toHaveBeenCalledTimes(4);
      expect(breaker.metrics()).toMatchObject({ successfulTotal: 5, failedTotal: 4 });
    });

    it('the last failure is the outcome; with maxAttempts 1 no retry decision is published', async () => {
      const { policy, run } = await setup(strategy, 2);
      const error = new Error('always');
      await expect(policy.execute(takingSignal(() => Promise.reject(error)))).rejects.toBe(error);
      expect(run).toHaveBeenCalledTimes(1);

      const one = await setup(strategy, 1);
      const events: RetryEvent[] = [];
      const listen = (event: unknown): void => {
        events.push(event as RetryEvent);
      };
      subscribe(retryChannel.name, listen);
      try {
        await expect(one.policy.execute(takingSignal(() => Promise.reject(error)))).rejects.toBe(
          error,
        );
      } finally {
        unsubscribe(retryChannel.name, listen);
      }
      expect(one.run).toHaveBeenCalledTimes(1);
      expect(events).toEqual([]);
    });

    it('the deadline aborts the signal with a TimeoutError, not before; the retry then succeeds', async () => {
      const { clock, breaker, policy, run } = await setup(strategy);
      const signals: AbortSignal[] = [];
      const hang = hanging(signals);
      let calls = 0;
      let outcome: unknown = 'pending';
      void policy
        .execute((signal) => (++calls === 1 ? hang(signal) : 'ok'))
        .then((v) => (outcome = v));
      await clock.advanceAsync(99);
      expect(outcome).toBe('pending');
      expect(signals[0]?.aborted).toBe(false);
      await clock.advanceAsync(1);
      await tick();
      expect(isTimeoutError(signals[0]?.reason)).toBe(true);
      expect(outcome).toBe('ok');
      expect(calls).toBe(2);
      expect(run).toHaveBeenCalledTimes(1);
      expect(breaker.metrics()).toMatchObject({ successfulTotal: 2, failedTotal: 1 });
      await tick();
      expect(clock.pendingTimers).toBe(0);
    });

    it("a caller's signal still aborts the call and the function's signal", async () => {
      const { clock, policy } = await setup(strategy, 3);
      const signals: AbortSignal[] = [];
      const controller = new AbortController();
      const done = policy
        .execute(hanging(signals), { signal: controller.signal })
        .catch((e: unknown) => e);
      await clock.advanceAsync(10);
      const reason = new Error('caller gave up');
      controller.abort(reason);
      expect(await done).toBe(reason);
      expect(signals).toHaveLength(1);
      expect(signals[0]?.aborted).toBe(true);
      await tick();
      expect(clock.pendingTimers).toBe(0);
    });

    it('an open breaker rejects through the stages; the budget is drawn on as by the stages', async () => {
      const clock = new ManualClock();
      const breaker = new CircuitBreaker({ name: 'open', clock });
      const budget = new RetryBudget({ percent: 0, minRetriesPerSecond: 0, clock });
      const policy = pipeline(
        retry({ maxAttempts: 3, backoff: { type: 'none' }, budget, clock }),
        timeout({ ms: 100, strategy, clock }),
        breaker,
      );
      const executor = strategy === 'aggressive' ? AggressiveExecutor : CooperativeExecutor;
      await policy.execute(() => 0);
      const run = vi.spyOn(executor.prototype, 'run');
      let calls = 0;
      // No budget for a retry: one attempt.
      await expect(
        policy.execute(
          takingSignal(() => {
            calls++;
            return Promise.reject(new Error('no budget'));
          }),
        ),
      ).rejects.toThrow('no budget');
      expect(calls).toBe(1);
      expect(run).toHaveBeenCalledTimes(1);
      breaker.forceOpen();
      await expect(policy.execute(takingSignal(() => 1))).rejects.toSatisfy(isBreakerOpenError);
    });
  },
);

describe('pipeline(retry, timeout aggressive, breaker) on its executor', () => {
  it('settles at the deadline although the function never does; the breaker counts the late outcome', async () => {
    const { clock, breaker, policy, run } = await setup('aggressive', 1);
    let fail!: (e: Error) => void;
    const done = policy
      .execute(() => new Promise((_, reject) => (fail = reject)))
      .catch((e: unknown) => e);
    await clock.advanceAsync(100);
    expect(isTimeoutError(await done)).toBe(true);
    expect(run).toHaveBeenCalledTimes(1);
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 1, failedTotal: 0 });
    fail(new Error('late'));
    await tick();
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 1, failedTotal: 1 });
    expect(clock.pendingTimers).toBe(0);
  });

  it('a bucket whose calls all ended takes new ones: a hanging call still times out, its late value is ignored', async () => {
    const { clock, breaker, policy, run } = await setup('aggressive', 2);
    // Same millisecond, same bucket: each call leaves it empty before the next one comes.
    for (let i = 0; i < 5; i++) expect(await policy.execute(() => i)).toBe(i);
    let late!: (value: string) => void;
    let calls = 0;
    const hung = policy.execute(() =>
      ++calls === 1 ? new Promise<string>((resolve) => (late = resolve)) : 'retried',
    );
    // Enters the bucket after the hanging call and leaves it before the deadline.
    await expect(policy.execute(() => 'quick')).resolves.toBe('quick');
    await clock.advanceAsync(99);
    expect(calls).toBe(1);
    await clock.advanceAsync(1);
    await expect(hung).resolves.toBe('retried');
    late('late');
    await tick();
    await expect(hung).resolves.toBe('retried');
    expect(run).toHaveBeenCalledTimes(7);
    // setup's call, 5, quick, the retry, and the late success (the breaker sits inside the
    // timeout: it counts the outcome the caller no longer waits for).
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 9, failedTotal: 0 });
    expect(clock.pendingTimers).toBe(0);
  });

  it('of calls sharing a deadline, those that ended keep their outcome, the others time out', async () => {
    const { clock, breaker, policy } = await setup('aggressive', 1);
    const pending: ((value: number) => void)[] = [];
    const outcomes = [0, 1, 2, 3].map((n) =>
      policy
        .execute(() => (n % 2 === 0 ? n : new Promise<number>((resolve) => pending.push(resolve))))
        .catch((error: unknown) => (isTimeoutError(error) ? 'timeout' : error)),
    );
    await tick();
    pending[1]?.(3); // the second hanging call ends in time, the first does not
    await clock.advanceAsync(100);
    expect(await Promise.all(outcomes)).toEqual([0, 'timeout', 2, 3]);
    pending[0]?.(1);
    await tick();
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 5, failedTotal: 0 });
    expect(clock.pendingTimers).toBe(0);
  });

  it('calls sharing a bucket settle in any order, each with its own outcome, also in reused slots', async () => {
    const { clock, breaker, policy, run } = await setup('aggressive', 2);
    const settle: { ok: (v: string) => void; fail: (e: Error) => void }[] = [];
    const attempts = new Map<string, number>();
    const call = (name: string) =>
      policy.execute(() => {
        const n = (attempts.get(name) ?? 0) + 1;
        attempts.set(name, n);
        // A retry answers at once; a first attempt waits for the test.
        if (n > 1) return `${name} retried`;
        return new Promise<string>((ok, fail) => settle.push({ ok, fail }));
      });
    // Four calls in one bucket (slots 0-3), settled last first; b and d fail and are retried.
    const first = ['a', 'b', 'c', 'd'].map(call);
    settle[3]?.fail(new Error('d'));
    settle[2]?.ok('c');
    settle[1]?.fail(new Error('b'));
    settle[0]?.ok('a');
    expect(await Promise.all(first)).toEqual(['a', 'b retried', 'c', 'd retried']);
    // The bucket is empty again: the next calls take its slots (and their reactions) again;
    // f outlives the deadline, e does not, g fails after f's slot was taken by the deadline.
    const second = ['e', 'f', 'g'].map((name) => call(name).catch((e: unknown) => e));
    settle[6]?.ok('g');
    settle[4]?.ok('e');
    await clock.advanceAsync(100);
    const late = settle[5];
    expect(await Promise.all(second)).toEqual(['e', 'f retried', 'g']);
    late?.fail(new Error('late f'));
    await tick();
    expect(Object.fromEntries(attempts)).toEqual({ a: 1, b: 2, c: 1, d: 2, e: 1, f: 2, g: 1 });
    expect(run).toHaveBeenCalledTimes(7);
    // setup's call, a c e g, the retries of b d f: successes; b d and f's late outcome: failures.
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 8, failedTotal: 3 });
    expect(clock.pendingTimers).toBe(0);
  });

  it('a function that calls the pipeline itself: each call keeps its own slot and outcome', async () => {
    const { clock, breaker, policy, run } = await setup('aggressive', 1);
    let inner: Promise<string> | undefined;
    let finishOuter!: (value: string) => void;
    const outer = policy.execute(() => {
      // Runs inside the outer call's start, in the same bucket, before it returns.
      inner = policy.execute(
        () => new Promise<string>((resolve) => setImmediate(resolve, 'inner')),
      );
      return new Promise<string>((resolve) => (finishOuter = resolve));
    });
    await expect(inner).resolves.toBe('inner');
    finishOuter('outer');
    await expect(outer).resolves.toBe('outer');
    expect(run).toHaveBeenCalledTimes(2);
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 3, failedTotal: 0 });
    await tick();
    expect(clock.pendingTimers).toBe(0);
  });

  it('a function that moves the clock past its own deadline times out there and is retried; other deadlines still fire', async () => {
    const { clock, breaker, policy, run } = await setup('aggressive', 2);
    // Another pipeline on the same clock (one deadline queue), its call due later.
    const slow = pipeline(
      retry({ maxAttempts: 1, backoff: { type: 'none' }, clock }),
      timeout({ ms: 1000, strategy: 'aggressive', clock }),
      new CircuitBreaker({ name: 'fused-slow', clock, minimumCalls: 20 }),
    );
    await slow.execute(() => 0);
    const hung = slow.execute(() => new Promise<string>(() => {})).catch((e: unknown) => e);
    // A call of the same bucket, started first (an earlier slot), hangs.
    const before = policy.execute(() => new Promise<string>(() => {})).catch((e: unknown) => e);
    let calls = 0;
    const moved = policy.execute(() => {
      // The deadline (100) fires synchronously, while this attempt runs (ManualClock's timers
      // do); the retry's attempt, due at 200, answers in time.
      if (++calls === 1) clock.advance(150);
      return calls === 1 ? 'too late' : 'second';
    });
    await expect(moved).resolves.toBe('second');
    expect(calls).toBe(2);
    expect(clock.now()).toBe(150);
    // The earlier slot was timed out (and its retry too, once its own deadline came).
    await clock.advanceAsync(100);
    expect(isTimeoutError(await before)).toBe(true);
    // The other pipeline's deadline still fires.
    await clock.advanceAsync(750);
    expect(isTimeoutError(await hung)).toBe(true);
    // Both pipelines' executors: slow's first call and hung, before, moved.
    expect(run).toHaveBeenCalledTimes(4);
    // setup's call, 'too late' (counted after its deadline) and 'second'; before's two timeouts
    // are not counted by the breaker (it counts the attempts' outcomes, which never came).
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 3, failedTotal: 0 });
    await tick();
    expect(clock.pendingTimers).toBe(0);
  });

  it('a function that takes no signal is timed too, and its timeout retried', async () => {
    const { clock, policy, run } = await setup('aggressive', 2);
    let calls = 0;
    const done = policy.execute(() => (++calls === 1 ? new Promise<string>(() => {}) : 'second'));
    await clock.advanceAsync(100);
    await expect(done).resolves.toBe('second');
    expect(run).toHaveBeenCalledTimes(1);
  });
});

describe('pipeline(retry, timeout cooperative, breaker)', () => {
  it('runs a function that takes no signal through the stages, untimed', async () => {
    const { clock, policy, run } = await setup('cooperative');
    await expect(policy.execute(() => Promise.resolve(5))).resolves.toBe(5);
    expect(run).not.toHaveBeenCalled();
    expect(clock.pendingTimers).toBe(0);
  });
});

describe('pipeline(retry, timeout cooperative, breaker), fn taking no signal, on its executor', () => {
  /** The pipeline, its breaker on its hot path, and a spy on the executor for such functions. */
  async function plain(maxAttempts = 2) {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({ name: 'fused-plain', clock, minimumCalls: 20 });
    const policy = pipeline(
      retry({ maxAttempts, backoff: { type: 'none' }, clock }),
      timeout({ ms: 100, clock }),
      breaker,
    );
    const run = vi.spyOn(PlainExecutor.prototype, 'run');
    await policy.execute(() => 0);
    run.mockClear();
    return { clock, breaker, policy, run };
  }

  it('a success keeps its value and is counted, untimed (no timer, no deadline)', async () => {
    const { clock, breaker, policy, run } = await plain();
    const values = await Promise.all(
      [1, 2, 3].map((n) => policy.execute(() => Promise.resolve(n))),
    );
    expect(values).toEqual([1, 2, 3]);
    expect(await policy.execute(() => 'sync')).toBe('sync');
    expect(run).toHaveBeenCalledTimes(4);
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 5, failedTotal: 0 });
    expect(clock.pendingTimers).toBe(0);
    // Untimed: a call that outlives the timeout is not cut short.
    let finish!: (v: string) => void;
    const slow = policy.execute(() => new Promise<string>((resolve) => (finish = resolve)));
    await clock.advanceAsync(1000);
    finish('late but fine');
    await expect(slow).resolves.toBe('late but fine');
  });

  it('a failure (rejected or thrown) is counted and retried through the stages', async () => {
    const { breaker, policy, run } = await plain(3);
    let calls = 0;
    const value = await policy.execute(() => {
      calls++;
      if (calls === 1) return Promise.reject(new Error('first'));
      if (calls === 2) throw new Error('second');
      return 'third';
    });
    expect(value).toBe('third');
    expect(calls).toBe(3);
    expect(run).toHaveBeenCalledTimes(1);
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 2, failedTotal: 2 });
    const error = new Error('always');
    await expect(policy.execute(() => Promise.reject(error))).rejects.toBe(error);
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 2, failedTotal: 5 });
  });

  it('calls of one function in one tick, then of another, each retry their own function', async () => {
    const { breaker, policy, run } = await plain(2);
    const tries = new Map<string, number>();
    const failing: Record<string, number[]> = { a: [1, 2, 5], b: [1] };
    const flaky = (name: string) => () => {
      const n = (tries.get(name) ?? 0) + 1;
      tries.set(name, n);
      if (failing[name]?.includes(n) === true) return Promise.reject(new Error(name));
      return name;
    };
    const a = flaky('a');
    const first = await Promise.all([policy.execute(a), policy.execute(a)]);
    const b = flaky('b');
    const second = await Promise.all([policy.execute(b), policy.execute(a)]);
    expect(first).toEqual(['a', 'a']);
    expect(second).toEqual(['b', 'a']);
    expect(Object.fromEntries(tries)).toEqual({ a: 6, b: 2 });
    expect(run).toHaveBeenCalledTimes(4);
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 5, failedTotal: 4 });
  });

  // A call settled across a generation change: 'an outcome counts for the generation its call
  // was admitted under' below.
  it('after a reset, counts on the executor again; an open breaker rejects through the stages', async () => {
    const { breaker, policy, run } = await plain(1);
    await policy.execute(() => 1);
    breaker.forceOpen();
    await expect(policy.execute(() => 1)).rejects.toSatisfy(isBreakerOpenError);
    expect(run).toHaveBeenCalledTimes(2);
    breaker.reset();
    // A new generation: its first call binds the hot path through the stages, the next ones
    // run on the executor again and are counted (the totals are the breaker's, across resets).
    await policy.execute(() => 2);
    await policy.execute(() => 3);
    await expect(policy.execute(() => Promise.reject(new Error('x')))).rejects.toThrow('x');
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 4, failedTotal: 1 });
    expect(run).toHaveBeenCalledTimes(5);
  });
});

describe('an outcome counts for the generation its call was admitted under', () => {
  // Each executor takes the breaker's handlers when a call starts. A call admitted before a
  // reset and settled after the new generation's hot path is bound must not land in the new
  // generation's window: there it would make 1 success + 1 failure of minimumCalls 2, a failure
  // rate of 0.5, and open the breaker.
  it.each([
    ['plain', 'cooperative', false],
    ['cooperative', 'cooperative', true],
    ['aggressive', 'aggressive', false],
  ] as const)('%s executor', async (name, strategy, signalled) => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({
      name: `generation-${name}`,
      clock,
      minimumCalls: 2,
      failureRateThreshold: 0.5,
    });
    const policy = pipeline(
      retry({ maxAttempts: 1, backoff: { type: 'none' }, clock }),
      timeout({ ms: 100, strategy, clock }),
      breaker,
    );
    const executor = {
      plain: PlainExecutor,
      cooperative: CooperativeExecutor,
      aggressive: AggressiveExecutor,
    }[name];
    const run = vi.spyOn(executor.prototype, 'run');
    const body = (value: Promise<number> | number) =>
      signalled ? takingSignal(() => value) : () => value;
    await policy.execute(body(0)); // binds the first generation's hot path
    let fail!: (error: Error) => void;
    const stale = policy
      .execute(body(new Promise<number>((_, reject) => (fail = reject))))
      .catch((error: unknown) => error);
    breaker.reset();
    await policy.execute(body(1)); // the new generation's first call binds its hot path
    // Every call entered the executor; the stale one (the second) ran on its hot path.
    expect(run).toHaveBeenCalledTimes(3);
    const error = new Error('stale');
    fail(error);
    expect(await stale).toBe(error);
    await tick();
    expect(breaker.state).toBe('closed');
    // The totals are the breaker's, across generations: the stale failure is in them.
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 2, failedTotal: 1 });
    // A failure of the new generation does count: 1 success + 1 failure opens it.
    await expect(policy.execute(body(Promise.reject(new Error('x'))))).rejects.toThrow('x');
    expect(breaker.state).toBe('open');
  });
});

describe('timeout on the system clock (read through process.hrtime)', () => {
  it.each(['cooperative', 'aggressive'] as const)(
    '%s: the deadline is never before ms on performance.now()',
    async (strategy) => {
      const breaker = new CircuitBreaker({ name: `system-${strategy}` });
      const policy = pipeline(retry({ maxAttempts: 1 }), timeout({ ms: 20, strategy }), breaker);
      await policy.execute(() => 0);
      for (let i = 0; i < 3; i++) {
        const started = performance.now();
        let abortedAt = Number.NaN;
        const outcome = await policy
          .execute(
            (signal) =>
              new Promise((_, reject) => {
                signal.addEventListener(
                  'abort',
                  () => {
                    abortedAt = performance.now();
                    reject(signal.reason as Error);
                  },
                  { once: true },
                );
              }),
          )
          .catch((e: unknown) => e);
        expect(isTimeoutError(outcome)).toBe(true);
        expect(abortedAt - started).toBeGreaterThanOrEqual(20);
      }
    },
  );

  it.each(['cooperative', 'aggressive'] as const)(
    '%s: a call that starts late in a tick is due ms after its own start, not the tick’s first call’s',
    async (strategy) => {
      const breaker = new CircuitBreaker({ name: `system-tick-${strategy}` });
      const policy = pipeline(retry({ maxAttempts: 1 }), timeout({ ms: 20, strategy }), breaker);
      await policy.execute(() => 0);
      const hang = (signal: AbortSignal, at: { aborted: number }): Promise<never> =>
        new Promise((_, reject) => {
          signal.addEventListener(
            'abort',
            () => {
              at.aborted = performance.now();
              reject(signal.reason as Error);
            },
            { once: true },
          );
        });
      const first = { aborted: Number.NaN };
      const late = { aborted: Number.NaN };
      // Both calls in one synchronous run, the second 8 ms after the first (bounded spin).
      const firstDone = policy.execute((signal) => hang(signal, first)).catch((e: unknown) => e);
      const spinFrom = performance.now();
      for (let i = 0; i < 1e9 && performance.now() - spinFrom < 8; i++);
      const lateStarted = performance.now();
      const lateDone = policy.execute((signal) => hang(signal, late)).catch((e: unknown) => e);
      expect(isTimeoutError(await firstDone)).toBe(true);
      expect(isTimeoutError(await lateDone)).toBe(true);
      expect(late.aborted - lateStarted).toBeGreaterThanOrEqual(20);
    },
  );

  it.each(['cooperative', 'aggressive'] as const)(
    '%s: a busy loop whose every tick ends past a millisecond moves each deadline at most once',
    async (strategy) => {
      // Each callback makes one call and spins until just past the next millisecond, so a tick
      // ends in a later millisecond than it began and the next one usually begins in that same
      // millisecond. The end of a tick moves its bucket's deadline (its calls are due `ms` after
      // the tick); the next tick's first call must then start a new bucket, not join that one —
      // joining would move it again at the end of that tick, and so on, carrying the calls
      // already in it later and later for as long as the loop stays busy.
      const breaker = new CircuitBreaker({
        name: `system-busy-${strategy}`,
        minimumCalls: 5_000,
        window: { size: 5_000 },
      });
      const policy = pipeline(retry({ maxAttempts: 1 }), timeout({ ms: 20, strategy }), breaker);
      await policy.execute(() => 0);
      const moves = new Map<object, number>();
      // Counts each bucket's moves (a wrapper around the queue's own method, restored below).
      const descriptor = Object.getOwnPropertyDescriptor(DeadlineQueue.prototype, 'postpone');
      const original = descriptor?.value as (this: DeadlineQueue, ...args: unknown[]) => void;
      DeadlineQueue.prototype.postpone = function (this: DeadlineQueue, entry, due) {
        moves.set(entry, (moves.get(entry) ?? 0) + 1);
        original.call(this, entry, due);
      };
      const settled: Promise<unknown>[] = [];
      const started: number[] = [];
      const aborted: number[] = [];
      try {
        await new Promise<void>((resolve) => {
          let n = 0;
          const step = (): void => {
            const i = n;
            started[i] = performance.now();
            settled.push(
              policy
                .execute(
                  (signal) =>
                    new Promise<never>((_, reject) => {
                      signal.addEventListener(
                        'abort',
                        () => {
                          aborted[i] = performance.now();
                          reject(signal.reason as Error);
                        },
                        { once: true },
                      );
                    }),
                )
                .catch((e: unknown) => e),
            );
            const boundary = Math.floor(performance.now()) + 1;
            for (let k = 0; k < 1e9 && performance.now() < boundary + 0.05; k++);
            n++;
            if (n < 80) setImmediate(step);
            else resolve();
          };
          step();
        });
      } finally {
        if (descriptor !== undefined)
          Object.defineProperty(DeadlineQueue.prototype, 'postpone', descriptor);
      }
      const outcomes = await Promise.all(settled);
      for (const outcome of outcomes) expect(isTimeoutError(outcome)).toBe(true);
      for (let i = 0; i < outcomes.length; i++) {
        expect((aborted[i] as number) - (started[i] as number)).toBeGreaterThanOrEqual(20);
      }
      expect(moves.size).toBeGreaterThan(0); // the loop did move deadlines
      expect(Math.max(...moves.values())).toBe(1);
    },
  );
});
