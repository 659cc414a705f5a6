import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { BreakerRegistry, isBreakerOpenError } from '../../src/breaker/index.js';
import {
  LoadBalancer,
  NoEndpointError,
  roundRobin,
  type Endpoint,
} from '../../src/balancer/index.js';
import {
  RetryBudget,
  isHedgeLostError,
  isResilientCallError,
  isTimeoutError,
  resilientCall,
  type ResilientCallError,
} from '../../src/resilience/index.js';
import { invalidOption } from '../support/helpers.js';

function balancerOf(ids: string[], clock = new ManualClock()) {
  return new LoadBalancer({
    strategy: roundRobin(),
    endpoints: ids.map((id) => ({ id })),
    clock,
    outlierEjection: { consecutiveFailures: 1_000_000 },
  });
}

function inFlight(balancer: LoadBalancer): number {
  return balancer.allStats().reduce((sum, s) => sum + s.inFlight, 0);
}

async function failure(promise: Promise<unknown>): Promise<ResilientCallError> {
  const error: unknown = await promise.catch((e: unknown) => e);
  expect(isResilientCallError(error)).toBe(true);
  return error as ResilientCallError;
}

describe('LoadBalancer.run', () => {
  it('records success with latency, failure, and releases the lease', async () => {
    const clock = new ManualClock();
    const balancer = balancerOf(['a'], clock);
    await expect(balancer.run((endpoint) => endpoint.id)).resolves.toBe('a');
    await expect(balancer.run(() => Promise.reject(new Error('down')))).rejects.toThrow('down');
    const stats = balancer.stats('a');
    expect(stats).toMatchObject({ successes: 1, failures: 1, inFlight: 0 });
  });

  it('a caller abort rejects with its reason and counts neither way', async () => {
    const balancer = balancerOf(['a']);
    const controller = new AbortController();
    const done = balancer.run(() => new Promise(() => undefined), { signal: controller.signal });
    controller.abort(new Error('bye'));
    await expect(done).rejects.toThrow('bye');
    expect(balancer.stats('a')).toMatchObject({ successes: 0, failures: 0, inFlight: 0 });
    await expect(balancer.run(() => 1, { signal: controller.signal })).rejects.toThrow('bye');
  });

  it('honours exclude and rejects with NoEndpointError when there is nothing to pick', async () => {
    const balancer = balancerOf(['a', 'b']);
    for (let i = 0; i < 4; i++) {
      await expect(balancer.run((e) => e.id, { exclude: new Set(['a']) })).resolves.toBe('b');
    }
    await expect(balancerOf([]).run(() => 1)).rejects.toBeInstanceOf(NoEndpointError);
  });

  it('rejects bad arguments with InvalidOptionError', async () => {
    const balancer = balancerOf(['a']);
    await expect(balancer.run(1 as never)).rejects.toMatchObject({ code: 'KEEL_INVALID_OPTION' });
    await expect(balancer.run(() => 1, { signal: 1 } as never)).rejects.toMatchObject({
      option: 'signal',
    });
    await expect(balancer.run(() => 1, { key: 5 } as never)).rejects.toMatchObject({
      option: 'key',
    });
    await expect(balancer.run(() => 1, 'x' as never)).rejects.toMatchObject({
      option: 'options',
    });
  });
});

describe('resilientCall', () => {
  it('retries an idempotent call on a different endpoint', async () => {
    const balancer = balancerOf(['a', 'b', 'c']);
    const caller = resilientCall(balancer);
    let first: string | undefined;
    const report = await caller.callWithReport(
      (endpoint) => {
        first ??= endpoint.id;
        return endpoint.id === first ? Promise.reject(new Error('down')) : endpoint.id;
      },
      { idempotent: true },
    );
    expect(report.value).not.toBe(first);
    expect(report.tried.map((t) => [t.id, t.outcome])).toEqual([
      [first, 'failure'],
      [report.value, 'success'],
    ]);
    expect(inFlight(balancer)).toBe(0);
  });

  it('never retries a call not marked idempotent', async () => {
    const balancer = balancerOf(['a', 'b']);
    let calls = 0;
    const error = await failure(
      resilientCall(balancer).call(() => {
        calls++;
        return Promise.reject(new Error('down'));
      }),
    );
    expect(calls).toBe(1);
    expect(error.stoppedBy).toBe('not-idempotent');
    expect((error.cause as Error).message).toBe('down');
  });

  it('leaves endpoints with an open breaker out of the pick', async () => {
    const clock = new ManualClock();
    const balancer = balancerOf(['a', 'b'], clock);
    const breakers = new BreakerRegistry({ clock });
    breakers.breakerFor('a').forceOpen();
    const caller = resilientCall(balancer, { breakers, clock });
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) {
      await caller.call((e: Endpoint) => {
        seen.add(e.id);
        return 1;
      });
    }
    // The first pick may land on 'a' (nothing marks it open until its breaker is asked): it is
    // rejected there locally and never called.
    expect([...seen]).toEqual(['b']);
  });

  it('fails fast, without waiting, when every breaker is open', async () => {
    const clock = new ManualClock();
    const balancer = balancerOf(['a', 'b'], clock);
    const breakers = new BreakerRegistry({ clock });
    breakers.breakerFor('a').forceOpen();
    breakers.breakerFor('b').forceOpen();
    let calls = 0;
    const caller = resilientCall(balancer, { breakers, clock });
    const error = await failure(
      caller.call(
        () => {
          calls++;
          return 1;
        },
        { idempotent: true },
      ),
    );
    expect(calls).toBe(0);
    expect(error.stoppedBy).toBe('breakers-open');
    expect(isBreakerOpenError(error.cause)).toBe(true);
    expect(clock.pendingTimers).toBe(0);
    expect(inFlight(balancer)).toBe(0);
  });

  it('reports no-endpoint with the NoEndpointError as cause', async () => {
    const error = await failure(resilientCall(balancerOf([])).call(() => 1));
    expect(error.stoppedBy).toBe('no-endpoint');
    expect(error.cause).toBeInstanceOf(NoEndpointError);
  });

  it('hedges to a second endpoint; the loser is aborted and every lease released', async () => {
    const clock = new ManualClock();
    const balancer = balancerOf(['x', 'y'], clock);
    const caller = resilientCall(balancer, { clock, hedge: { afterMs: 10 } });
    const reasons: unknown[] = [];
    let slow: string | undefined;
    const done = caller.callWithReport(
      (endpoint, signal) =>
        new Promise<string>((resolve) => {
          slow ??= endpoint.id;
          signal.addEventListener('abort', () => reasons.push(signal.reason));
          clock.setTimer(() => resolve(endpoint.id), endpoint.id === slow ? 1000 : 5);
        }),
      { idempotent: true },
    );
    await clock.advanceAsync(20);
    const report = await done;
    const fast = slow === 'x' ? 'y' : 'x';
    expect(report.value).toBe(fast);
    expect(report.tried.map((t) => [t.id, t.outcome, t.hedge])).toEqual([
      [slow, 'aborted', false],
      [fast, 'success', true],
    ]);
    expect(reasons.length).toBe(1);
    expect(isHedgeLostError(reasons[0])).toBe(true);
    expect(inFlight(balancer)).toBe(0);
    // The aborted loser counts against nobody.
    expect(balancer.stats(slow as string)).toMatchObject({ failures: 0, successes: 0 });
  });

  it("a hedge's loser raises its endpoint's latency estimate by the time it ran, never lowers it", async () => {
    // A latency-aware balancer must learn that the endpoint it hedged away from is slow: the
    // loser never answers, so how long it had run when it lost is its latency's lower bound.
    const clock = new ManualClock();
    const balancer = balancerOf(['x', 'y'], clock);
    const warm = (id: string): Promise<unknown> =>
      balancer.run(() => new Promise((resolve) => clock.setTimer(() => resolve(id), 1)), {
        exclude: new Set([id === 'x' ? 'y' : 'x']),
      });
    const warmed = Promise.all([warm('x'), warm('y')]);
    await clock.advanceAsync(1);
    await warmed;
    expect(balancer.stats('x')?.latencyEwmaMs).toBe(1);
    const caller = resilientCall(balancer, { clock, hedge: { afterMs: 10 } });
    let slow: string | undefined;
    const done = caller.callWithReport(
      (endpoint, signal) =>
        new Promise<string>((resolve, reject) => {
          slow ??= endpoint.id;
          const timer = clock.setTimer(() => resolve(endpoint.id), endpoint.id === slow ? 1000 : 5);
          signal.addEventListener('abort', () => {
            timer.cancel();
            reject(signal.reason as Error);
          });
        }),
      { idempotent: true },
    );
    await clock.advanceAsync(20);
    await done;
    const stats = balancer.stats(slow as string);
    // It ran 15 ms (hedge at 10, the hedge's 5) before it lost: about that now (the estimate
    // decays a little toward faster samples while time passes), up from 1.
    expect(stats?.latencyEwmaMs).toBeGreaterThan(14);
    // Counted neither as a success nor as a failure (the warm-up's success only).
    expect(stats).toMatchObject({ successes: 1, failures: 0, inFlight: 0 });
    // A shorter lower bound than the estimate says nothing: a quick abandoned call leaves it.
    const before = balancer.stats('x')?.latencyEwmaMs as number;
    const controller = new AbortController();
    const abandoned = balancer.run(() => new Promise(() => undefined), {
      signal: controller.signal,
      exclude: new Set(['y']),
    });
    controller.abort(new Error('gone'));
    await expect(abandoned).rejects.toThrow('gone');
    expect(balancer.stats('x')?.latencyEwmaMs).toBeGreaterThanOrEqual(before);
  });

  it('a caller abort stops every attempt in flight and leaves no timer or lease', async () => {
    const clock = new ManualClock();
    const balancer = balancerOf(['a', 'b'], clock);
    const caller = resilientCall(balancer, { clock, hedge: { afterMs: 1 }, attemptTimeoutMs: 500 });
    const controller = new AbortController();
    let aborted = 0;
    const done = caller.call(
      (_e, signal) =>
        new Promise(() => {
          signal.addEventListener('abort', () => aborted++);
        }),
      { idempotent: true, signal: controller.signal },
    );
    await clock.advanceAsync(5);
    controller.abort(new Error('caller left'));
    await expect(done).rejects.toThrow('caller left');
    expect(aborted).toBe(2);
    expect(inFlight(balancer)).toBe(0);
    expect(clock.pendingTimers).toBe(0);
  });

  it('times an attempt out and retries it elsewhere', async () => {
    const clock = new ManualClock();
    const balancer = balancerOf(['x', 'y'], clock);
    const caller = resilientCall(balancer, { clock, attemptTimeoutMs: 50 });
    let hung: string | undefined;
    const done = caller.callWithReport(
      (e) => {
        hung ??= e.id;
        return e.id === hung ? new Promise<string>(() => undefined) : e.id;
      },
      { idempotent: true },
    );
    await clock.advanceAsync(60);
    const report = await done;
    expect(report.value).not.toBe(hung);
    expect(report.tried[0]).toMatchObject({ id: hung, outcome: 'failure' });
    const single = resilientCall(balancerOf(['hung'], clock), { clock, attemptTimeoutMs: 50 });
    const lone = single.call(() => new Promise(() => undefined)).catch((e: unknown) => e);
    await clock.advanceAsync(60);
    const error = (await lone) as ResilientCallError;
    expect(isTimeoutError(error.cause)).toBe(true);
  });

  it('spends no more than the budget when everything is down', async () => {
    const clock = new ManualClock();
    const balancer = balancerOf(['a', 'b', 'c'], clock);
    const budget = new RetryBudget({ percent: 0.1, minRetriesPerSecond: 0, clock });
    const caller = resilientCall(balancer, {
      clock,
      retry: { maxAttempts: 3, budget },
      breakers: { minimumCalls: 1_000, window: { size: 1_000 } },
    });
    let attempts = 0;
    const stops = new Set<string>();
    for (let i = 0; i < 100; i++) {
      const error = await failure(
        caller.call(
          () => {
            attempts++;
            return Promise.reject(new Error('down'));
          },
          { idempotent: true },
        ),
      );
      stops.add(error.stoppedBy);
    }
    expect(attempts - 100).toBeLessThanOrEqual(10);
    expect(stops.has('budget')).toBe(true);
  });

  it('validates its options', async () => {
    const balancer = balancerOf(['a']);
    invalidOption(() => resilientCall({} as never));
    invalidOption(() => resilientCall(balancer, { attemptTimeoutMs: 0 }));
    invalidOption(() => resilientCall(balancer, { hedge: {} }));
    invalidOption(() => resilientCall(balancer, { retry: { maxAttempts: 0 } }));
    invalidOption(() => resilientCall(balancer, { breakers: 5 as never }));
    await expect(
      resilientCall(balancer).call(() => 1, { idempotent: 'yes' } as never),
    ).rejects.toMatchObject({ option: 'idempotent' });
  });
});
