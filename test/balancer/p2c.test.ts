/**
 * `p2c()` (issue 16, item 4): the name people search for — "power of two choices" — is the same
 * factory as `leastRequest()`, exported from `keel/balancer`.
 */
import { describe, expect, it } from 'vitest';
import * as balancer from '../../src/balancer/index.js';
import { isInvalidOptionError } from '../../src/core/index.js';
const { LoadBalancer } = balancer;

describe('p2c', () => {
  it('is leastRequest under its common name', () => {
    expect(balancer.p2c).toBe(balancer.leastRequest);
  });

  it('balances and validates as leastRequest does', () => {
    const { p2c } = balancer;
    const strategy = p2c({ activeRequestBias: 0.5 });
    expect(strategy.name).toBe('least-request');
    const lb = new LoadBalancer({ strategy, endpoints: [{ id: 'a' }, { id: 'b' }] });
    const lease = lb.acquire();
    expect(['a', 'b']).toContain(lease?.endpoint.id);
    lease?.done({ ok: true, latencyMs: 1 });
    let error: unknown;
    try {
      p2c({ activeRequestBias: -1 });
    } catch (e) {
      error = e;
    }
    expect(isInvalidOptionError(error)).toBe(true);
  });
});
