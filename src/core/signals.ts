/**
 * Shutdown on process signals, shared by the `…OnSignals` methods (`Registry.deregisterOnSignals`,
 * `Queue.closeOnSignals`): run a shutdown once on the first signal, then let the signal end the
 * process as it would have.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import type { Subscription } from './events.js';
import { guardedOption } from './options.js';

/**
 * The `signals` option of an `…OnSignals` method: signal names, SIGTERM and SIGINT by default.
 *
 * @internal
 */
export const signalsOption = guardedOption(
  (v: unknown): v is readonly NodeJS.Signals[] =>
    Array.isArray(v) && v.every((s) => typeof s === 'string' && s.startsWith('SIG')),
  'an array of signal names (SIGTERM, …)',
  { default: ['SIGTERM', 'SIGINT'] as readonly NodeJS.Signals[] },
);

/**
 * Listens for `signals`; on the first one, removes its handlers and runs `shutdown` (errors are
 * the shutdown's to report), then — with `exit` — raises the signal again, so the process ends
 * as it would have, unless other listeners for it exist (they own the shutdown). The returned
 * subscription removes the handlers (idempotent); `handlers` holds its removal while it is live,
 * for the owner's `close()`.
 *
 * @internal
 */
export function onShutdownSignals(
  signals: readonly NodeJS.Signals[],
  exit: boolean,
  shutdown: () => Promise<unknown>,
  handlers: Set<() => void>,
): Subscription {
  let active = true;
  const remove = (): void => {
    if (!active) return;
    active = false;
    handlers.delete(remove);
    for (const signal of signals) process.removeListener(signal, handler);
  };
  const handler = (signal: NodeJS.Signals): void => {
    remove();
    void shutdown()
      .catch(() => undefined)
      .finally(() => {
        if (exit && process.listenerCount(signal) === 0) process.kill(process.pid, signal);
      });
  };
  for (const signal of signals) process.on(signal, handler);
  handlers.add(remove);
  return { dispose: remove, [Symbol.dispose]: remove };
}
