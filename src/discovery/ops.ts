/**
 * Bounded backend calls: every store operation gets a timeout (a paused Redis never answers,
 * and ioredis has no command timeout by default) and the caller's signal, and failures become
 * {@link RegistryUnavailableError}s.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import {
  InvalidOptionError,
  ioTimeout,
  isAbortSignal,
  isKeelError,
  throwIfAborted,
  type Clock,
  type Timer,
} from '../core/index.js';
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

const NONE = Object.freeze({});

/**
 * Checks the options object of a call (`{ signal, … }`) before anything is sent: `undefined`
 * passes as is (nothing is allocated on the usual path); anything else must be an object whose
 * `signal`, when given, is an `AbortSignal` — otherwise an `InvalidOptionError` naming what is
 * wrong, rather than a `TypeError` from deep inside the call. Returns the options, or `{}`.
 * @internal
 */
export function callOptions<T extends { readonly signal?: AbortSignal | undefined }>(
  owner: string,
  options: T | undefined,
): Partial<T> {
  // Typed for callers who keep to the types; checked for those who do not.
  const given: unknown = options;
  if (given === undefined) return NONE;
  if (typeof given !== 'object' || given === null || Array.isArray(given)) {
    throw new InvalidOptionError(owner, 'options', 'an options object', given);
  }
  const signal: unknown = (given as { readonly signal?: unknown }).signal;
  if (signal !== undefined && !isAbortSignal(signal)) {
    throw new InvalidOptionError(owner, 'signal', 'an AbortSignal', signal);
  }
  return options as T;
}

/**
 * Runs `call` bounded by `timeoutMs` and `signal`; rejects with a typed error naming the store
 * of `backend` (see {@link storeOf}) when given. The name is built only for an error: the
 * heartbeat runs through here, and a healthy call allocates nothing for it. @internal
 */
export async function bounded<T>(
  operation: string,
  clock: Clock,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  call: (signal: AbortSignal | undefined) => Promise<T>,
  backend?: DiscoveryBackend,
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
                store: backend === undefined ? undefined : storeOf(backend),
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
      { cause: error, store: backend === undefined ? undefined : storeOf(backend) },
    );
  } finally {
    timer?.cancel();
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
  }
}
