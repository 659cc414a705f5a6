// A half-open trial whose outcome is ignored (the `ignore` option, the default ignore of a
// NoEndpointError, `permit.ignore()`) says nothing about the dependency, so it must not use up
// a trial: it gives its permit back. Before, the permit stayed taken: with one permit the
// breaker rejected every call until `maxHalfOpenMs` (60 s by default) and then re-opened with
// a longer backoff, though no trial had failed.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { LoadBalancer, roundRobin } from '../../src/balancer/index.js';
import { CircuitBreaker } from '../../src/breaker/index.js';

function halfOpen(options: { halfOpenPermits?: number; halfOpenWait?: boolean } = {}): {
  clock: ManualClock;
  breaker: CircuitBreaker;
} {
  const clock = new ManualClock();
  const breaker = new CircuitBreaker({
    clock,
    openDurationMs: 1_000,
    backoff: { jitter: 0 },
    ...options,
  });
  breaker.trip();
  clock.advance(1_000);
  expect(breaker.state).toBe('half-open');
  return { clock, breaker };
}

/** A real NoEndpointError, from a balancer with nothing to pick. */
function noEndpoint(): unknown {
  try {
    new LoadBalancer({ strategy: roundRobin() }).acquireOrThrow();
  } catch (error) {
    return error;
  }
  throw new Error('expected a NoEndpointError');
}

describe('an ignored half-open trial gives its permit back', () => {
  it('permit.ignore(): the next call is the trial, and its success closes the breaker', () => {
    const { breaker } = halfOpen();
    breaker.tryAcquire()?.ignore();
    const next = breaker.tryAcquire();
    expect(next).toBeDefined();
    next?.success();
    expect(breaker.state).toBe('closed');
  });

  it('execute(): a trial rejected with NoEndpointError (ignored by default) does not hold the breaker', async () => {
    const { breaker } = halfOpen();
    const error = noEndpoint();
    await expect(breaker.execute(() => Promise.reject(error))).rejects.toBe(error);
    await expect(breaker.execute(() => Promise.resolve('ok'))).resolves.toBe('ok');
    expect(breaker.state).toBe('closed');
    expect(breaker.metrics().rejectedTotal).toBe(0);
  });

  it('halfOpenWait: a caller waiting on a trial that is ignored becomes the next trial', async () => {
    const { breaker } = halfOpen({ halfOpenWait: true });
    const trial = breaker.tryAcquire();
    const waiting = breaker.execute(() => Promise.resolve('waited'));
    await Promise.resolve();
    trial?.ignore();
    // No clock move: only the freed permit can let the waiter through.
    await expect(waiting).resolves.toBe('waited');
    expect(breaker.state).toBe('closed');
  });

  it('an ignored outcome from an earlier half-open does not free a permit of the current one', () => {
    const { clock, breaker } = halfOpen();
    const stale = breaker.tryAcquire();
    clock.advance(60_000); // maxHalfOpenMs without a verdict: re-opened, for 2 s (backoff)
    expect(breaker.state).toBe('open');
    clock.advance(2_000);
    expect(breaker.state).toBe('half-open');
    const current = breaker.tryAcquire();
    expect(current).toBeDefined();
    stale?.ignore();
    expect(breaker.tryAcquire()).toBeUndefined();
    current?.success();
    expect(breaker.state).toBe('closed');
  });

  it('with K permits, any mix of ignored and successful trials: a call is admitted whenever fewer than K are pending, and K successes close it', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.array(fc.constantFrom('ignore', 'success', 'acquire'), { maxLength: 40 }),
        (permits, steps) => {
          const { breaker } = halfOpen({ halfOpenPermits: permits });
          const pending: { ignore(): void; success(): void }[] = [];
          let successes = 0;
          for (const step of steps) {
            if (breaker.state === 'closed') break;
            if (step === 'acquire') {
              const permit = breaker.tryAcquire();
              expect(permit !== undefined).toBe(pending.length + successes < permits);
              if (permit !== undefined) pending.push(permit);
            } else {
              const permit = pending.shift();
              if (permit === undefined) continue;
              if (step === 'ignore') permit.ignore();
              else {
                permit.success();
                successes++;
              }
            }
            expect(breaker.state).toBe(successes >= permits ? 'closed' : 'half-open');
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
