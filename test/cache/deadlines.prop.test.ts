/**
 * The Redis tier's per-call timeouts (one queue and one timer per tier, see
 * src/cache/redis-tier.ts): with many calls in flight — more than the queue's first capacity —
 * and replies let through in any order while time moves on, every call settles exactly once:
 * with its reply when that came before its deadline, else with a 'timed-out' CacheRedisError;
 * and a continuation gets the datum its own call was made with. Replies come from a real
 * redis-server; the test only holds each one back until the step that lets it through.
 */
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { isCacheRedisError } from '../../src/cache/errors.js';
import { heldTier } from '../support/cache.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const TIMEOUT_MS = 100;
const flush = (): Promise<void> => new Promise((done) => setImmediate(done));

describeRedis('RedisTier: per-call timeouts on one queue (real redis-server)', () => {
  const redis = useRedis();

  it('every call settles once: its reply before its deadline, a timeout after it', async () => {
    const real = redis().client(0);
    try {
      // A key of its own per call (up to 96 in a run), so that a reply given to another call shows.
      await real.mset(Object.fromEntries(Array.from({ length: 96 }, (_, i) => [`d${i}`, `v${i}`])));
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            fc.record({
              // Calls started in this step, replies let through (by index among those held),
              // then how far the clock moves.
              start: fc.nat({ max: 12 }),
              release: fc.array(fc.nat(), { maxLength: 12 }),
              advance: fc.constantFrom(0, 1, 30, 99, 100, 150),
            }),
            { minLength: 1, maxLength: 8 },
          ),
          async (steps) => {
            const clock = new ManualClock(1_000);
            const { tier, held } = heldTier(real, clock, TIMEOUT_MS);
            interface Call {
              readonly deadline: number;
              released: number | undefined;
              outcome: 'value' | 'timed-out' | undefined;
              settlements: number;
              datumSeen: unknown;
              reply: unknown;
            }
            const calls: Call[] = [];
            // Calls whose replies are on their way or held, in the order they were held.
            const waiting: Call[] = [];
            try {
              for (const step of steps) {
                for (let i = 0; i < step.start; i++) {
                  const call: Call = {
                    deadline: clock.now() + TIMEOUT_MS,
                    released: undefined,
                    outcome: undefined,
                    settlements: 0,
                    datumSeen: undefined,
                    reply: undefined,
                  };
                  calls.push(call);
                  const datum = { call };
                  const n = calls.length - 1;
                  void tier
                    .getThen(
                      'read',
                      `d${n}`,
                      (reply, error, d: { call: Call }) => {
                        d.call.datumSeen = d;
                        return error === undefined ? reply : error;
                      },
                      datum,
                    )
                    .then((result) => {
                      call.settlements++;
                      call.reply = result;
                      call.outcome =
                        result === `v${n}`
                          ? 'value'
                          : isCacheRedisError(result) && result.kind === 'timed-out'
                            ? 'timed-out'
                            : undefined;
                      // The continuation ran with this call's own datum.
                      if (call.datumSeen !== datum) call.outcome = undefined;
                    });
                  waiting.push(call);
                }
                // Every reply reaches the hold before anything is let through.
                while (held.length < waiting.length) await flush();
                for (const pick of step.release) {
                  if (held.length === 0) break;
                  const at = pick % held.length;
                  const call = waiting.splice(at, 1)[0] as Call;
                  call.released = clock.now();
                  (held.splice(at, 1)[0] as () => void)();
                }
                await flush();
                clock.advance(step.advance);
                await flush();
                await flush();
              }
              // The rest come back after time has run out for them all.
              clock.advance(TIMEOUT_MS);
              await flush();
              await flush();
              for (const release of held.splice(0)) release();
              await flush();
              for (const call of calls) {
                expect(call.settlements).toBe(1);
                const inTime = call.released !== undefined && call.released < call.deadline;
                expect(call.outcome).toBe(inTime ? 'value' : 'timed-out');
              }
            } finally {
              tier.close();
            }
          },
        ),
        { numRuns: 60 },
      );
    } finally {
      real.disconnect();
    }
  });
});
