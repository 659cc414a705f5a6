// The breaker as a pipeline stage must count a caller's abort as execute() does (see
// test/breaker/caller-abort.test.ts): not at all. Before, `pipeline(…, breaker)` called with a
// caller's signal counted the call's rejection with that signal's reason as a failure, so user
// cancellations opened the breaker; a timeout stage's abort (TimeoutError) still counts, and so
// does an ordinary error of a call whose signal aborted for another reason.
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { CircuitBreaker } from '../../src/breaker/index.js';
import { pipeline, timeout } from '../../src/resilience/index.js';

const rejectOnAbort = (signal: AbortSignal): Promise<never> =>
  new Promise<never>((_, reject) => {
    signal.addEventListener('abort', () => {
      reject(signal.reason as Error);
    });
  });

function breakerOf(clock = new ManualClock()): CircuitBreaker {
  return new CircuitBreaker({
    clock,
    window: { type: 'count', size: 4 },
    minimumCalls: 2,
    failureRateThreshold: 0.5,
    openDurationMs: 1_000,
    backoff: { jitter: 0 },
  });
}

describe('pipeline breaker stage: a caller aborting its own call', () => {
  it('closed (hot path) and half-open (through execute): counts neither way', async () => {
    const clock = new ManualClock();
    const breaker = breakerOf(clock);
    const p = pipeline(breaker);
    for (let i = 0; i < 6; i++) {
      const controller = new AbortController();
      const call = p.execute(rejectOnAbort, { signal: controller.signal });
      controller.abort(new Error('user went away'));
      await expect(call).rejects.toThrow('user went away');
    }
    expect(breaker.metrics()).toMatchObject({ state: 'closed', failedTotal: 0, ignoredTotal: 6 });
    breaker.trip();
    clock.advance(1_000);
    const controller = new AbortController();
    const trial = p.execute(rejectOnAbort, { signal: controller.signal });
    controller.abort();
    await expect(trial).rejects.toMatchObject({ name: 'AbortError' });
    expect(breaker.state).toBe('half-open');
    await expect(p.execute(() => 'ok')).resolves.toBe('ok');
    expect(breaker.state).toBe('closed');
  });

  it('a timeout stage outside the breaker still counts as a failure', async () => {
    const clock = new ManualClock();
    const breaker = breakerOf(clock);
    const p = pipeline(timeout({ ms: 100, clock }), breaker);
    const controller = new AbortController();
    const calls = [0, 1].map(() => p.execute(rejectOnAbort, { signal: controller.signal }));
    await clock.advanceAsync(100);
    for (const call of calls) await call.catch(() => undefined);
    expect(breaker.metrics()).toMatchObject({ failedTotal: 2, ignoredTotal: 0, state: 'open' });
  });

  it('calls of one tick with one signal or several: each is counted by its own signal', async () => {
    // The stage keeps the failure reaction it made for the last call's signal (made once per
    // signal, not per call): calls with other signals in the same tick must not share it.
    const breaker = new CircuitBreaker({ window: { type: 'count', size: 100 }, minimumCalls: 100 });
    const p = pipeline(breaker);
    const shared = new AbortController();
    const other = new AbortController();
    const calls = [
      p.execute(rejectOnAbort, { signal: shared.signal }),
      p.execute(rejectOnAbort, { signal: other.signal }),
      p.execute(rejectOnAbort, { signal: shared.signal }),
      p.execute(() => Promise.reject(new Error('down')), { signal: shared.signal }),
      p.execute(() => Promise.reject(new Error('down')), { signal: other.signal }),
    ];
    shared.abort(new Error('user went away'));
    // Not the other signal's reason: its call fails for a reason of its own.
    other.abort(new Error('not the failure'));
    const reasons = await Promise.all(calls.map((call) => call.catch((e: unknown) => e)));
    expect(reasons.map((e) => (e as Error).message)).toEqual([
      'user went away',
      'not the failure',
      'user went away',
      'down',
      'down',
    ]);
    // Three caller aborts ignored; the two calls that failed on their own are failures.
    expect(breaker.metrics()).toMatchObject({ failedTotal: 2, ignoredTotal: 3 });
  });

  it('a reason that is not an object (abort("navigated away")) counts neither way too', async () => {
    // As execute() with the same signal counts it. Before, the stage could only mark objects as
    // its caller's aborts, so a string reason counted as a failure of the dependency.
    const clock = new ManualClock();
    const breaker = breakerOf(clock);
    const p = pipeline(breaker);
    for (let i = 0; i < 4; i++) {
      const controller = new AbortController();
      const call = p.execute(rejectOnAbort, { signal: controller.signal });
      controller.abort('navigated away');
      await expect(call).rejects.toBe('navigated away');
    }
    expect(breaker.metrics()).toMatchObject({ state: 'closed', failedTotal: 0, ignoredTotal: 4 });
    // Half-open, through execute: the trial's permit goes back, the caller gets the reason.
    breaker.trip();
    clock.advance(1_000);
    const controller = new AbortController();
    const trial = p.execute(rejectOnAbort, { signal: controller.signal });
    controller.abort(42);
    await expect(trial).rejects.toBe(42);
    expect(breaker.state).toBe('half-open');
    await expect(p.execute(() => 'ok')).resolves.toBe('ok');
    expect(breaker.state).toBe('closed');
  });
});
