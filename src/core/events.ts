/**
 * Typed, per-event subscriptions. A component owns one {@link EventChannel} per event and
 * exposes `onX(listener)` methods that return a {@link Subscription}; there are no stringly
 * typed event names and no mandatory `'error'` listener.
 *
 * @packageDocumentation
 */

import { InvalidOptionError } from './options.js';
/** What `onX(listener)` returns: call `dispose()` (or let `using` do it) to unsubscribe. */
export interface Subscription extends Disposable {
  /** Removes the listener. Safe to call more than once. */
  dispose(): void;
}

/** A listener for events carrying `T`. */
export type Listener<T> = (event: T) => void;

const EMPTY: readonly never[] = /* @__PURE__ */ Object.freeze([]);

/**
 * One typed event. Emitting with no listeners is a single length check: no allocation, no
 * clock read — and callers can test {@link EventChannel.active} before even building a payload.
 *
 * Listener lists are copy-on-write, so a listener that subscribes or unsubscribes during an
 * emit affects the next emit, never the current one, and `emit` itself allocates nothing.
 *
 * A listener that throws does not stop the other listeners or corrupt the emitting component:
 * its error is re-thrown asynchronously (as Node's `EventTarget` reports listener errors,
 * through `process.nextTick`), so it surfaces as an uncaught exception rather than vanishing.
 *
 * @example
 * ```ts
 * import { EventChannel } from 'keel';
 *
 * const stateChanged = new EventChannel<{ from: string; to: string }>();
 * const subscription = stateChanged.subscribe((change) => console.log(change.to));
 * stateChanged.emit({ from: 'closed', to: 'open' }); // logs "open"
 * subscription.dispose();
 * ```
 */
export class EventChannel<T> {
  // Two parallel copy-on-write arrays: the functions emit calls directly (no wrapper call per
  // listener), and one identity token per subscription, so disposing one of two identical
  // subscriptions removes exactly that one and keeps the order of the rest.
  #listeners: readonly Listener<T>[] = EMPTY;
  #tokens: readonly object[] = EMPTY;

  /** True when at least one listener is subscribed. */
  get active(): boolean {
    return this.#listeners.length !== 0;
  }

  /** Number of subscribed listeners. */
  get listenerCount(): number {
    return this.#listeners.length;
  }

  /**
   * Adds a listener and returns its subscription. Subscribing the same function twice gives
   * two independent subscriptions (it is called twice per event).
   */
  subscribe(listener: Listener<T>): Subscription {
    if (typeof listener !== 'function') {
      throw new InvalidOptionError('EventChannel.subscribe', 'listener', 'a function', listener);
    }
    const token = {};
    this.#listeners = [...this.#listeners, listener];
    this.#tokens = [...this.#tokens, token];
    let subscribed = true;
    const dispose = (): void => {
      if (!subscribed) return;
      subscribed = false;
      const index = this.#tokens.indexOf(token);
      if (index === -1) return; // removed by clear()
      if (this.#tokens.length === 1) {
        this.#listeners = EMPTY;
        this.#tokens = EMPTY;
        return;
      }
      this.#listeners = this.#listeners.filter((_, i) => i !== index);
      this.#tokens = this.#tokens.filter((_, i) => i !== index);
    };
    return { dispose, [Symbol.dispose]: dispose };
  }

  /** Like {@link EventChannel.subscribe}, but the listener is removed after its first event. */
  once(listener: Listener<T>): Subscription {
    const subscription = this.subscribe((event) => {
      subscription.dispose();
      listener(event);
    });
    return subscription;
  }

  /** Calls every listener with `event`, in subscription order. */
  emit(event: T): void {
    const listeners = this.#listeners;
    if (listeners.length === 0) return;
    for (let i = 0; i < listeners.length; i++) {
      try {
        (listeners[i] as Listener<T>)(event);
      } catch (error) {
        process.nextTick(rethrow, error);
      }
    }
  }

  /** Removes every listener (used when the owning component is disposed). */
  clear(): void {
    this.#listeners = EMPTY;
    this.#tokens = EMPTY;
  }
}

function rethrow(error: unknown): never {
  throw error;
}
