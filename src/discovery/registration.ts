/**
 * `Registration`: a registered instance that keeps itself registered — jittered heartbeats,
 * re-registration when the store lost it, status/weight/metadata changes, deregistration on
 * dispose.
 *
 * @packageDocumentation
 */
import {
  EventChannel,
  equalJitter,
  exponentialDelay,
  jitter,
  type Clock,
  type Subscription,
  type Timer,
} from '../core/index.js';
import type { DiscoveryBackend, WriteOptions } from './backend.js';
import {
  InvalidInstanceError,
  RegistrationClosedError,
  RegistrationReplacedError,
  RegistryUnavailableError,
} from './errors.js';
import { encodeInstance, parseInstance, type Instance, type InstanceSpec } from './instance.js';
import { bounded, callOptions, storeOf } from './ops.js';

/** Lifecycle of a {@link Registration}. */
export type RegistrationState =
  /** In the store and heartbeating. */
  | 'active'
  /** The store lost it (restart, flush, expiry during a long stall); re-registering. */
  | 'lost'
  /** Another registration took the same id; this one stopped. */
  | 'replaced'
  /** Deregistered (or its registry closed). */
  | 'closed';

/** A change of a registration's state. */
export interface RegistrationStateChange {
  /** The registration's service. */
  readonly service: string;
  /** The registration's instance id. */
  readonly id: string;
  /** The state before. */
  readonly from: RegistrationState;
  /** The state now. */
  readonly to: RegistrationState;
}

/** What a registration may change about itself. */
export type InstancePatch = Partial<
  Pick<InstanceSpec, 'weight' | 'zone' | 'version' | 'status' | 'metadata' | 'host' | 'port'>
>;

const UPDATE = 'Registration.update';

/**
 * Refuses a patch that is not an object, or that would move the instance to another id or
 * service: spread over the instance, it wrote a record there, owned by this registration's
 * token, and left the registration's own record and heartbeats where they were (a second
 * instance nobody deregisters). The same id and service are no change, and pass.
 */
function checkPatch(patch: unknown, current: Instance): void {
  const given = patch as Partial<Record<'service' | 'id', unknown>>;
  let field: 'patch' | 'service' | 'id' | undefined;
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) field = 'patch';
  else if (Object.hasOwn(given, 'service') && given.service !== current.service) field = 'service';
  else if (Object.hasOwn(given, 'id') && given.id !== current.id) field = 'id';
  if (field === undefined) return;
  const message = field === 'patch' ? 'expected an object' : 'cannot change: register anew';
  const value = field === 'patch' ? patch : given[field];
  throw new InvalidInstanceError(UPDATE, field, message, value, [{ path: field, message }]);
}

/** Settings a registration takes from its registry. @internal */
export interface RegistrationSettings {
  readonly backend: DiscoveryBackend;
  readonly clock: Clock;
  readonly random: () => number;
  readonly heartbeatFraction: number;
  readonly heartbeatJitter: number;
  readonly operationTimeoutMs: number;
  readonly retryBaseMs: number;
  readonly reportError: (error: Error) => void;
  /** The store had lost the registration and it was written again. */
  readonly reregistered: (registration: Registration) => void;
  /** A background heartbeat failed (`failures` in a row, this one included). */
  readonly heartbeatFailed: (registration: Registration, error: Error, failures: number) => void;
}

/**
 * A registered instance. Created by `Registry.register()`; it heartbeats by itself every
 * `ttlMs × heartbeatFraction` (jittered, so a fleet started together does not beat in lockstep),
 * re-registers by itself when the store has lost it, and deregisters on
 * `await using` / `Symbol.asyncDispose`.
 *
 * @example
 * ```ts
 * import { Registry } from 'keel/discovery';
 *
 * const registry = new Registry();
 * await using registration = await registry.register(
 *   { service: 'orders', id: 'orders-1', host: '127.0.0.1', port: 8081, zone: 'a' },
 *   { ttlMs: 10_000 },
 * );
 * await registration.setStatus('draining'); // callers stop sending new work
 * console.log(registration.instance.status); // 'draining'
 * ```
 */
export class Registration implements AsyncDisposable {
  readonly #s: RegistrationSettings;
  readonly #token: string;
  readonly #ttlMs: number;
  readonly #onClose: (registration: Registration) => void;
  #instance: Instance;
  #state: RegistrationState = 'active';
  #timer: Timer | undefined;
  #failures = 0;
  /** Store operations run one at a time, in order, so a heartbeat never races an update. */
  #queue: Promise<unknown> = Promise.resolve();
  readonly #stateChanged = new EventChannel<RegistrationStateChange>();
  readonly #errors = new EventChannel<Error>();
  #lastHeartbeat: number;

  private constructor(
    settings: RegistrationSettings,
    instance: Instance,
    token: string,
    ttlMs: number,
    onClose: (registration: Registration) => void,
  ) {
    this.#s = settings;
    this.#instance = instance;
    this.#token = token;
    this.#ttlMs = ttlMs;
    this.#onClose = onClose;
    this.#lastHeartbeat = settings.clock.now();
    this.#schedule();
  }

  /**
   * A registration just written to the store (registrations come from `Registry.register()`).
   *
   * @internal
   */
  static started(
    settings: RegistrationSettings,
    instance: Instance,
    token: string,
    ttlMs: number,
    onClose: (registration: Registration) => void,
  ): Registration {
    return new Registration(settings, instance, token, ttlMs, onClose);
  }

  /** The instance as registered now. */
  get instance(): Instance {
    return this.#instance;
  }

  /** The instance's service. */
  get service(): string {
    return this.#instance.service;
  }

  /** The instance id. */
  get id(): string {
    return this.#instance.id;
  }

  /** Where the registration is in its lifecycle. */
  get state(): RegistrationState {
    return this.#state;
  }

  /** The registration's ttl: the store drops it this long after its last heartbeat. */
  get ttlMs(): number {
    return this.#ttlMs;
  }

  /** Clock time of the last heartbeat (or registration) the store acknowledged. */
  get lastHeartbeat(): number {
    return this.#lastHeartbeat;
  }

  /** State changes: lost (re-registering), active again, replaced, closed. */
  onStateChange(listener: (change: RegistrationStateChange) => void): Subscription {
    return this.#stateChanged.subscribe(listener);
  }

  /** Background failures: heartbeats that did not reach the store, a replacement. */
  onError(listener: (error: Error) => void): Subscription {
    return this.#errors.subscribe(listener);
  }

  /** Sets the status: `draining` before shutdown (callers stop sending), `down`, or `up`. */
  setStatus(status: Instance['status'], options?: WriteOptions): Promise<void> {
    return this.update({ status }, options);
  }

  /** Sets the balancing weight. */
  setWeight(weight: number, options?: WriteOptions): Promise<void> {
    return this.update({ weight }, options);
  }

  /** Replaces the metadata. */
  setMetadata(metadata: Readonly<Record<string, string>>, options?: WriteOptions): Promise<void> {
    return this.update({ metadata }, options);
  }

  /** Marks the instance `draining`. */
  drain(options?: WriteOptions): Promise<void> {
    return this.setStatus('draining', options);
  }

  /**
   * Changes the registered data (validated as at registration) and writes it; watchers see an
   * `updated` change. Rejects with {@link InvalidInstanceError} for a patch that is not an
   * object or that changes `service` or `id` (register the instance anew for that), and with
   * {@link RegistrationClosedError} after deregistration.
   */
  update(patch: InstancePatch, options?: WriteOptions): Promise<void> {
    if (this.#state === 'closed' || this.#state === 'replaced') {
      return Promise.reject(new RegistrationClosedError(this.service, this.id));
    }
    const current = this.#instance;
    let next: Instance;
    try {
      callOptions('Registration.update', options);
      checkPatch(patch, current);
      next = parseInstance(
        {
          service: current.service,
          id: current.id,
          host: current.host,
          port: current.port,
          weight: current.weight,
          zone: current.zone,
          version: current.version,
          status: current.status,
          metadata: current.metadata,
          ...patch,
        },
        'Registration.update',
      );
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#enqueue(async () => {
      await this.#write(next, options);
      this.#instance = next;
    });
  }

  /** Sends a heartbeat now (they also run by themselves). Re-registers if the store lost it. */
  heartbeat(options?: WriteOptions): Promise<void> {
    if (this.#state === 'closed' || this.#state === 'replaced') {
      return Promise.reject(new RegistrationClosedError(this.service, this.id));
    }
    try {
      callOptions('Registration.heartbeat', options);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#enqueue(() => this.#beat(options));
  }

  /**
   * Removes the instance from the store and stops heartbeating. Resolves `false` if it was no
   * longer there (expired, taken over by another registration of its id, or deregistered
   * already); a record deleted behind the registry's back while its lease stayed (the store
   * still had the instance) is deregistered all the same (`true`), and every view drops it.
   * Safe to call twice. Rejects with {@link RegistryUnavailableError} when the store cannot be
   * reached (the record then expires after its ttl).
   */
  async deregister(options?: WriteOptions): Promise<boolean> {
    callOptions('Registration.deregister', options);
    if (this.#state === 'closed' || this.#state === 'replaced') {
      this.#close();
      return false;
    }
    this.#close();
    const s = this.#s;
    return this.#enqueue(() =>
      bounded(
        `deregister ${this.service}/${this.id}`,
        s.clock,
        s.operationTimeoutMs,
        options?.signal,
        (signal) => s.backend.deregister(this.service, this.id, this.#token, { signal }),
        s.backend,
      ),
    );
  }

  /**
   * Deregisters and stops heartbeating, like {@link Registration.deregister}, but never rejects:
   * a failure is reported through `onError` (the record then expires after its ttl). Afterwards
   * `update()`, `heartbeat()` and the setters reject with {@link RegistrationClosedError}.
   * Safe to call twice; closing the registry closes its registrations too.
   */
  async close(): Promise<void> {
    try {
      await this.deregister();
    } catch (error) {
      this.#errors.emit(error as Error);
      this.#s.reportError(error as Error);
    }
  }

  /** {@link Registration.close}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * Stops heartbeating without deregistering, as a crashed process would: the record stays
   * until its ttl runs out and the reaper removes it. For tests and failure drills.
   */
  abandon(): void {
    this.#close();
  }

  // ------------------------------------------------------------------------------------------

  #close(): void {
    if (this.#state === 'closed') return;
    this.#timer?.cancel();
    this.#timer = undefined;
    this.#setState('closed');
    this.#onClose(this);
  }

  #setState(to: RegistrationState): void {
    const from = this.#state;
    if (from === to) return;
    this.#state = to;
    this.#stateChanged.emit({ service: this.service, id: this.id, from, to });
  }

  #enqueue<T>(op: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(op, op);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #write(instance: Instance, options: WriteOptions | undefined): Promise<void> {
    const s = this.#s;
    await bounded(
      `register ${instance.service}/${instance.id}`,
      s.clock,
      s.operationTimeoutMs,
      options?.signal,
      (signal) =>
        s.backend.register(
          instance.service,
          instance.id,
          encodeInstance(instance),
          this.#token,
          this.#ttlMs,
          { signal },
        ),
      // The id is often the instance's host:port: say which address is the store's.
      s.backend,
    );
    this.#lastHeartbeat = s.clock.now();
  }

  async #beat(options?: WriteOptions): Promise<void> {
    const s = this.#s;
    const outcome = await bounded(
      `heartbeat ${this.service}/${this.id}`,
      s.clock,
      s.operationTimeoutMs,
      options?.signal,
      (signal) => s.backend.heartbeat(this.service, this.id, this.#token, this.#ttlMs, { signal }),
      s.backend,
    );
    if (this.#state === 'closed') return;
    if (outcome === 'ok') {
      this.#lastHeartbeat = s.clock.now();
      this.#setState('active');
      return;
    }
    if (outcome === 'replaced') {
      this.#timer?.cancel();
      this.#timer = undefined;
      this.#setState('replaced');
      this.#onClose(this);
      throw new RegistrationReplacedError(this.service, this.id);
    }
    // The store lost the record: write it again, as it is now.
    this.#setState('lost');
    await this.#write(this.#instance, options);
    if (this.#state === 'lost') {
      this.#setState('active');
      s.reregistered(this);
    }
  }

  /** Next heartbeat: a fraction of the ttl, jittered; sooner (with backoff) after failures. */
  #schedule(): void {
    if (this.#state === 'closed' || this.#state === 'replaced') return;
    const s = this.#s;
    const interval = this.#ttlMs * s.heartbeatFraction;
    // ± heartbeatJitter around the interval; after failures, exponential backoff with equal
    // jitter (at least half the delay), doubling up to 2^10 × retryBaseMs: core/backoff.
    const jittered = jitter(interval, s.heartbeatJitter, s.random);
    const delay =
      this.#failures === 0
        ? jittered
        : Math.min(
            jittered,
            equalJitter(
              exponentialDelay(Math.min(this.#failures, 11), s.retryBaseMs, s.retryBaseMs * 1024),
              s.random,
            ),
          );
    this.#timer = s.clock
      .setTimer(() => {
        this.#timer = undefined;
        void this.#enqueue(() => this.#beat())
          .then(
            () => {
              this.#failures = 0;
            },
            (error: unknown) => {
              if (this.#state === 'closed') return;
              this.#failures++;
              const e =
                error instanceof Error
                  ? error
                  : new RegistryUnavailableError(
                      `heartbeat ${this.service}/${this.id}`,
                      String(error),
                      { store: storeOf(s.backend) },
                    );
              this.#errors.emit(e);
              s.heartbeatFailed(this, e, this.#failures);
              s.reportError(e);
            },
          )
          .finally(() => {
            this.#schedule();
          });
      }, delay)
      .unref();
  }
}
