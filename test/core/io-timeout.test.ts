import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { ioTimeout } from '../../src/core/io-timeout.js';

const nextImmediate = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('ioTimeout', () => {
  it('fires one setImmediate after its timer, not in the timer callback', async () => {
    const clock = new ManualClock();
    let fired = 0;
    ioTimeout(clock, () => fired++, 100);
    clock.advance(99);
    await nextImmediate();
    expect(fired).toBe(0);
    clock.advance(1); // the timer runs: the timeout waits for the I/O ready by then
    expect(fired).toBe(0);
    await nextImmediate();
    expect(fired).toBe(1);
    expect(clock.pendingTimers).toBe(0);
  });

  it('cancelled between its timer and its immediate, never fires', async () => {
    const clock = new ManualClock();
    let fired = 0;
    const timer = ioTimeout(clock, () => fired++, 10).unref();
    clock.advance(10);
    timer.cancel();
    timer.cancel();
    await nextImmediate();
    await nextImmediate();
    expect(fired).toBe(0);
  });

  it('cancelled before its timer, leaves no timer', () => {
    const clock = new ManualClock();
    ioTimeout(clock, () => undefined, 10).cancel();
    expect(clock.pendingTimers).toBe(0);
  });
});
