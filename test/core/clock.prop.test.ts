import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';

// Invariant: however time is advanced (in one step or many), a ManualClock runs exactly the
// timers that fall due, each at its due time, in (due, scheduling) order, and no others.
describe('ManualClock (property)', () => {
  it('fires exactly the due timers, in order, however the advance is split', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ delay: fc.integer({ min: 0, max: 100 }), cancel: fc.boolean() }), {
          maxLength: 30,
        }),
        fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 10 }),
        (timers, steps) => {
          const clock = new ManualClock();
          const fired: { index: number; at: number }[] = [];
          timers.forEach(({ delay, cancel }, index) => {
            const timer = clock.setTimer(() => fired.push({ index, at: clock.now() }), delay);
            if (cancel) timer.cancel();
          });
          for (const step of steps) clock.advance(step);
          clock.advance(0); // timers due at exactly `now` run on the next advance, even a zero one
          const total = steps.reduce((a, b) => a + b, 0);
          const expected = timers
            .map((t, index) => ({ ...t, index }))
            .filter((t) => !t.cancel && t.delay <= total)
            .sort((a, b) => a.delay - b.delay || a.index - b.index)
            .map((t) => ({ index: t.index, at: t.delay }));
          expect(fired).toEqual(expected);
          expect(clock.now()).toBe(total);
          expect(clock.pendingTimers).toBe(
            timers.filter((t) => !t.cancel && t.delay > total).length,
          );
        },
      ),
    );
  });
});
