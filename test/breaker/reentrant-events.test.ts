// A state-change listener may change the state itself (reset() when a breaker opens during
// maintenance, forceOpen() from a channel subscriber). Every observer — typed listeners, the
// keel:breaker:state-change channel (what keel/otel's state gauge follows), the logger — must
// still hear the changes in the order they happened, each change once, so the last one heard
// is the state the breaker is in. Before, a transition made inside a typed listener was
// published on the channel and logged before the one that caused it.
import diagnostics from 'node:diagnostics_channel';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { CircuitBreaker } from '../../src/breaker/index.js';
import { recordChannels, recordingLogger } from '../support/channels.js';

const STATE = 'keel:breaker:state-change';

describe('state changes made by a state-change observer', () => {
  it('reach the channel and the logger in the order they happened', () => {
    const logger = recordingLogger();
    const breaker = new CircuitBreaker({ name: 're', consecutiveFailures: 1, logger });
    const typed: string[] = [];
    breaker.onStateChange((c) => {
      typed.push(`${c.from}>${c.to}`);
      if (c.to === 'open') breaker.reset();
    });
    using channels = recordChannels([STATE]);
    breaker.tryAcquire()?.failure();
    const order = ['closed>open', 'open>closed'];
    expect(typed).toEqual(order);
    expect(channels.published.map(({ message: m }) => `${String(m.from)}>${String(m.to)}`)).toEqual(
      order,
    );
    expect(logger.lines.map((l) => `${String(l.obj.from)}>${String(l.obj.to)}`)).toEqual(order);
    expect(breaker.state).toBe('closed');
  });

  it('any observer reacting with manual transitions: every observer sees one chain from the first state to the current one', () => {
    const actions = ['reset', 'forceOpen', 'disable', 'metricsOnly', 'trip', 'none'] as const;
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(...actions), { minLength: 1, maxLength: 12 }),
        fc.boolean(),
        (plan, fromChannel) => {
          const clock = new ManualClock();
          const breaker = new CircuitBreaker({ clock, consecutiveFailures: 1 });
          const steps = [...plan];
          const react = (): void => {
            const action = steps.shift();
            if (action !== undefined && action !== 'none') breaker[action]();
          };
          const typed: string[][] = [[], []];
          breaker.onStateChange((c) => {
            typed[0]?.push(c.from, c.to);
            if (!fromChannel) react();
          });
          breaker.onStateChange((c) => typed[1]?.push(c.from, c.to));
          using channels = recordChannels([STATE]);
          const fromChannelListener = (): void => {
            if (fromChannel) react();
          };
          diagnostics.subscribe(STATE, fromChannelListener);
          try {
            breaker.tryAcquire()?.failure();
            for (let i = 0; i < 20 && steps.length > 0; i++) react();
          } finally {
            diagnostics.unsubscribe(STATE, fromChannelListener);
          }
          const channel = channels.published.flatMap(({ message: m }) => [
            m.from as string,
            m.to as string,
          ]);
          for (const seen of [...typed, channel]) {
            // One chain: each change starts where the previous one ended, and ends in the
            // breaker's state.
            for (let i = 2; i < seen.length; i += 2) expect(seen[i]).toBe(seen[i - 1]);
            expect(seen.at(-1)).toBe(breaker.state);
          }
          expect(typed[1]).toEqual(typed[0]);
          expect(channel).toEqual(typed[0]);
        },
      ),
      { numRuns: 300 },
    );
  });
});
