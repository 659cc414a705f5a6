import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { LoadBalancer, roundRobin, type HealthChange } from '../../src/balancer/index.js';
import { recordChannels } from '../support/channels.js';

const EJECTED = 'keel:balancer:endpoint-ejected';
const RETURNED = 'keel:balancer:endpoint-returned';
const PANIC_IN = 'keel:balancer:panic-entered';
const PANIC_OUT = 'keel:balancer:panic-left';
const PICK = 'keel:balancer:pick';

/** Fails calls on `id` until it has failed `times` times (other endpoints succeed). */
function failOn(balancer: LoadBalancer, id: string, times: number): void {
  for (let done = 0; done < times;) {
    const lease = balancer.acquire();
    if (lease === undefined) throw new Error('no endpoint');
    const failed = lease.endpoint.id === id;
    lease.done({ ok: !failed });
    if (failed) done++;
  }
}

describe('balancer observability (issue 15)', () => {
  it('publishes an endpoint ejected, panic entered, the endpoint returned and panic left', () => {
    const clock = new ManualClock();
    const balancer = new LoadBalancer({
      name: 'orders',
      strategy: roundRobin(),
      endpoints: [{ id: 'a' }, { id: 'b' }],
      clock,
      outlierEjection: { consecutiveFailures: 2, baseEjectionMs: 100, maxEjectionPercent: 50 },
      panicThresholdPercent: 60, // 1 of 2 usable is below 60 %: panic
    });
    const typed: HealthChange[] = [];
    balancer.onHealthChange((change) => typed.push(change));
    using channels = recordChannels([EJECTED, RETURNED, PANIC_IN, PANIC_OUT]);
    const before = Date.now();
    failOn(balancer, 'a', 2);
    clock.advance(100);
    balancer.pick(); // time-based changes are applied on the next operation
    const after = Date.now();

    expect(channels.published.map((p) => p.channel)).toEqual([
      EJECTED,
      PANIC_IN,
      RETURNED,
      PANIC_OUT,
    ]);
    const [ejected, panic, returned] = channels.published.map((p) => p.message);
    expect(ejected).toEqual({
      balancer: 'orders',
      id: 'a',
      until: 100,
      untilTime: expect.any(Number) as number,
      timesEjected: 1,
      ejected: 1,
      total: 2,
      time: expect.any(Number) as number,
    });
    expect((ejected?.untilTime as number) - (ejected?.time as number)).toBe(100);
    expect(panic).toEqual({
      balancer: 'orders',
      usable: 1,
      total: 2,
      thresholdPercent: 60,
      time: expect.any(Number) as number,
    });
    expect(returned).toMatchObject({ balancer: 'orders', id: 'a', ejected: 0, total: 2 });
    for (const { message } of channels.published) {
      expect(message.time).toBeGreaterThanOrEqual(before);
      expect(message.time).toBeLessThanOrEqual(after);
    }
    // The typed events are told from the same place, with the same times.
    expect(typed).toEqual([
      { id: 'a', state: 'ejected', until: 100, untilTime: ejected?.untilTime, time: ejected?.time },
      { id: 'a', state: 'returned', time: returned?.time },
    ]);
  });

  it('publishes picks only to a subscriber of keel:balancer:pick', () => {
    const balancer = new LoadBalancer({
      name: 'quotes',
      strategy: roundRobin(),
      endpoints: [{ id: 'a' }, { id: 'b' }],
    });
    balancer.pick();
    using channels = recordChannels([PICK]);
    const picked = balancer.pick()?.id;
    const lease = balancer.acquire();
    lease?.done({ ok: true });
    const message = (id: string | undefined) => ({
      balancer: 'quotes',
      strategy: 'round-robin',
      id,
      inFlight: 0,
      time: expect.any(Number) as number,
    });
    expect(channels.of(PICK)).toEqual([message(picked), message(lease?.endpoint.id)]);
    channels.dispose();
    balancer.pick();
    expect(channels.of(PICK)).toHaveLength(2);
  });

  it('publishes the first pick after a subscriber comes, however many picks ran without one', () => {
    const balancer = new LoadBalancer({
      name: 'hot',
      strategy: roundRobin(),
      endpoints: [{ id: 'a' }, { id: 'b' }],
    });
    // Enough picks for the optimizing compiler to take pick() with the guard's channel
    // seen only without subscribers: the guard must still read the channel each time.
    for (let i = 0; i < 200_000; i++) balancer.pick();
    using channels = recordChannels([PICK]);
    balancer.pick();
    expect(channels.of(PICK)).toHaveLength(1);
    channels.dispose();
    for (let i = 0; i < 1000; i++) balancer.pick();
    expect(channels.of(PICK)).toHaveLength(1);
  });

  it('stats give the end of an ejection in wall-clock time too', () => {
    const clock = new ManualClock();
    const balancer = new LoadBalancer({
      strategy: roundRobin(),
      endpoints: [{ id: 'a' }, { id: 'b' }],
      clock,
      outlierEjection: { consecutiveFailures: 1, baseEjectionMs: 5_000 },
      panicThresholdPercent: 0,
    });
    failOn(balancer, 'a', 1);
    clock.advance(1_000);
    const before = Date.now();
    const stats = balancer.stats('a');
    expect(stats?.ejectedUntil).toBe(5_000);
    expect(stats?.ejectedUntilTime).toBeGreaterThanOrEqual(before + 4_000);
    expect(stats?.ejectedUntilTime).toBeLessThanOrEqual(Date.now() + 4_000);
    expect(balancer.stats('b')?.ejectedUntilTime).toBeUndefined();
  });
});
