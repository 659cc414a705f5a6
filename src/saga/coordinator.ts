/**
 * The durable saga coordinator: runs saga instances step by step, writing each state change to
 * Redis with one fenced script before and after every step, and recovers the instances of
 * coordinators that died.
 *
 * **Ownership.** An instance is owned by one coordinator at a time: its owner id and fence are
 * in the instance's hash, with a lease (server time) that every transition renews and a
 * heartbeat renews during a long step. Any coordinator may claim an instance whose lease ran out
 * (the recovery loop, or `run` on the same id); claiming raises the fence, so every later write
 * of the old owner is refused (`SagaFencedError`) and it stops. Two coordinators can therefore
 * never both advance one instance, and an instance whose owner died is taken over within its
 * lease plus one recovery poll.
 *
 * **Steps.** Before a step's action, `begin` records the attempt; after it, `done` records the
 * output (and `completed` after the last step). A step that throws is retried by its policy;
 * when it fails for good (or the saga times out, or is cancelled), `fail` turns the instance to
 * `compensating`, and the compensations of every step whose action began run in reverse order,
 * each recorded by `cbegin` / `cdone`. A compensation that keeps failing is retried with backoff
 * up to its limit, then the instance is parked `needs-attention` with its history.
 *
 * **Idempotency.** Each action is called with `ctx.idempotencyKey` = `<saga>:<id>:<step>`, the
 * same on every attempt and after every recovery: a re-run after a crash is safe when the callee
 * honours the key. The two anomalies Seata's TCC fence exists for are guarded on both sides: a
 * compensation is only called for a step whose action began (the coordinator never compensates
 * a step it never started), and an action may arrive after its compensation only from an
 * attempt that was already in flight — which the participant refuses through
 * {@link IdempotencyKeys.compensate}'s tombstone.
 *
 * Internal module: the public names are re-exported by `keel/saga`.
 * @packageDocumentation
 */
import { randomUUID } from 'node:crypto';
import {
  EventChannel,
  InvalidOptionError,
  exponentialDelay,
  isAbortSignal,
  isClock,
  jitter,
  lastResolvers,
  linkSignals,
  onAbort,
  pending,
  resolveOptions,
  systemClock,
  throwIfAborted,
  wakeableSleep,
  wallTime,
  type Clock,
  type ScriptClient,
  type Subscription,
  type Timer,
  warnIfEvicting,
} from '../core/index.js';
import {
  booleanOption,
  functionOption,
  guardedOption,
  integerOption,
  stringOption,
} from '../core/options.js';
import { fencedChannel, transitionChannel, type SagaTransitionEvent } from './channels.js';
import { SagaDefinition, type ResolvedRetry } from './definition.js';
import {
  SagaClosedError,
  SagaConflictError,
  SagaFencedError,
  SagaStepTimeoutError,
  SagaStoreError,
  SagaTimeoutError,
  SagaUnknownError,
  isSagaStoreError,
} from './errors.js';
import {
  LIVE,
  decodeEntry,
  nextAction,
  type NextAction,
  type Row,
  type SagaHistoryEntry,
  type SagaStatus,
} from './state.js';
import { SagaStore, type TransitionOp, type TransitionReply } from './store.js';

/** Options of {@link SagaCoordinator}. */
export interface SagaCoordinatorOptions {
  /** A Redis client that runs scripts: an ioredis `Redis` or `Cluster`. */
  readonly redis: ScriptClient;
  /** Every saga this process may run or recover. */
  readonly sagas: readonly SagaDefinition<unknown, unknown>[];
  /** Prefix of every key. @defaultValue `'keel:saga:'` */
  readonly prefix?: string;
  /**
   * Shards per saga: instances are spread over this many hash tags (Redis Cluster slots), each
   * with its own recovery index. Must be the same in every process. @defaultValue 8
   */
  readonly shards?: number;
  /** How long an owner's claim lasts without a transition or heartbeat. @defaultValue 15000 */
  readonly leaseMs?: number;
  /** Run the recovery loop (claims instances whose owner died). @defaultValue true */
  readonly recovery?: boolean;
  /** Mean time between recovery polls, jittered ± 50 %. @defaultValue 1000 */
  readonly recoveryIntervalMs?: number;
  /** Recovered instances this coordinator drives at once. @defaultValue 32 */
  readonly maxRecovering?: number;
  /** History entries kept per live instance (and for `needs-attention`). @defaultValue 64 */
  readonly historyLimit?: number;
  /** History entries kept once an instance completes or is compensated. @defaultValue 6 */
  readonly finishedHistory?: number;
  /** How long a completed or compensated instance stays readable. @defaultValue 7 days */
  readonly retentionMs?: number;
  /** This coordinator's owner id in Redis. @defaultValue a random UUID */
  readonly owner?: string;
  /** Clock for timeouts, backoff and polls. @defaultValue `systemClock` */
  readonly clock?: Clock;
  /** Random source in [0, 1) for jitter. @defaultValue `Math.random` */
  readonly random?: () => number;
}

/** Options of {@link SagaCoordinator.run}. */
export interface RunOptions {
  /**
   * Cancels the saga: the running step's signal aborts, the saga compensates (in the
   * background, by this coordinator), and `run` rejects with `signal.reason` once the
   * cancellation is recorded.
   */
  readonly signal?: AbortSignal;
}

/** How a saga instance ended, as `run` resolves. */
export type SagaOutcome<R = Readonly<Record<string, unknown>>> =
  | {
      /** Every step ran. */
      readonly status: 'completed';
      /** The instance id. */
      readonly id: string;
      /** The outputs of all steps, by step name. */
      readonly outputs: R;
    }
  | {
      /** The saga did not complete; the steps it had done were compensated. */
      readonly status: 'compensated';
      /** The instance id. */
      readonly id: string;
      /** Why it compensated. */
      readonly reason: string;
    }
  | {
      /** A compensation could not be completed; the instance was parked for an operator. */
      readonly status: 'needs-attention';
      /** The instance id. */
      readonly id: string;
      /** Why it was parked. */
      readonly reason: string;
    };

/** A saga instance as stored, for inspection. */
export interface SagaSnapshot {
  /** The saga definition's name. */
  readonly saga: string;
  /** The instance id. */
  readonly id: string;
  /** The instance's status. */
  readonly status: SagaStatus;
  /** The saga's input. */
  readonly input: unknown;
  /** The step running forward (its name), while `running`. */
  readonly step: string | undefined;
  /** The next step to compensate, while `compensating`. */
  readonly compensating: string | undefined;
  /** Outputs of the steps that completed, by name. */
  readonly outputs: Readonly<Record<string, unknown>>;
  /** Attempts per step (forward). */
  readonly attempts: Readonly<Record<string, number>>;
  /** Compensation attempts per step. */
  readonly compensationAttempts: Readonly<Record<string, number>>;
  /** Why it compensates, or why it was parked. */
  readonly reason: string | undefined;
  /** The owner id of the coordinator that holds (or last held) the instance. */
  readonly owner: string;
  /** The fencing token, raised each time a coordinator claims the instance. */
  readonly fence: number;
  /** The version, raised by each transition Redis accepts. */
  readonly version: number;
  /** Lease expiry, epoch ms on the Redis server (0 once finished). */
  readonly leaseUntil: number;
  /** The saga's deadline, epoch ms on the Redis server, if it has a timeout. */
  readonly deadline: number | undefined;
  /** When the instance was started, epoch ms on the Redis server. */
  readonly createdAt: number;
  /** When the instance last changed, epoch ms on the Redis server. */
  readonly updatedAt: number;
  /** The transitions, oldest first (capped). */
  readonly history: readonly SagaHistoryEntry[];
}

/** Options of {@link SagaCoordinator.list}. */
export interface ListOptions {
  /** Only instances in this status. @defaultValue every status */
  readonly status?: SagaStatus;
  /** At most this many. @defaultValue 100 */
  readonly limit?: number;
}

interface Resolved {
  readonly prefix: string;
  readonly shards: number;
  readonly leaseMs: number;
  readonly recovery: boolean;
  readonly recoveryIntervalMs: number;
  readonly maxRecovering: number;
  readonly historyLimit: number;
  readonly finishedHistory: number;
  readonly retentionMs: number;
  readonly owner: string;
  readonly clock: Clock;
  readonly random: () => number;
}

const MAX_DETAIL = 200;
const short = (text: string): string =>
  text.length <= MAX_DETAIL && !text.includes('|')
    ? text // most details: nothing to cut or replace (no new string per transition)
    : (text.length > MAX_DETAIL ? `${text.slice(0, MAX_DETAIL)}…` : text).replace(/\|/g, '/');
const messageOf = (error: unknown): string =>
  short(error instanceof Error ? `${error.name}: ${error.message}` : String(error));

const encode = (value: unknown): string => {
  const text = JSON.stringify(value) as string | undefined;
  return text ?? '';
};
/** Does nothing (a shared no-op, not a closure per call). */
const ignore = (): undefined => undefined;

const decode = (text: string | undefined): unknown =>
  text === undefined || text === '' ? undefined : JSON.parse(text);

/**
 * {@link decode} of a text stored for instance `id` (its input, or a step's output): one that is
 * not JSON (something other than Keel wrote it) is a {@link SagaStoreError} naming the instance
 * and the field, not the parser's bare `SyntaxError`.
 */
function decodeStored(text: string | undefined, saga: string, id: string, field: string): unknown {
  try {
    return decode(text);
  } catch (error) {
    throw new SagaStoreError(`read ${saga}/${id} ${field}`, { cause: error }, 'not JSON');
  }
}

/**
 * Above this many characters of stored input and earlier outputs, a step's context decodes
 * them only when read: decoding up front is cheaper per step for the usual small texts (a
 * context with accessors costs ~0.9 kB), but would parse every earlier output for every step
 * whether read or not — megabytes per step for a saga with large outputs.
 */
const EAGER_DECODE_LIMIT = 64 * 1024;

/**
 * Characters of `row`'s input and of its outputs of steps before `step` (outputs are keyed by
 * step index: read by index, no entry arrays or iterator per step context).
 */
function textBefore(row: Row, step: number): number {
  let total = row.input.length;
  for (let at = 0; at < step; at++) total += row.outputs.get(at)?.length ?? 0;
  return total;
}

/** A definition's step names and what `nextAction` reads of each step. */
interface DefinitionShape {
  readonly meta: readonly { readonly attempts: number; readonly compensates: boolean }[];
  readonly names: readonly string[];
}

/**
 * A drive whose step or compensation call is in flight, as the coordinator's one heartbeat
 * timer sees it.
 */
interface Beating {
  /** `clock.now()` when Redis last accepted a write of this drive (each one renews the lease). */
  last: number;
  /** A renewal of this drive is in flight (the timer starts no second one). */
  renewing: boolean;
  /** The drive's call in flight. */
  current: Attempt | undefined;
  /** Renews the lease now; a refused renewal aborts the call in flight. */
  renew(): void;
}

/**
 * One step or compensation call in flight: its signal, and how it settles — at the first of its
 * own result, an abort (step timeout, deadline, cancel, close) or a lost lease. Methods on a
 * class rather than closures made per call: a saga runs one of these per step, so what it
 * allocates is paid once per step by every saga in flight.
 */
class Attempt {
  readonly controller = new AbortController();
  /** What to undo when the call settles (abort listeners, timers); none for most calls. */
  undo: (() => void)[] | undefined;
  lost: { cause: unknown } | undefined;
  settled = false;
  readonly #beating: Beating;
  readonly #coordinator: Set<Beating>;
  readonly #resolve: (value: unknown) => void;
  readonly #reject: (error: unknown) => void;

  constructor(
    beating: Beating,
    coordinator: Set<Beating>,
    resolve: (value: unknown) => void,
    reject: (error: unknown) => void,
  ) {
    this.#beating = beating;
    this.#coordinator = coordinator;
    this.#resolve = resolve;
    this.#reject = reject;
  }

  settle(ok: boolean, value: unknown): void {
    if (this.settled) return;
    this.settled = true;
    // Only the current call stops the heartbeat: an older call of the same drive settling late
    // must not stop the renewals a newer call's lease depends on.
    if (this.#beating.current === this) {
      this.#beating.current = undefined;
      this.#coordinator.delete(this.#beating);
    }
    if (this.undo !== undefined) for (const off of this.undo) off();
    if (this.lost !== undefined) this.#reject(new Stop(this.lost.cause));
    else if (ok) this.#resolve(value);
    else this.#reject(value);
  }

  abort(reason: unknown): void {
    if (!this.settled) this.controller.abort(reason);
    this.settle(false, reason);
  }

  /** The lease is lost: the call ends as a {@link Stop} (nothing more is recorded). */
  lose(cause: unknown): void {
    if (!this.settled) this.lost = { cause };
    this.abort(cause);
  }

  /** Settles by `result`: at once for a plain value, on settlement for a promise or thenable. */
  follow(result: unknown): void {
    let then: unknown;
    try {
      then = (result as { then?: unknown } | null)?.then;
    } catch (error) {
      // A result whose `then` getter throws fails the call, as a rejection would.
      this.settle(false, error);
      return;
    }
    if (typeof then !== 'function') {
      this.settle(true, result);
      return;
    }
    Promise.resolve(result).then(
      (value) => {
        this.settle(true, value);
      },
      (error: unknown) => {
        this.settle(false, error);
      },
    );
  }

  /** Aborts the call with `error()` after `ms` on `clock`, unless it settles first. */
  after(clock: Clock, ms: number, error: () => unknown): void {
    const t = clock.setTimer(() => {
      this.abort(error());
    }, ms);
    (this.undo ??= []).push(() => {
      t.cancel();
    });
  }
}

/**
 * The store error of a drive whose instance vanished from Redis (restarted empty without
 * persistence, flushed, expired): `run` rejects with it. Before, the drive stopped as if fenced
 * and `run` started the saga again from its first step — steps already compensated ran forward
 * again, and `run` resolved as if nothing had happened.
 */
class Lost extends SagaStoreError {}

/** Thrown inside a drive when it must stop (not an outcome). */
class Stop extends Error {
  readonly error: unknown;
  constructor(error: unknown) {
    super('stop');
    this.error = error;
  }
}

/**
 * Runs and recovers durable sagas on Redis.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { SagaCoordinator, defineSaga } from 'keel/saga';
 *
 * const transfer = defineSaga('transfer', [
 *   { name: 'debit', run: () => ({ ok: true }), compensate: () => undefined },
 *   { name: 'credit', run: () => ({ ok: true }) },
 * ]);
 * const redis = new Redis();
 * await using sagas = new SagaCoordinator({ redis, sagas: [transfer] });
 * const outcome = await sagas.run(transfer, 'transfer-42', { cents: 500 });
 * console.log(outcome.status); // 'completed'
 * redis.disconnect();
 * ```
 */
export class SagaCoordinator implements AsyncDisposable {
  readonly #o: Resolved;
  readonly #store: SagaStore;
  readonly #defs = new Map<string, SagaDefinition<unknown, unknown>>();
  /** Instances this coordinator drives, by `<saga>/<id>`. */
  readonly #drives = new Map<string, Promise<Row>>();
  /** Each definition's {@link DefinitionShape} (see `#shape`). */
  readonly #shapes = new WeakMap<SagaDefinition<unknown, unknown>, DefinitionShape>();
  readonly #transitions = new EventChannel<SagaTransitionEvent>();
  readonly #closing = new AbortController();
  #recovering = 0;
  #timer: Timer | undefined;
  /** Drives with a call in flight, renewed by the one heartbeat timer below. */
  readonly #beating = new Set<Beating>();
  #beat: Timer | undefined;
  #polling: Promise<unknown> = Promise.resolve();
  #closed: Promise<void> | undefined;

  constructor(options: SagaCoordinatorOptions) {
    const owner = 'SagaCoordinator';
    const o = resolveOptions(owner, options, {
      redis: guardedOption(
        (v): v is ScriptClient =>
          typeof v === 'object' &&
          v !== null &&
          typeof (v as ScriptClient).evalsha === 'function' &&
          typeof (v as ScriptClient).eval === 'function',
        'a Redis client with evalsha and eval (ioredis Redis or Cluster)',
        { required: true },
      ),
      sagas: {
        parse: (v, own, opt) => {
          if (!Array.isArray(v) || v.length === 0) {
            throw new InvalidOptionError(own, opt, 'a non-empty array of defineSaga() results', v);
          }
          return v as unknown[];
        },
      },
      prefix: stringOption({ default: 'keel:saga:' }),
      shards: integerOption({ min: 1, max: 1024, default: 8 }),
      leaseMs: integerOption({ min: 100, max: 3_600_000, default: 15_000 }),
      recovery: booleanOption({ default: true }),
      recoveryIntervalMs: integerOption({ min: 10, max: 3_600_000, default: 1000 }),
      maxRecovering: integerOption({ min: 1, max: 100_000, default: 32 }),
      historyLimit: integerOption({ min: 4, max: 10_000, default: 64 }),
      finishedHistory: integerOption({ min: 1, max: 10_000, default: 6 }),
      retentionMs: integerOption({ min: 1000, max: 2 ** 40, default: 7 * 24 * 3_600_000 }),
      owner: stringOption({ nonEmpty: true, default: '' }),
      clock: guardedOption(isClock, 'a Clock { now(), setTimer() }', { default: systemClock }),
      random: functionOption<() => number>({ default: Math.random }),
    });
    if (/[{}|]/.test(o.prefix)) {
      throw new InvalidOptionError(owner, 'prefix', 'a string without "{", "}" or "|"', o.prefix);
    }
    for (const [i, def] of o.sagas.entries()) {
      if (
        !(def instanceof SagaDefinition) ||
        typeof (def as { name?: unknown }).name !== 'string' ||
        !Array.isArray((def as { steps?: unknown }).steps)
      ) {
        throw new InvalidOptionError(owner, `sagas[${i}]`, 'a defineSaga() result', def);
      }
      const d: SagaDefinition<unknown, unknown> = def;
      if (this.#defs.has(d.name)) {
        throw new InvalidOptionError(owner, `sagas[${i}]`, 'sagas with distinct names', d.name);
      }
      this.#defs.set(d.name, d);
    }
    this.#o = Object.freeze({
      prefix: o.prefix,
      shards: o.shards,
      leaseMs: o.leaseMs,
      recovery: o.recovery,
      recoveryIntervalMs: o.recoveryIntervalMs,
      maxRecovering: o.maxRecovering,
      historyLimit: o.historyLimit,
      finishedHistory: Math.min(o.finishedHistory, o.historyLimit),
      retentionMs: o.retentionMs,
      owner: o.owner === '' ? randomUUID() : o.owner,
      clock: o.clock,
      random: o.random,
    });
    warnIfEvicting(o.redis, 'keel/saga');
    this.#store = new SagaStore({
      client: o.redis,
      prefix: o.prefix,
      shards: o.shards,
      leaseMs: o.leaseMs,
      historyLimit: o.historyLimit,
      finishedHistory: this.#o.finishedHistory,
      retentionMs: o.retentionMs,
    });
    if (this.#o.recovery) this.#schedule();
  }

  /** This coordinator's owner id (as stored in the instances it owns). */
  get owner(): string {
    return this.#o.owner;
  }

  /** Subscribes to every transition this coordinator writes. */
  onTransition(listener: (event: SagaTransitionEvent) => void): Subscription {
    return this.#transitions.subscribe(listener);
  }

  /**
   * Runs saga instance `id` of `saga` with `input` to its end and says how it ended. Starting
   * an id that exists is safe: a finished instance answers its outcome, a live one is awaited
   * (or claimed and continued, if its owner died). The same id with another input is a
   * {@link SagaConflictError}.
   *
   * @throws {@link SagaConflictError}, {@link SagaUnknownError} (saga not given to this
   * coordinator), {@link SagaClosedError}, {@link SagaStoreError} (also when the instance
   * vanishes from Redis while this coordinator drives it — restarted empty, flushed: the saga is
   * not started again from its first step), `signal.reason`.
   */
  async run<I, R>(
    saga: SagaDefinition<I, R>,
    id: string,
    input: I,
    options: RunOptions = {},
  ): Promise<SagaOutcome<R>> {
    // `null` skips the default parameter; reading `.signal` off it would be a plain TypeError,
    // and off a string or number it would be `undefined`: options silently ignored.
    if (typeof options !== 'object' || (options as RunOptions | null) === null) {
      throw new InvalidOptionError('SagaCoordinator.run', 'options', 'an object', options);
    }
    const signal = options.signal;
    if (signal !== undefined && !isAbortSignal(signal)) {
      throw new InvalidOptionError('SagaCoordinator.run', 'signal', 'an AbortSignal', signal);
    }
    throwIfAborted(signal);
    const def = this.#definition(saga);
    this.#checkId(id);
    if (this.#isClosing()) throw new SagaClosedError(`run ${def.name}/${id}`);
    let inputText = '';
    let why: string | undefined;
    try {
      inputText = encode(input);
    } catch (error) {
      // JSON.stringify throws a TypeError for a BigInt or a cycle: bad input, not a Keel bug.
      // Anything else (a caller's throwing getter or toJSON) is the caller's own and passes on.
      if (!(error instanceof TypeError)) throw error;
      why = error.message;
    }
    if (inputText === '') {
      throw new InvalidOptionError(
        'SagaCoordinator.run',
        'input',
        'a JSON-serializable value',
        input,
        why,
      );
    }
    for (;;) {
      const local = this.#drives.get(`${def.name}/${id}`);
      const row =
        local !== undefined ? await local : await this.#startOrAwait(def, id, inputText, signal);
      if (row !== undefined && !LIVE.has(row.status))
        return this.#outcome(def, id, row) as SagaOutcome<R>;
      throwIfAborted(signal);
      if (this.#isClosing()) throw new SagaClosedError(`run ${def.name}/${id}`);
      // Lost it to another owner, or it is someone else's: wait a poll and look again.
      await wakeableSleep(this.#pollDelay(), {
        clock: this.#o.clock,
        signal: signal ?? this.#closing.signal,
      }).done.catch(() => undefined);
    }
  }

  /**
   * Starts (or claims) the instance and drives it to its end if it is ours; else returns what
   * Redis holds.
   */
  async #startOrAwait(
    def: SagaDefinition<unknown, unknown>,
    id: string,
    inputText: string,
    signal: AbortSignal | undefined,
  ): Promise<Row | undefined> {
    const started = await this.#store.start(
      def.name,
      id,
      this.#o.owner,
      inputText,
      def.timeoutMs ?? 0,
      def.steps.length,
    );
    if (started.kind === 'conflict') throw new SagaConflictError(def.name, id);
    const row = started.row;
    if (row === undefined) return undefined;
    const key = `${def.name}/${id}`;
    if (started.kind === 'exists' && !this.#ownStart(row, key)) return row;
    this.#publish(def, id, row, started.kind === 'claimed' ? 'claim' : 'start', -1);
    // Without a signal nothing can cancel the run: no promise and closures made for it.
    if (signal === undefined) {
      return await this.#track(key, this.#drive(def, id, row, signal, ignore));
    }
    let cancelled: () => void = ignore;
    const onCancelled = new Promise<never>((_, reject) => {
      cancelled = () => {
        reject(signal.reason as unknown);
      };
    });
    onCancelled.catch(ignore);
    const drive = this.#track(key, this.#drive(def, id, row, signal, cancelled));
    return await Promise.race([drive, onCancelled]);
  }

  /**
   * Whether an instance `START` found existing is this coordinator's own, created by this very
   * call: ioredis sends a command again when its connection drops before the reply (its
   * `autoResendUnfulfilledCommands`), and the first copy may have run. Such an instance is
   * owned by this coordinator, live, never advanced (version 1: created, nothing since — the
   * call that created it never got to drive it), and not driven by this process. Driving it is
   * what the lost `created` reply would have done; waiting would take a whole lease. (A second
   * process given the same `owner` is outside the contract: owners are unique per process.)
   */
  #ownStart(row: Row, key: string): boolean {
    return (
      row.owner === this.#o.owner &&
      row.version === 1 &&
      LIVE.has(row.status) &&
      !this.#drives.has(key)
    );
  }

  #track(key: string, drive: Promise<Row>): Promise<Row> {
    const tracked = drive.finally(() => {
      if (this.#drives.get(key) === tracked) this.#drives.delete(key);
    });
    tracked.catch(() => undefined);
    this.#drives.set(key, tracked);
    return tracked;
  }

  /**
   * Asks instance `id` to compensate: whichever coordinator owns it compensates at its next
   * step boundary (the running step finishes first). False when it is not running forward.
   */
  async cancel(saga: SagaDefinition<unknown, unknown> | string, id: string): Promise<boolean> {
    const def = this.#definition(saga);
    this.#checkId(id);
    return this.#store.cancel(def.name, id);
  }

  /** The stored state of instance `id`, or `undefined` when it does not exist (or expired). */
  async get(
    saga: SagaDefinition<unknown, unknown> | string,
    id: string,
  ): Promise<SagaSnapshot | undefined> {
    const def = this.#definition(saga);
    this.#checkId(id);
    const read = await this.#store.read(def.name, id);
    if (read === undefined) return undefined;
    return this.#snapshot(def, id, read.row, read.history);
  }

  /** Instances of `saga`, optionally of one status (live ones first, then newest finished). */
  async list(
    saga: SagaDefinition<unknown, unknown> | string,
    options: ListOptions = {},
  ): Promise<SagaSnapshot[]> {
    const def = this.#definition(saga);
    const o = resolveOptions('SagaCoordinator.list', options, {
      status: {
        parse: (v, own, opt) => {
          if (v === undefined) return '' as const;
          if (
            typeof v !== 'string' ||
            !['running', 'compensating', 'completed', 'compensated', 'needs-attention'].includes(v)
          ) {
            throw new InvalidOptionError(own, opt, 'a saga status', v);
          }
          return v as SagaStatus;
        },
      },
      limit: integerOption({ min: 1, max: 10_000, default: 100 }),
    });
    const ids = await this.#store.list(def.name, o.status, o.limit);
    const out: SagaSnapshot[] = [];
    for (const { id } of ids) {
      const snap = await this.get(def, id);
      if (snap !== undefined && (o.status === '' || snap.status === o.status)) out.push(snap);
    }
    return out;
  }

  /**
   * One recovery pass now: claims every instance (of every saga given) whose lease ran out, up
   * to `maxRecovering` driven at once, and starts driving them. Resolves with how many it
   * claimed. The background loop calls this on its own.
   */
  async recoverNow(): Promise<number> {
    let claimed = 0;
    for (const def of this.#defs.values()) {
      for (let shard = 0; shard < this.#o.shards; shard++) {
        const room = this.#o.maxRecovering - this.#recovering;
        if (room <= 0 || this.#closing.signal.aborted) return claimed;
        const { rows, foreign } = await this.#store.claim(def.name, shard, this.#o.owner, room);
        for (const id of foreign) this.#reportForeign(def, id);
        for (const [id, row] of rows) {
          if (!LIVE.has(row.status)) {
            // Malformed (foreign data in its fields): parked by the claim, not driven.
            this.#publish(def, id, row, 'park', -1);
            continue;
          }
          claimed++;
          this.#publish(def, id, row, 'claim', -1);
          const key = `${def.name}/${id}`;
          this.#recovering++;
          const drive = this.#drive(def, id, row, undefined, () => undefined).finally(() => {
            this.#recovering--;
          });
          void this.#track(key, drive);
        }
      }
    }
    return claimed;
  }

  /**
   * Stops the recovery loop and starts nothing new; instances being driven stop where they are:
   * a running step's or compensation's signal aborts (with a {@link SagaClosedError}) and
   * nothing more is recorded, so their lease runs out and another process re-runs that call
   * with the same idempotency key and continues. Safe to call more than once.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing.abort(new SagaClosedError('close'));
      // Every call in flight ends now (each drive's call is under the heartbeat while it runs).
      for (const beating of [...this.#beating]) {
        beating.current?.abort(this.#closing.signal.reason as unknown);
      }
      this.#timer?.cancel();
      this.#beat?.cancel();
      this.#beat = undefined;
      await this.#polling.catch(() => undefined);
      await Promise.allSettled([...this.#drives.values()]);
    })();
    return this.#closed;
  }

  /** Same as {@link SagaCoordinator.close}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // -------------------------------------------------------------------------------------------

  #definition(saga: SagaDefinition<unknown, unknown> | string): SagaDefinition<unknown, unknown> {
    // Neither a name nor an object (`null` included): reading `.name` off it would be a plain
    // TypeError, or a name of `undefined` looked up.
    if (typeof saga !== 'string' && (typeof saga !== 'object' || (saga as unknown) === null)) {
      throw new InvalidOptionError(
        'SagaCoordinator',
        'saga',
        'a defineSaga() result or a saga name',
        saga,
      );
    }
    const name = typeof saga === 'string' ? saga : (saga as { name?: unknown }).name;
    const def = typeof name === 'string' ? this.#defs.get(name) : undefined;
    if (def === undefined) throw new SagaUnknownError(String(name));
    return def;
  }

  #isClosing(): boolean {
    return this.#closing.signal.aborted;
  }

  #checkId(id: unknown): void {
    if (typeof id !== 'string' || id === '' || id.length > 512) {
      throw new InvalidOptionError('SagaCoordinator', 'id', 'a string of 1–512 characters', id);
    }
  }

  #pollDelay(): number {
    return jitter(this.#o.recoveryIntervalMs, 0.5, this.#o.random);
  }

  #schedule(): void {
    if (this.#closing.signal.aborted) return;
    this.#timer = this.#o.clock
      .setTimer(() => {
        this.#polling = this.recoverNow()
          .catch(() => undefined)
          .finally(() => {
            this.#schedule();
          });
      }, this.#pollDelay())
      .unref();
  }

  /**
   * Puts a drive whose call starts under the heartbeat. One timer per coordinator, every
   * `leaseMs / 6`, renews each drive whose last accepted write is at least that old: a lease is
   * renewed by the time a third of it has passed (at most two periods), as a per-call timer of
   * `leaseMs / 3` did — without a timer set and cleared around every step. The timer stops
   * re-arming once no call is in flight, and is unref'd.
   */
  #startBeat(beating: Beating): void {
    this.#beating.add(beating);
    if (this.#beat === undefined && !this.#closing.signal.aborted) this.#armBeat();
  }

  #armBeat(): void {
    const period = this.#o.leaseMs / 6;
    this.#beat = this.#o.clock
      .setTimer(() => {
        this.#beat = undefined;
        const now = this.#o.clock.now();
        for (const beating of this.#beating) {
          if (!beating.renewing && now - beating.last >= period) beating.renew();
        }
        if (this.#beating.size > 0 && !this.#closing.signal.aborted) this.#armBeat();
      }, period)
      .unref();
  }

  /**
   * An id in a shard's recovery index whose instance key holds another type (a foreign write):
   * the claim took it out of recovery; heard as a `park` with no instance (version and fence 0).
   */
  #reportForeign(def: SagaDefinition<unknown, unknown>, id: string): void {
    if (!this.#transitions.active && !transitionChannel.active) return;
    const message: SagaTransitionEvent = {
      saga: def.name,
      id,
      event: 'park',
      step: undefined,
      status: 'needs-attention',
      version: 0,
      fence: 0,
      owner: '',
      time: wallTime(),
    };
    this.#transitions.emit(message);
    transitionChannel.publish(message);
  }

  #publish(
    def: SagaDefinition<unknown, unknown>,
    id: string,
    row: Row,
    event: string,
    step: number,
  ): void {
    if (!this.#transitions.active && !transitionChannel.active) return;
    const message: SagaTransitionEvent = {
      saga: def.name,
      id,
      event,
      step: step >= 0 ? def.steps[step]?.name : undefined,
      status: row.status,
      version: row.version,
      fence: row.fence,
      owner: row.owner,
      time: wallTime(),
    };
    this.#transitions.emit(message);
    transitionChannel.publish(message);
  }

  #outcome(def: SagaDefinition<unknown, unknown>, id: string, row: Row): SagaOutcome {
    if (row.status === 'completed') {
      return { status: 'completed', id, outputs: this.#outputs(def, id, row) };
    }
    return {
      status: row.status === 'compensated' ? 'compensated' : 'needs-attention',
      id,
      reason: row.reason ?? '',
    };
  }

  /** The decoded outputs of `row`'s steps before `before` (all of them by default), by name. */
  #outputs(
    def: SagaDefinition<unknown, unknown>,
    id: string,
    row: Row,
    before = Infinity,
  ): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [i, text] of row.outputs) {
      const step = def.steps[i];
      if (step !== undefined && i < before) {
        out[step.name] = decodeStored(text, def.name, id, `output of step ${step.name}`);
      }
    }
    return out;
  }

  #snapshot(
    def: SagaDefinition<unknown, unknown>,
    id: string,
    row: Row,
    history: readonly string[],
  ): SagaSnapshot {
    const names = def.steps.map((s) => s.name);
    const byName = (m: Map<number, number>): Record<string, number> => {
      const out: Record<string, number> = {};
      for (const [i, n] of m) out[names[i] ?? String(i)] = n;
      return out;
    };
    return {
      saga: def.name,
      id,
      status: row.status,
      input: decodeStored(row.input, def.name, id, 'input'),
      step: row.status === 'running' ? names[row.cur] : undefined,
      compensating: row.status === 'compensating' && row.cj >= 0 ? names[row.cj] : undefined,
      outputs: this.#outputs(def, id, row),
      attempts: byName(row.attempts),
      compensationAttempts: byName(row.compensations),
      reason: row.reason,
      owner: row.owner,
      fence: row.fence,
      version: row.version,
      leaseUntil: row.leaseUntil,
      deadline: row.deadline > 0 ? row.deadline : undefined,
      createdAt: row.createdAt,
      updatedAt: row.updatedAt,
      history: history.map((text) => decodeEntry(text, names)),
    };
  }

  /** What `#drive` needs of a definition's steps, made once per definition (not per drive). */
  #shape(def: SagaDefinition<unknown, unknown>): DefinitionShape {
    let shape = this.#shapes.get(def);
    if (shape === undefined) {
      shape = {
        meta: def.steps.map((s) => ({
          attempts: s.retry.attempts,
          compensates: s.compensate !== undefined,
        })),
        names: def.steps.map((s) => s.name),
      };
      this.#shapes.set(def, shape);
    }
    return shape;
  }

  /**
   * Drives an owned instance until it finishes, this coordinator loses it (resolves with the
   * row as last known, still live) or closes.
   */
  async #drive(
    def: SagaDefinition<unknown, unknown>,
    id: string,
    start: Row,
    signal: AbortSignal | undefined,
    cancelled: () => void,
  ): Promise<Row> {
    const row = start;
    const { meta, names } = this.#shape(def);
    let lastError = '';
    let serverNow = row.updatedAt;
    let cancelRecorded = false;
    // The instance's keys, once per drive (not a hash and six strings per transition).
    const keys = this.#store.keys(def.name, id).all;
    const beating: Beating = {
      last: this.#o.clock.now(),
      renewing: false,
      current: undefined,
      renew: () => {
        // The call in flight now: a refusal ends it (not a later call of the same drive).
        const attempt = beating.current;
        beating.renewing = true;
        transition('renew', -1, '', '').then(
          () => {
            beating.renewing = false;
          },
          (error: unknown) => {
            beating.renewing = false;
            attempt?.lose(error instanceof Stop ? error.error : error);
          },
        );
      },
    };

    /**
     * Writes one transition (or a heartbeat's `renew`), retrying while Redis fails; true when it
     * landed (and `row` follows it: by its reply, or re-read when the reply was lost), false when
     * it did not and `row` was re-read (the caller decides again from it). The first
     * write is the store's promise and one `then` (no async function: its frame, register file
     * and the await's closures were ~0.5 kB per transition); a failure or a refusal goes on in
     * {@link settleTransition}.
     */
    const transition = (
      op: TransitionOp,
      step: number,
      detail: string,
      argument: string,
      event: string = op,
    ): Promise<boolean> =>
      this.#store.transition(def.name, id, row, op, step, short(detail), argument, keys).then(
        (reply) =>
          accepted(op, step, argument, event, reply) ||
          settleTransition(op, step, detail, argument, event, reply, undefined),
        (error: unknown) => settleTransition(op, step, detail, argument, event, undefined, error),
      );

    /** True when `reply` says the transition landed; `row` then follows it. */
    const accepted = (
      op: TransitionOp,
      step: number,
      argument: string,
      event: string,
      reply: TransitionReply,
    ): boolean => {
      if (!reply.ok) return false;
      row.leaseUntil = reply.lease;
      serverNow = reply.now;
      beating.last = this.#o.clock.now();
      if (op !== 'renew') landed(op, step, argument, event, reply);
      return true;
    };

    /**
     * A transition whose first write failed (`error`) or was refused (`first`): retries while
     * Redis fails, re-reads when our own earlier write landed unseen, else stops (fenced).
     */
    const settleTransition = async (
      op: TransitionOp,
      step: number,
      detail: string,
      argument: string,
      event: string,
      first: TransitionReply | undefined,
      firstError: unknown,
    ): Promise<boolean> => {
      for (let attempt = 1; ; attempt++) {
        let reply;
        try {
          if (attempt === 1 && first !== undefined) reply = first;
          else if (attempt === 1) throw firstError;
          else {
            reply = await this.#store.transition(
              def.name,
              id,
              row,
              op,
              step,
              short(detail),
              argument,
              keys,
            );
          }
        } catch (error) {
          // Redis refused or timed out: the write may or may not have landed. Retry it; a
          // version refusal afterwards tells that it did (and we re-read).
          if (!isSagaStoreError(error) || this.#closing.signal.aborted) throw new Stop(error);
          await this.#sleep(exponentialDelay(attempt, 50, 2000), undefined).catch((e: unknown) => {
            throw new Stop(e);
          });
          continue;
        }
        if (reply.ok) return accepted(op, step, argument, event, reply);
        if (
          op !== 'renew' &&
          reply.fence === row.fence &&
          (reply.why === 'version' || (reply.why === 'state' && reply.version > row.version))
        ) {
          // Our own earlier write landed but its reply was lost (the retry is refused: the
          // version moved, or the instance finished — a lost reply to its last transition):
          // re-read. A version past ours under our owner and fence is this transition's own
          // write (nothing else versions the instance under them: a claim raises the fence, a
          // renew or cancel leaves the version), so it landed — a begun step is then called, not
          // begun again (which would use up an attempt the step never had). Otherwise decide
          // again from what was read.
          const read = await this.#store.read(def.name, id).catch(() => undefined);
          if (read !== undefined && read.row.owner === row.owner && read.row.fence === row.fence) {
            const mine = read.row.version > row.version;
            Object.assign(row, read.row);
            if (!mine) return false;
            return landedUnseen(op, step, argument, event);
          }
        }
        if (reply.why === 'missing') {
          // The instance is gone (Redis restarted empty, flushed, or it expired): no one else
          // has it. Not a loss of ownership — ends the drive with an error (see Lost), so `run`
          // does not start the saga again from its first step.
          throw new Stop(
            new Lost(
              `${op} of ${def.name}/${id}`,
              {
                cause: new Error(
                  'the instance is missing from Redis (restarted empty, flushed or expired)',
                ),
              },
              'instance lost',
            ),
          );
        }
        fencedChannel.publish({
          saga: def.name,
          id,
          owner: row.owner,
          fence: row.fence,
          currentFence: reply.fence,
          time: wallTime(),
        });
        throw new Stop(
          new SagaFencedError(
            def.name,
            id,
            { mine: row.fence, current: reply.fence },
            { mine: row.version, current: reply.version },
          ),
        );
      }
    };

    /**
     * A transition that landed while its reply was lost, `row` re-read since: heard as if its
     * reply had come (the same events), then — while the instance is live — a `renew` before
     * anything runs under it. The retries may have outlasted the lease (a step started on an
     * expired lease could be claimed and run by another process at the same time), and the
     * renew's reply gives the server time the step's deadline is armed from. True once renewed
     * (or finished); a refused renew stops the drive as fenced.
     */
    const landedUnseen = (
      op: TransitionOp,
      step: number,
      argument: string,
      event: string,
    ): Promise<boolean> | true => {
      landed(op, step, argument, event, {
        version: row.version,
        status: row.status,
        cj: row.cj,
        why: row.reason,
        now: row.updatedAt,
      });
      if (row.status !== 'running' && row.status !== 'compensating') return true;
      return transition('renew', -1, '', '');
    };

    /** What a landed transition changes in `row` (beyond what its reply says), and who hears. */
    const landed = (
      op: TransitionOp,
      step: number,
      argument: string,
      event: string,
      reply: {
        version: number;
        status: SagaStatus;
        cj: number;
        why: string | undefined;
        now: number;
      },
    ): void => {
      if (op === 'next' && reply.status !== 'completed') {
        // A step's done and the next step's begin landed together: heard as the two they are
        // (the done at the version before the begin's; the saga still running between them).
        landed('done', step, argument, 'done', {
          version: reply.version - 1,
          status: 'running',
          cj: row.cj,
          why: row.reason,
          now: reply.now,
        });
        landed('begin', step + 1, '1', 'begin', reply);
        return;
      }
      row.version = reply.version;
      row.status = reply.status;
      row.cj = reply.cj;
      row.reason = reply.why;
      row.updatedAt = reply.now;
      if (op === 'fail' || (op === 'begin' && row.status !== 'running')) {
        // Compensation begins; a cancelled run's caller may stop waiting now.
        if (!cancelRecorded && signal?.aborted === true) {
          cancelRecorded = true;
          cancelled();
        }
      }
      if (op === 'done' || op === 'next') {
        // (`next` here: on the last step, where it is a plain done.)
        row.outputs.set(step, argument);
        row.cur = step + 1;
        row.phase = 'idle';
      } else if (op === 'begin' && row.status === 'running') {
        row.attempts.set(step, Number(argument));
        row.phase = 'run';
      } else if (op === 'cbegin') {
        row.compensations.set(step, Number(argument));
        row.phase = 'comp';
      } else {
        row.phase = 'idle';
      }
      this.#publish(def, id, row, event, step);
    };

    /**
     * A step's context. `input` and `outputs` are decoded afresh for every context (a step that
     * changes them changes nothing another step sees, as after a recovery), and held as plain
     * own data properties: an object literal with accessors cost ~0.9 kB per step (V8 builds
     * it through the runtime, with two closures and their scope), most of a context's price.
     * Should decoding fail (data in Redis that is not what Keel wrote), the context falls back
     * to {@link lazyContext}, whose reads throw inside the step as they always did.
     */
    const earlier = (step: number): Readonly<Record<string, unknown>> =>
      Object.freeze(this.#outputs(def, id, row, step));
    const context = (step: number, attempt: number) => {
      // Large stored texts decode only if read (a step that reads neither pays nothing).
      if (textBefore(row, step) > EAGER_DECODE_LIMIT) return lazyContext(step, attempt);
      let input: unknown;
      let outputs: Readonly<Record<string, unknown>>;
      try {
        input = decode(row.input);
        outputs = earlier(step);
      } catch {
        return lazyContext(step, attempt);
      }
      return {
        saga: def.name,
        sagaId: id,
        step: names[step] ?? '',
        input,
        outputs,
        idempotencyKey: `${def.name}:${id}:${names[step] ?? ''}`,
        attempt,
        fence: row.fence,
      };
    };
    /**
     * A context whose `input` and `outputs` decode when first read (and throw there): for stored
     * data that does not decode, and for texts over {@link EAGER_DECODE_LIMIT}.
     */
    const lazyContext = (step: number, attempt: number) => {
      let input: { value: unknown } | undefined;
      let outputs: Readonly<Record<string, unknown>> | undefined;
      return {
        saga: def.name,
        sagaId: id,
        step: names[step] ?? '',
        get input(): unknown {
          input ??= { value: decode(row.input) };
          return input.value;
        },
        get outputs(): Readonly<Record<string, unknown>> {
          outputs ??= earlier(step);
          return outputs;
        },
        idempotencyKey: `${def.name}:${id}:${names[step] ?? ''}`,
        attempt,
        fence: row.fence,
      };
    };

    /**
     * Calls `fn` with a signal that aborts on the step timeout, the deadline, cancel (forward
     * calls), close, or a lost lease (the heartbeat's renewal refused): one AbortController per
     * call, aborted directly by each source; the call settles at the first of them. Closing
     * reaches the call through the heartbeat's set (see {@link SagaCoordinator.close}), not a
     * listener per call; timers and a listener on the run's signal are set only when there is
     * one.
     */
    const call = (
      fn: (signal: AbortSignal) => unknown,
      stepName: string,
      timeoutMs: number | undefined,
      forward: boolean,
    ): Promise<unknown> => {
      // One promise and no executor closure per call (see core's pending()).
      const settled = pending<unknown>();
      const { resolve, reject } = lastResolvers as {
        resolve: (value: unknown) => void;
        reject: (error: unknown) => void;
      };
      const attempt = new Attempt(beating, this.#beating, resolve, reject);
      try {
        launch(attempt, fn, stepName, timeoutMs, forward);
      } catch (error) {
        reject(error); // as a throw inside a promise's executor would
      }
      return settled;
    };

    /** Starts `fn` as `attempt` (what `call` does once its promise exists). */
    const launch = (
      attempt: Attempt,
      fn: (signal: AbortSignal) => unknown,
      stepName: string,
      timeoutMs: number | undefined,
      forward: boolean,
    ): void => {
      // Closing aborts the call too (recorded as nothing: the lease runs out and another
      // process re-runs it with the same idempotency key), so close() never waits on a hung
      // step. A call whose close or cancel came first is not started.
      if (this.#closing.signal.aborted) {
        attempt.abort(this.#closing.signal.reason as unknown);
        return;
      }
      if (forward && signal !== undefined) {
        const source = signal;
        if (source.aborted) {
          attempt.abort(source.reason as unknown);
          return;
        }
        (attempt.undo ??= []).push(
          onAbort(source, () => {
            attempt.abort(source.reason as unknown);
          }),
        );
      }
      const clock = this.#o.clock;
      if (timeoutMs !== undefined) {
        attempt.after(clock, timeoutMs, () => new SagaStepTimeoutError(stepName, timeoutMs));
      }
      const sagaMs = def.timeoutMs;
      if (forward && row.deadline > 0 && sagaMs !== undefined) {
        attempt.after(
          clock,
          row.deadline - serverNow,
          () => new SagaTimeoutError(def.name, sagaMs),
        );
      }
      beating.current = attempt;
      this.#startBeat(beating);
      // A step that throws synchronously rejects like one that rejects; a step that answers
      // a plain value settles the call at once (no reaction, no promise made for it).
      let result: unknown;
      try {
        result = fn(attempt.controller.signal);
      } catch (error) {
        attempt.settle(false, error);
        return;
      }
      attempt.follow(result);
    };

    /**
     * The step whose begin (attempt 1) already landed with the previous step's done (op `next`),
     * to be called next without a begin of its own; -1: none.
     */
    let begun = -1;
    try {
      for (;;) {
        if (this.#closing.signal.aborted)
          throw new Stop(new SagaClosedError(`drive ${def.name}/${id}`));
        if (row.status === 'running' && signal?.aborted === true) {
          begun = -1;
          await transition('fail', row.cur, 'cancelled', 'cancelled');
          continue;
        }
        if (row.status === 'compensating' && signal?.aborted === true && !cancelRecorded) {
          cancelRecorded = true;
          cancelled();
        }
        const ahead =
          begun >= 0 && row.status === 'running' && row.cur === begun && row.phase === 'run';
        const next: NextAction = ahead
          ? { kind: 'run', step: begun, attempt: 1 }
          : nextAction(row, meta, def.compensationRetry.attempts);
        begun = -1;
        switch (next.kind) {
          case 'finished':
            return row;
          case 'exhausted':
            await transition(
              'fail',
              next.step,
              `${names[next.step]}: attempts used up`,
              `step ${names[next.step]} failed after ${meta[next.step]?.attempts} attempts${lastError === '' ? '' : `: ${lastError}`}`,
            );
            continue;
          case 'park':
            await transition(
              'park',
              next.step,
              lastError,
              `compensation of ${names[next.step]} failed ${def.compensationRetry.attempts} times${lastError === '' ? '' : `: ${lastError}`}`,
            );
            continue;
          case 'skip':
            await transition('cdone', next.step, 'no compensation', 'skip', 'skip');
            continue;
          case 'run': {
            const step = def.steps[next.step];
            if (step === undefined) return row;
            if (!ahead) {
              // (Else its begin landed with the previous step's done: see below.)
              if (
                !(await transition(
                  'begin',
                  next.step,
                  `attempt ${next.attempt}${lastError === '' ? '' : ` after ${lastError}`}`,
                  String(next.attempt),
                ))
              )
                continue;
              if (row.status !== 'running') continue; // the begin turned into compensation
            }
            const ctx = context(next.step, next.attempt);
            let output: unknown;
            try {
              output = await call(
                (s) => step.run(ctx as never, s),
                step.name,
                step.timeoutMs,
                true,
              );
            } catch (error) {
              if (error instanceof Stop) throw error;
              if (this.#isClosing()) throw new Stop(error);
              lastError = messageOf(error);
              if (signal?.aborted === true) continue; // recorded as a cancellation above
              if (error instanceof SagaTimeoutError) {
                await transition('fail', next.step, lastError, `saga-timeout: ${lastError}`);
                continue;
              }
              if (!this.#retryable(step.retry, error)) {
                await transition(
                  'fail',
                  next.step,
                  lastError,
                  `step ${step.name} failed: ${lastError}`,
                );
                continue;
              }
              if (next.attempt < step.retry.attempts)
                await this.#backoff(step.retry, next.attempt, signal);
              continue; // next.kind becomes run (attempt + 1) or exhausted
            }
            const text = encode(output);
            lastError = '';
            // When another step follows (and nothing stops the saga before it), its begin goes
            // with this done in one call: two state changes, one round trip (op `next`, see
            // TRANSITION in scripts.ts). Called only once it landed, as after a begin alone.
            const following = next.step + 1;
            if (
              following < def.steps.length &&
              (meta[following]?.attempts ?? 0) > 0 &&
              !row.attempts.has(following) &&
              signal?.aborted !== true &&
              !this.#isClosing()
            ) {
              if (
                (await transition('next', next.step, 'attempt 1', text, 'done')) &&
                row.status === 'running'
              )
                begun = following;
            } else {
              await transition('done', next.step, '', text);
            }
            continue;
          }
          case 'compensate': {
            const step = def.steps[next.step];
            const compensate = step?.compensate;
            if (step === undefined || compensate === undefined) return row;
            if (
              !(await transition(
                'cbegin',
                next.step,
                `attempt ${next.attempt}${lastError === '' ? '' : ` after ${lastError}`}`,
                String(next.attempt),
              ))
            )
              continue;
            const completed = row.outputs.has(next.step);
            try {
              // Built inside the try: data in Redis that does not decode (a foreign write) fails
              // this attempt like a throwing compensation — retried, then parked
              // `needs-attention` — instead of leaving the instance in `comp` for every owner.
              const ctx = {
                ...context(next.step, next.attempt),
                output: decode(row.outputs.get(next.step)),
                completed,
                reason: row.reason ?? '',
              };
              await call((s) => compensate(ctx as never, s), step.name, step.timeoutMs, false);
            } catch (error) {
              if (error instanceof Stop) throw error;
              if (this.#isClosing()) throw new Stop(error);
              lastError = messageOf(error);
              if (next.attempt < def.compensationRetry.attempts)
                await this.#backoff(def.compensationRetry, next.attempt, undefined);
              continue;
            }
            lastError = '';
            await transition('cdone', next.step, '', 'cdone');
            continue;
          }
        }
      }
    } catch (error) {
      if (error instanceof Stop) {
        if (signal?.aborted === true && !cancelRecorded) {
          cancelRecorded = true;
          cancelled();
        }
        // The instance vanished under us: the caller hears it (a start would begin it anew).
        if (error.error instanceof Lost) throw error.error;
        return row; // still live: someone else has it, or we closed
      }
      throw error;
    }
  }

  #retryable(retry: ResolvedRetry, error: unknown): boolean {
    if (retry.retryIf === undefined) return true;
    try {
      return retry.retryIf(error);
    } catch {
      return false;
    }
  }

  async #backoff(
    retry: ResolvedRetry,
    attempt: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const delay = jitter(
      exponentialDelay(attempt, retry.initialDelayMs, retry.maxDelayMs, retry.factor),
      retry.jitter,
      this.#o.random,
    );
    await this.#sleep(delay, signal).catch(() => undefined);
  }

  /** Sleeps on the clock; wakes early on close or `signal`. */
  async #sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
    using link = linkSignals(this.#closing.signal, signal);
    await wakeableSleep(ms, { clock: this.#o.clock, signal: link.signal }).done;
  }
}
