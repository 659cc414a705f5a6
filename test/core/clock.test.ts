import { describe, expect, it } from 'vitest';
import { ManualClock, isClock, systemClock } from '../../src/core/index.js';

describe('systemClock', () => {
  it('is monotonic and runs timers', async () => {
    const a = systemClock.now();
    const b = systemClock.now();
    expect(b).toBeGreaterThanOrEqual(a);
    await new Promise<void>((resolve) => systemClock.setTimer(resolve, 1));
    expect(systemClock.now()).toBeGreaterThan(a);
  });

  it('cancelled timers never run and unref() returns the timer', async () => {
    let ran = false;
    const timer = systemClock.setTimer(() => (ran = true), 0);
    expect(timer.unref()).toBe(timer);
    timer.cancel();
    timer.cancel();
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(ran).toBe(false);
  });

  it('is a Clock and is frozen', () => {
    expect(isClock(systemClock)).toBe(true);
    expect(Object.isFrozen(systemClock)).toBe(true);
  });
});

describe('ManualClock', () => {
  it('starts where told and only moves when advanced', () => {
    const clock = new ManualClock(1000);
    expect(clock.now()).toBe(1000);
    clock.advance(250);
    expect(clock.now()).toBe(1250);
    clock.advanceTo(2000);
    expect(clock.now()).toBe(2000);
  });

  it('runs timers in due order, ties in scheduling order, with now() at the due time', () => {
    const clock = new ManualClock();
    const seen: string[] = [];
    clock.setTimer(() => seen.push(`b@${clock.now()}`), 20);
    clock.setTimer(() => seen.push(`a@${clock.now()}`), 10);
    clock.setTimer(() => seen.push(`c@${clock.now()}`), 20);
    clock.setTimer(() => seen.push(`late@${clock.now()}`), 31);
    clock.advance(30);
    expect(seen).toEqual(['a@10', 'b@20', 'c@20']);
    expect(clock.now()).toBe(30);
    expect(clock.pendingTimers).toBe(1);
  });

  it('runs a timer scheduled during an advance if it falls due within it', () => {
    const clock = new ManualClock();
    const seen: number[] = [];
    clock.setTimer(() => {
      seen.push(clock.now());
      clock.setTimer(() => seen.push(clock.now()), 5);
    }, 10);
    clock.advance(15);
    expect(seen).toEqual([10, 15]);
  });

  it('treats negative and non-finite delays as zero', () => {
    const clock = new ManualClock();
    let count = 0;
    clock.setTimer(() => count++, -5);
    clock.setTimer(() => count++, Number.NaN);
    clock.advance(0);
    expect(count).toBe(2);
  });

  it('cancel removes a pending timer', () => {
    const clock = new ManualClock();
    let ran = false;
    const timer = clock.setTimer(() => (ran = true), 10);
    expect(clock.pendingTimers).toBe(1);
    timer.cancel();
    expect(clock.pendingTimers).toBe(0);
    clock.advance(100);
    expect(ran).toBe(false);
  });

  it('refuses to go backwards or by invalid steps', () => {
    const clock = new ManualClock(10);
    expect(() => clock.advanceTo(5)).toThrow(RangeError);
    expect(() => clock.advance(-1)).toThrow(RangeError);
    expect(() => clock.advance(Number.NaN)).toThrow(RangeError);
    expect(() => new ManualClock(Infinity)).toThrow(RangeError);
  });

  it('advanceAsync lets promise chains run between timers', async () => {
    const clock = new ManualClock();
    const seen: number[] = [];
    const loop = async (): Promise<void> => {
      for (let i = 0; i < 3; i++) {
        await new Promise<void>((resolve) => clock.setTimer(resolve, 10));
        await Promise.resolve();
        seen.push(clock.now());
      }
    };
    const done = loop();
    await clock.advanceAsync(30);
    await done;
    expect(seen).toEqual([10, 20, 30]);
    await expect(clock.advanceAsync(-1)).rejects.toThrow(RangeError);
  });
});
