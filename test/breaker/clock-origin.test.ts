// A Clock counts from an arbitrary origin (ManualClock takes any finite start), so a breaker
// must behave the same whatever it is: the same calls at the same relative times give the same
// states, rejections, retry-after times and call durations. (A time window counts whole
// seconds of the clock, so there only origins a whole number of seconds apart compare.)
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { CircuitBreaker, type BreakerPermit } from '../../src/breaker/index.js';

type Op =
  | { kind: 'start' }
  | { kind: 'settle'; which: number; how: 'success' | 'failure' | 'ignore' }
  | { kind: 'advance'; ms: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('start' as const) }),
  fc.record({
    kind: fc.constant('settle' as const),
    which: fc.nat(),
    how: fc.constantFrom('success' as const, 'failure' as const, 'ignore' as const),
  }),
  fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 700 }) }),
);

function run(origin: number, time: boolean, ops: readonly Op[]): unknown[] {
  const clock = new ManualClock(origin);
  const breaker = new CircuitBreaker({
    clock,
    window: time ? { type: 'time', size: 2 } : { type: 'count', size: 4 },
    minimumCalls: 2,
    openDurationMs: 500,
    maxHalfOpenMs: 1_500,
    halfOpenPermits: 2,
    backoff: { jitter: 0 },
    slowCallDurationMs: time ? 300 : Infinity,
    slowCallRateThreshold: 0.5,
  });
  const seen: unknown[] = [];
  breaker.onCallFinished((e) => seen.push(['finished', e]));
  breaker.onStateChange((e) => seen.push(['state', e.from, e.to, e.reason]));
  const held: BreakerPermit[] = [];
  for (const step of ops) {
    if (step.kind === 'advance') clock.advance(step.ms);
    else if (step.kind === 'start') {
      const permit = breaker.tryAcquire();
      seen.push(permit === undefined ? ['rejected', breaker.retryAfterMs] : 'admitted');
      if (permit !== undefined) held.push(permit);
    } else if (held.length > 0) {
      const [permit] = held.splice(step.which % held.length, 1);
      permit?.[step.how]();
    }
    seen.push({ ...breaker.metrics(), time: undefined }); // wall-clock time: not the injected clock
  }
  return seen;
}

describe('the breaker does not depend on its clock’s origin', () => {
  it.each([false, true])('time window %s: same calls, same behaviour from any origin', (time) => {
    fc.assert(
      fc.property(
        fc.integer({ min: -3_000, max: 0 }).map((n) => n * (time ? 1_000 : 10)),
        fc.array(op, { maxLength: 50 }),
        (origin, ops) => {
          expect(run(origin, time, ops)).toEqual(run(1e6, time, ops));
        },
      ),
      { numRuns: 400 },
    );
  });
});

describe('a half-open trial that starts at clock time 0', () => {
  it('reports its real duration (0 was the marker for "not timed")', () => {
    const durations: number[] = [];
    for (const origin of [-500, 1_000]) {
      const clock = new ManualClock(origin);
      const breaker = new CircuitBreaker({ clock, openDurationMs: 500, backoff: { jitter: 0 } });
      breaker.onCallFinished((e) => durations.push(e.durationMs));
      breaker.trip();
      clock.advance(500); // half-open at -500 + 500 = 0 (and at 1 500)
      const trial = breaker.tryAcquire();
      clock.advance(100);
      trial?.success();
    }
    expect(durations).toEqual([100, 100]);
  });
});
