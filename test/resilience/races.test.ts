/**
 * Races between composed policies that the single-policy tests do not script: a bulkhead slot
 * handed to a call whose caller gives up in the same turn of the event loop, and a hedged call
 * whose attempts both fail while a retry is already scheduled.
 */
import { describe, expect, it } from 'vitest';
import { LoadBalancer, roundRobin } from '../../src/balancer/index.js';
import { ManualClock } from '../../src/core/index.js';
import {
  RetryBudget,
  bulkhead,
  hedge,
  pipeline,
  resilientCall,
} from '../../src/resilience/index.js';

const later = (ms: number): Promise<string> =>
  new Promise((resolve) => setTimeout(() => resolve('still waiting'), ms));

const flush = async (): Promise<void> => {
  for (let i = 0; i < 10; i++) await Promise.resolve();
};

/** A function that settles only when its signal aborts (rejecting with the reason). */
const untilAborted = (signal: AbortSignal): Promise<never> =>
  new Promise((_, reject) => {
    signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
  });

describe('resilience races', () => {
  it('a queued call whose caller aborts as its bulkhead slot is handed over settles, and frees the slot', async () => {
    const pool = bulkhead({ maxConcurrent: 1, maxQueue: 1 });
    const policy = pipeline(pool, hedge({ afterMs: 60_000 }));
    let finishFirst: ((value: string) => void) | undefined;
    const first = policy.execute(() => new Promise<string>((resolve) => (finishFirst = resolve)));
    const controller = new AbortController();
    const second = policy.execute(untilAborted, { signal: controller.signal });
    expect(pool.queued).toBe(1);
    // The second call's caller gives up as soon as the first call is done: in a reaction to
    // the same promise, after the one in which the bulkhead hands its slot to the second call.
    void first.then(() => controller.abort(new Error('no longer needed')));
    finishFirst?.('one');
    await expect(first).resolves.toBe('one');
    await expect(
      Promise.race([second.catch((error: unknown) => error), later(5_000)]),
    ).resolves.toMatchObject({ message: 'no longer needed' });
    expect(pool.running).toBe(0);
    expect(pool.queued).toBe(0);
  });

  it('a bulkhead does not start a call whose caller aborted while it was being handed the slot', async () => {
    const pool = bulkhead({ maxConcurrent: 1, maxQueue: 1 });
    let finishFirst: ((value: string) => void) | undefined;
    const first = pool.execute(() => new Promise<string>((resolve) => (finishFirst = resolve)));
    const controller = new AbortController();
    let started = 0;
    const second = pool.execute(
      () => {
        started++;
        return 'ran';
      },
      { signal: controller.signal },
    );
    void first.then(() => controller.abort(new Error('no longer needed')));
    finishFirst?.('one');
    await expect(second).rejects.toThrow('no longer needed');
    expect(started).toBe(0);
    expect(pool.running).toBe(0);
  });

  it('resilientCall: a hedged attempt failing while a retry is already scheduled takes no retry token', async () => {
    const clock = new ManualClock();
    const balancer = new LoadBalancer({
      strategy: roundRobin(),
      endpoints: [{ id: 'a' }, { id: 'b' }, { id: 'c' }],
      clock,
    });
    // Three retries in the budget, whatever the traffic.
    const budget = new RetryBudget({ percent: 0, minRetriesPerSecond: 3, ttlMs: 1_000, clock });
    const caller = resilientCall(balancer, {
      clock,
      retry: { maxAttempts: 3, budget, backoff: { type: 'constant', delayMs: 50 } },
      hedge: { afterMs: 10 },
      breakers: { window: { type: 'count', size: 1_000 }, minimumCalls: 1_000 },
    });
    const failures: ((error: Error) => void)[] = [];
    let attempts = 0;
    const call = caller.callWithReport(
      () => {
        attempts++;
        if (attempts <= 2) return new Promise<string>((_, reject) => failures.push(reject));
        return 'ok';
      },
      { idempotent: true },
    );
    clock.advance(10); // the hedge starts: one token
    expect(attempts).toBe(2);
    failures[0]?.(new Error('first failed'));
    await flush(); // a retry is scheduled in 50 ms: one token
    failures[1]?.(new Error('hedge failed'));
    await flush(); // the scheduled retry answers this failure too: no token
    clock.advance(50);
    const { value, tried } = await call;
    expect(value).toBe('ok');
    expect(tried.map((t) => t.outcome)).toEqual(['failure', 'failure', 'success']);
    expect(budget.balance).toBe(1);
  });
});
