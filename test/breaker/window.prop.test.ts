import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CountWindow, FAILED, SLOW, TimeWindow } from '../../src/breaker/window.js';

/** Outcome flags (0, FAILED, SLOW or both) and, for time windows, a non-decreasing clock. */
const steps = fc.array(
  fc.record({ flags: fc.constantFrom(0, FAILED, SLOW, FAILED | SLOW), advance: fc.nat(700) }),
  { maxLength: 200 },
);

describe('OutcomeWindow.recordSuccess (the hot path)', () => {
  it('records exactly what record(0) records, and says whether a failure or slow call is left', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 12 }), steps, fc.boolean(), (size, seq, timed) => {
        const make = (): CountWindow | TimeWindow =>
          timed ? new TimeWindow(size, 100) : new CountWindow(size);
        const viaRecord = make();
        const viaSuccess = make();
        let now = 0;
        for (const { flags, advance } of seq) {
          now += advance;
          viaRecord.record(flags, now);
          if (flags === 0) {
            const left = viaSuccess.recordSuccess(now);
            const t = viaRecord.totals(now);
            expect(left).toBe(t.failures + t.slow > 0);
          } else {
            viaSuccess.record(flags, now);
          }
          expect({ ...viaSuccess.totals(now) }).toEqual({ ...viaRecord.totals(now) });
        }
      }),
      { numRuns: 300 },
    );
  });
});
