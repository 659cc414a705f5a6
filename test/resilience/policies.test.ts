import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { BreakerOpenError, CircuitBreaker } from '../../src/breaker/index.js';
import {
  BulkheadRejectedError,
  RetryBudget,
  bulkhead,
  fallback,
  hedge,
  isBulkheadRejectedError,
  isHedgeLostError,
  isTimeoutError,
  pipeline,
  retry,
  timeout,
  type Policy,
} from '../../src/resilience/index.js';
import { invalidOption } from '../support/helpers.js';

class Flaky extends Error {
  override name = 'Flaky';
}

/** A function failing its first `failures` calls, then answering 'ok'. */
function failing(failures: number, error: () => unknown = () => new Flaky('flaky')) {
  let calls = 0;
  const fn = (): Promise<string> => {
    calls++;
    return calls <= failures ? Promise.reject(error()) : Promise.resolve('ok');
  };
  return { fn, calls: () => calls };
}

const noWait = { type: 'none' } as const;

describe('retry', () => {
  it('retries until success, within maxAttempts', async () => {
    const f = failing(2);
    await expect(retry({ maxAttempts: 3, backoff: noWait }).execute(f.fn)).resolves.toBe('ok');
    expect(f.calls()).toBe(3);
  });

  it('gives up after maxAttempts with the last error', async () => {
    const f = failing(10);
    await expect(retry({ maxAttempts: 4, backoff: noWait }).execute(f.fn)).rejects.toThrow(Flaky);
    expect(f.calls()).toBe(4);
  });

  it('retries only the error classes or predicate given', async () => {
    const f = failing(5, () => new TypeError('x'));
    await expect(retry({ backoff: noWait, retryOn: [RangeError] }).execute(f.fn)).rejects.toThrow(
      TypeError,
    );
    expect(f.calls()).toBe(1);
    const g = failing(1, () => new TypeError('x'));
    await expect(
      retry({ backoff: noWait, retryOn: (e) => e instanceof TypeError }).execute(g.fn),
    ).resolves.toBe('ok');
    const h = failing(5);
    const throwing = retry({
      backoff: noWait,
      retryOn: () => {
        throw new Error('classifier broke');
      },
    });
    await expect(throwing.execute(h.fn)).rejects.toThrow(Flaky);
    expect(h.calls()).toBe(1);
  });

  it('retries on a result, and returns the last result when attempts run out', async () => {
    let n = 0;
    const policy = retry({
      maxAttempts: 3,
      backoff: noWait,
      retryOn: { result: (v) => v === 503 },
    });
    await expect(policy.execute(() => (++n < 3 ? 503 : 200))).resolves.toBe(200);
    await expect(policy.execute(() => 503)).resolves.toBe(503);
  });

  it('never retries a bulkhead rejection or an invalid option', async () => {
    const f = failing(5, () => new BulkheadRejectedError('full', 1, 0));
    await expect(retry({ backoff: noWait }).execute(f.fn)).rejects.toThrow(BulkheadRejectedError);
    expect(f.calls()).toBe(1);
  });

  it('waits the decorrelated-jitter backoff, within [base, cap]', async () => {
    const clock = new ManualClock();
    const at: number[] = [];
    const policy = retry({
      maxAttempts: 4,
      backoff: { type: 'decorrelated', baseMs: 10, capMs: 50 },
      clock,
      random: () => 0.99,
    });
    const done = policy.execute(() => {
      at.push(clock.now());
      return Promise.reject(new Flaky('x'));
    });
    const settled = expect(done).rejects.toThrow(Flaky);
    await clock.advanceAsync(1000);
    await settled;
    const gaps = at.slice(1).map((t, i) => t - (at[i] as number));
    expect(gaps.length).toBe(3);
    let previous = 10;
    for (const gap of gaps) {
      expect(gap).toBeGreaterThanOrEqual(10);
      expect(gap).toBeLessThanOrEqual(Math.min(50, previous * 3) + 1);
      previous = gap;
    }
  });

  it('honours a callee pushback within maxPushbackMs, and fails at once beyond it', async () => {
    const clock = new ManualClock();
    const push = (ms: number) => Object.assign(new Flaky('busy'), { retryAfterMs: ms });
    const times: number[] = [];
    const short = failing(1, () => push(300));
    const policy = retry({ backoff: noWait, clock, maxPushbackMs: 500 });
    const done = policy.execute(() => {
      times.push(clock.now());
      return short.fn();
    });
    await clock.advanceAsync(1000);
    await expect(done).resolves.toBe('ok');
    expect((times[1] as number) - (times[0] as number)).toBe(300);
    const long = failing(1, () => push(5000));
    await expect(policy.execute(long.fn)).rejects.toThrow('busy');
    expect(long.calls()).toBe(1);
    expect(clock.pendingTimers).toBe(0);
  });

  it('never waits on a local open breaker: fails at once, no timer', async () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({ name: 'b', clock, openDurationMs: 30_000 });
    breaker.trip();
    let calls = 0;
    const policy = pipeline(retry({ maxAttempts: 5, clock }), breaker);
    const error: unknown = await policy
      .execute(() => {
        calls++;
        return Promise.resolve(1);
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BreakerOpenError);
    expect(calls).toBe(0);
    expect(clock.pendingTimers).toBe(0);
    expect(breaker.metrics().rejectedTotal).toBe(1);
  });

  it('retries an open breaker after exactly its retryAfterMs when that is short enough', async () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({
      name: 'b',
      clock,
      openDurationMs: 100,
      backoff: { jitter: 0 },
    });
    breaker.trip();
    const policy = pipeline(retry({ maxAttempts: 2, clock, maxPushbackMs: 200 }), breaker);
    const done = policy.execute(() => Promise.resolve(clock.now()));
    await clock.advanceAsync(150);
    await expect(done).resolves.toBe(100);
  });

  it('stops within the budget', async () => {
    const clock = new ManualClock();
    const budget = new RetryBudget({ percent: 0.5, minRetriesPerSecond: 0, ttlMs: 1000, clock });
    const policy = retry({ maxAttempts: 3, backoff: noWait, budget });
    let attempts = 0;
    for (let i = 0; i < 10; i++) {
      await policy
        .execute(() => {
          attempts++;
          return Promise.reject(new Flaky('x'));
        })
        .catch(() => undefined);
    }
    // 10 requests, 50 %: at most 5 retries.
    expect(attempts).toBeLessThanOrEqual(15);
    expect(attempts).toBeGreaterThanOrEqual(10);
    expect(attempts - 10).toBeLessThanOrEqual(5);
  });

  it('a caller abort during the backoff rejects with its reason and clears the timer', async () => {
    const clock = new ManualClock();
    const controller = new AbortController();
    const policy = retry({ backoff: { type: 'constant', delayMs: 1000 }, clock });
    const done = policy.execute(() => Promise.reject(new Flaky('x')), {
      signal: controller.signal,
    });
    await clock.advanceAsync(10);
    expect(clock.pendingTimers).toBe(1);
    controller.abort(new Error('caller gave up'));
    await expect(done).rejects.toThrow('caller gave up');
    expect(clock.pendingTimers).toBe(0);
  });

  it('validates its options', () => {
    invalidOption(() => retry({ maxAttempts: 0 }));
    invalidOption(() => retry({ backoff: { type: 'linear' } as never }));
    invalidOption(() => retry({ backoff: { type: 'decorrelated', baseMs: 100, capMs: 10 } }));
    invalidOption(() => retry({ retryOn: 'all' as never }));
    invalidOption(() => retry({ budget: {} as never }));
    invalidOption(() => retry({ maxAtempts: 2 } as never));
  });

  it('rejects bad execute arguments with InvalidOptionError', async () => {
    const policy = retry();
    await expect(policy.execute(5 as never)).rejects.toMatchObject({ code: 'KEEL_INVALID_OPTION' });
    await expect(policy.execute(() => 1, { signal: 'x' } as never)).rejects.toMatchObject({
      code: 'KEEL_INVALID_OPTION',
    });
  });
});

describe('RetryBudget', () => {
  it('allows percent of recent requests plus the reserve, and forgets after ttl', () => {
    const clock = new ManualClock();
    const budget = new RetryBudget({ percent: 0.2, minRetriesPerSecond: 1, ttlMs: 2000, clock });
    expect(budget.balance).toBe(2);
    for (let i = 0; i < 10; i++) budget.deposit();
    expect(budget.balance).toBe(4);
    let granted = 0;
    while (budget.tryWithdraw()) granted++;
    expect(granted).toBe(4);
    clock.advance(2000);
    expect(budget.balance).toBe(2);
  });
});

describe('timeout', () => {
  it('cooperative: aborts the signal with a TimeoutError', async () => {
    const clock = new ManualClock();
    const policy = timeout({ ms: 100, clock });
    const done = policy
      .execute(
        (signal) =>
          new Promise((_, reject) => {
            signal.addEventListener('abort', () => reject(signal.reason as Error));
          }),
      )
      .catch((e: unknown) => e);
    await clock.advanceAsync(101);
    const error: unknown = await done;
    expect(isTimeoutError(error)).toBe(true);
    expect(clock.pendingTimers).toBe(0);
  });

  it('aggressive: rejects at the deadline even when fn ignores its signal', async () => {
    const clock = new ManualClock();
    const policy = timeout({ ms: 50, strategy: 'aggressive', clock });
    const done = policy.execute(() => new Promise(() => undefined)).catch((e: unknown) => e);
    await clock.advanceAsync(51);
    const error: unknown = await done;
    expect(isTimeoutError(error)).toBe(true);
    expect(error).toMatchObject({ timeoutMs: 50, strategy: 'aggressive' });
  });

  it('a call in time keeps its value, and leaves no timer behind after the tick', async () => {
    const clock = new ManualClock();
    const policy = timeout({ ms: 50, strategy: 'aggressive', clock });
    await expect(policy.execute(() => Promise.resolve(7))).resolves.toBe(7);
    await clock.advanceAsync(0);
    await clock.advanceAsync(100);
    expect(clock.pendingTimers).toBe(0);
  });

  it("a caller's abort ends an aggressive call with the caller's reason", async () => {
    const clock = new ManualClock();
    const controller = new AbortController();
    const policy = timeout({ ms: 50, strategy: 'aggressive', clock });
    let seen: unknown;
    const done = policy.execute(
      (signal) =>
        new Promise(() => {
          signal.addEventListener('abort', () => {
            seen = signal.reason;
          });
        }),
      { signal: controller.signal },
    );
    controller.abort(new Error('stop'));
    await expect(done).rejects.toThrow('stop');
    expect(seen).toBeInstanceOf(Error);
  });

  it('calls without a caller signal that are due in the same millisecond share one signal, which still aborts at the deadline', async () => {
    // No AbortController per call (issue 17: cockatiel's per-call controller is most of its
    // cost): concurrent calls due in the same millisecond share one; so do calls in a row.
    const clock = new ManualClock();
    const policy = timeout({ ms: 100, clock });
    const signals: AbortSignal[] = [];
    const quick = (signal: AbortSignal): Promise<number> => {
      signals.push(signal);
      return Promise.resolve(1);
    };
    await Promise.all([policy.execute(quick), policy.execute(quick)]);
    await policy.execute(quick);
    expect(signals.length).toBe(3);
    expect(new Set(signals).size).toBe(1);
    // More than ten listeners on the shared signal (ten fetches in flight) warn nobody.
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => {
      warnings.push(w);
    };
    process.on('warning', onWarning);
    const slow = Array.from({ length: 12 }, () =>
      policy
        .execute(
          (signal) =>
            new Promise((_, reject) => {
              signal.addEventListener('abort', () => reject(signal.reason as Error));
            }),
        )
        .catch((e: unknown) => e),
    );
    await clock.advanceAsync(101);
    const errors = await Promise.all(slow);
    process.off('warning', onWarning);
    expect(errors.every((e) => isTimeoutError(e))).toBe(true);
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
    expect(clock.pendingTimers).toBe(0);
  });

  it('validates ms', () => {
    invalidOption(() => timeout({ ms: 0 }));
    invalidOption(() => timeout({} as never));
    invalidOption(() => timeout({ ms: 10, strategy: 'pessimistic' as never }));
  });
});

describe('bulkhead', () => {
  it('rejects beyond maxConcurrent + maxQueue with reason full, queues the rest', async () => {
    const pool = bulkhead({ maxConcurrent: 1, maxQueue: 1 });
    let release!: () => void;
    const first = pool.execute(() => new Promise<string>((r) => (release = () => r('a'))));
    const second = pool.execute(() => Promise.resolve('b'));
    expect(pool.running).toBe(1);
    expect(pool.queued).toBe(1);
    const third: unknown = await pool.execute(() => Promise.resolve('c')).catch((e: unknown) => e);
    expect(isBulkheadRejectedError(third)).toBe(true);
    expect(third).toMatchObject({ reason: 'full', maxConcurrent: 1, maxQueue: 1 });
    release();
    await expect(first).resolves.toBe('a');
    await expect(second).resolves.toBe('b');
    await Promise.resolve();
    expect(pool.running).toBe(0);
  });

  it('rejects a call queued longer than queueTimeoutMs', async () => {
    const clock = new ManualClock();
    const pool = bulkhead({ maxConcurrent: 1, maxQueue: 5, queueTimeoutMs: 100, clock });
    void pool.execute(() => new Promise(() => undefined));
    const waiting = expect(pool.execute(() => Promise.resolve(1))).rejects.toMatchObject({
      reason: 'queue-timeout',
    });
    await clock.advanceAsync(100);
    await waiting;
    expect(pool.queued).toBe(0);
  });

  it('a queued call whose signal aborts leaves the queue', async () => {
    const pool = bulkhead({ maxConcurrent: 1, maxQueue: 5 });
    void pool.execute(() => new Promise(() => undefined));
    const controller = new AbortController();
    const waiting = pool.execute(() => Promise.resolve(1), { signal: controller.signal });
    controller.abort(new Error('gone'));
    await expect(waiting).rejects.toThrow('gone');
    expect(pool.queued).toBe(0);
  });

  it('validates its options', () => {
    invalidOption(() => bulkhead({ maxConcurrent: 0 }));
    invalidOption(() => bulkhead({ maxConcurrent: 1, maxQueue: -1 }));
  });
});

describe('hedge', () => {
  it('a hedge after afterMs wins; the first attempt is aborted with HedgeLostError', async () => {
    const clock = new ManualClock();
    const reasons: unknown[] = [];
    let attempt = 0;
    const policy = hedge({ afterMs: 10, clock });
    const done = policy.execute(
      (signal) =>
        new Promise<number>((resolve) => {
          const mine = ++attempt;
          signal.addEventListener('abort', () => reasons.push(signal.reason));
          clock.setTimer(() => resolve(mine), mine === 1 ? 1000 : 5);
        }),
    );
    await clock.advanceAsync(20);
    await expect(done).resolves.toBe(2);
    expect(reasons.length).toBe(1);
    expect(isHedgeLostError(reasons[0])).toBe(true);
  });

  it('a failed attempt starts the next at once; all failing rejects with the last error', async () => {
    let attempt = 0;
    const policy = hedge({ afterMs: 10_000, maxHedges: 2 });
    const error: unknown = await policy
      .execute(() => Promise.reject(new Error(`fail ${++attempt}`)))
      .catch((e: unknown) => e);
    expect(attempt).toBe(3);
    expect((error as Error).message).toBe('fail 3');
  });

  it('requires afterMs or afterPercentile', () => {
    invalidOption(() => hedge({}));
    invalidOption(() => hedge({ afterPercentile: 100 }));
  });
});

describe('fallback', () => {
  it('answers with a value or a function of the error', async () => {
    await expect(fallback(5).execute(() => Promise.reject(new Error('x')))).resolves.toBe(5);
    await expect(
      fallback((e) => (e as Error).message).execute(() => Promise.reject(new Error('why'))),
    ).resolves.toBe('why');
  });

  it('with on, passes other errors through', async () => {
    const policy = fallback(0, { on: [RangeError] });
    await expect(policy.execute(() => Promise.reject(new TypeError('t')))).rejects.toThrow(
      TypeError,
    );
    await expect(policy.execute(() => Promise.reject(new RangeError('r')))).resolves.toBe(0);
    invalidOption(() => fallback(0, { on: 'x' as never }));
  });

  it("the caller's own abort is no failure to answer: the call rejects with its reason", async () => {
    // As PolicyCallOptions.signal promises (and the breaker's fallback does): the caller gave
    // up, so a fallback's answer (and its work) would go to nobody.
    const abortable = (signal: AbortSignal): Promise<string> =>
      new Promise((_, reject) => {
        signal.addEventListener('abort', () => {
          reject(signal.reason as Error);
        });
      });
    let ran = 0;
    const answer = (): string => {
      ran++;
      return 'fallback';
    };
    for (const policy of [
      fallback(answer),
      pipeline(fallback(answer), retry({ maxAttempts: 3, backoff: noWait })),
      pipeline(fallback(answer), timeout({ ms: 60_000, clock: new ManualClock() })),
    ]) {
      const controller = new AbortController();
      const call = policy.execute(abortable, { signal: controller.signal });
      controller.abort(new Error('user went away'));
      await expect(call).rejects.toThrow('user went away');
    }
    expect(ran).toBe(0);
  });

  it('a timeout is a failure it answers, also one that reaches it as an abort', async () => {
    const clock = new ManualClock();
    const abortable = (signal: AbortSignal): Promise<string> =>
      new Promise((_, reject) => {
        signal.addEventListener('abort', () => {
          reject(signal.reason as Error);
        });
      });
    const inner = pipeline(timeout({ ms: 10, clock }), fallback('late'));
    const late = inner.execute(abortable);
    clock.advance(10);
    await expect(late).resolves.toBe('late');
    const controller = new AbortController();
    const call = fallback('fallback').execute(abortable, { signal: controller.signal });
    controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError'));
    await expect(call).resolves.toBe('fallback');
  });
});

describe('pipeline', () => {
  it('composes retry, breaker and timeout: the breaker sees every attempt', async () => {
    const breaker = new CircuitBreaker({ name: 'p' });
    const f = failing(2);
    const policy: Policy = pipeline(
      retry({ backoff: noWait }),
      breaker,
      timeout({ ms: 1000, strategy: 'aggressive' }),
    );
    await expect(policy.execute(f.fn)).resolves.toBe('ok');
    const m = breaker.metrics();
    expect(m.failedTotal).toBe(2);
    expect(m.successfulTotal).toBe(1);
  });

  it('a breaker stage counts every outcome, in any position, and opens and rejects as the breaker does', async () => {
    for (const order of ['innermost', 'middle'] as const) {
      const breaker = new CircuitBreaker({
        name: `stage-${order}`,
        window: { type: 'count', size: 10 },
        minimumCalls: 4,
        failureRateThreshold: 0.5,
        openDurationMs: 60_000,
      });
      const policy =
        order === 'innermost'
          ? pipeline(timeout({ ms: 1000 }), breaker)
          : pipeline(breaker, timeout({ ms: 1000, strategy: 'aggressive' }));
      let calls = 0;
      // Successes (the first binds the breaker's hot path), a rejection, a synchronous throw,
      // a (signal) => … function: each counted once.
      await expect(policy.execute(() => Promise.resolve(++calls))).resolves.toBe(1);
      await expect(policy.execute(() => Promise.resolve(++calls))).resolves.toBe(2);
      await expect(
        policy.execute((signal) => {
          calls++;
          return Promise.reject(new Flaky(signal.aborted ? 'aborted' : 'no'));
        }),
      ).rejects.toThrow('no');
      expect(breaker.metrics()).toMatchObject({ successfulTotal: 2, failedTotal: 1 });
      await expect(
        policy.execute(() => {
          calls++;
          throw new Flaky('sync');
        }),
      ).rejects.toThrow('sync');
      // 2 failures of 4 calls: open. The next call is rejected without running.
      expect(breaker.state).toBe('open');
      const error: unknown = await policy.execute(() => ++calls).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(BreakerOpenError);
      expect(calls).toBe(4);
      expect(breaker.metrics()).toMatchObject({ successfulTotal: 2, failedTotal: 2 });
    }
  });

  it('a (signal) => … function behind a breaker stage gets the timeout outside it, aborted at the deadline', async () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({ name: 'stage-signal', clock });
    const policy = pipeline(retry({ maxAttempts: 1 }), timeout({ ms: 100, clock }), breaker);
    // A first call binds the breaker's hot path; the second runs on it.
    await expect(policy.execute((signal) => Promise.resolve(signal.aborted))).resolves.toBe(false);
    const done = policy
      .execute(
        (signal) =>
          new Promise((_, reject) => {
            signal.addEventListener('abort', () => reject(signal.reason as Error));
          }),
      )
      .catch((e: unknown) => e);
    await clock.advanceAsync(101);
    expect(isTimeoutError(await done)).toBe(true);
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 1, failedTotal: 1 });
    expect(clock.pendingTimers).toBe(0);
  });

  it('nested pipelines flatten; a fallback outside answers when retries are spent', async () => {
    const inner = pipeline(retry({ maxAttempts: 2, backoff: noWait }));
    const policy = pipeline(fallback('fallback'), inner);
    const f = failing(5);
    await expect(policy.execute(f.fn)).resolves.toBe('fallback');
    expect(f.calls()).toBe(2);
  });

  it('refuses what is not a policy', () => {
    invalidOption(() => pipeline({} as never));
  });
});
