/**
 * Thousands of mixed calls at once through the composed policies and through `resilientCall`
 * over a balancer: functions that throw synchronously, return plain values or thenables, answer
 * late (after their timeout), never answer (honouring their signal or not), with callers whose
 * signal is aborted before the call or in the middle of a hedge. After every call settled, no
 * slot, lease or queue place is left taken, and retries and hedges stayed within the budget.
 */
import { describe, expect, it } from 'vitest';
import { LoadBalancer, p2c } from '../../src/balancer/index.js';
import { CircuitBreaker } from '../../src/breaker/index.js';
import {
  RetryBudget,
  bulkhead,
  hedge,
  pipeline,
  resilientCall,
  retry,
  timeout,
} from '../../src/resilience/index.js';
import { seededRandom } from '../support/helpers.js';

type Behaviour =
  | 'throw'
  | 'value'
  | 'thenable'
  | 'resolve-late'
  | 'reject-late'
  | 'never-honours-signal'
  | 'never-ignores-signal';

const behaviours: readonly Behaviour[] = [
  'throw',
  'value',
  'thenable',
  'resolve-late',
  'reject-late',
  'never-honours-signal',
  'never-ignores-signal',
];

/** Never-settling functions that ignore their signal, kept so they can be let go at the end. */
const hanging: (() => void)[] = [];

function attempt(how: Behaviour, random: () => number, signal: AbortSignal): unknown {
  const ms = Math.floor(random() * 30);
  switch (how) {
    case 'throw':
      throw new Error('sync');
    case 'value':
      return 42;
    case 'thenable':
      return { then: (resolve: (v: number) => void) => setTimeout(() => resolve(42), ms) };
    case 'resolve-late':
      return new Promise((resolve) => setTimeout(() => resolve(42), ms));
    case 'reject-late':
      return new Promise((_, reject) => setTimeout(() => reject(new Error('late')), ms));
    case 'never-honours-signal':
      return new Promise((_, reject) => {
        if (signal.aborted) reject(signal.reason as Error);
        signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
      });
    case 'never-ignores-signal':
      return new Promise((resolve) => hanging.push(() => resolve(42)));
  }
}

/** A caller's signal: none, already aborted, or aborted after a few ms. */
function callerSignal(random: () => number): AbortSignal | undefined {
  const r = random();
  if (r < 0.5) return undefined;
  if (r < 0.6) return AbortSignal.abort(new Error('caller gave up before'));
  const controller = new AbortController();
  setTimeout(() => controller.abort(new Error('caller gave up')), Math.floor(random() * 25));
  return controller.signal;
}

const CALLS = 3_000;

/** The call's outcome, observed at once (a rejection left unobserved until the end is reported). */
const outcome = (call: Promise<unknown>): Promise<string> =>
  call.then(
    () => 'resolved',
    () => 'rejected',
  );

describe('resilience under mixed concurrent load', () => {
  it('pipeline(bulkhead, retry, hedge, timeout aggressive): every call settles, the bulkhead empties', async () => {
    const random = seededRandom(7);
    const pool = bulkhead({ maxConcurrent: 16, maxQueue: 32, queueTimeoutMs: 15 });
    const budget = new RetryBudget({ percent: 0.2, minRetriesPerSecond: 0 });
    const policy = pipeline(
      pool,
      retry({ maxAttempts: 3, budget, backoff: { type: 'constant', delayMs: 1 } }),
      new CircuitBreaker({
        name: 'mixed',
        failureRateThreshold: 1,
        window: { type: 'count', size: 1_000_000 },
        minimumCalls: 1_000_000,
      }),
      hedge({ afterMs: 3, maxHedges: 2 }),
      timeout({ ms: 10, strategy: 'aggressive' }),
    );
    const calls: Promise<string>[] = [];
    for (let i = 0; i < CALLS; i++) {
      const how = behaviours[Math.floor(random() * behaviours.length)] as Behaviour;
      const signal = callerSignal(random);
      calls.push(
        outcome(
          policy.execute(
            (s) => attempt(how, random, s),
            signal === undefined ? undefined : { signal },
          ),
        ),
      );
      if (i % 200 === 0) await new Promise((resolve) => setTimeout(resolve, 1));
    }
    const outcomes = await Promise.all(calls);
    expect(outcomes).toHaveLength(CALLS);
    expect(outcomes).toContain('resolved');
    expect(outcomes).toContain('rejected');
    expect(pool.running).toBe(0);
    expect(pool.queued).toBe(0);
    expect(budget.balance).toBeGreaterThanOrEqual(0);
    for (const let_go of hanging.splice(0)) let_go();
  });

  it('resilientCall(hedge, retry budget, attempt timeout): every call settles, no lease in flight, extra attempts within the budget', async () => {
    const random = seededRandom(11);
    const balancer = new LoadBalancer({
      strategy: p2c(),
      endpoints: [{ id: 'a' }, { id: 'b' }, { id: 'c' }],
    });
    const budget = new RetryBudget({ percent: 0.2, minRetriesPerSecond: 0, ttlMs: 600_000 });
    const caller = resilientCall(balancer, {
      retry: { maxAttempts: 3, budget },
      hedge: { afterMs: 3, maxHedges: 2 },
      attemptTimeoutMs: 10,
      breakers: { window: { type: 'count', size: 1_000_000 }, minimumCalls: 1_000_000 },
    });
    let invoked = 0;
    let deposited = 0;
    const calls: Promise<string>[] = [];
    for (let i = 0; i < CALLS; i++) {
      const how = behaviours[Math.floor(random() * behaviours.length)] as Behaviour;
      const signal = callerSignal(random);
      if (signal?.aborted !== true) deposited++;
      calls.push(
        outcome(
          caller.call(
            (_endpoint, s) => {
              invoked++;
              return attempt(how, random, s);
            },
            { idempotent: true, ...(signal === undefined ? {} : { signal }) },
          ),
        ),
      );
      if (i % 200 === 0) await new Promise((resolve) => setTimeout(resolve, 1));
    }
    const outcomes = await Promise.all(calls);
    expect(outcomes).toHaveLength(CALLS);
    expect(outcomes).toContain('resolved');
    expect(outcomes).toContain('rejected');
    for (const id of ['a', 'b', 'c']) expect(balancer.stats(id)?.inFlight).toBe(0);
    // Every extra attempt (retry or hedge) was paid for: at most 20 % of the calls made.
    expect(invoked - deposited).toBeLessThanOrEqual(Math.floor(deposited * 0.2));
    expect(budget.balance).toBeGreaterThanOrEqual(0);
    for (const let_go of hanging.splice(0)) let_go();
  });
});
