import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { ioTimeout } from '../../src/core/io-timeout.js';

const nextImmediate = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('ioTimeout', () => {
  it('unref()ed, still fires on time in a process with nothing else to wake it', async () => {
    // In a child process: a test runner's own traffic would wake the event loop. The parent's
    // ping, 3 s later, is what would wake it otherwise: the timeout must come before it.
    const child = fork(fileURLToPath(new URL('./io-timeout-idle.ts', import.meta.url)), [], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    const order: unknown[] = [];
    child.on('message', (message) => {
      order.push(message);
      if (message === 'ready') setTimeout(() => child.send('ping'), 3_000);
    });
    await new Promise((resolve) => child.once('exit', resolve));
    expect(order).toEqual(['ready', 'timeout', 'ping']);
  });

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
