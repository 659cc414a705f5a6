// A health listener may change the balancer (update() the list when an endpoint is ejected).
// The events that change causes must reach every observer — typed listeners and the
// keel:balancer:* channels (what keel/otel's gauges follow) — after the event that caused it,
// each carrying the counts of its own moment. Before, the channel got the caused event first
// (an endpoint "returned" before it was "ejected"), and later typed listeners heard the two
// in reverse order.
import diagnostics from 'node:diagnostics_channel';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { LoadBalancer, roundRobin } from '../../src/balancer/index.js';
import { recordChannels } from '../support/channels.js';

const EJECTED = 'keel:balancer:endpoint-ejected';
const RETURNED = 'keel:balancer:endpoint-returned';
const PANIC_IN = 'keel:balancer:panic-entered';
const PANIC_OUT = 'keel:balancer:panic-left';

describe('health events caused by a health observer', () => {
  it('an update() from onHealthChange that returns the endpoint: ejected, then returned, on every observer', () => {
    const balancer = new LoadBalancer({
      clock: new ManualClock(),
      strategy: roundRobin(),
      endpoints: [{ id: 'a' }, { id: 'b' }],
      outlierEjection: { consecutiveFailures: 1, maxEjectionPercent: 50 },
      panicThresholdPercent: 0,
    });
    const typed: string[] = [];
    balancer.onHealthChange((c) => {
      if (c.state === 'ejected') balancer.update([{ id: c.id }]); // 1 endpoint: cap 0, it returns
    });
    balancer.onHealthChange((c) => typed.push(`${c.state} ${c.id}`));
    using channels = recordChannels([EJECTED, RETURNED]);
    const lease = balancer.acquire();
    const id = lease?.endpoint.id as string;
    lease?.done({ ok: false });
    expect(typed).toEqual([`ejected ${id}`, `returned ${id}`]);
    expect(
      channels.published.map(({ channel, message: m }) => [channel, m.id, m.ejected, m.total]),
    ).toEqual([
      [EJECTED, id, 1, 2],
      [RETURNED, id, 0, 1],
    ]);
  });

  it('allStats() answers for the list as it is after the time it applied, without holes', () => {
    const clock = new ManualClock();
    const balancer = new LoadBalancer({
      clock,
      strategy: roundRobin(),
      endpoints: [{ id: 'a' }, { id: 'b' }, { id: 'c' }],
      outlierEjection: { consecutiveFailures: 1, baseEjectionMs: 100, maxEjectionPercent: 50 },
    });
    const lease = balancer.acquire();
    const id = lease?.endpoint.id as string;
    lease?.done({ ok: false });
    // When it comes back, drop it.
    balancer.onHealthChange((c) => {
      if (c.state === 'returned')
        balancer.update(balancer.endpoints().filter((e) => e.id !== c.id));
    });
    clock.advance(100);
    const stats = balancer.allStats();
    expect(stats.map((s) => s.id)).toEqual(balancer.endpoints().map((e) => e.id));
    expect(stats.map((s) => s.id)).not.toContain(id);
  });

  it('any observer reacting with updates: every observer hears the same events in the same order', () => {
    const ids = ['a', 'b', 'c', 'd'];
    fc.assert(
      fc.property(
        fc.array(fc.subarray(ids, { minLength: 1 }), { minLength: 1, maxLength: 8 }),
        fc.array(fc.boolean(), { minLength: 1, maxLength: 30 }),
        fc.boolean(),
        (lists, outcomes, fromChannel) => {
          const clock = new ManualClock();
          const balancer = new LoadBalancer({
            clock,
            strategy: roundRobin(),
            random: () => 0,
            endpoints: ids.map((id) => ({ id })),
            outlierEjection: { consecutiveFailures: 1, baseEjectionMs: 50, maxEjectionPercent: 50 },
            panicThresholdPercent: 60,
          });
          const plan = [...lists];
          const react = (): void => {
            const next = plan.shift();
            if (next !== undefined) balancer.update(next.map((id) => ({ id })));
          };
          const first: string[] = [];
          const second: string[] = [];
          balancer.onHealthChange((c) => {
            first.push(`${c.state} ${c.id}`);
            if (!fromChannel) react();
          });
          balancer.onHealthChange((c) => second.push(`${c.state} ${c.id}`));
          const onChannel = (): void => {
            if (fromChannel) react();
          };
          using channels = recordChannels([EJECTED, RETURNED, PANIC_IN, PANIC_OUT]);
          diagnostics.subscribe(EJECTED, onChannel);
          diagnostics.subscribe(RETURNED, onChannel);
          try {
            for (const ok of outcomes) {
              balancer.acquire()?.done({ ok });
              clock.advance(20);
            }
          } finally {
            diagnostics.unsubscribe(EJECTED, onChannel);
            diagnostics.unsubscribe(RETURNED, onChannel);
          }
          // Reading the stats applies what time changed (events too): read them first.
          const usable = balancer.allStats().filter((s) => s.ejectedUntil === undefined).length;
          const total = balancer.endpoints().length;
          const panicking = total > 0 && (usable * 100) / total < 60;
          const health = channels.published.filter(
            (p) => p.channel === EJECTED || p.channel === RETURNED,
          );
          const heard = health.map(
            (p) => `${p.channel === EJECTED ? 'ejected' : 'returned'} ${String(p.message.id)}`,
          );
          expect(second).toEqual(first);
          expect(heard).toEqual(first);
          // The last panic message says what the balancer is in now.
          const panics = channels.published.filter(
            (p) => p.channel === PANIC_IN || p.channel === PANIC_OUT,
          );
          if (panics.length > 0) expect(panics.at(-1)?.channel === PANIC_IN).toBe(panicking);
          // Entered and left alternate: no panic is counted twice.
          panics.forEach((p, i) => expect(p.channel).toBe(i % 2 === 0 ? PANIC_IN : PANIC_OUT));
        },
      ),
      { numRuns: 300 },
    );
  });
});
