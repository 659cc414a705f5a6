/**
 * `ServiceWatch`: a caller's handle on a service's live view — the current instances, typed
 * change events, an async iterator of changes, and `ready` once the first snapshot is in.
 *
 * @packageDocumentation
 */
import { ClosedError, throwIfAborted, type Subscription } from '../core/index.js';
import { checkFilter, matchesFilter, type InstanceFilter } from './filter.js';
import type { Instance } from './instance.js';
import { callOptions } from './ops.js';
import type {
  InstanceAdded,
  InstanceRemoved,
  InstanceUpdated,
  QuarantinedRecord,
  ServiceView,
  StaleChange,
  WatchChange,
  WatchError,
} from './view.js';

/** Options of {@link ServiceWatch.changes}. */
export interface ChangesOptions {
  /** Ends the iteration (it returns `done`) when aborted. */
  readonly signal?: AbortSignal | undefined;
}

/** Options of {@link ServiceWatch.whenReady}. */
export interface WhenReadyOptions {
  /** Rejects with `signal.reason` when aborted before the view is ready. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * A live view of one service's instances. Watches of one service from one registry share a
 * single underlying view (one snapshot, one log reader); each handle has its own listeners,
 * removed by {@link ServiceWatch.close}.
 *
 * The view never ends silently: when the store is unreachable it keeps the last instances and
 * sets {@link ServiceWatch.stale}, reports errors through {@link ServiceWatch.onError} and keeps
 * retrying until it has a fresh snapshot again.
 *
 * @example
 * ```ts
 * import { Registry } from 'keel/discovery';
 *
 * const registry = new Registry();
 * const payments = registry.watch('payments');
 * payments.onAdded(({ instance }) => console.log('up:', instance.id));
 * payments.onRemoved(({ instance, reason }) => console.log('gone:', instance.id, reason));
 * await payments.ready;
 * console.log(payments.instances({ status: 'up' }).length);
 * payments.close();
 * await registry.close();
 * ```
 */
export class ServiceWatch implements Disposable, AsyncDisposable, AsyncIterable<WatchChange> {
  readonly #view: ServiceView;
  readonly #release: () => void;
  readonly #subscriptions = new Set<Subscription>();
  readonly #iterators = new Set<() => void>();
  #closed = false;

  private constructor(view: ServiceView, release: () => void) {
    this.#view = view;
    this.#release = release;
  }

  /**
   * A handle on `view`; `release` runs once, on close (watches come from `Registry.watch()`).
   *
   * @internal
   */
  static of(view: ServiceView, release: () => void): ServiceWatch {
    return new ServiceWatch(view, release);
  }

  /** Throws a `ClosedError` naming `operation` once this handle or its registry is closed. */
  #open(operation: string): void {
    if (this.#closed || this.#view.closed) {
      throw new ClosedError(`ServiceWatch ${JSON.stringify(this.#view.service)}`, operation);
    }
  }

  /** The watched service. */
  get service(): string {
    return this.#view.service;
  }

  /**
   * Resolves once the first snapshot is in (immediately if it already is). It never rejects;
   * during an outage it waits — use {@link ServiceWatch.whenReady} to bound the wait.
   */
  get ready(): Promise<void> {
    return this.#view.ready;
  }

  /** Whether the first snapshot is in. */
  get isReady(): boolean {
    return this.#view.isReady;
  }

  /**
   * True while the view may be out of date: the store is unreachable or a resync is failing.
   * The instances stay those last known (self-preservation); they are not cleared.
   */
  get stale(): boolean {
    return this.#view.stale;
  }

  /** The store revision the view reflects. */
  get revision(): number {
    return this.#view.revision;
  }

  /** The store epoch the view reflects (changes when the store lost its data). */
  get epoch(): string {
    return this.#view.epoch;
  }

  /** Snapshots the view has taken (the first included): resyncs after gaps, reconnects, data loss. */
  get resyncs(): number {
    return this.#view.resyncs;
  }

  /** Number of instances in the view (any status). */
  get size(): number {
    return this.#view.list().length;
  }

  /** Whether this handle is closed (by {@link ServiceWatch.close}, or its registry closed). */
  get closed(): boolean {
    return this.#closed || this.#view.closed;
  }

  /** Waits for the first snapshot, or rejects with `signal.reason` if the signal aborts first. */
  async whenReady(options?: WhenReadyOptions): Promise<void> {
    this.#open('whenReady');
    const { signal } = callOptions('ServiceWatch.whenReady', options);
    throwIfAborted(signal);
    if (this.#view.isReady || signal === undefined) return this.#view.ready;
    let onAbort: (() => void) | undefined;
    try {
      await Promise.race([
        this.#view.ready,
        new Promise<never>((_, reject) => {
          onAbort = () => {
            reject(signal.reason as Error);
          };
          signal.addEventListener('abort', onAbort, { once: true });
        }),
      ]);
    } finally {
      if (onAbort !== undefined) signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * The instances in the view, in id order — every status unless `filter` says otherwise. From
   * the local cache: never waits, never throws for an unreachable store. A filter with an
   * unknown field or status throws an `InvalidOptionError`.
   */
  instances(filter?: InstanceFilter): readonly Instance[] {
    this.#open('instances');
    const all = this.#view.list();
    if (filter === undefined) return all;
    const checked = checkFilter('ServiceWatch.instances', filter) ?? {};
    return all.filter((i) => matchesFilter(i, checked));
  }

  /** One instance by id, or `undefined`. */
  get(id: string): Instance | undefined {
    this.#open('get');
    return this.#view.get(id);
  }

  /** Every change, in order. */
  onChange(listener: (change: WatchChange) => void): Subscription {
    this.#open('onChange');
    return this.#track(this.#view.changed.subscribe(listener));
  }

  /** Instances appearing. */
  onAdded(listener: (change: InstanceAdded) => void): Subscription {
    this.#open('onAdded');
    return this.onChange((change) => {
      if (change.type === 'added') listener(change);
    });
  }

  /** Instances whose data changed (status, weight, metadata, …). */
  onUpdated(listener: (change: InstanceUpdated) => void): Subscription {
    this.#open('onUpdated');
    return this.onChange((change) => {
      if (change.type === 'updated') listener(change);
    });
  }

  /** Instances leaving, with the reason. */
  onRemoved(listener: (change: InstanceRemoved) => void): Subscription {
    this.#open('onRemoved');
    return this.onChange((change) => {
      if (change.type === 'removed') listener(change);
    });
  }

  /**
   * After each batch of changes has been applied — a read of the change log, a resync (the
   * first snapshot included), instances dropped at the end of a grace period — when the view is
   * consistent again: every {@link ServiceWatch.onChange} of the batch has been delivered, and
   * {@link ServiceWatch.instances} shows the batch as a whole.
   *
   * The hook for rebuilding something derived from the whole view (a hash ring, an endpoint
   * list) once per batch rather than once per change, and never from a half-applied resync. A
   * resync may end with nothing changed, so the listener may find the view as it was. It is not
   * called on subscribing: to start from the current view, build once after subscribing.
   *
   * @example
   * ```ts
   * import { HashRing } from 'keel/hashring';
   * import { Registry } from 'keel/discovery';
   *
   * const registry = new Registry();
   * const shards = registry.watch('inventory');
   * let ring = new HashRing();
   * const rebuild = (): void => {
   *   const up = shards.instances({ status: 'up' });
   *   ring = new HashRing({ nodes: up.map((i) => ({ id: i.id })) });
   * };
   * shards.onSettled(rebuild);
   * rebuild(); // the view as it is now (empty until the first snapshot is in)
   * await shards.ready;
   * console.log(ring.get('SKU-1')?.id);
   * shards.close();
   * await registry.close();
   * ```
   */
  onSettled(listener: () => void): Subscription {
    this.#open('onSettled');
    return this.#track(
      this.#view.settled.subscribe(() => {
        listener();
      }),
    );
  }

  /** The view going stale (store unreachable) or fresh again. */
  onStaleChange(listener: (change: StaleChange) => void): Subscription {
    this.#open('onStaleChange');
    return this.#track(this.#view.staleChanged.subscribe(listener));
  }

  /** Background failures (the view keeps retrying with jittered backoff). */
  onError(listener: (error: WatchError) => void): Subscription {
    this.#open('onError');
    return this.#track(this.#view.errors.subscribe(listener));
  }

  /** Records in the store that fail the schema: skipped, reported once each. */
  onQuarantined(listener: (record: QuarantinedRecord) => void): Subscription {
    this.#open('onQuarantined');
    return this.#track(this.#view.quarantined.subscribe(listener));
  }

  /**
   * An async iterator of changes from now on. It ends when the watch or its registry is
   * closed, or `signal` aborts — never silently otherwise: outages show as
   * {@link ServiceWatch.onStaleChange} / {@link ServiceWatch.onError} while it keeps waiting
   * for the view to recover. Changes queue while the consumer is busy, so consume promptly.
   *
   * @example
   * ```ts
   * import { Registry } from 'keel/discovery';
   *
   * const registry = new Registry();
   * const watch = registry.watch('inventory');
   * const stop = new AbortController();
   * setTimeout(() => stop.abort(), 10).unref();
   * for await (const change of watch.changes({ signal: stop.signal })) {
   *   console.log(change.type, change.instance.id);
   * }
   * watch.close();
   * await registry.close();
   * ```
   */
  changes(options: ChangesOptions = {}): AsyncIterableIterator<WatchChange> {
    const queue: WatchChange[] = [];
    let waiting: ((result: IteratorResult<WatchChange>) => void) | undefined;
    let done = this.closed || options.signal?.aborted === true;
    let ended: Subscription | undefined;
    const finish = (): void => {
      if (done && waiting === undefined) return;
      done = true;
      subscription?.dispose();
      ended?.dispose();
      this.#iterators.delete(finish);
      options.signal?.removeEventListener('abort', finish);
      const w = waiting;
      waiting = undefined;
      w?.({ value: undefined, done: true });
    };
    let subscription: Subscription | undefined;
    if (!done) {
      subscription = this.#view.changed.subscribe((change) => {
        if (waiting !== undefined) {
          const w = waiting;
          waiting = undefined;
          w({ value: change, done: false });
        } else {
          queue.push(change);
        }
      });
      // The registry closing the view ends the iteration too, rather than leave it waiting.
      ended = this.#view.ended.subscribe(finish);
      this.#iterators.add(finish);
      options.signal?.addEventListener('abort', finish, { once: true });
    }
    const iterator: AsyncIterableIterator<WatchChange> = {
      next: () => {
        const value = queue.shift();
        if (value !== undefined) return Promise.resolve({ value, done: false });
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => {
          waiting = resolve;
        });
      },
      return: () => {
        queue.length = 0;
        finish();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /** `for await (const change of watch)`: the same as {@link ServiceWatch.changes} without a signal. */
  [Symbol.asyncIterator](): AsyncIterator<WatchChange> {
    return this.changes();
  }

  /**
   * Removes this handle's listeners and ends its iterators (the registry stops following the
   * service once no watch, balancer or `discover()` needs it). Afterwards its methods throw a
   * `ClosedError` — except `changes()` (and `for await`), which end at once, as the iterators
   * open at close do; its properties (`closed`, `service`, …) can still be read. Safe to call
   * twice; closing the registry closes its watches too.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const subscription of this.#subscriptions) subscription.dispose();
    this.#subscriptions.clear();
    for (const finish of [...this.#iterators]) finish();
    this.#release();
  }

  /** {@link ServiceWatch.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** {@link ServiceWatch.close}, for `await using` (like every closable Keel object). */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  #track(subscription: Subscription): Subscription {
    if (this.#closed) {
      subscription.dispose();
      return subscription;
    }
    this.#subscriptions.add(subscription);
    const dispose = (): void => {
      this.#subscriptions.delete(subscription);
      subscription.dispose();
    };
    return { dispose, [Symbol.dispose]: dispose };
  }
}
