// Breakers of a BreakerRegistry share one validated config (issue 14, "≤ 600 B per breaker
// inside a BreakerRegistry"); the window, waiters and hot-path handlers are made on first use.
// Sharing must not be observable: each breaker keeps its own name, state and window.
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { BreakerRegistry, CircuitBreaker } from '../../src/breaker/index.js';

const boom = (): Promise<never> => Promise.reject(new Error('boom'));

describe('breakers sharing a registry config stay independent', () => {
  it('each has its own name, window and state', async () => {
    const clock = new ManualClock();
    const registry = new BreakerRegistry({ clock, minimumCalls: 2, window: { size: 2 } });
    const a = registry.breakerFor('a');
    const b = registry.breakerFor('b');
    expect([a.name, b.name]).toEqual(['a', 'b']);
    await a.execute(boom).catch(() => undefined);
    await a.execute(boom).catch(() => undefined);
    expect(a.state).toBe('open');
    expect(b.state).toBe('closed');
    expect(b.metrics()).toMatchObject({ calls: 0, failures: 0 });
    await expect(b.execute(() => 'fine')).resolves.toBe('fine');
    expect(b.metrics()).toMatchObject({ calls: 1, failures: 0 });
  });

  it('a name in the defaults still wins over the key, as before; overrides still apply', () => {
    const named = new BreakerRegistry({ name: 'shared-name' });
    expect(named.breakerFor('k').name).toBe('shared-name');
    const registry = new BreakerRegistry({ openDurationMs: 1000 });
    const own = registry.breakerFor('x', { openDurationMs: 5000, backoff: { jitter: 0 } });
    own.trip();
    expect(own.retryAfterMs).toBeGreaterThan(4000);
  });

  it('a breaker that never saw an outcome reports an empty window, then counts normally', async () => {
    const breaker = new CircuitBreaker({ window: { type: 'time', size: 5 } });
    expect(breaker.metrics()).toMatchObject({ calls: 0, failures: 0, failureRate: 0 });
    breaker.reset();
    await breaker.execute(boom).catch(() => undefined);
    expect(breaker.metrics()).toMatchObject({ calls: 1, failures: 1 });
  });
});
