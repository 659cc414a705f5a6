import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { CircuitBreaker, type CallFinished } from '../../src/breaker/index.js';
import { LoadBalancer, NO_ENDPOINT, roundRobin } from '../../src/balancer/index.js';
import { thrown } from '../support/helpers.js';

// Issue 16: a NoEndpointError thrown inside breaker.execute (the balancer had nothing to pick)
// says nothing about the downstream's health, yet it counted as a breaker failure.
function breakerWith(extra: ConstructorParameters<typeof CircuitBreaker>[0] = {}): CircuitBreaker {
  return new CircuitBreaker({
    clock: new ManualClock(),
    window: { size: 4 },
    minimumCalls: 2,
    openDurationMs: 1000,
    ...extra,
  });
}

/** A call that asks an empty balancer for an endpoint, as a service would inside execute. */
function callThrough(balancer: LoadBalancer): Promise<never> {
  return Promise.resolve().then(() => {
    balancer.acquireOrThrow();
    throw new Error('unreachable: the balancer is empty');
  });
}

describe('CircuitBreaker and NoEndpointError', () => {
  it('a NoEndpointError inside execute is ignored by default: it neither opens nor counts', async () => {
    const breaker = breakerWith();
    const finished: CallFinished['outcome'][] = [];
    breaker.onCallFinished((event) => finished.push(event.outcome));
    const empty = new LoadBalancer({ strategy: roundRobin() });
    for (let i = 0; i < 5; i++) {
      await expect(breaker.execute(() => callThrough(empty))).rejects.toMatchObject({
        code: NO_ENDPOINT,
      });
    }
    expect(breaker.state).toBe('closed');
    expect(breaker.metrics()).toMatchObject({
      calls: 0,
      failures: 0,
      failedTotal: 0,
      ignoredTotal: 5,
    });
    expect(finished).toEqual(['ignored', 'ignored', 'ignored', 'ignored', 'ignored']);
    // Reported through a permit, the same error is ignored too.
    breaker.tryAcquire()?.failure(thrown(() => empty.acquireOrThrow()));
    expect(breaker.metrics().ignoredTotal).toBe(6);
    // Other errors still count.
    await breaker.execute(() => Promise.reject(new Error('boom'))).catch(() => undefined);
    expect(breaker.metrics().failedTotal).toBe(1);
  });

  it('the code the breaker ignores is the balancer’s NO_ENDPOINT', () => {
    // The breaker spells the code out (no runtime import of keel/balancer): keep them equal.
    expect(NO_ENDPOINT).toBe('KEEL_NO_ENDPOINT');
  });

  it('an explicit ignore predicate replaces the default', async () => {
    const breaker = breakerWith({ ignore: (e) => (e as Error).message === 'not found' });
    const empty = new LoadBalancer({ strategy: roundRobin() });
    for (let i = 0; i < 2; i++) await breaker.execute(() => callThrough(empty)).catch(() => 0);
    expect(breaker.metrics()).toMatchObject({ failedTotal: 2, ignoredTotal: 0 });
    expect(breaker.state).toBe('open');
  });
});
