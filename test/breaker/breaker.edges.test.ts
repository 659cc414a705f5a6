// Issue 14, breaker items 1–4: the edges where the breaker hung, accepted bad input, or threw
// the wrong way. Each test here failed on the code before its fix.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ManualClock,
  isInvalidOptionError,
  type Clock,
  type InvalidOptionError,
  type Timer,
} from '../../src/core/index.js';
import { BreakerRegistry, CircuitBreaker, isBreakerOpenError } from '../../src/breaker/index.js';

const ok = (): Promise<string> => Promise.resolve('ok');

/**
 * A fake clock whose timers fire `earlyMs` before they are due — what a real `setTimeout`
 * does against `performance.now()` (it counts from the event loop's cached millisecond, so a
 * timer can run a fraction of a millisecond before `performance.now()` says it should).
 */
function earlyManualClock(earlyMs: number): ManualClock & Clock {
  const clock = new ManualClock();
  const setTimer = clock.setTimer.bind(clock);
  clock.setTimer = (callback, delayMs) => setTimer(callback, Math.max(0, delayMs - earlyMs));
  return clock;
}

/** The same with real time and real `setTimeout`: every timer runs `earlyMs` early. */
function earlyRealClock(earlyMs: number): Clock {
  return {
    now: () => performance.now(),
    setTimer(callback, delayMs): Timer {
      const handle = setTimeout(callback, Math.max(0, delayMs - earlyMs));
      const timer: Timer = {
        cancel: () => clearTimeout(handle),
        unref: () => {
          handle.unref();
          return timer;
        },
      };
      return timer;
    },
  };
}

/** Settles `promise` into what it resolved or rejected with, or 'pending' after `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const pending = new Promise((resolve) => (timer = setTimeout(() => resolve('pending'), ms)));
  try {
    return await Promise.race([
      promise.then(
        (v) => v,
        (e: unknown) => e,
      ),
      pending,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function invalidOf(error: unknown): InvalidOptionError {
  expect(isInvalidOptionError(error)).toBe(true);
  return error as InvalidOptionError;
}

describe('half-open waiters never hang (issue 14, item 1)', () => {
  it('a wake-up that fires early is re-armed (fake clock, timers 0.5 ms early)', async () => {
    const clock = earlyManualClock(0.5);
    const breaker = new CircuitBreaker({
      clock,
      halfOpenWait: true,
      maxHalfOpenMs: 300,
      openDurationMs: 1000,
      backoff: { jitter: 0 },
    });
    breaker.trip();
    clock.advance(1000);
    const hung = breaker.tryAcquire(); // the trial that never reports
    expect(hung).toBeDefined();
    const waiters = Array.from({ length: 20 }, () => breaker.execute(ok).catch((e: unknown) => e));
    await clock.advanceAsync(299.5); // the early wake-up: half-open is not over yet
    await clock.advanceAsync(5);
    const settled = await Promise.all(waiters.map((w) => within(w, 1000)));
    expect(settled.filter((s) => s === 'pending')).toHaveLength(0);
    expect(settled.every((s) => isBreakerOpenError(s))).toBe(true);
    expect(breaker.state).toBe('open');
    expect(clock.pendingTimers).toBe(0);
  });

  it('a wake-up that fires early is re-armed (real timers, 3 ms early)', async () => {
    const breaker = new CircuitBreaker({
      clock: earlyRealClock(3),
      halfOpenWait: true,
      maxHalfOpenMs: 50,
      openDurationMs: 1,
      backoff: { jitter: 0 },
    });
    breaker.trip();
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(breaker.tryAcquire()).toBeDefined(); // hangs forever
    const waiters = Array.from({ length: 20 }, () => breaker.execute(ok).catch((e: unknown) => e));
    // Generous bound: the waiters must be released ~50 ms in; 3 s means "hung".
    const settled = await Promise.all(waiters.map((w) => within(w, 3000)));
    expect(settled.filter((s) => s === 'pending')).toHaveLength(0);
    // Released as rejected when half-open gives up — or, on a machine so loaded that the next
    // 1 ms open period has passed by then, admitted to a later trial that succeeds.
    expect(settled.every((s) => isBreakerOpenError(s) || s === 'ok')).toBe(true);
    expect(settled.some((s) => isBreakerOpenError(s))).toBe(true);
  });

  it('waiters are released with the system clock and fractional durations', async () => {
    const breaker = new CircuitBreaker({
      halfOpenWait: true,
      maxHalfOpenMs: 20.7,
      openDurationMs: 0.3,
      backoff: { jitter: 0 },
    });
    breaker.trip();
    await new Promise((resolve) => setTimeout(resolve, 2));
    expect(breaker.tryAcquire()).toBeDefined();
    const waiters = Array.from({ length: 20 }, () => breaker.execute(ok).catch((e: unknown) => e));
    const settled = await Promise.all(waiters.map((w) => within(w, 3000)));
    expect(settled.filter((s) => s === 'pending')).toHaveLength(0);
  });
});

describe('half-open waiters never hang, real timers, random durations (issue 14, item 1)', () => {
  it('every waiter settles soon after maxHalfOpenMs, whatever its fraction of a millisecond', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.double({ min: 1, max: 15, noNaN: true }),
        fc.double({ min: 0.01, max: 3, noNaN: true }),
        fc.integer({ min: 1, max: 8 }),
        async (maxHalfOpenMs, openDurationMs, waiting) => {
          const breaker = new CircuitBreaker({
            halfOpenWait: true,
            maxHalfOpenMs,
            openDurationMs,
            backoff: { jitter: 0, maxOpenDurationMs: 10 },
          });
          breaker.trip();
          await new Promise((resolve) => setTimeout(resolve, Math.ceil(openDurationMs) + 1));
          const trial = breaker.tryAcquire(); // never reports
          expect(trial).toBeDefined();
          const waiters = Array.from({ length: waiting }, () =>
            breaker.execute(ok).catch((e: unknown) => e),
          );
          // Generous: the verdict is due ~maxHalfOpenMs (<= 15 ms) in; 2 s means "hung".
          const settled = await Promise.all(waiters.map((w) => within(w, 2000)));
          expect(settled.filter((s) => s === 'pending')).toHaveLength(0);
        },
      ),
      { numRuns: 25, endOnFailure: true }, // no shrinking: a failing run waits 2 s
    );
  });
});

describe('per-call timeoutMs is validated (issue 14, item 2)', () => {
  it('Infinity means no timeout, also overriding the breaker default', async () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({ clock, timeoutMs: 50 });
    let finish: (value: string) => void = () => undefined;
    const call = breaker.execute(() => new Promise<string>((resolve) => (finish = resolve)), {
      timeoutMs: Infinity,
    });
    await clock.advanceAsync(100_000);
    expect(clock.pendingTimers).toBe(0);
    finish('late but fine');
    await expect(call).resolves.toBe('late but fine');
    expect(breaker.metrics()).toMatchObject({ failedTotal: 0, successfulTotal: 1 });
    // The breaker option accepts Infinity too ("no timeout").
    const untimed = new CircuitBreaker({ clock, timeoutMs: Infinity });
    await expect(untimed.execute(ok)).resolves.toBe('ok');
    expect(clock.pendingTimers).toBe(0);
  });

  it.each([Number.NaN, 0, -1, -Infinity, '100', 86_400_001, null, {}])(
    'timeoutMs %s rejects with an InvalidOptionError and counts nothing',
    async (timeoutMs) => {
      const breaker = new CircuitBreaker({ minimumCalls: 1, window: { size: 1 } });
      let ran = false;
      const error = await breaker
        .execute(
          () => {
            ran = true;
            return 'ran';
          },
          { timeoutMs: timeoutMs as number },
        )
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(invalidOf(error).option).toBe('timeoutMs');
      expect(ran).toBe(false);
      expect(breaker.state).toBe('closed');
      expect(breaker.metrics()).toMatchObject({
        calls: 0,
        failedTotal: 0,
        successfulTotal: 0,
        rejectedTotal: 0,
      });
    },
  );
});

describe('execute() always answers with a promise (issue 14, item 3)', () => {
  it('a synchronous throw in fn rejects on the fast path and counts once', async () => {
    const breaker = new CircuitBreaker();
    const thrown = new Error('sync');
    let returned: Promise<unknown> | undefined;
    expect(() => {
      returned = breaker.execute(() => {
        throw thrown;
      });
    }).not.toThrow();
    await expect(returned).rejects.toBe(thrown);
    expect(breaker.metrics()).toMatchObject({ failedTotal: 1, calls: 1 });
  });

  it.each([undefined, null, 42, 'fn', {}, Symbol('x')])(
    'execute(%s) rejects with an InvalidOptionError and counts nothing',
    async (fn) => {
      const breaker = new CircuitBreaker({ minimumCalls: 1, window: { size: 1 } });
      let returned: Promise<unknown> | undefined;
      expect(() => {
        returned = breaker.execute(fn as never);
      }).not.toThrow();
      const error = await returned?.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(invalidOf(error).option).toBe('fn');
      expect(breaker.state).toBe('closed');
      expect(breaker.metrics()).toMatchObject({ calls: 0, failedTotal: 0, rejectedTotal: 0 });
    },
  );

  it('a non-function in half-open does not take the trial permit', async () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({ clock, openDurationMs: 10, backoff: { jitter: 0 } });
    breaker.trip();
    clock.advance(10);
    await expect(breaker.execute('nope' as never)).rejects.toSatisfy(isInvalidOptionError);
    await expect(breaker.execute(ok)).resolves.toBe('ok');
    expect(breaker.state).toBe('closed');
  });

  it('bad execute options reject naming them, before the call is admitted', async () => {
    const breaker = new CircuitBreaker();
    const cases: [unknown, string][] = [
      [42, 'options'],
      [null, 'options'],
      [[], 'options'],
      [() => undefined, 'options'],
      [{ signal: 'abort' }, 'signal'],
      [{ fallback: 'value' }, 'fallback'],
      [{ timeout: 5 }, 'timeout'],
    ];
    for (const [options, option] of cases) {
      const error = await breaker.execute(ok, options as never).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(invalidOf(error).option).toBe(option);
    }
    expect(breaker.metrics()).toMatchObject({ calls: 0, rejectedTotal: 0 });
  });
});

describe('fromJSON validates every field (issue 14, item 4)', () => {
  const good = {
    format: 'keel.breaker',
    version: 1,
    name: 'payments',
    state: 'open',
    openRemainingMs: 700,
    consecutiveOpens: 1,
  };

  it('rejects an open time beyond what the breaker could have set', () => {
    const clock = new ManualClock();
    const cases: [Record<string, unknown>, string][] = [
      [{ ...good, openRemainingMs: 1e12 }, 'snapshot.openRemainingMs'],
      [{ ...good, openRemainingMs: 300_001 * 1.1 }, 'snapshot.openRemainingMs'],
      [{ ...good, openRemainingMs: Infinity }, 'snapshot.openRemainingMs'],
      [{ ...good, openRemainingMs: -0.5 }, 'snapshot.openRemainingMs'],
      [{ ...good, consecutiveOpens: 1e300 }, 'snapshot.consecutiveOpens'],
      [{ ...good, consecutiveOpens: 1.5 }, 'snapshot.consecutiveOpens'],
      [{ ...good, name: 42 }, 'snapshot.name'],
      [{ ...good, name: '' }, 'snapshot.name'],
      [{ ...good, version: 2 }, 'snapshot'],
    ];
    for (const [snapshot, option] of cases) {
      let error: unknown;
      try {
        CircuitBreaker.fromJSON(snapshot, { clock });
      } catch (e) {
        error = e;
      }
      expect(invalidOf(error).option, JSON.stringify(snapshot)).toBe(option);
    }
    // The limit is the restoring breaker's: its longest open time plus the jitter spread.
    const at = CircuitBreaker.fromJSON(
      { ...good, openRemainingMs: 1100 },
      { clock, openDurationMs: 500, backoff: { maxOpenDurationMs: 1000, jitter: 0.1 } },
    );
    expect(at.retryAfterMs).toBe(1100);
    expect(() =>
      CircuitBreaker.fromJSON(
        { ...good, openRemainingMs: 1101 },
        { clock, openDurationMs: 500, backoff: { maxOpenDurationMs: 1000, jitter: 0.1 } },
      ),
    ).toThrow(/openRemainingMs/);
  });

  it('bad fromJSON options are a typed error, not a TypeError', () => {
    for (const options of [null, 5, 'x', ['a']]) {
      let error: unknown;
      try {
        CircuitBreaker.fromJSON(good, options as never);
      } catch (e) {
        error = e;
      }
      expect(invalidOf(error).option).toBe('options');
    }
  });
});

describe('injected functions cannot break the breaker (found while fuzzing)', () => {
  it('a random source returning NaN or 7 cannot make the open time NaN', () => {
    for (const value of [Number.NaN, 7, -1, '0.5']) {
      const clock = new ManualClock();
      const breaker = new CircuitBreaker({
        clock,
        openDurationMs: 1000,
        backoff: { jitter: 0.5 },
        random: () => value as number,
      });
      breaker.trip();
      expect(breaker.retryAfterMs).toBe(1000); // read as 0.5: no spread
      clock.advance(1000);
      expect(breaker.state).toBe('half-open');
    }
  });

  it('a random source that throws cannot stop the breaker opening, nor replace the error', async () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({
      clock,
      window: { size: 2 },
      minimumCalls: 1,
      openDurationMs: 1000,
      backoff: { jitter: 0.5 },
      random: () => {
        throw new Error('rng bug');
      },
    });
    const error = new Error('call failed');
    await expect(breaker.execute(() => Promise.reject(error))).rejects.toBe(error);
    expect(breaker.state).toBe('open');
    expect(breaker.retryAfterMs).toBe(1000);
    clock.advance(1000);
    breaker.trip();
    expect(breaker.retryAfterMs).toBe(2000);
  });

  it('an isFailure or ignore that throws counts the call as a failure, not lost', async () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({
      clock,
      openDurationMs: 10,
      backoff: { jitter: 0 },
      isFailure: () => {
        throw new Error('classifier bug');
      },
    });
    const error = new Error('call failed');
    await expect(breaker.execute(() => Promise.reject(error))).rejects.toBe(error);
    await expect(
      breaker.execute(() => {
        throw error;
      }),
    ).rejects.toBe(error);
    expect(breaker.metrics().failedTotal).toBe(2);
    breaker.trip();
    clock.advance(10);
    breaker.tryAcquire()?.failure(error); // the trial's verdict is not lost
    expect(breaker.state).toBe('open');
  });

  it('a non-function listener is an InvalidOptionError', () => {
    const breaker = new CircuitBreaker();
    for (const subscribe of [
      () => breaker.onStateChange('x' as never),
      () => breaker.onCallRejected(null as never),
      () => breaker.onCallFinished({} as never),
      () => breaker.onThresholdExceeded(1 as never),
    ]) {
      let error: unknown;
      try {
        subscribe();
      } catch (e) {
        error = e;
      }
      expect(invalidOf(error).option).toBe('listener');
    }
  });

  it('registry overrides that are not an object are an InvalidOptionError', () => {
    const registry = new BreakerRegistry();
    for (const overrides of [null, 5, 'abc', ['a']]) {
      let error: unknown;
      try {
        registry.breakerFor('k', overrides as never);
      } catch (e) {
        error = e;
      }
      expect(invalidOf(error).option).toBe('overrides');
      expect(registry.size).toBe(0);
    }
  });
});
