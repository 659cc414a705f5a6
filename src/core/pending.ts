/**
 * A promise and its resolving functions without an executor closure per promise: for hot paths
 * that make one promise per operation and hand its resolving functions to a queue or an object.
 * `new Promise(executor)` calls the executor synchronously, before it returns (ECMA-262
 * §27.2.3.1), so the functions {@link pending} leaves in {@link lastResolvers} belong to the
 * promise it returned until the next call: read them at once.
 *
 * Internal: not part of any public entry point.
 * @packageDocumentation
 */

/** The resolving functions of the promise {@link pending} made last. @internal */
export const lastResolvers: {
  resolve: (value: never) => void;
  reject: (reason: unknown) => void;
} = { resolve: () => undefined, reject: () => undefined };

const capture = (resolve: (value: never) => void, reject: (reason: unknown) => void): void => {
  lastResolvers.resolve = resolve;
  lastResolvers.reject = reject;
};

/**
 * A new pending promise; its resolving functions are in {@link lastResolvers} until the next
 * call. @internal
 */
export function pending<T>(): Promise<T> {
  return new Promise<T>(
    capture as (resolve: (value: T) => void, reject: (r: unknown) => void) => void,
  );
}
