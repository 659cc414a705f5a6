/**
 * Bounded backend calls: every store operation gets a timeout (a paused Redis never answers,
 * and ioredis has no command timeout by default) and the caller's signal, and failures become
 * {@link RegistryUnavailableError}s.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { ioTimeout, isKeelError, throwIfAborted, type Clock, type Timer } from '../core/index.js';
import type { DiscoveryBackend } from './backend.js';
import { RegistryUnavailableError } from './errors.js';

/**
 * How errors name a backend's store: `<kind> at <address>` (e.g. `redis at 127.0.0.1:6379`),
 * or `undefined` when the backend does not say where it is. @internal
 */
export const storeOf = (backend: DiscoveryBackend): string | undefined => {
  const address = backend.address;
  return address === undefined ? undefined : `${backend.kind} at ${address}`;
};

/**
 * Runs `call` bounded by `timeoutMs` and `signal`; rejects with a typed error, naming `store`
 * (see {@link storeOf}) when given. @internal
 */
export async function bounded<T>(
  operation: string,
  clock: Clock,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  call: (signal: AbortSignal | undefined) => Promise<T>,
  store?: string,
): Promise<T> {
  throwIfAborted(signal);
  let timer: Timer | undefined;
  let onAbort: (() => void) | undefined;
  const promise = call(signal);
  promise.catch(() => undefined);
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        // After the I/O ready by then (see core/io-timeout.ts): a reply that arrived while the
        // process was busy past the timeout wins over it.
        timer = ioTimeout(
          clock,
          () => {
            reject(
              new RegistryUnavailableError(operation, `no answer within ${timeoutMs} ms`, {
                store,
              }),
            );
          },
          timeoutMs,
        );
        timer.unref();
        if (signal !== undefined) {
          onAbort = () => {
            reject(signal.reason as Error);
          };
          signal.addEventListener('abort', onAbort, { once: true });
        }
      }),
    ]);
  } catch (error) {
    if (signal?.aborted === true && error === signal.reason) throw error;
    if (isKeelError(error)) throw error;
    throw new RegistryUnavailableError(
      operation,
      error instanceof Error ? error.message : String(error),
      { cause: error, store },
    );
  } finally {
    timer?.cancel();
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
  }
}
