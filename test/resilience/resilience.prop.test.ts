/**
 * The invariants keel/resilience exists for (issue 17, item 4): attempts never exceed
 * `maxAttempts` or the retry budget; a call not marked idempotent is never retried; an aborted
 * caller stops every attempt in flight and leaves no timer or lease; hedged losers are always
 * aborted and their leases finished.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ManualClock } from '../../src/core/index.js';
import { LoadBalancer, roundRobin } from '../../src/balancer/index.js';
import { RetryBudget, resilientCall, retry } from '../../src/resilience/index.js';

type Behaviour = { readonly kind: 'ok' | 'fail' | 'hang'; readonly latency: number };

const behaviour: fc.Arbitrary<Behaviour> = fc.record({
  kind: fc.constantFrom<Behaviour['kind']>('ok', 'fail', 'fail', 'hang'),
  latency: fc.integer({ min: 0, max: 40 }),
});

describe('retry policy (property)', () => {
  it('attempts never exceed maxAttempts, nor the budget over a run of calls', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 6 }),
        fc.array(fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }), {
          minLength: 1,
          maxLength: 30,
        }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.integer({ min: 0, max: 3 }),
        async (maxAttempts, calls, percent, perSecond) => {
          const clock = new ManualClock();
          const budget = new RetryBudget({
            percent,
            minRetriesPerSecond: perSecond,
            ttlMs: 1000,
            clock,
          });
          const policy = retry({ maxAttempts, backoff: { type: 'none' }, budget, clock });
          let retries = 0;
          for (const outcomes of calls) {
            let attempts = 0;
            await policy
              .execute(() => {
                const fails = outcomes[Math.min(attempts, outcomes.length - 1)] ?? true;
                attempts++;
                return fails ? Promise.reject(new Error('x')) : Promise.resolve(1);
              })
              .catch(() => undefined);
            expect(attempts).toBeLessThanOrEqual(maxAttempts);
            retries += attempts - 1;
          }
          // Time never moved: nothing expired from the budget's window.
          expect(retries).toBeLessThanOrEqual(
            Math.floor(perSecond + percent * calls.length + 1e-9),
          );
        },
      ),
      { numRuns: 150 },
    );
  });
});

describe('resilientCall (model)', () => {
  it('bounds attempts, never retries non-idempotent calls, and cleans up every attempt', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(behaviour, { minLength: 1, maxLength: 5 }),
        fc.boolean(),
        fc.integer({ min: 1, max: 4 }),
        fc.option(fc.integer({ min: 0, max: 30 }), { nil: undefined }),
        fc.option(fc.integer({ min: 1, max: 60 }), { nil: undefined }),
        fc.option(fc.integer({ min: 0, max: 120 }), { nil: undefined }),
        async (behaviours, idempotent, maxAttempts, hedgeAfter, attemptTimeoutMs, abortAt) => {
          const clock = new ManualClock();
          const balancer = new LoadBalancer({
            strategy: roundRobin(),
            endpoints: behaviours.map((_, i) => ({ id: `e${i}` })),
            clock,
          });
          const caller = resilientCall(balancer, {
            clock,
            retry: { maxAttempts },
            ...(hedgeAfter === undefined ? {} : { hedge: { afterMs: hedgeAfter, maxHedges: 2 } }),
            ...(attemptTimeoutMs === undefined ? {} : { attemptTimeoutMs }),
          });
          const attempts: { signal: AbortSignal; settled: boolean }[] = [];
          const controller = new AbortController();
          let outcome = 'pending' as 'pending' | 'resolved' | 'rejected';
          void caller
            .callWithReport(
              (endpoint, signal) => {
                const b = behaviours[Number(endpoint.id.slice(1))] as Behaviour;
                const attempt = { signal, settled: false };
                attempts.push(attempt);
                if (b.kind === 'hang') return new Promise<number>(() => undefined);
                return new Promise<number>((resolve, reject) => {
                  const timer = clock.setTimer(() => {
                    attempt.settled = true;
                    if (b.kind === 'ok') resolve(1);
                    else reject(new Error('down'));
                  }, b.latency);
                  signal.addEventListener('abort', () => {
                    timer.cancel();
                    attempt.settled = true;
                    reject(signal.reason as Error);
                  });
                });
              },
              { idempotent, signal: controller.signal },
            )
            .then(
              () => (outcome = 'resolved'),
              () => (outcome = 'rejected'),
            );
          if (abortAt !== undefined) {
            clock.setTimer(() => controller.abort(new Error('caller left')), abortAt);
          }
          await clock.advanceAsync(2000);

          expect(attempts.length).toBeLessThanOrEqual(idempotent ? maxAttempts : 1);
          expect(attempts.length).toBeGreaterThanOrEqual(1);
          if (outcome === 'pending') {
            // Only a hung endpoint, with neither a timeout nor an abort, can keep it going.
            expect(attemptTimeoutMs === undefined && abortAt === undefined).toBe(true);
            return;
          }
          // Settled: no attempt runs on unobserved — each one finished or was aborted —, no
          // lease is held and no timer is left.
          for (const attempt of attempts) {
            expect(attempt.settled || attempt.signal.aborted).toBe(true);
          }
          for (const stats of balancer.allStats()) expect(stats.inFlight).toBe(0);
          expect(clock.pendingTimers).toBe(0);
        },
      ),
      { numRuns: 200 },
    );
  });
});
