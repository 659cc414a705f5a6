import { describe, expect, it } from 'vitest';
import { getEventListeners } from 'node:events';
import {
  ManualClock,
  isInvalidOptionError,
  linkSignals,
  onAbort,
  raceAbort,
  sleep,
  throwIfAborted,
  wakeableSleep,
} from '../../src/core/index.js';

/** Counts live Node timers; the kind of handle a leaking sleep would leave behind. */
function liveTimeouts(): number {
  return process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length;
}

describe('throwIfAborted', () => {
  it('throws the signal reason only when aborted', () => {
    expect(() => throwIfAborted(undefined)).not.toThrow();
    const controller = new AbortController();
    expect(() => throwIfAborted(controller.signal)).not.toThrow();
    const reason = new Error('stop');
    controller.abort(reason);
    expect(() => throwIfAborted(controller.signal)).toThrow(reason);
  });
});

describe('linkSignals', () => {
  it('aborts with the reason of the first source to abort, then detaches', () => {
    const a = new AbortController();
    const b = new AbortController();
    const link = linkSignals(a.signal, undefined, b.signal);
    expect(link.signal.aborted).toBe(false);
    const reason = new Error('b first');
    b.abort(reason);
    expect(link.signal.aborted).toBe(true);
    expect(link.signal.reason).toBe(reason);
    a.abort(new Error('a later'));
    expect(link.signal.reason).toBe(reason);
  });

  it('is aborted at once when a source already is', () => {
    const a = new AbortController();
    a.abort('already');
    const b = new AbortController();
    const link = linkSignals(b.signal, a.signal);
    expect(link.signal.aborted).toBe(true);
    expect(link.signal.reason).toBe('already');
  });

  it('dispose removes its listeners, so a long-lived source does not accumulate them', () => {
    const longLived = new AbortController();
    const added: unknown[] = [];
    const removed: unknown[] = [];
    const { signal } = longLived;
    const add = signal.addEventListener.bind(signal);
    const remove = signal.removeEventListener.bind(signal);
    signal.addEventListener = (...args: Parameters<typeof add>) => {
      added.push(args[1]);
      add(...args);
    };
    signal.removeEventListener = (...args: Parameters<typeof remove>) => {
      removed.push(args[1]);
      remove(...args);
    };
    for (let i = 0; i < 100; i++) {
      using link = linkSignals(signal);
      expect(link.signal.aborted).toBe(false);
    }
    expect(added).toHaveLength(100);
    expect(removed).toEqual(added);
    const link = linkSignals(signal);
    link.dispose();
    link.dispose();
    longLived.abort();
    expect(link.signal.aborted).toBe(false);
  });

  it('with no sources, never aborts', () => {
    expect(linkSignals().signal.aborted).toBe(false);
  });
});

describe('sleep', () => {
  it('resolves after the delay on a manual clock', async () => {
    const clock = new ManualClock();
    let done = false;
    const slept = sleep(100, { clock }).then(() => (done = true));
    await clock.advanceAsync(99);
    expect(done).toBe(false);
    await clock.advanceAsync(1);
    await slept;
    expect(done).toBe(true);
    expect(clock.pendingTimers).toBe(0);
  });

  it('rejects with the signal reason and cancels its timer when aborted', async () => {
    const clock = new ManualClock();
    const controller = new AbortController();
    const slept = sleep(1000, { clock, signal: controller.signal });
    expect(clock.pendingTimers).toBe(1);
    const reason = new Error('cancelled');
    controller.abort(reason);
    await expect(slept).rejects.toBe(reason);
    expect(clock.pendingTimers).toBe(0);
  });

  it('rejects at once for an already-aborted signal without scheduling anything', async () => {
    const clock = new ManualClock();
    const controller = new AbortController();
    controller.abort('early');
    await expect(sleep(10, { clock, signal: controller.signal })).rejects.toBe('early');
    expect(clock.pendingTimers).toBe(0);
  });

  it('rejects invalid delays with an InvalidOptionError naming the argument', async () => {
    for (const bad of [-1, Number.NaN, '5', undefined]) {
      const error = await sleep(bad as number).catch((e: unknown) => e);
      expect(isInvalidOptionError(error), String(bad)).toBe(true);
      expect(error).toMatchObject({ owner: 'sleep', option: 'ms', expected: 'a number >= 0' });
    }
    expect((await sleep(-1).catch((e: unknown) => e)) as Error).toHaveProperty(
      'message',
      'sleep: invalid option "ms": expected a number >= 0, received -1',
    );
  });

  it('leaves no Node timer behind, whether it completes or is aborted', async () => {
    // Counted as differences across synchronous steps only: a timer left by an earlier test
    // (or vitest's own) may end at any await, so a count taken before one is no baseline.
    let live = liveTimeouts();
    const completes = sleep(1);
    expect(liveTimeouts()).toBe(live + 1);
    await completes;
    const controller = new AbortController();
    live = liveTimeouts();
    const aborted = sleep(60_000, { signal: controller.signal });
    expect(liveTimeouts()).toBe(live + 1);
    controller.abort(new Error('stop'));
    // Cleared by the abort itself, not later.
    expect(liveTimeouts()).toBe(live);
    await expect(aborted).rejects.toThrow('stop');
    live = liveTimeouts();
    const background = sleep(60_000, { signal: controller.signal, unref: true });
    expect(liveTimeouts()).toBe(live);
    await expect(background).rejects.toThrow('stop');
  });

  it('removes its abort listener once it resolves', async () => {
    const controller = new AbortController();
    let listeners = 0;
    const { signal } = controller;
    const add = signal.addEventListener.bind(signal);
    const remove = signal.removeEventListener.bind(signal);
    signal.addEventListener = (...args: Parameters<typeof add>) => {
      listeners++;
      add(...args);
    };
    signal.removeEventListener = (...args: Parameters<typeof remove>) => {
      listeners--;
      remove(...args);
    };
    await sleep(1, { signal });
    expect(listeners).toBe(0);
  });
});

describe('onAbort (one shared abort listener per signal)', () => {
  it('many concurrent links and sleeps on one long-lived signal add one listener, all fire, and all are removed', async () => {
    const shutdown = new AbortController();
    const warnings: Error[] = [];
    const onWarning = (warning: Error): void => {
      warnings.push(warning);
    };
    process.on('warning', onWarning);
    try {
      const links = Array.from({ length: 100 }, () => linkSignals(shutdown.signal));
      const clock = new ManualClock();
      const sleeps = Array.from({ length: 100 }, () =>
        sleep(1_000, { signal: shutdown.signal, clock }).catch((e: unknown) => e),
      );
      expect(getEventListeners(shutdown.signal, 'abort')).toHaveLength(1);
      // Ending some of them removes only theirs.
      for (const link of links.slice(0, 50)) link.dispose();
      expect(getEventListeners(shutdown.signal, 'abort')).toHaveLength(1);
      shutdown.abort(new Error('shutting down'));
      expect(links.slice(50).every((l) => l.signal.aborted)).toBe(true);
      expect(links.slice(0, 50).some((l) => l.signal.aborted)).toBe(false);
      const reasons = await Promise.all(sleeps);
      expect(reasons.every((r) => (r as Error).message === 'shutting down')).toBe(true);
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('removing every registration removes the shared listener; the same function twice counts twice', () => {
    const controller = new AbortController();
    let calls = 0;
    const listener = (): void => {
      calls++;
    };
    const offA = onAbort(controller.signal, listener);
    const offB = onAbort(controller.signal, listener);
    offA();
    offA(); // twice is harmless
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
    offB();
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
    const offC = onAbort(controller.signal, listener);
    onAbort(controller.signal, listener);
    controller.abort();
    expect(calls).toBe(2);
    offC(); // after the abort: nothing to remove, no error
  });
});

describe('wakeableSleep', () => {
  it('ends early on wake(), on abort, or at its delay, leaving no timer or listener', async () => {
    const clock = new ManualClock();
    const early = wakeableSleep(1_000, { clock });
    early.wake();
    await expect(early.done).resolves.toBeUndefined();
    early.wake(); // after settling: nothing
    expect(clock.pendingTimers).toBe(0);

    const controller = new AbortController();
    const aborted = wakeableSleep(1_000, { clock, signal: controller.signal });
    controller.abort(new Error('stop'));
    await expect(aborted.done).rejects.toThrow('stop');
    expect(clock.pendingTimers).toBe(0);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);

    const timed = wakeableSleep(50, { clock, signal: new AbortController().signal });
    clock.advance(50);
    await expect(timed.done).resolves.toBeUndefined();
    await expect(wakeableSleep(10, { signal: controller.signal }).done).rejects.toThrow('stop');
  });
});

describe('raceAbort', () => {
  it('settles as the promise does, or rejects with the reason when the signal aborts first', async () => {
    await expect(raceAbort(Promise.resolve(1), undefined)).resolves.toBe(1);
    const controller = new AbortController();
    await expect(raceAbort(Promise.resolve(2), controller.signal)).resolves.toBe(2);
    await expect(raceAbort(Promise.reject(new Error('no')), controller.signal)).rejects.toThrow(
      'no',
    );
    const pending = raceAbort(new Promise<never>(() => undefined), controller.signal);
    controller.abort(new Error('stop'));
    await expect(pending).rejects.toThrow('stop');
  });

  it('rejects at once for a signal that already aborted (an onAbort listener would never fire)', async () => {
    const aborted = AbortSignal.abort(new Error('already'));
    await expect(raceAbort(new Promise<never>(() => undefined), aborted)).rejects.toThrow(
      'already',
    );
  });
});
