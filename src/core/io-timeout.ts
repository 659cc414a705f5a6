/**
 * Timeouts of I/O that a blocked event loop cannot make up.
 *
 * Node's event loop runs expired timers before it polls for I/O (the timers phase comes
 * before the poll phase; https://nodejs.org/en/learn/asynchronous-work/event-loop-timers-and-nexttick).
 * After the process was busy for longer than a timeout — a CPU-bound stretch, a GC pause, a
 * loaded machine — the timer and the reply are both ready, and the timer goes first: the call
 * fails with a timeout although its answer is sitting in the socket. Heartbeats and lock rounds
 * then fail for as long as the process is busy, while Redis answers at once.
 *
 * {@link ioTimeout} defers the timeout by one `setImmediate` once its timer fires: immediates
 * run in the check phase, after the poll phase of the same loop iteration has read the sockets
 * and run their callbacks (and the microtasks those queue). A reply that had arrived wins; a
 * call whose reply has not arrived still times out, one loop iteration later.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * @packageDocumentation
 */
import type { Clock, Timer } from './clock.js';

/**
 * Calls `onTimeout` `ms` after now on `clock` — but only after the I/O that was ready by then
 * has been read (see the module comment). Cancelling stops it at either step.
 */
export function ioTimeout(clock: Clock, onTimeout: () => void, ms: number): Timer {
  let immediate: ReturnType<typeof setImmediate> | undefined;
  let cancelled = false;
  // `unref()` applies to the timer only. The immediate stays ref'd: an unref'd immediate does
  // not keep the event loop from sleeping in its poll phase, so with nothing else due the
  // timeout would wait for whatever woke the process next (a call to a paused server hung past
  // its timeout). It lasts one turn of the loop, which is running anyway when the timer fires.
  const timer = clock.setTimer(() => {
    if (cancelled) return;
    immediate = setImmediate(() => {
      immediate = undefined;
      if (!cancelled) onTimeout();
    });
  }, ms);
  const handle: Timer = {
    cancel: () => {
      cancelled = true;
      timer.cancel();
      if (immediate !== undefined) clearImmediate(immediate);
      immediate = undefined;
    },
    unref: () => {
      timer.unref();
      return handle;
    },
  };
  return handle;
}
