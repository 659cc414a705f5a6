// A caller that aborts its own call (its AbortSignal, passed to execute) says nothing about the
// dependency: the user navigated away, a request was cancelled upstream. Before, such an abort
// counted as a breaker failure, so cancellations alone could open the breaker, and a half-open
// trial the caller cancelled failed the trial and re-opened it. Now it counts neither way (an
// ignored outcome) and a half-open trial permit goes back. A timeout — the breaker's own, or a
// keel/resilience timeout whose signal reaches the call as its caller's — still counts as a
// failure.
import { describe, expect, it } from 'vitest';
import { KeelError, ManualClock } from '../../src/core/index.js';
import { CircuitBreaker, isBreakerTimeoutError } from '../../src/breaker/index.js';
import { TIMEOUT, TimeoutError } from '../../src/resilience/index.js';

const pending = (): Promise<never> => new Promise<never>(() => undefined);

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

describe('a caller aborting its own call', () => {
  it('counts neither way: cancellations alone never open the breaker', async () => {
    const breaker = breakerOf();
    for (let i = 0; i < 10; i++) {
      const controller = new AbortController();
      const call = breaker.execute(pending, { signal: controller.signal });
      controller.abort(new Error('user went away'));
      await expect(call).rejects.toThrow('user went away');
    }
    expect(breaker.state).toBe('closed');
    expect(breaker.metrics()).toMatchObject({ failedTotal: 0, ignoredTotal: 10 });
  });

  it('the same with a timeout that has not passed, and with fn rejecting on the abort', async () => {
    const breaker = breakerOf();
    for (let i = 0; i < 4; i++) {
      const controller = new AbortController();
      const call = breaker.execute(
        (signal) =>
          new Promise((_, reject) => {
            signal.addEventListener('abort', () => {
              reject(signal.reason as Error);
            });
          }),
        { signal: controller.signal, timeoutMs: 5_000 },
      );
      controller.abort();
      await expect(call).rejects.toMatchObject({ name: 'AbortError' });
    }
    expect(breaker.state).toBe('closed');
    expect(breaker.metrics()).toMatchObject({ failedTotal: 0, ignoredTotal: 4 });
  });

  it('a cancelled half-open trial gives its permit back: the next call is the trial', async () => {
    const clock = new ManualClock();
    const breaker = breakerOf(clock);
    breaker.trip();
    clock.advance(1_000);
    expect(breaker.state).toBe('half-open');
    const controller = new AbortController();
    const trial = breaker.execute(pending, { signal: controller.signal });
    controller.abort();
    await expect(trial).rejects.toMatchObject({ name: 'AbortError' });
    expect(breaker.state).toBe('half-open');
    await expect(breaker.execute(() => 'ok')).resolves.toBe('ok');
    expect(breaker.state).toBe('closed');
  });

  it("with a fallback, the caller's own abort rejects with its reason: the fallback does not run", async () => {
    // The caller gave up and will not use an answer: a fallback value (or its side effects, a
    // cache read, a log line) would be wasted, and an already-aborted signal rejects the same way.
    const clock = new ManualClock();
    const breaker = breakerOf(clock);
    for (const timeoutMs of [undefined, 5_000]) {
      let ran = 0;
      const controller = new AbortController();
      const call = breaker.execute(pending, {
        signal: controller.signal,
        timeoutMs,
        fallback: () => {
          ran++;
          return 'fallback';
        },
      });
      controller.abort(new Error('user went away'));
      await expect(call).rejects.toThrow('user went away');
      expect(ran).toBe(0);
    }
    expect(breaker.metrics()).toMatchObject({ failedTotal: 0, ignoredTotal: 2 });
    // The deadline queue lets its timer go at the end of the tick it emptied in.
    await new Promise((resolve) => setImmediate(resolve));
    expect(clock.pendingTimers).toBe(0);
  });

  it('with a fallback, a timeout reaching the call as its abort is a failure the fallback answers', async () => {
    const breaker = breakerOf();
    const controller = new AbortController();
    const call = breaker.execute(pending, {
      signal: controller.signal,
      fallback: (error) => (error instanceof TimeoutError ? 'fallback' : 'other'),
    });
    controller.abort(new TimeoutError(50, 'cooperative'));
    await expect(call).resolves.toBe('fallback');
    expect(breaker.metrics()).toMatchObject({ failedTotal: 1, ignoredTotal: 0 });
  });

  it("the breaker's own timeout still counts as a failure", async () => {
    const clock = new ManualClock();
    const breaker = breakerOf(clock);
    const controller = new AbortController();
    const calls = [0, 1].map(() =>
      breaker.execute(pending, { signal: controller.signal, timeoutMs: 100 }),
    );
    clock.advance(100);
    for (const call of calls) {
      expect(isBreakerTimeoutError(await call.catch((e: unknown) => e))).toBe(true);
    }
    expect(breaker.metrics()).toMatchObject({ failedTotal: 2 });
    expect(breaker.state).toBe('open');
  });

  it("a keel/resilience timeout's abort, reaching the call through its signal, is a failure", async () => {
    const breaker = breakerOf();
    for (let i = 0; i < 2; i++) {
      const controller = new AbortController();
      const call = breaker.execute(pending, { signal: controller.signal });
      controller.abort(new TimeoutError(50, 'aggressive'));
      await expect(call).rejects.toBeInstanceOf(KeelError);
    }
    expect(breaker.metrics()).toMatchObject({ failedTotal: 2, ignoredTotal: 0 });
    expect(breaker.state).toBe('open');
  });

  it("the code the breaker counts as a timeout is keel/resilience's TIMEOUT", () => {
    // The breaker spells the code out (it may not import keel/resilience): keep them equal.
    expect(TIMEOUT).toBe('KEEL_TIMEOUT');
  });
  it("a standard timeout signal (AbortSignal.timeout: a DOMException 'TimeoutError') counts as a failure", async () => {
    // The platform's own deadline for a call: the dependency was too slow, the caller did not
    // just go away. Ignored, a dependency that always outlasts its callers' deadlines would
    // never open the breaker.
    const breaker = breakerOf();
    for (let i = 0; i < 2; i++) {
      const controller = new AbortController();
      const call = breaker.execute(pending, { signal: controller.signal });
      controller.abort(
        new DOMException('The operation was aborted due to timeout', 'TimeoutError'),
      );
      await expect(call).rejects.toMatchObject({ name: 'TimeoutError' });
    }
    expect(breaker.metrics()).toMatchObject({ failedTotal: 2, ignoredTotal: 0 });
    expect(breaker.state).toBe('open');
  });
});

// The fuzz suite (test/fuzz/breaker.fuzz.test.ts, seed -275337877) found it: telling a caller's
// abort apart used `instanceof`, which runs a Proxy's getPrototypeOf trap — a permit's
// failure() with such an error threw instead of counting it.
describe('an error that is a Proxy whose every trap throws', () => {
  const hostile = (): object => {
    const trap = (): never => {
      throw new Error('trap');
    };
    return new Proxy({}, { get: trap, has: trap, getPrototypeOf: trap, ownKeys: trap });
  };

  it("counts as a permit's failure, and the breaker opens on such failures", () => {
    const breaker = new CircuitBreaker({
      clock: new ManualClock(),
      window: { size: 4, type: 'count' },
      minimumCalls: 2,
    });
    for (let i = 0; i < 2; i++) {
      const permit = breaker.tryAcquire();
      expect(() => permit?.failure(hostile())).not.toThrow();
    }
    expect(breaker.state).toBe('open');
  });
});
