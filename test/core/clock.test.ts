import { describe, expect, it } from 'vitest';
import { ManualClock, isClock, isInvalidOptionError, systemClock } from '../../src/core/index.js';
import { invalidOption } from '../support/helpers.js';

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

  it('refuses to go backwards or by invalid steps with an InvalidOptionError naming the argument', () => {
    const clock = new ManualClock(10);
    const backwards = invalidOption(() => clock.advanceTo(5));
    expect(backwards).toMatchObject({ owner: 'ManualClock.advanceTo', option: 'timeMs' });
    expect(backwards.message).toBe(
      'ManualClock.advanceTo: invalid option "timeMs": expected a finite time >= now (10), received 5',
    );
    for (const bad of [-1, Number.NaN, Infinity, '5']) {
      const error = invalidOption(() => clock.advance(bad as number));
      expect(error).toMatchObject({ owner: 'ManualClock.advance', option: 'ms' });
      expect(error.expected).toBe('a finite number >= 0');
    }
    // A string that compares as a later time is no time either: the clock stays a number.
    expect(invalidOption(() => clock.advanceTo('20' as unknown as number)).option).toBe('timeMs');
    expect(clock.now()).toBe(10);
    for (const bad of [Infinity, Number.NaN, '0', null]) {
      const error = invalidOption(() => new ManualClock(bad as number));
      expect(error).toMatchObject({ owner: 'ManualClock', option: 'startMs' });
    }
    expect(new ManualClock(undefined).now()).toBe(0);
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
    const error = await clock.advanceAsync(-1).catch((e: unknown) => e);
    expect(isInvalidOptionError(error)).toBe(true);
    expect(error).toMatchObject({ owner: 'ManualClock.advanceAsync', option: 'ms' });
  });
});
