// Per-call timeouts share one deadline structure per clock (issue 14, "a call with timeoutMs
// costs ~6 µs"): no timer per call, one unref'd timer for the earliest deadline, entries removed
// as calls finish. These tests check the structure's behaviour, never its speed.
import { describe, expect, it } from 'vitest';
import { ManualClock, systemClock, type Timer } from '../../src/core/index.js';
import { CircuitBreaker, isBreakerTimeoutError } from '../../src/breaker/index.js';
import { deadlineQueueFor } from '../../src/breaker/deadlines.js';

/** A macrotask boundary: every queued promise reaction and nextTick callback has run. */
const drain = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const hang = (): Promise<never> => new Promise<never>(() => undefined);

/** A ManualClock that records how its timers were treated. */
function watchedClock(): {
  clock: ManualClock;
  made: { delayMs: number; unrefd: boolean; cancelled: boolean }[];
} {
  const clock = new ManualClock();
  const made: { delayMs: number; unrefd: boolean; cancelled: boolean }[] = [];
  const setTimer = clock.setTimer.bind(clock);
  clock.setTimer = (callback, delayMs): Timer => {
    const record = { delayMs, unrefd: false, cancelled: false };
    made.push(record);
    const inner = setTimer(callback, delayMs);
    const timer: Timer = {
      cancel: () => {
        record.cancelled = true;
        inner.cancel();
      },
      unref: () => {
        record.unrefd = true;
        inner.unref();
        return timer;
      },
    };
    return timer;
  };
  return { clock, made };
}

describe('per-call timeouts share one deadline structure', () => {
  it('many concurrent calls with different deadlines each time out at their own deadline', async () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({ clock, minimumCalls: 1, failureRateThreshold: 1 });
    const timeouts = [70, 10, 40, 40, 100, 25, 10, 55, 90, 1];
    const settledAt: (number | undefined)[] = timeouts.map(() => undefined);
    const errors: unknown[] = timeouts.map(() => undefined);
    const signals: AbortSignal[] = [];
    timeouts.forEach((timeoutMs, i) => {
      void breaker
        .execute(
          (signal) => {
            signals[i] = signal;
            return hang();
          },
          { timeoutMs },
        )
        .catch((error: unknown) => {
          settledAt[i] = clock.now();
          errors[i] = error;
        });
    });
    expect(deadlineQueueFor(clock).size).toBeGreaterThan(0);
    expect(clock.pendingTimers).toBe(1); // one timer for all of them, not one each
    for (let t = 1; t <= 100; t++) {
      await clock.advanceAsync(1);
      timeouts.forEach((timeoutMs, i) => {
        if (timeoutMs <= t) {
          expect(settledAt[i], `call ${i} (timeout ${timeoutMs} ms) at ${t}`).toBe(timeoutMs);
          expect(isBreakerTimeoutError(errors[i])).toBe(true);
          expect((errors[i] as { timeoutMs: number }).timeoutMs).toBe(timeoutMs);
          expect(signals[i]?.reason).toBe(errors[i]);
        } else {
          expect(settledAt[i], `call ${i} (timeout ${timeoutMs} ms) at ${t}`).toBeUndefined();
          expect(signals[i]?.aborted).toBe(false);
        }
      });
    }
    expect(breaker.metrics().failedTotal).toBe(timeouts.length);
    await drain();
    expect(deadlineQueueFor(clock).size).toBe(0);
    expect(clock.pendingTimers).toBe(0);
  });

  it('a finished call whose fn took the signal keeps it un-aborted when a call of the same millisecond times out', async () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({ clock });
    let kept: AbortSignal | undefined;
    // Finishes at once but keeps its signal (as a fetch whose body is read later would).
    await breaker.execute(
      (signal) => {
        kept = signal;
        return Promise.resolve(1);
      },
      { timeoutMs: 50 },
    );
    const late = breaker.execute((signal) => (signal.aborted ? 0 : hang()), { timeoutMs: 50 });
    const lateOutcome = late.then(
      () => 'resolved',
      (error: unknown) => (isBreakerTimeoutError(error) ? 'timed out' : 'other'),
    );
    await clock.advanceAsync(60);
    expect(await lateOutcome).toBe('timed out');
    expect(kept?.aborted).toBe(false);
  });

  it('calls whose fn declares no parameter share one deadline entry per millisecond', async () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({ clock });
    const outcomes = [0, 1, 2].map(() =>
      breaker.execute(() => hang(), { timeoutMs: 20 }).catch((error: unknown) => error),
    );
    expect(deadlineQueueFor(clock).size).toBe(1);
    await clock.advanceAsync(20);
    for (const outcome of outcomes) expect(isBreakerTimeoutError(await outcome)).toBe(true);
    await drain();
    expect(deadlineQueueFor(clock).size).toBe(0);
  });

  it('calls of several breakers on one clock share its timer and each time out on time', async () => {
    const clock = new ManualClock();
    const a = new CircuitBreaker({ clock, name: 'a' });
    const b = new CircuitBreaker({ clock, name: 'b' });
    const outcomes: string[] = [];
    const track = (p: Promise<unknown>, label: string): void => {
      p.then(
        () => outcomes.push(`${label} ok @${clock.now()}`),
        (e: unknown) =>
          outcomes.push(
            `${label} ${isBreakerTimeoutError(e) ? (e as { breaker: string }).breaker : '?'} @${clock.now()}`,
          ),
      );
    };
    track(a.execute(hang, { timeoutMs: 30 }), 'a30');
    track(b.execute(hang, { timeoutMs: 20 }), 'b20');
    track(
      a.execute(() => 'done', { timeoutMs: 5 }),
      'a5',
    );
    expect(clock.pendingTimers).toBe(1);
    await clock.advanceAsync(40);
    expect(outcomes).toEqual(['a5 ok @0', 'b20 b @20', 'a30 a @30']);
    await drain();
    expect(clock.pendingTimers).toBe(0);
  });

  it('entries of calls that finish are removed: after 10 000 calls the structure is empty', async () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({ clock });
    breaker.disable(); // counts every call, never opens
    const queue = deadlineQueueFor(clock);
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < 10_000; i++) {
      // Different deadlines and a mix of ways to finish: value, promise, rejection, throw.
      const timeoutMs = 20 + (i % 500); // more than the 10 ms that pass meanwhile
      const fn =
        i % 4 === 0
          ? (): number => i
          : i % 4 === 1
            ? (): Promise<number> => Promise.resolve(i)
            : i % 4 === 2
              ? (): Promise<never> => Promise.reject(new Error('no'))
              : (): never => {
                  throw new Error('sync');
                };
      calls.push(breaker.execute(fn, { timeoutMs }).catch(() => 'failed'));
      if (i % 1000 === 999) clock.advance(1); // some time passes, deadlines spread
    }
    expect(queue.size).toBeGreaterThan(0);
    await Promise.all(calls);
    expect(queue.size).toBe(0);
    await drain();
    expect(clock.pendingTimers).toBe(0); // no timer left armed for nothing
    expect(breaker.metrics()).toMatchObject({ successfulTotal: 5000, failedTotal: 5000 });
  });

  it('on the system clock too: 10 000 finished calls leave nothing queued and no timer', async () => {
    const breaker = new CircuitBreaker({ name: 'real', timeoutMs: 60_000 });
    const queue = deadlineQueueFor(systemClock);
    for (let i = 0; i < 10_000; i++) await breaker.execute(() => Promise.resolve(i));
    const concurrent = Array.from({ length: 1000 }, (_, i) =>
      breaker.execute(async () => {
        await Promise.resolve();
        return i;
      }),
    );
    expect(queue.size).toBeGreaterThan(0);
    await Promise.all(concurrent);
    expect(queue.size).toBe(0);
    await drain();
    expect(queue.armed).toBe(false);
  });

  it('the timer is unref’d, re-armed for the earliest deadline, and cleared when nothing is pending', async () => {
    const { clock, made } = watchedClock();
    const breaker = new CircuitBreaker({ clock });
    const late = breaker.execute(hang, { timeoutMs: 500 }).catch((e: unknown) => e);
    expect(made).toHaveLength(1);
    expect(made[0]).toMatchObject({ delayMs: 500, unrefd: true, cancelled: false });
    // A later deadline needs no new timer; an earlier one re-arms.
    const later = breaker.execute(hang, { timeoutMs: 800 }).catch((e: unknown) => e);
    expect(made).toHaveLength(1);
    let finish: (value: string) => void = () => undefined;
    const early = breaker.execute(() => new Promise<string>((r) => (finish = r)), {
      timeoutMs: 100,
    });
    expect(made).toHaveLength(2);
    expect(made[0]?.cancelled).toBe(true);
    expect(made[1]).toMatchObject({ delayMs: 100, unrefd: true });
    expect(clock.pendingTimers).toBe(1);
    finish('in time');
    await expect(early).resolves.toBe('in time');
    await clock.advanceAsync(500);
    expect(isBreakerTimeoutError(await late)).toBe(true);
    await clock.advanceAsync(300);
    expect(isBreakerTimeoutError(await later)).toBe(true);
    await drain();
    expect(clock.pendingTimers).toBe(0);
    expect(made.every((t) => t.unrefd)).toBe(true);

    // A call that finishes before its deadline: the armed timer is cleared once nothing is pending.
    const before = made.length;
    await breaker.execute(() => 'quick', { timeoutMs: 1000 });
    expect(made.length).toBe(before + 1);
    await drain();
    expect(made.at(-1)?.cancelled).toBe(true);
    expect(clock.pendingTimers).toBe(0);
  });

  it('a caller abort removes the call from the structure and times nothing out later', async () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({ clock, timeoutMs: 100 });
    const controller = new AbortController();
    let seen: AbortSignal | undefined;
    const call = breaker.execute(
      (signal) => {
        seen = signal;
        return hang();
      },
      { signal: controller.signal },
    );
    expect(deadlineQueueFor(clock).size).toBe(1);
    controller.abort(new Error('stop'));
    await expect(call).rejects.toThrow('stop');
    expect(seen?.reason).toEqual(new Error('stop'));
    expect(deadlineQueueFor(clock).size).toBe(0);
    await drain();
    expect(clock.pendingTimers).toBe(0);
    await clock.advanceAsync(200);
    // Counted once, as the caller's abort (ignored: see caller-abort.test.ts), not as a timeout.
    expect(breaker.metrics()).toMatchObject({ failedTotal: 0, ignoredTotal: 1 });
  });

  it('without a timeout, a caller abort still settles a call whose fn ignores its signal', async () => {
    // Found by the execute fuzz (seed -133685497): `signal` is documented to abort the call,
    // but the hot path without a timeout only handed the signal to fn and waited forever.
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({ clock });
    const controller = new AbortController();
    let seen: AbortSignal | undefined;
    const call = breaker.execute(
      (signal) => {
        seen = signal;
        return hang();
      },
      { signal: controller.signal },
    );
    expect(seen).toBe(controller.signal); // no timeout: fn gets the caller's own signal
    controller.abort(new Error('gone'));
    await expect(call).rejects.toThrow('gone');
    expect(breaker.metrics()).toMatchObject({ failedTotal: 0, ignoredTotal: 1 });
    await drain();
    expect(clock.pendingTimers).toBe(0);
  });

  it('a timeout with a fallback resolves with the fallback and still counts as a failure', async () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({ clock });
    const call = breaker.execute(hang, {
      timeoutMs: 50,
      fallback: (e) => (isBreakerTimeoutError(e) ? 'fallback' : 'other'),
    });
    await clock.advanceAsync(50);
    await expect(call).resolves.toBe('fallback');
    expect(breaker.metrics().failedTotal).toBe(1);
  });
});
