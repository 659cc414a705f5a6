// `keel:resilience:retry` publishes one message per failed attempt (see retryChannel). In
// resilientCall, an attempt that failed while a retry was already scheduled (a hedge failing
// after the attempt it hedged had failed) published nothing, and once a failure had stopped the
// retries (max-attempts, budget…), a hedge still running that failed later published nothing
// either: the channel showed fewer failures than there were. Also, `attempt` was the number of
// attempts started so far, not the one that failed (they differ once a hedge is running).
// Now every failed attempt publishes exactly one message, numbered by the attempt that failed;
// a failure answered by the retry already scheduled says `retry-scheduled` (so each retry made
// is still told by exactly one `retry`).
import diagnostics from 'node:diagnostics_channel';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { LoadBalancer, roundRobin } from '../../src/balancer/index.js';
import { RetryBudget, resilientCall } from '../../src/resilience/index.js';
import { recordChannels } from '../support/channels.js';

function setup(maxAttempts: number) {
  const clock = new ManualClock();
  const balancer = new LoadBalancer({
    strategy: roundRobin(),
    endpoints: ['a', 'b', 'c', 'd'].map((id) => ({ id })),
    clock,
    outlierEjection: { consecutiveFailures: 1_000_000 },
  });
  const caller = resilientCall(balancer, {
    clock,
    hedge: { afterMs: 10 },
    retry: {
      maxAttempts,
      backoff: { type: 'constant', delayMs: 100 },
      budget: new RetryBudget({ percent: 10, minRetriesPerSecond: 100, clock }),
    },
  });
  return { clock, caller };
}

describe('resilientCall: keel:resilience:retry per failed attempt', () => {
  it('a hedge failing while a retry is scheduled publishes its own message, not a second retry', async () => {
    const channels = recordChannels(['keel:resilience:retry']);
    try {
      const { clock, caller } = setup(4);
      let n = 0;
      // Attempt 1 fails at 20 ms (its hedge, attempt 2, started at 10), attempt 2 at 30 ms
      // while the retry (due at 120 ms) waits; attempt 3 succeeds.
      const done = caller.callWithReport(
        () => {
          const i = ++n;
          return new Promise<string>((resolve, reject) => {
            if (i === 3) resolve('ok');
            else clock.setTimer(() => reject(new Error(`attempt ${i}`)), 20);
          });
        },
        { idempotent: true },
      );
      await clock.advanceAsync(200);
      const report = await done;
      expect(report.value).toBe('ok');
      const failedAttempts = report.tried.filter((t) => t.outcome === 'failure').length;
      expect(failedAttempts).toBe(2);
      const messages = channels.of('keel:resilience:retry');
      expect(messages.length).toBe(failedAttempts);
      expect(messages.map((m) => [m.attempt, m.decision, (m.error as Error).message])).toEqual([
        [1, 'retry', 'attempt 1'],
        [2, 'retry-scheduled', 'attempt 2'],
      ]);
      // One retry was made (attempt 3, not a hedge): one `retry` message.
      const retriesMade = report.tried.filter((t, i) => i > 0 && !t.hedge).length;
      expect(messages.filter((m) => m.decision === 'retry').length).toBe(retriesMade);
      expect(messages[1]?.delayMs).toBe(90); // what was left of the scheduled wait
    } finally {
      channels.dispose();
    }
  });

  it('a hedge failing after the retries stopped publishes the same stop', async () => {
    const channels = recordChannels(['keel:resilience:retry']);
    try {
      const { clock, caller } = setup(2);
      // Attempt 1 fails at 20 ms: max-attempts (2 started); its hedge fails at 30 ms.
      const done = caller.callWithReport(
        () =>
          new Promise<string>((_, reject) => {
            clock.setTimer(() => reject(new Error('down')), 20);
          }),
        { idempotent: true },
      );
      const settled = done.catch((e: unknown) => e);
      await clock.advanceAsync(200);
      await settled;
      const messages = channels.of('keel:resilience:retry');
      expect(messages.map((m) => [m.attempt, m.decision])).toEqual([
        [1, 'max-attempts'],
        [2, 'max-attempts'],
      ]);
    } finally {
      channels.dispose();
    }
  });
});

describe('resilientCall: a keel:resilience:retry subscriber that aborts the call', () => {
  it('leaves no retry timer behind (the call ended while its message was being published)', async () => {
    const { clock, caller } = setup(4);
    const controller = new AbortController();
    const listener = (): void => {
      controller.abort(new Error('stop from the listener'));
    };
    diagnostics.subscribe('keel:resilience:retry', listener);
    try {
      const done = caller.call(() => Promise.reject(new Error('down')), {
        idempotent: true,
        signal: controller.signal,
      });
      await expect(done).rejects.toThrow('stop from the listener');
      expect(clock.pendingTimers).toBe(0);
    } finally {
      diagnostics.unsubscribe('keel:resilience:retry', listener);
    }
  });
});
