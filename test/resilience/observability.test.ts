/**
 * Resilience observability (issue 15): `keel:resilience:retry` tells, for each failed attempt of
 * a call, what the retry policy decided — retry (after how long), or why it stopped — with
 * wall-clock time, so one scripted call's story can be read off the channel.
 */
import { describe, expect, it } from 'vitest';
import { RetryBudget, retry } from '../../src/resilience/index.js';
import { recordChannels } from '../support/channels.js';

class Flaky extends Error {
  override name = 'Flaky';
}
class Fatal extends Error {
  override name = 'Fatal';
}

describe('resilience observability', () => {
  it('publishes one keel:resilience:retry message per failed attempt, with the decision', async () => {
    const channels = recordChannels(['keel:resilience:retry']);
    try {
      const before = Date.now();
      // Two failures retried (fixed 1 ms backoff), then success: two "retry" messages.
      let calls = 0;
      const policy = retry({
        maxAttempts: 4,
        backoff: { type: 'constant', delayMs: 1 },
        retryOn: [Flaky],
      });
      await expect(
        policy.execute(() => (++calls <= 2 ? Promise.reject(new Flaky('x')) : Promise.resolve(1))),
      ).resolves.toBe(1);
      // Out of attempts: retry, retry, then max-attempts.
      await expect(policy.execute(() => Promise.reject(new Flaky('always')))).rejects.toThrow(
        Flaky,
      );
      // An error the policy does not retry: not-retryable at once.
      await expect(policy.execute(() => Promise.reject(new Fatal('no')))).rejects.toThrow(Fatal);
      // A budget with nothing left: the retry is not made.
      const budget = new RetryBudget({ percent: 0, minRetriesPerSecond: 0 });
      await expect(
        retry({ maxAttempts: 3, backoff: { type: 'none' }, budget }).execute(() =>
          Promise.reject(new Flaky('broke')),
        ),
      ).rejects.toThrow(Flaky);

      const messages = channels.of('keel:resilience:retry');
      expect(messages.map((m) => [m.attempt, m.decision])).toEqual([
        [1, 'retry'],
        [2, 'retry'],
        [1, 'retry'],
        [2, 'retry'],
        [3, 'retry'],
        [4, 'max-attempts'],
        [1, 'not-retryable'],
        [1, 'budget'],
      ]);
      for (const m of messages) {
        expect(m.time as number).toBeGreaterThanOrEqual(before);
        expect(m.time as number).toBeLessThanOrEqual(Date.now());
        expect(m.error).toBeInstanceOf(Error);
        expect(m.delayMs).toBe(m.decision === 'retry' ? 1 : 0);
      }
    } finally {
      channels.dispose();
    }
  });
});
