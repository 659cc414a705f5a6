import { describe, expect, it } from 'vitest';
import { ManualClock, isInvalidOptionError, isKeelError } from '../../src/core/index.js';
import {
  BreakerRegistry,
  CircuitBreaker,
  isBreakerOpenError,
  isBreakerTimeoutError,
  type StateChange,
} from '../../src/breaker/index.js';
import { invalidOption } from '../support/helpers.js';

const boom = (): Promise<never> => Promise.reject(new Error('boom'));
const ok = (): Promise<string> => Promise.resolve('ok');

function liveTimeouts(): number {
  return process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length;
}

function tripped(
  clock = new ManualClock(),
  extra: ConstructorParameters<typeof CircuitBreaker>[0] = {},
): CircuitBreaker {
  return new CircuitBreaker({
    clock,
    window: { size: 4 },
    minimumCalls: 2,
    openDurationMs: 1000,
    backoff: { jitter: 0 },
    ...extra,
  });
}

describe('CircuitBreaker', () => {
  it('opens at the failure-rate threshold and rejects with retryAfterMs', async () => {
    const clock = new ManualClock();
    const breaker = tripped(clock);
    const changes: StateChange[] = [];
    breaker.onStateChange((c) => changes.push(c));
    await expect(breaker.execute(ok)).resolves.toBe('ok');
    await expect(breaker.execute(boom)).rejects.toThrow('boom'); // 1/2 = 0.5 >= 0.5
    expect(breaker.state).toBe('open');
    clock.advance(400);
    const rejection = await breaker.execute(ok).catch((e: unknown) => e);
    expect(isBreakerOpenError(rejection)).toBe(true);
    expect(isKeelError(rejection)).toBe(true);
    expect(rejection).toMatchObject({
      code: 'KEEL_BREAKER_OPEN',
      state: 'open',
      retryAfterMs: 600,
      breaker: 'breaker',
    });
    expect(changes).toEqual([
      {
        from: 'closed',
        to: 'open',
        reason: 'failure rate 0.500 >= 0.5',
        time: expect.any(Number) as number,
      },
    ]);
    expect(breaker.metrics()).toMatchObject({
      rejectedTotal: 1,
      failedTotal: 1,
      successfulTotal: 1,
    });
  });

  it('half-opens after the open duration, then closes on successful trials', async () => {
    const clock = new ManualClock();
    const breaker = tripped(clock, { halfOpenPermits: 2 });
    await breaker.execute(boom).catch(() => undefined);
    await breaker.execute(boom).catch(() => undefined);
    expect(breaker.state).toBe('open');
    clock.advance(1000);
    expect(breaker.state).toBe('half-open');
    const a = breaker.tryAcquire();
    const b = breaker.tryAcquire();
    expect(breaker.tryAcquire()).toBeUndefined(); // only two trials
    a?.success();
    expect(breaker.state).toBe('half-open');
    b?.success();
    expect(breaker.state).toBe('closed');
    expect(breaker.metrics().calls).toBe(0); // a fresh window
  });

  it('re-opens from half-open on a failed trial, with backoff', () => {
    const clock = new ManualClock();
    const breaker = tripped(clock, {
      backoff: { multiplier: 2, maxOpenDurationMs: 3000, jitter: 0 },
    });
    breaker.trip();
    expect(breaker.retryAfterMs).toBe(1000);
    clock.advance(1000);
    breaker.tryAcquire()?.failure(new Error('still down'));
    expect(breaker.state).toBe('open');
    expect(breaker.retryAfterMs).toBe(2000);
    clock.advance(2000);
    breaker.tryAcquire()?.failure(new Error('still down'));
    expect(breaker.retryAfterMs).toBe(3000); // capped
    clock.advance(3000);
    breaker.tryAcquire()?.success();
    expect(breaker.state).toBe('closed');
    breaker.trip();
    expect(breaker.retryAfterMs).toBe(1000); // closing resets the backoff
  });

  it('jitter spreads the open duration within ± jitter', () => {
    const clock = new ManualClock();
    const low = tripped(clock, { backoff: { jitter: 0.2 }, random: () => 0 });
    low.trip();
    expect(low.retryAfterMs).toBe(800);
    const high = tripped(clock, { backoff: { jitter: 0.2 }, random: () => 0.999999 });
    high.trip();
    expect(high.retryAfterMs).toBeCloseTo(1200, 0);
  });

  it('retryAfterMs is a whole number of ms, rounded up, everywhere it is exposed', async () => {
    // Issue 16 papercut: retryAfterMs was an unrounded float (999.6, 1199.9988…). Rounded up,
    // a caller that waits exactly that long finds the breaker ready for a trial.
    const clock = new ManualClock();
    const breaker = tripped(clock, { backoff: { jitter: 0.2 }, random: () => 0.999999 });
    const rejected: number[] = [];
    breaker.onCallRejected((event) => rejected.push(event.retryAfterMs));
    breaker.trip();
    clock.advance(0.4);
    const error = await breaker.execute(ok).catch((e: unknown) => e);
    expect(isBreakerOpenError(error)).toBe(true);
    const wait = (error as { retryAfterMs: number }).retryAfterMs;
    expect(wait).toBe(1200); // 1199.9996 - 0.4 = 1199.5996, rounded up
    expect(breaker.retryAfterMs).toBe(1200);
    expect(breaker.metrics().retryAfterMs).toBe(1200);
    expect(rejected).toEqual([1200]);
    clock.advance(wait - 1);
    expect(breaker.state).toBe('open');
    clock.advance(1);
    expect(breaker.state).toBe('half-open');
    expect(breaker.retryAfterMs).toBe(0);
  });

  it('counts slow calls, successful or not, against the slow-call threshold', () => {
    const clock = new ManualClock();
    const breaker = tripped(clock, {
      slowCallDurationMs: 100,
      slowCallRateThreshold: 0.5,
      failureRateThreshold: 1,
    });
    const first = breaker.tryAcquire();
    clock.advance(100);
    first?.success();
    expect(breaker.state).toBe('closed'); // one call < minimumCalls
    const second = breaker.tryAcquire();
    clock.advance(150);
    second?.success();
    expect(breaker.state).toBe('open');
  });

  it('the consecutive-failures policy opens regardless of the window', () => {
    const breaker = new CircuitBreaker({
      clock: new ManualClock(),
      consecutiveFailures: 3,
      minimumCalls: 10,
      window: { size: 10 },
    });
    for (let i = 0; i < 3; i++) breaker.tryAcquire()?.failure(new Error('x'));
    expect(breaker.state).toBe('open');
  });

  it('ignored errors count neither way; isFailure can declare errors harmless', async () => {
    const breaker = tripped(new ManualClock(), {
      ignore: (e) => (e as Error).message === 'not found',
      isFailure: (e) => (e as Error).message !== 'client error',
    });
    await breaker.execute(() => Promise.reject(new Error('not found'))).catch(() => undefined);
    await breaker.execute(() => Promise.reject(new Error('client error'))).catch(() => undefined);
    await breaker.execute(() => Promise.reject(new Error('client error'))).catch(() => undefined);
    expect(breaker.state).toBe('closed');
    expect(breaker.metrics()).toMatchObject({
      calls: 2,
      failures: 0,
      ignoredTotal: 1,
      successfulTotal: 2,
    });
  });

  it('a result from a call started before a transition does not steer the new state', () => {
    const clock = new ManualClock();
    const breaker = tripped(clock);
    const early = breaker.tryAcquire();
    breaker.trip();
    clock.advance(1000);
    expect(breaker.state).toBe('half-open');
    early?.success(); // admitted while closed: must not close the half-open breaker
    expect(breaker.state).toBe('half-open');
    breaker.tryAcquire()?.success();
    expect(breaker.state).toBe('closed');
  });

  it('the same generation rule holds for execute()', async () => {
    const clock = new ManualClock();
    const breaker = tripped(clock);
    let finish: (value: string) => void = () => undefined;
    const early = breaker.execute(() => new Promise<string>((resolve) => (finish = resolve)));
    breaker.trip();
    clock.advance(1000);
    expect(breaker.state).toBe('half-open');
    finish('late');
    await expect(early).resolves.toBe('late');
    expect(breaker.state).toBe('half-open'); // the late success did not close it
    await breaker.execute(ok);
    expect(breaker.state).toBe('closed');
  });

  it('a hung half-open trial cannot keep the breaker half-open past maxHalfOpenMs', () => {
    const clock = new ManualClock();
    const breaker = tripped(clock, { maxHalfOpenMs: 500 });
    breaker.trip();
    clock.advance(1000);
    const hung = breaker.tryAcquire();
    expect(hung).toBeDefined();
    clock.advance(499);
    expect(breaker.state).toBe('half-open');
    clock.advance(1);
    expect(breaker.state).toBe('open');
    hung?.success(); // far too late, and from an older generation
    expect(breaker.state).toBe('open');
  });

  it('half-open waiters get the verdict, and an aborted waiter rejects promptly with its reason', async () => {
    const clock = new ManualClock();
    const breaker = tripped(clock, { halfOpenWait: true, maxHalfOpenMs: 10_000 });
    breaker.trip();
    clock.advance(1000);
    let finishTrial: (value: string) => void = () => undefined;
    const trial = breaker.execute(() => new Promise<string>((resolve) => (finishTrial = resolve)));
    const waiter = breaker.execute(ok);
    const controller = new AbortController();
    const aborted = breaker.execute(ok, { signal: controller.signal });
    const reason = new Error('caller gave up');
    controller.abort(reason);
    await expect(aborted).rejects.toBe(reason);
    finishTrial('trial ok');
    await expect(trial).resolves.toBe('trial ok');
    await expect(waiter).resolves.toBe('ok'); // admitted once the breaker closed
    expect(breaker.state).toBe('closed');
  });

  it('half-open waiters are rejected when the trial fails, and woken when half-open gives up', async () => {
    const clock = new ManualClock();
    const breaker = tripped(clock, { halfOpenWait: true, maxHalfOpenMs: 300 });
    breaker.trip();
    clock.advance(1000);
    const trial = breaker.tryAcquire();
    const waiter = breaker.execute(ok).catch((e: unknown) => e);
    expect(clock.pendingTimers).toBe(1); // the wake-up, only while someone waits
    await clock.advanceAsync(300);
    expect(isBreakerOpenError(await waiter)).toBe(true);
    expect(clock.pendingTimers).toBe(0);
    trial?.success();
  });

  it('without waiting, calls beyond the half-open permits are rejected at once', async () => {
    const clock = new ManualClock();
    const breaker = tripped(clock);
    breaker.trip();
    clock.advance(1000);
    breaker.tryAcquire();
    const rejection = await breaker.execute(ok).catch((e: unknown) => e);
    expect(rejection).toMatchObject({ state: 'half-open', retryAfterMs: 0 });
  });

  it('a per-call timeout aborts only that call and counts as a failure', async () => {
    const breaker = new CircuitBreaker({
      minimumCalls: 1,
      window: { size: 5 },
      failureRateThreshold: 1,
    });
    const signals: AbortSignal[] = [];
    const hang = (signal: AbortSignal): Promise<string> => {
      signals.push(signal);
      return new Promise<string>(() => undefined); // ignores its signal: never settles
    };
    const slow = breaker.execute(hang, { timeoutMs: 20 });
    const other = breaker.execute(
      (signal) =>
        new Promise<string>((resolve) => {
          signals.push(signal);
          setTimeout(() => resolve('other'), 40);
        }),
      { timeoutMs: 1000 },
    );
    const error = await slow.catch((e: unknown) => e);
    expect(isBreakerTimeoutError(error)).toBe(true);
    expect(signals[0]?.aborted).toBe(true);
    expect(signals[0]?.reason).toBe(error);
    expect(signals[1]?.aborted).toBe(false); // the other call is untouched
    await expect(other).resolves.toBe('other');
    expect(breaker.metrics()).toMatchObject({ failedTotal: 1, successfulTotal: 1 });
  });

  it("a caller's abort reaches the call, and leaves no timer or listener behind", async () => {
    const before = liveTimeouts();
    const breaker = new CircuitBreaker({ timeoutMs: 60_000 });
    const controller = new AbortController();
    const call = breaker.execute(
      (signal) =>
        new Promise<string>((_, reject) =>
          signal.addEventListener('abort', () => reject(signal.reason as Error)),
        ),
      {
        signal: controller.signal,
      },
    );
    controller.abort(new Error('stop'));
    await expect(call).rejects.toThrow('stop');
    await breaker.execute(ok);
    expect(liveTimeouts()).toBe(before);
    const already = new AbortController();
    already.abort(new Error('early'));
    await expect(breaker.execute(ok, { signal: already.signal })).rejects.toThrow('early');
  });

  it('fallback replaces both rejections and failures', async () => {
    const breaker = tripped();
    await expect(breaker.execute(boom, { fallback: () => 'fallback' })).resolves.toBe('fallback');
    breaker.forceOpen();
    const seen: unknown[] = [];
    await expect(
      breaker.execute(ok, {
        fallback: (e) => {
          seen.push(e);
          return 'cached';
        },
      }),
    ).resolves.toBe('cached');
    expect(isBreakerOpenError(seen[0])).toBe(true);
  });

  it('stackless rejections carry no stack frames', async () => {
    const breaker = tripped(new ManualClock(), { stacklessRejections: true });
    breaker.trip();
    const error = (await breaker.execute(ok).catch((e: unknown) => e)) as Error;
    expect(isBreakerOpenError(error)).toBe(true);
    expect(
      String(error.stack)
        .split('\n')
        .filter((line) => line.trim().startsWith('at ')),
    ).toHaveLength(0);
  });

  it('manual states: forced-open rejects, disabled and metrics-only pass; metrics-only reports', () => {
    const breaker = tripped();
    breaker.forceOpen();
    expect(breaker.tryAcquire()).toBeUndefined();
    breaker.disable();
    for (let i = 0; i < 4; i++) breaker.tryAcquire()?.failure(new Error('x'));
    expect(breaker.state).toBe('disabled');
    breaker.reset();
    breaker.metricsOnly();
    const reasons: string[] = [];
    breaker.onThresholdExceeded((r) => reasons.push(r));
    for (let i = 0; i < 4; i++) expect(breaker.tryAcquire()).toBeDefined();
    breaker.tryAcquire()?.failure(new Error('x'));
    breaker.tryAcquire()?.failure(new Error('x'));
    expect(breaker.state).toBe('metrics-only');
    expect(reasons.length).toBeGreaterThan(0);
  });

  it('a time window forgets outcomes exactly when their bucket leaves it', () => {
    const clock = new ManualClock();
    const breaker = new CircuitBreaker({
      clock,
      window: { type: 'time', size: 3 },
      minimumCalls: 1,
      failureRateThreshold: 1,
    });
    breaker.tryAcquire()?.success(); // bucket 0
    clock.advance(1000);
    breaker.tryAcquire()?.success(); // bucket 1
    clock.advance(1999);
    expect(breaker.metrics().calls).toBe(2); // t = 2999: buckets 0..2
    clock.advance(1);
    expect(breaker.metrics().calls).toBe(1); // t = 3000: bucket 0 left
    clock.advance(1000);
    expect(breaker.metrics().calls).toBe(0);
    clock.advance(60_000);
    breaker.tryAcquire()?.success();
    expect(breaker.metrics().calls).toBe(1);
  });

  it('permits report once; events fire only with listeners', () => {
    const breaker = tripped();
    const finished: unknown[] = [];
    const rejected: unknown[] = [];
    breaker.onCallFinished((e) => finished.push(e));
    breaker.onCallRejected((e) => rejected.push(e));
    const permit = breaker.tryAcquire();
    permit?.success();
    permit?.failure(new Error('again'));
    expect(finished).toHaveLength(1);
    breaker.forceOpen();
    breaker.tryAcquire();
    expect(rejected).toEqual([
      { state: 'forced-open', retryAfterMs: 0, time: expect.any(Number) as number },
    ]);
  });

  it('toJSON / fromJSON carry the state across a restart', () => {
    const clock = new ManualClock();
    const breaker = tripped(clock, { name: 'payments' });
    breaker.trip();
    clock.advance(300);
    const snapshot = JSON.parse(JSON.stringify(breaker)) as unknown;
    expect(snapshot).toEqual({
      format: 'keel.breaker',
      version: 1,
      name: 'payments',
      state: 'open',
      openRemainingMs: 700,
      consecutiveOpens: 1,
    });
    const restored = CircuitBreaker.fromJSON(snapshot, {
      clock,
      openDurationMs: 1000,
      backoff: { jitter: 0 },
    });
    expect(restored.name).toBe('payments');
    expect(restored.retryAfterMs).toBe(700);
    const forced = tripped(clock);
    forced.forceOpen();
    expect(CircuitBreaker.fromJSON(forced.toJSON(), { clock }).state).toBe('forced-open');
    expect(invalidOption(() => CircuitBreaker.fromJSON({ format: 'x' })).option).toBe('snapshot');
    expect(
      invalidOption(() => CircuitBreaker.fromJSON({ ...(snapshot as object), state: 'weird' }))
        .option,
    ).toBe('snapshot.state');
  });

  it('rejects bad options naming them', () => {
    expect(invalidOption(() => new CircuitBreaker({ failureRateThreshold: 0 })).option).toBe(
      'failureRateThreshold',
    );
    expect(invalidOption(() => new CircuitBreaker({ failureRateThreshold: 1.5 })).option).toBe(
      'failureRateThreshold',
    );
    expect(invalidOption(() => new CircuitBreaker({ window: { size: 0 } })).option).toBe(
      'window.size',
    );
    expect(invalidOption(() => new CircuitBreaker({ openDurationMs: -1 })).option).toBe(
      'openDurationMs',
    );
    expect(
      invalidOption(() => new CircuitBreaker({ window: { size: 5 }, minimumCalls: 6 })).option,
    ).toBe('minimumCalls');
    expect(
      invalidOption(
        () => new CircuitBreaker({ openDurationMs: 5000, backoff: { maxOpenDurationMs: 1000 } }),
      ).option,
    ).toBe('backoff.maxOpenDurationMs');
    expect(invalidOption(() => new CircuitBreaker({ halfOpenPermits: 0 })).option).toBe(
      'halfOpenPermits',
    );
    expect(
      isInvalidOptionError(
        (() => {
          try {
            new CircuitBreaker({ windowSize: 3 } as never);
          } catch (error) {
            return error;
          }
          return undefined;
        })(),
      ),
    ).toBe(true);
  });
});

describe('CircuitBreaker closed-state hot path', () => {
  it('adds no microtask: the caller resumes with a bare await of the same promise, outcome counted', async () => {
    const breaker = new CircuitBreaker({ name: 'hops' });
    for (const [fn, expected] of [
      [ok, { successfulTotal: 1, failedTotal: 0 }],
      [boom, { successfulTotal: 1, failedTotal: 1 }],
    ] as const) {
      const order: string[] = [];
      const seen: unknown[] = [];
      const viaBreaker = breaker.execute(fn).then(
        () => order.push('breaker'),
        () => order.push('breaker'),
      );
      // A bare call's promise, awaited after the breaker's: it resumes after the breaker's
      // caller only if execute adds no hop of its own.
      const bare = fn().then(
        () => order.push('bare'),
        () => order.push('bare'),
      );
      void viaBreaker.then(() => seen.push(breaker.metrics()));
      await Promise.all([viaBreaker, bare]);
      expect(order).toEqual(['breaker', 'bare']);
      expect(seen[0]).toMatchObject(expected);
    }
  });
});

describe('CircuitBreaker generation of a hot-path call', () => {
  it("a call whose fn resets the breaker itself counts under the state it was admitted in, not the next one's window", async () => {
    for (const fn of [ok, boom]) {
      const breaker = new CircuitBreaker({ name: 'own-reset' });
      await breaker.execute(ok); // the hot path's handlers exist
      await breaker
        .execute(() => {
          breaker.reset(); // a transition: calls admitted before it no longer count
          return fn();
        })
        .catch(() => undefined);
      // As for any call admitted before a transition: in the totals, not in the new window.
      expect(breaker.metrics()).toMatchObject({ calls: 0, failures: 0 });
    }
  });
});

describe('CircuitBreaker hot path and a default timeout', () => {
  it('a call that lifts the default timeout (timeoutMs: Infinity) does not lift it for the next calls', async () => {
    const breaker = new CircuitBreaker({ name: 'default-timeout', timeoutMs: 20 });
    await expect(breaker.execute(ok, { timeoutMs: Infinity })).resolves.toBe('ok');
    await expect(breaker.execute(ok)).resolves.toBe('ok');
    const hang = (): Promise<never> => new Promise<never>(() => undefined);
    const outcome = await breaker.execute(hang).catch((error: unknown) => error);
    expect(isBreakerTimeoutError(outcome)).toBe(true);
  });
});

describe('BreakerRegistry', () => {
  it('hands out one breaker per key with shared defaults and collects unused ones', () => {
    const clock = new ManualClock();
    const registry = new BreakerRegistry({ clock, openDurationMs: 5000 });
    const payments = registry.breakerFor('payments', { timeoutMs: 800 });
    expect(registry.breakerFor('payments')).toBe(payments);
    expect(payments.name).toBe('payments');
    registry.breakerFor('inventory');
    expect(registry.keys().sort()).toEqual(['inventory', 'payments']);
    clock.advance(1000);
    registry.breakerFor('payments');
    expect(registry.sweep(500)).toBe(1);
    expect(registry.has('inventory')).toBe(false);
    expect(registry.size).toBe(1);
    expect(registry.delete('payments')).toBe(true);
    expect(invalidOption(() => registry.breakerFor('')).option).toBe('key');
    expect(invalidOption(() => new BreakerRegistry({ failureRateThreshold: 2 })).option).toBe(
      'failureRateThreshold',
    );
  });
});
