/**
 * A consumer of one topic in one consumer group: reads with `XREADGROUP`, runs the handler with
 * at most `concurrency` messages in flight, acks only after the handler resolves, retries
 * failures with backoff, reclaims messages whose consumer died (visibility timeout), and
 * dead-letters a message after `maxAttempts` — atomically with its ack. With `ordered: true`,
 * each partition has one owner at a time (a lease) that handles its messages one by one in
 * stream order, retrying in place, so same-key messages keep their order across consumers,
 * crashes and retries.
 *
 * @packageDocumentation
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import {
  EventChannel,
  InvalidOptionError,
  KeelChannel,
  booleanOption,
  exponentialDelay,
  functionOption,
  guardedOption,
  integerOption,
  isAbortSignal,
  isNoScriptError,
  isRandomSource,
  jitter,
  numberOption,
  onAbort,
  resolveOptions,
  wakeableSleep,
  wallTime,
  type Subscription,
  type Timer,
} from '../core/index.js';
import { RendezvousHash } from '../hashring/index.js';
import {
  entriesOf,
  pipelineOf,
  run,
  streamsOf,
  type QueueRedisClient,
  type RawEntry,
} from './client.js';
import {
  compareStreamIds,
  deadMarkKey,
  decodeEntry,
  encodeFields,
  leaseKey,
  membersKey,
  nextMarkKey,
  retryFields,
  type DecodedEntry,
  type ForeignEntry,
  type PartitionKeys,
} from './codec.js';
import {
  InvalidMessageError,
  LeaseExpiredError,
  QueueClosedError,
  QueueRedisError,
  isLeaseExpiredError,
} from './errors.js';
import type { Queue, QueueSettings } from './queue.js';
import { checkName, isName } from './queue.js';
import {
  ACK,
  ACK_MANY,
  DEAD,
  HAND_BACK,
  LEASE,
  MEMBERS,
  PROMOTE,
  RECLAIM,
  REDELIVER,
  RETRY,
  NEXT,
  UNLEASE,
  TRIM_DONE,
} from './scripts.js';

/**
 * Whether an owned partition was given up. A function, not a property read in place: the flag
 * changes while a loop awaits, and the compiler would narrow a repeated read to its last value.
 */
const isLost = (owned: { readonly lost: boolean }): boolean => owned.lost;

/** One delivery of a message to a handler. */
export interface Message<T = unknown> {
  /** The Keel message id (dedup id). */
  readonly id: string;
  /** The topic it was sent to. */
  readonly topic: string;
  /** The consumer group handling it. */
  readonly group: string;
  /** The ordering key, if the producer gave one. */
  readonly key: string | undefined;
  /** The message body, parsed from JSON. */
  readonly payload: T;
  /** Headers given by the producer. */
  readonly headers: Readonly<Record<string, string>>;
  /** 1 on the first delivery, 2 on the next (after a failure, a crash or a timeout), … */
  readonly attempt: number;
  /** Producer wall-clock time of the send (epoch ms). */
  readonly sentAt: number;
  /** The stream entry id of this copy. */
  readonly entryId: string;
  /** The partition (stream) it came from. */
  readonly partition: number;
  /** This consumer's name. */
  readonly consumer: string;
  /**
   * Aborts when the message's visibility timeout (or the partition lease) is about to run out,
   * or when the consumer closes and hands the message back: stop, another consumer may get it.
   */
  readonly signal: AbortSignal;
}

/** A message handler. Resolve to ack; throw (reject) to retry. */
export type Handler<T = unknown> = (message: Message<T>) => Promise<void> | void;

/** Exponential backoff with jitter between attempts. */
export interface BackoffOptions {
  /** Delay before the 2nd attempt. @defaultValue 100 */
  readonly initialMs?: number | undefined;
  /** Upper bound. @defaultValue 30_000 */
  readonly maxMs?: number | undefined;
  /** Growth per attempt. @defaultValue 2 */
  readonly factor?: number | undefined;
  /** ± fraction of uniform jitter. @defaultValue 0.2 */
  readonly jitter?: number | undefined;
}

/**
 * Options of {@link Queue.consume}. Durations are whole milliseconds up to 2^31 − 1 (about 24.8
 * days, the longest a Node timer waits); a backoff function's result is capped there.
 */
export interface ConsumerOptions {
  /** Messages in flight at most (ordered mode: partitions owned at most). @defaultValue 10 */
  readonly concurrency?: number | undefined;
  /**
   * How long a delivery is this consumer's: past it another consumer reclaims the message, and
   * the handler's signal aborts shortly before it. In ordered mode also the partition lease.
   * @defaultValue 30_000
   */
  readonly visibilityMs?: number | undefined;
  /** Attempts before a message is dead-lettered. @defaultValue 5 */
  readonly maxAttempts?: number | undefined;
  /** Backoff between attempts: options, or `(attempt) => ms`. @defaultValue `{}` */
  readonly backoff?: BackoffOptions | ((attempt: number) => number) | undefined;
  /** Per-key ordering (one owner per partition, one message at a time). @defaultValue false */
  readonly ordered?: boolean | undefined;
  /** This consumer's name in the group. @defaultValue `host:pid:random` */
  readonly consumer?: string | undefined;
  /** Period of the sweep (delayed messages due, reclaims, retention). @defaultValue min(1000, visibilityMs / 4) */
  readonly sweepMs?: number | undefined;
  /** How long one blocking read waits. @defaultValue 1000 */
  readonly blockMs?: number | undefined;
  /** Ordered mode: wait between polls of an empty partition. @defaultValue 20 */
  readonly pollMs?: number | undefined;
  /** On close, how long in-flight handlers may finish before they are handed back. @defaultValue 5000 */
  readonly closeTimeoutMs?: number | undefined;
  /** Random source for jitter, `() => [0, 1)`. @defaultValue Math.random */
  readonly random?: (() => number) | undefined;
  /** Closes the consumer when aborted. */
  readonly signal?: AbortSignal | undefined;
}

/** A message given up on, as {@link Consumer.onDeadLetter} reports it. */
export interface DeadLetterEvent {
  /** The topic. */
  readonly topic: string;
  /** The group that gave up. */
  readonly group: string;
  /** The Keel message id (`undefined` for foreign data). */
  readonly id: string | undefined;
  /** The stream entry id it had (`''` for a malformed delayed entry: it never reached the stream). */
  readonly entryId: string;
  /** `failed` (attempts exhausted), `expired` (delivered too often without an ack), `invalid` (foreign data). */
  readonly reason: 'failed' | 'expired' | 'invalid';
  /** The last error (or why it is not a Keel message). */
  readonly error: string;
  /** Attempts made. */
  readonly attempts: number;
  /** Consumers that handled it, oldest first. */
  readonly consumers: readonly string[];
  /** Wall-clock time, epoch ms. */
  readonly time: number;
}

const OWNER = 'Queue.consume';
const handled = new KeelChannel<{
  topic: string;
  group: string;
  id: string;
  attempt: number;
  outcome: string;
  durationMs: number;
  time: number;
}>('queue', 'handled');
const deadLettered = new KeelChannel<DeadLetterEvent>('queue', 'dead-letter');
const failures = new KeelChannel<{ topic: string; group: string; error: unknown; time: number }>(
  'queue',
  'error',
);

const isBackoff = (v: unknown): v is BackoffOptions | ((attempt: number) => number) =>
  typeof v === 'function' || (typeof v === 'object' && v !== null && !Array.isArray(v));

/**
 * Longest duration a timer can wait: Node runs a `setTimeout` of more than 2^31 − 1 ms after 1 ms
 * (with a `TimeoutOverflowWarning`), so a longer visibility timeout aborted handlers and gave
 * ordered partitions up at once, and a longer sweep or poll period ran every millisecond.
 */
const MAX_TIMER_MS = 2_147_483_647;

const spec = {
  concurrency: integerOption({ default: 10, min: 1, max: 10_000 }),
  visibilityMs: integerOption({ default: 30_000, min: 50, max: MAX_TIMER_MS }),
  maxAttempts: integerOption({ default: 5, min: 1, max: 1_000_000 }),
  backoff: guardedOption(isBackoff, 'backoff options or a function (attempt) => ms', {
    default: {},
  }),
  ordered: booleanOption({ default: false }),
  consumer: { parse: (v: unknown) => v as string | undefined },
  sweepMs: integerOption({ optional: true, min: 5, max: MAX_TIMER_MS }),
  blockMs: integerOption({ default: 1000, min: 1, max: MAX_TIMER_MS }),
  pollMs: integerOption({ default: 20, min: 1, max: MAX_TIMER_MS }),
  closeTimeoutMs: integerOption({ default: 5000, min: 0, max: MAX_TIMER_MS }),
  random: functionOption<() => number>({ default: Math.random }),
  signal: guardedOption(isAbortSignal, 'an AbortSignal', { optional: true }),
};

/**
 * One delivery of an entry to this consumer. Its identity is the entry id AND the delivery count
 * Redis gave it: an entry reclaimed back to this consumer (from one that took it over and died)
 * while an older delivery of it still runs here is a new delivery, and only the newest one may
 * settle the entry — the scripts check the count.
 */
interface Delivery {
  readonly controller: AbortController;
  handedBack: boolean;
  /** True while its handler runs (its signal aborts at the deadline only then). */
  running: boolean;
  readonly p: number;
  /** The Keel message id (the entry id for foreign data). */
  readonly id: string;
  readonly entryId: string;
  /** Visibility deadline on the consumer's clock: the handler's signal aborts then. */
  readonly deadline: number;
  /** The entry's delivery count in the group's pending-entries list when it was delivered. */
  readonly deliveries: number;
  /** Its key in the in-flight map: partition, entry id, delivery count. */
  readonly slot: string;
}

/** At most this many ids per batch-ack call (Lua's `unpack` has a stack limit near 8000). */
const ACK_BATCH = 1000;

/**
 * Acked entries are deleted from the stream at least this many at a time (one group check and
 * one XDEL for all of them); fewer wait for a later ack call or the next sweep.
 */
const FORGET_BATCH = 16;

interface Owned {
  readonly p: number;
  readonly keys: PartitionKeys;
  readonly lease: string;
  readonly controller: AbortController;
  expiry: Timer | undefined;
  stopping: boolean;
  lost: boolean;
  loop: Promise<void>;
}

const TAKEN_OVER = 'the message or the partition lease was taken over';

type Outcome = { readonly ok: true } | { readonly ok: false; readonly error: unknown };

/** A delivery waiting for a free slot (see `Consumer.#backlog`): what `#dispatch` was given. */
interface Waiting {
  readonly p: number;
  readonly keys: PartitionKeys;
  readonly entry: DecodedEntry | ForeignEntry;
  readonly deliveries: number;
  readonly start: number;
  readonly previous: string | undefined;
}

/** An idle partition of an ordered consumer: new entries come after `after`. */
interface IdleWait {
  readonly stream: string;
  readonly after: string;
  readonly wake: () => void;
}

const text = (error: unknown): string =>
  error instanceof Error ? `${error.name}: ${error.message}` : String(error);

/**
 * A running consumer (see {@link Queue.consume}). Close it with `close()` or `await using`.
 */
export class Consumer<T = unknown> implements AsyncDisposable {
  /** This consumer's name in the group. */
  readonly name: string;
  /** The topic consumed. */
  readonly topic: string;
  /** The consumer group. */
  readonly group: string;
  /** Resolves when the consumer has fully closed. */
  readonly closed: Promise<void>;
  readonly #s: QueueSettings;
  readonly #queue: Queue;
  readonly #handler: Handler<T>;
  readonly #o: ReturnType<typeof resolveConsumer>;
  readonly #margin: number;
  readonly #sweepMs: number;
  readonly #reader: QueueRedisClient;
  readonly #inFlight = new Map<string, Delivery>();
  /**
   * Deliveries that found every slot taken, oldest first: a read and the sweep's reclaim each
   * ask for the slots free when they start, and the one answered second finds them taken by the
   * other (a blocking read is out most of the time). They start as slots free up, so no more
   * than `concurrency` handlers ever run; on close they are handed back.
   */
  readonly #backlog: Waiting[] = [];
  readonly #owned = new Map<number, Owned>();
  readonly #stop = new AbortController();
  readonly #deadLetters = new EventChannel<DeadLetterEvent>();
  readonly #errors = new EventChannel<unknown>();
  #slotWaiter: (() => void) | undefined;
  /** Handled deliveries whose ack is not yet sent, oldest first. */
  #acks: Delivery[] = [];
  /** Acked entries not yet deleted from the stream, by partition (see {@link FORGET_BATCH}). */
  readonly #forget = new Map<number, string[]>();
  /** Waiters for nothing in flight (close). */
  readonly #drained: (() => void)[] = [];
  #deadlineTimer: Timer | undefined;
  #deadlineAt = Infinity;
  #ackTick = false;
  #readerId: number | undefined;
  /**
   * Ordered mode: `NEXT` call ids are this prefix (random per consumer: a consumer restarted
   * under the same name must not match its predecessor's calls) and a count.
   */
  readonly #callIds = `${randomUUID().slice(0, 8)}:`;
  /** When this consumer was made, on its clock (see RECLAIM's own idle bound). */
  readonly #bornAt: number;
  #calls = 0;
  #closing = false;
  #active(owned: Owned): boolean {
    return !owned.lost && !owned.stopping && !this.#closing;
  }
  #isClosing(): boolean {
    return this.#closing;
  }
  #closePromise: Promise<void> | undefined;
  #sweepTimer: Timer | undefined;
  #sweeping: Promise<void> = Promise.resolve();
  #sweeps = 0;
  #members: readonly string[] = [];
  /** Ordered mode: owned partitions with nothing to read, waiting for a new entry. */
  readonly #idle = new Map<number, IdleWait>();
  /** Ordered mode: the loop that waits (one blocking `XREAD`) for the idle partitions. */
  #waiter: Promise<void> | undefined;
  /** The partitions the waiter's current blocking read covers (undefined: not blocked). */
  #blockedOn: ReadonlySet<number> | undefined;
  /** The waiter's read was unblocked on purpose (to add a partition), not timed out. */
  #rearm = false;
  #main: Promise<void>;
  #resolveClosed: () => void = () => undefined;
  #offSignal: (() => void) | undefined;

  /** @internal use {@link Queue.consume} */
  constructor(
    queue: Queue,
    topic: string,
    group: string,
    handler: Handler<T>,
    options?: ConsumerOptions,
  ) {
    checkName(OWNER, 'topic', topic);
    checkName(OWNER, 'group', group);
    if (typeof handler !== 'function') {
      throw new InvalidOptionError(
        OWNER,
        'handler',
        'a function (message) => Promise<void>',
        handler,
      );
    }
    const o = resolveConsumer(options);
    this.name =
      o.consumer === undefined
        ? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`
        : checkName(OWNER, 'consumer', o.consumer);
    if (!isRandomSource(o.random))
      throw new InvalidOptionError(OWNER, 'random', 'a function', o.random);
    this.topic = topic;
    this.group = group;
    this.#queue = queue;
    this.#s = queue.settings;
    this.#bornAt = this.#s.clock.now();
    this.#handler = handler;
    this.#o = o;
    this.#margin = Math.min(1000, Math.floor(o.visibilityMs / 10));
    this.#sweepMs = o.sweepMs ?? Math.max(5, Math.min(1000, Math.floor(o.visibilityMs / 4)));
    this.#reader = this.#s.client.duplicate();
    const events = this.#reader as { on?: (e: string, f: () => void) => void };
    events.on?.('error', () => undefined);
    // A reconnected reader has a new connection id: learn it, so that an unblock never goes to
    // the old one (after a Redis restart ids start again, and the old id may be someone else's).
    // Asked on 'connect', while ioredis still sends its handshake (CLIENT is a handshake
    // command there), so the answer comes before the blocking read that was in flight is sent
    // again on 'ready': asked on 'ready', it would wait behind that read for up to `blockMs`,
    // and every unblock meanwhile would go to the old id — a partition that went idle then
    // would not be read until that read timed out.
    if (this.#s.client.isCluster !== true) events.on?.('connect', () => void this.#learnReaderId());
    this.closed = new Promise<void>((resolve) => (this.#resolveClosed = resolve));
    if (o.signal !== undefined) {
      if (o.signal.aborted) queueMicrotask(() => void this.close());
      else this.#offSignal = onAbort(o.signal, () => void this.close());
    }
    this.#main = this.#start();
  }

  /** Subscribes to messages this consumer dead-lettered (or quarantined as foreign data). */
  onDeadLetter(listener: (event: DeadLetterEvent) => void): Subscription {
    return this.#deadLetters.subscribe(listener);
  }

  /** Subscribes to errors of the background loops (Redis failures); they are retried. */
  onError(listener: (error: unknown) => void): Subscription {
    return this.#errors.subscribe(listener);
  }

  /** Messages being handled now. */
  get inFlight(): number {
    return this.#o.ordered ? [...this.#owned.values()].length : this.#inFlight.size;
  }

  /** The reader's connection id (see `#unblock`); undefined when it cannot be had. */
  async #learnReaderId(): Promise<void> {
    try {
      this.#readerId = Number(await this.#reader.call('CLIENT', 'ID'));
    } catch {
      this.#readerId = undefined;
    }
  }

  async #start(): Promise<void> {
    for (let p = 0; p < this.#s.partitions; p++) await this.#ensureGroup(p);
    if (this.#isClosing()) return;
    if (this.#s.client.isCluster !== true) {
      // The reader's id, to unblock its blocking read (on close; in ordered mode also to add a
      // partition that went idle to the read that waits for new messages).
      await this.#learnReaderId();
    }
    this.#scheduleSweep(0);
    await (this.#o.ordered ? this.#membershipLoop() : this.#readLoop());
  }

  async #ensureGroup(p: number): Promise<void> {
    for (let attempt = 0; !this.#isClosing(); attempt++) {
      try {
        await this.#s.client.call(
          'XGROUP',
          'CREATE',
          this.#queue.keys(this.topic, p).stream,
          this.group,
          '0',
          'MKSTREAM',
        );
        return;
      } catch (error) {
        if (error instanceof Error && error.message.startsWith('BUSYGROUP')) return;
        this.#report(new QueueRedisError(`create group ${this.group}`, this.#s.client, error));
        // The stream key holds foreign data of another type: no retry makes a group there, and
        // waiting here kept the consumer off every other partition for good. The partition's
        // reads meet the same error (reported each time) and create the group once the key is
        // a stream again or gone (NOGROUP).
        if (error instanceof Error && error.message.startsWith('WRONGTYPE')) return;
        await this.#pause(Math.min(1000, 50 * 2 ** attempt));
      }
    }
  }

  #report(error: unknown): void {
    if (this.#errors.active) this.#errors.emit(error);
    if (failures.active) {
      failures.publish({ topic: this.topic, group: this.group, error, time: wallTime() });
    }
  }

  /** Sleeps, or less if the consumer closes. */
  async #pause(ms: number, signal: AbortSignal = this.#stop.signal): Promise<void> {
    await wakeableSleep(ms, { clock: this.#s.clock, signal, unref: true }).done.catch(
      () => undefined,
    );
  }

  #delay(attempt: number): number {
    const b = this.#o.backoff;
    if (typeof b === 'function') {
      const d: unknown = b(attempt);
      if (typeof d !== 'number') return 0;
      // At most what a timer can wait (an ordered consumer sleeps it out here).
      return Number.isFinite(d) ? Math.min(MAX_TIMER_MS, Math.max(0, Math.round(d))) : 0;
    }
    const base = exponentialDelay(attempt, b.initialMs ?? 100, b.maxMs ?? 30_000, b.factor ?? 2);
    return Math.round(jitter(base, b.jitter ?? 0.2, this.#o.random));
  }

  // ————— unordered mode —————

  /**
   * Reads the partitions in turn, one per read. A read blocks (for `blockMs`, split over the
   * partitions) only when it is the sole partition, or once a whole round of reads in a row
   * found nothing new: a partition with a backlog is never kept waiting behind blocking reads of
   * empty ones. Handled messages' acks ride with the next read, whichever partition's turn it
   * is, so a partition that keeps the consumer busy does not starve the others.
   */
  async #readLoop(): Promise<void> {
    const n = this.#s.partitions;
    const block = n === 1 ? this.#o.blockMs : Math.max(1, Math.floor(this.#o.blockMs / n));
    let rr = 0;
    /** Reads in a row that found nothing new. */
    let empty = 0;
    while (!this.#isClosing()) {
      if (this.#inFlight.size - this.#acks.length + this.#backlog.length >= this.#o.concurrency) {
        // Handled deliveries hold their slots until their ack, which waits to ride with this
        // loop's next read; with deliveries waiting for those slots there is no read to send
        // it with, so it goes alone now (else each would wait for the other).
        if (this.#acks.length > 0 && this.#backlog.length > 0) this.#flushAcks();
        await new Promise<void>((resolve) => (this.#slotWaiter = resolve));
        continue;
      }
      const p = rr++ % n;
      if (this.#acks.length > 0) {
        // Handled messages wait for their ack: send it with the next read, one round trip.
        empty = (await this.#ackAndRead(p)) > 0 ? 0 : empty + 1;
        continue;
      }
      const keys = this.#queue.keys(this.topic, p);
      const free = this.#o.concurrency - this.#inFlight.size - this.#backlog.length;
      const blocking = n === 1 || empty >= n;
      const start = this.#s.clock.now();
      let reply: unknown;
      try {
        reply = await this.#reader.call(
          'XREADGROUP',
          'GROUP',
          this.group,
          this.name,
          'COUNT',
          free,
          ...(blocking ? ['BLOCK', block] : []),
          'STREAMS',
          keys.stream,
          '>',
        );
      } catch (error) {
        if (this.#isClosing()) break;
        if (error instanceof Error && error.message.startsWith('NOGROUP')) {
          await this.#ensureGroup(p);
        } else {
          this.#report(new QueueRedisError(`read ${this.topic}`, this.#reader, error));
          await this.#pause(200);
        }
        continue;
      }
      const entries = entriesOf(reply);
      empty = entries.length > 0 ? 0 : empty + 1;
      for (const [entryId, raw] of entries) {
        this.#dispatch(p, keys, decodeEntry(String(entryId), raw), 1, start, undefined);
      }
    }
  }

  /**
   * Queues the ack of a handled delivery. Acks queued in one turn of the event loop go out
   * together: with the read loop's next read when it is waiting for a free slot (one script call
   * acks the batch and reads the next), else on their own in one batch-ack call per partition.
   * The delivery is finished (its slot freed) once its ack was answered — acked, or refused (no
   * longer ours) — or Redis kept failing (the message stays pending and is reclaimed later).
   */
  #ackLater(delivery: Delivery): void {
    this.#acks.push(delivery);
    if (this.#ackTick) return;
    this.#ackTick = true;
    // One turn of the event loop later: every handler that resolved in this turn has queued.
    setImmediate(this.#onAckTick);
  }

  readonly #onAckTick = (): void => {
    this.#ackTick = false;
    const wake = this.#slotWaiter;
    if (wake !== undefined && !this.#isClosing()) {
      this.#slotWaiter = undefined;
      wake();
    } else {
      this.#flushAcks();
    }
  };

  /** Takes up to {@link ACK_BATCH} queued acks of partition `p` (oldest partition first if unset). */
  #takeAcks(p?: number): Delivery[] {
    const part = p ?? this.#acks[0]?.p;
    const taken: Delivery[] = [];
    const rest: Delivery[] = [];
    for (const a of this.#acks) {
      if (a.p === part && taken.length < ACK_BATCH) taken.push(a);
      else rest.push(a);
    }
    this.#acks = rest;
    return taken;
  }

  /** Sends every queued ack now, one batch-ack call per partition, without reading. */
  #flushAcks(): void {
    while (this.#acks.length > 0) {
      const batch = this.#takeAcks();
      void this.#sendAcks(batch).then(
        () => undefined,
        () => undefined,
      );
    }
  }

  /**
   * The read loop's turn when acks are queued: ack a batch and read what is new in partition
   * `p` (the partition whose turn it is), in one round trip. Returns how many entries it read.
   */
  async #ackAndRead(p: number): Promise<number> {
    const batch = this.#takeAcks();
    const acking = (batch[0] as Delivery).p;
    // Other partitions' acks go out on their own, at once.
    this.#flushAcks();
    const free = this.#o.concurrency - this.#inFlight.size - this.#backlog.length + batch.length;
    const start = this.#s.clock.now();
    const keys = this.#queue.keys(this.topic, p);
    // Pipelined on one connection: the batch ack, then a non-blocking read of up to as many
    // messages as the acks free (plus free slots) — one write and one round trip, and the read's
    // reply never passes through Lua. On a Cluster only within one partition (one slot): a
    // pipeline must not span nodes.
    if (
      typeof (this.#s.client as { pipeline?: unknown }).pipeline === 'function' &&
      (acking === p || this.#s.client.isCluster !== true)
    ) {
      const entries = await this.#sendAcks(batch, free, p);
      for (const [entryId, raw] of entries) {
        this.#dispatch(p, keys, decodeEntry(String(entryId), raw), 1, start, undefined);
      }
      return entries.length;
    }
    const acked = this.#sendAcks(batch);
    // COUNT 0 (or less) would mean no limit to Redis: with no slot to fill, only the ack goes.
    if (free <= 0) {
      await acked;
      return 0;
    }
    const read = this.#s.client
      .call(
        'XREADGROUP',
        'GROUP',
        this.group,
        this.name,
        'COUNT',
        free,
        'STREAMS',
        keys.stream,
        '>',
      )
      .then(entriesOf, async (error: unknown) => {
        await this.#readFailed(p, error);
        return [];
      });
    await acked;
    const entries = await read;
    for (const [entryId, raw] of entries) {
      this.#dispatch(p, keys, decodeEntry(String(entryId), raw), 1, start, undefined);
    }
    return entries.length;
  }

  /**
   * A read that rode with an ack failed. A missing group (NOGROUP: the stream was deleted, or
   * Redis restarted without its data) is created again here, as the loop's own reads do: under
   * load every read of partition `p` may be one that rides with an ack, and it would fail every
   * time.
   */
  async #readFailed(p: number, error: unknown): Promise<void> {
    if (error instanceof Error && error.message.startsWith('NOGROUP')) await this.#ensureGroup(p);
    else this.#report(new QueueRedisError(`read ${this.topic}`, this.#s.client, error));
  }

  /**
   * One batch-ack call for `batch` (all of one partition). Acked entries are deleted from the
   * stream (when it has one group) in batches of at least {@link FORGET_BATCH}: a batch that
   * small is remembered and deleted with a later one (or by the next sweep), so concurrency 1
   * does not pay the group check and the delete per message. On a Redis failure each ack is
   * retried on its own (see {@link #settle}), deleting as it acks. With `readCount`, a
   * non-blocking read of up to that many new entries of partition `read` (default: the acks'
   * partition) goes out in the same pipeline (one write); its entries are returned.
   */
  async #sendAcks(batch: Delivery[], readCount = 0, read?: number): Promise<RawEntry[]> {
    const first = batch[0] as Delivery;
    const p = first.p;
    const keys = this.#queue.keys(this.topic, p);
    // The ownership check reads the consumer's pending entries between the lowest and highest id.
    let lo = first.entryId;
    let hi = lo;
    for (const a of batch) {
      if (compareStreamIds(a.entryId, lo) < 0) lo = a.entryId;
      else if (compareStreamIds(a.entryId, hi) > 0) hi = a.entryId;
    }
    const earlier = this.#forget.get(p);
    const forgetNow = (earlier?.length ?? 0) + batch.length >= FORGET_BATCH;
    if (forgetNow) this.#forget.delete(p);
    const args: (string | number)[] = [
      this.group,
      this.name,
      this.#inFlight.size + batch.length + 1,
      lo,
      hi,
    ];
    if (forgetNow && earlier !== undefined) args.push(1, earlier.length, ...earlier);
    else args.push(forgetNow ? 1 : 0, 0);
    for (const a of batch) args.push(a.entryId, a.deliveries);
    let flags: unknown[] | undefined;
    let failure: unknown;
    let entries: RawEntry[] = [];
    /** The pipelined read's error: handled once the acks are settled (their slots freed). */
    let readFailure: unknown;
    const pipeline = readCount > 0 ? pipelineOf(this.#s.client) : undefined;
    if (pipeline !== undefined) {
      pipeline.evalsha(ACK_MANY.sha, 1, keys.stream, ...args);
      pipeline.call(
        'XREADGROUP',
        'GROUP',
        this.group,
        this.name,
        'COUNT',
        readCount,
        'STREAMS',
        read === undefined ? keys.stream : this.#queue.keys(this.topic, read).stream,
        '>',
      );
      try {
        const replies = await pipeline.exec();
        const [ackError, ackReply] = replies?.[0] ?? [new Error('no reply'), undefined];
        const [readError, readReply] = replies?.[1] ?? [new Error('no reply'), undefined];
        if (ackError === null) flags = ackReply as unknown[];
        // A server without the script cached: sent again below, from source.
        else if (!isNoScriptError(ackError)) failure = ackError;
        if (readError === null) entries = entriesOf(readReply);
        else readFailure = readError;
      } catch (error) {
        failure = error;
      }
      if (failure !== undefined) {
        failure = new QueueRedisError(`ack ${this.topic}`, this.#s.client, failure);
      }
    }
    if (flags === undefined && failure === undefined) {
      try {
        flags = (await run(
          this.#s.client,
          `ack ${this.topic}`,
          ACK_MANY,
          [keys.stream],
          args,
        )) as unknown[];
      } catch (error) {
        failure = error;
      }
    }
    if (flags === undefined) {
      const error = failure;
      if (forgetNow && earlier !== undefined) this.#remember(p, earlier);
      if (String((error as { cause?: unknown }).cause).includes('NOGROUP')) {
        await this.#ensureGroup(p);
      } else {
        this.#report(error);
      }
      const lease = leaseKey(this.#s.prefix, keys, this.group);
      await Promise.all(
        batch.map(async (a) => {
          await this.#settle(
            'ack',
            ACK,
            [keys.stream, lease],
            [this.group, a.entryId, this.name, '', a.deliveries],
            a.deadline,
          );
          this.#finish(a);
        }),
      );
      if (readFailure !== undefined) await this.#readFailed(read ?? p, readFailure);
      return entries;
    }
    const acked: string[] = [];
    batch.forEach((a, i) => {
      if (!forgetNow && Number(flags[i]) === 1) acked.push(a.entryId);
      // Freed now, before the entries read in the same round trip are dispatched.
      this.#finish(a);
    });
    if (acked.length > 0) this.#remember(p, acked);
    if (readFailure !== undefined) await this.#readFailed(read ?? p, readFailure);
    return entries;
  }

  /** Remembers acked entries of partition `p` to delete with a later batch. */
  #remember(p: number, entryIds: readonly string[]): void {
    const list = this.#forget.get(p);
    if (list === undefined) this.#forget.set(p, [...entryIds]);
    else list.push(...entryIds);
  }

  /** Deletes the remembered acked entries of partition `p` now (the sweep, and close). */
  async #forgetNow(p: number): Promise<void> {
    const ids = this.#forget.get(p);
    if (ids === undefined || ids.length === 0) return;
    this.#forget.delete(p);
    try {
      await run(
        this.#s.client,
        `ack ${this.topic}`,
        ACK_MANY,
        [this.#queue.keys(this.topic, p).stream],
        [this.group, this.name, 0, '', '', 1, ids.length, ...ids],
      );
    } catch (error) {
      this.#remember(p, ids);
      throw error;
    }
  }

  #dispatch(
    p: number,
    keys: PartitionKeys,
    entry: DecodedEntry | ForeignEntry,
    deliveries: number,
    start: number,
    previous: string | undefined,
  ): void {
    const slot = `${p}/${entry.entryId}/${deliveries}`;
    if (this.#inFlight.has(slot)) return;
    if (this.#inFlight.size >= this.#o.concurrency) {
      this.#backlog.push({ p, keys, entry, deliveries, start, previous });
      return;
    }
    const id = entry.ok ? entry.id : entry.entryId;
    if (deliveries > 1) {
      // Reclaimed back to this consumer while an older delivery of it may still run here (it
      // outlived its visibility timeout; another consumer took the entry over, then died): that
      // older delivery has lost the message — its signal aborts and its ack will be refused.
      for (const older of this.#inFlight.values()) {
        if (older.p === p && older.entryId === entry.entryId && !older.controller.signal.aborted) {
          older.controller.abort(
            new LeaseExpiredError(
              id,
              `delivered again (delivery ${deliveries}) after its visibility timeout`,
            ),
          );
        }
      }
    }
    const delivery: Delivery = {
      controller: new AbortController(),
      handedBack: false,
      running: false,
      p,
      id,
      entryId: entry.entryId,
      deliveries,
      slot,
      deadline: start + this.#o.visibilityMs - this.#margin,
    };
    this.#inFlight.set(slot, delivery);
    if (!entry.ok) {
      this.#track(
        delivery,
        this.#quarantine(keys, this.#lease(keys), '', deliveries, entry, delivery.deadline),
      );
    } else if (entry.group !== undefined && entry.group !== this.group) {
      this.#track(
        delivery,
        this.#settle(
          'ack',
          ACK,
          [keys.stream, this.#lease(keys)],
          [this.group, entry.entryId, this.name, '', deliveries],
          delivery.deadline,
        ),
      );
    } else if (entry.failed + deliveries > this.#o.maxAttempts) {
      const attempt = entry.failed + deliveries;
      this.#track(
        delivery,
        this.#dead(
          keys,
          this.#lease(keys),
          '',
          deliveries,
          entry,
          attempt - 1,
          this.#consumersOf(entry, previous),
          'expired',
          `delivered ${deliveries} time(s) without an ack (last consumer ${previous ?? 'unknown'} died or timed out)`,
          delivery.deadline,
        ),
      );
    } else {
      this.#run(delivery, keys, entry, previous);
    }
  }

  /** The lease key the settling scripts take ('' token: not checked in unordered mode). */
  #lease(keys: PartitionKeys): string {
    return leaseKey(this.#s.prefix, keys, this.group);
  }

  #consumersOf(entry: DecodedEntry, previous: string | undefined): string[] {
    return previous === undefined ? [...entry.consumers] : [...entry.consumers, previous];
  }

  /** Finishes `delivery` when `work` settles (the paths that do not run the handler). */
  #track(delivery: Delivery, work: Promise<unknown>): void {
    void work.then(
      () => {
        this.#finish(delivery);
      },
      (error: unknown) => {
        this.#report(error);
        this.#finish(delivery);
      },
    );
  }

  /** A delivery is over: its slot is free (unless a newer delivery of the entry holds it). */
  #finish(delivery: Delivery): void {
    if (this.#inFlight.get(delivery.slot) === delivery) this.#inFlight.delete(delivery.slot);
    while (
      this.#backlog.length > 0 &&
      this.#inFlight.size < this.#o.concurrency &&
      !this.#closing
    ) {
      const w = this.#backlog.shift() as Waiting;
      this.#dispatch(w.p, w.keys, w.entry, w.deliveries, w.start, w.previous);
    }
    const wake = this.#slotWaiter;
    this.#slotWaiter = undefined;
    wake?.();
    if (this.#inFlight.size === 0 && this.#drained.length > 0) {
      for (const resolve of this.#drained.splice(0)) resolve();
    }
  }

  /** Resolves once nothing is in flight. */
  #whenDrained(): Promise<void> {
    if (this.#inFlight.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#drained.push(resolve));
  }

  /**
   * Runs the handler on a delivery. No promise, closure or timer of its own when the handler
   * returns synchronously: the visibility deadline is watched by one timer for all deliveries.
   */
  #run(
    delivery: Delivery,
    keys: PartitionKeys,
    entry: DecodedEntry,
    previous: string | undefined,
  ): void {
    const attempt = entry.failed + delivery.deliveries;
    delivery.running = true;
    this.#watch(delivery);
    const began = this.#s.clock.now();
    let result: unknown;
    try {
      result = this.#handler({
        id: entry.id,
        topic: this.topic,
        group: this.group,
        key: entry.key,
        payload: entry.payload as T,
        headers: entry.headers,
        attempt,
        sentAt: entry.sentAt,
        entryId: entry.entryId,
        partition: delivery.p,
        consumer: this.name,
        signal: delivery.controller.signal,
      });
    } catch (error) {
      this.#ran(delivery, keys, entry, attempt, previous, began, false, error);
      return;
    }
    if (
      result instanceof Promise ||
      typeof (result as { then?: unknown } | null)?.then === 'function'
    ) {
      void Promise.resolve(result).then(
        () => {
          this.#ran(delivery, keys, entry, attempt, previous, began, true, undefined);
        },
        (error: unknown) => {
          this.#ran(delivery, keys, entry, attempt, previous, began, false, error);
        },
      );
    } else {
      this.#ran(delivery, keys, entry, attempt, previous, began, true, undefined);
    }
  }

  /** The handler's outcome: ack (batched), or retry / dead-letter. */
  #ran(
    delivery: Delivery,
    keys: PartitionKeys,
    entry: DecodedEntry,
    attempt: number,
    previous: string | undefined,
    began: number,
    ok: boolean,
    error: unknown,
  ): void {
    delivery.running = false;
    if (handled.active) {
      handled.publish({
        topic: this.topic,
        group: this.group,
        id: entry.id,
        attempt,
        outcome: ok ? 'ok' : 'failed',
        durationMs: this.#s.clock.now() - began,
        time: wallTime(),
      });
    }
    if (ok) {
      this.#ackLater(delivery);
      return;
    }
    if (delivery.handedBack) {
      // Closing: it was handed back, another consumer retries it.
      this.#finish(delivery);
      return;
    }
    this.#track(delivery, this.#failed(delivery, keys, entry, attempt, previous, error));
  }

  /** A failed attempt: dead-letter it after `maxAttempts`, else retry it after a backoff. */
  async #failed(
    delivery: Delivery,
    keys: PartitionKeys,
    entry: DecodedEntry,
    attempt: number,
    previous: string | undefined,
    error: unknown,
  ): Promise<void> {
    const all = [...this.#consumersOf(entry, previous), this.name];
    if (attempt >= this.#o.maxAttempts) {
      await this.#dead(
        keys,
        this.#lease(keys),
        '',
        delivery.deliveries,
        entry,
        attempt,
        all,
        'failed',
        text(error),
        delivery.deadline,
      );
      return;
    }
    const r = await this.#settle(
      'retry',
      RETRY,
      [keys.stream, keys.delayed, this.#lease(keys)],
      [
        this.group,
        entry.entryId,
        this.name,
        '',
        delivery.deliveries,
        this.#delay(attempt),
        ...retryFields(entry, attempt, this.group, all, text(error)),
      ],
      delivery.deadline,
    );
    if (Array.isArray(r) && Number(r[0]) === 2) {
      // The delayed set refused the copy (foreign data, an ACL, …): the retry went to the
      // stream without its backoff. Reported with Redis's own error first, so its kind is the
      // real one (not taken for foreign data whatever happened).
      this.#report(
        new QueueRedisError(
          `retry ${this.topic}`,
          this.#s.client,
          new Error(`${String(r[1])}: retried without its delay`),
        ),
      );
    }
  }

  /** Watches a running delivery's visibility deadline (one timer, armed for the earliest). */
  #watch(delivery: Delivery): void {
    if (delivery.deadline < this.#deadlineAt) this.#armDeadline(delivery.deadline);
  }

  #armDeadline(at: number): void {
    this.#deadlineTimer?.cancel();
    this.#deadlineAt = at;
    this.#deadlineTimer = this.#s.clock.setTimer(this.#onDeadline, at - this.#s.clock.now());
    this.#deadlineTimer.unref();
  }

  /** Aborts the signal of every handler still running at its deadline; re-arms for the next. */
  readonly #onDeadline = (): void => {
    this.#deadlineTimer = undefined;
    this.#deadlineAt = Infinity;
    const now = this.#s.clock.now();
    let next = Infinity;
    for (const d of this.#inFlight.values()) {
      if (!d.running || d.controller.signal.aborted) continue;
      if (d.deadline <= now) {
        d.controller.abort(
          new LeaseExpiredError(
            d.id,
            `visibility timeout (${this.#o.visibilityMs} ms) is running out`,
          ),
        );
      } else if (d.deadline < next) {
        next = d.deadline;
      }
    }
    if (next !== Infinity) this.#armDeadline(next);
  };

  /** Runs the handler; aborts its signal at `deadline` or when `extra` aborts. */
  async #invoke(
    p: number,
    entry: DecodedEntry,
    payload: unknown,
    attempt: number,
    deadline: number,
    controller: AbortController,
    extra?: AbortSignal,
  ): Promise<Outcome> {
    const clock = this.#s.clock;
    const timer = clock.setTimer(() => {
      controller.abort(
        new LeaseExpiredError(
          entry.id,
          `visibility timeout (${this.#o.visibilityMs} ms) is running out`,
        ),
      );
    }, deadline - clock.now());
    timer.unref();
    const off =
      extra === undefined
        ? undefined
        : onAbort(extra, () => {
            controller.abort(extra.reason);
          });
    if (extra?.aborted === true) controller.abort(extra.reason);
    const began = clock.now();
    let outcome: Outcome;
    try {
      await this.#handler({
        id: entry.id,
        topic: this.topic,
        group: this.group,
        key: entry.key,
        payload: payload as T,
        headers: entry.headers,
        attempt,
        sentAt: entry.sentAt,
        entryId: entry.entryId,
        partition: p,
        consumer: this.name,
        signal: controller.signal,
      });
      outcome = { ok: true };
    } catch (error) {
      outcome = { ok: false, error };
    } finally {
      timer.cancel();
      off?.();
    }
    if (handled.active) {
      handled.publish({
        topic: this.topic,
        group: this.group,
        id: entry.id,
        attempt,
        outcome: outcome.ok ? 'ok' : 'failed',
        durationMs: clock.now() - began,
        time: wallTime(),
      });
    }
    return outcome;
  }

  /**
   * Runs a settling script (ack, retry, dead-letter), retrying transient Redis failures for a
   * while: an unsettled message is not lost (it stays pending and is reclaimed), only delayed.
   */
  async #settle(
    what: string,
    script: Parameters<typeof run>[2],
    keys: readonly string[],
    args: readonly (string | number)[],
    deadline: number,
  ): Promise<unknown> {
    for (let i = 0; ; i++) {
      try {
        return await run(this.#s.client, `${what} ${this.topic}`, script, keys, args);
      } catch (error) {
        this.#report(error);
        const late = this.#s.clock.now() > deadline + this.#o.visibilityMs;
        if (i >= 8 || late) return undefined;
        await wakeableSleep(Math.min(1000, 25 * 2 ** i), { clock: this.#s.clock, unref: true })
          .done;
      }
    }
  }

  async #dead(
    keys: PartitionKeys,
    lease: string,
    token: string,
    deliveries: number | '',
    entry: DecodedEntry,
    attempts: number,
    consumers: readonly string[],
    reason: 'failed' | 'expired',
    error: string,
    deadline: number,
  ): Promise<unknown> {
    // The message's own fields, laid out as a producer writes them. Not the entry's first 12 as
    // stored: an entry written by another program with other fields first lost its payload (or
    // id) in the DLQ copy — listed as foreign data, never replayable.
    const original = encodeFields({
      id: entry.id,
      key: entry.key ?? '',
      payload: entry.payloadJson,
      headers: Object.keys(entry.headers).length === 0 ? '' : JSON.stringify(entry.headers),
      sentAt: entry.sentAt,
    });
    const r = await this.#settle(
      'dead-letter',
      DEAD,
      [keys.stream, keys.dlq, lease, deadMarkKey(this.#s.prefix, keys, this.group, entry.entryId)],
      [
        this.group,
        entry.entryId,
        this.name,
        token,
        deliveries,
        ...original,
        'x:reason',
        reason,
        'x:error',
        error.slice(0, 2000),
        'x:attempts',
        attempts,
        'x:consumers',
        consumers.join(','),
        'x:group',
        this.group,
        'x:entry',
        entry.entryId,
        'x:at',
        wallTime(),
      ],
      deadline,
    );
    if (typeof r === 'string') {
      this.#published({ id: entry.id, entryId: entry.entryId, reason, error, attempts, consumers });
    }
    return r;
  }

  async #quarantine(
    keys: PartitionKeys,
    lease: string,
    token: string,
    deliveries: number | '',
    entry: ForeignEntry,
    deadline: number,
  ): Promise<unknown> {
    const r = await this.#settle(
      'quarantine',
      DEAD,
      [keys.stream, keys.dlq, lease, deadMarkKey(this.#s.prefix, keys, this.group, entry.entryId)],
      [
        this.group,
        entry.entryId,
        this.name,
        token,
        deliveries,
        'x:reason',
        'invalid',
        'x:error',
        `not a Keel message: ${entry.reason}`,
        'x:raw',
        JSON.stringify(entry.fields).slice(0, 100_000),
        'x:attempts',
        0,
        'x:consumers',
        this.name,
        'x:group',
        this.group,
        'x:entry',
        entry.entryId,
        'x:at',
        wallTime(),
      ],
      deadline,
    );
    if (typeof r === 'string') {
      this.#published({
        id: undefined,
        entryId: entry.entryId,
        reason: 'invalid',
        error: `not a Keel message: ${entry.reason}`,
        attempts: 0,
        consumers: [this.name],
      });
    }
    return r;
  }

  #published(e: Omit<DeadLetterEvent, 'topic' | 'group' | 'time'>): void {
    if (!this.#deadLetters.active && !deadLettered.active) return;
    const event: DeadLetterEvent = { ...e, topic: this.topic, group: this.group, time: wallTime() };
    this.#deadLetters.emit(event);
    deadLettered.publish(event);
  }

  // ————— the sweep: delayed messages, reclaims, retention —————

  #scheduleSweep(delay: number): void {
    if (this.#isClosing()) return;
    this.#sweepTimer = this.#s.clock.setTimer(() => {
      this.#sweepTimer = undefined;
      this.#sweeping = this.#sweep()
        .catch((error: unknown) => {
          this.#report(error);
        })
        .finally(() => {
          this.#scheduleSweep(this.#sweepMs);
        });
    }, delay);
    this.#sweepTimer.unref();
  }

  async #sweep(): Promise<void> {
    const sweep = this.#sweeps++;
    const partitions = this.#o.ordered
      ? [...this.#owned.keys()]
      : Array.from({ length: this.#s.partitions }, (_, p) => p);
    const r = this.#s.retention;
    const retain = (r.maxLen !== undefined || r.maxAgeMs !== undefined) && sweep % 10 === 0;
    for (const p of partitions) {
      if (this.#isClosing()) return;
      // A step that fails (foreign data at one partition's delayed set, a write Redis refuses
      // while out of memory) is reported and the sweep goes on: the reclaims of messages whose
      // consumer died, and the trims that free memory, must not wait for it.
      await this.#sweepPartition(p, retain).catch((error: unknown) => {
        this.#report(error);
      });
    }
  }

  /**
   * Moves the partition's due delayed messages into its stream. Malformed delayed entries are
   * quarantined to the DLQ by the same script (see PROMOTE) and reported here, as a foreign
   * stream entry is: `onDeadLetter` with reason `invalid` and no entry id (it never reached the
   * stream).
   */
  async #promote(keys: PartitionKeys): Promise<void> {
    let reply: unknown;
    try {
      reply = await run(
        this.#s.client,
        `promote ${this.topic}`,
        PROMOTE,
        [keys.stream, keys.delayed, keys.dlq],
        [256, this.group, this.name, wallTime()],
      );
    } catch (error) {
      this.#report(error);
      return;
    }
    const r = Array.isArray(reply) ? reply.map(String) : [];
    if (r[1] !== undefined && r[1] !== '') {
      this.#report(
        new QueueRedisError(
          `promote ${this.topic}`,
          this.#s.client,
          new Error(
            `${r[1]}: a malformed delayed entry could not be quarantined; kept for the next sweep`,
          ),
        ),
      );
    }
    for (let i = 2; i + 1 < r.length; i += 2) {
      this.#published({
        id: undefined,
        entryId: '',
        reason: 'invalid',
        error: r[i + 1] as string,
        attempts: 0,
        consumers: [this.name],
      });
    }
  }

  /** The sweep of partition `p`: delayed messages due, reclaims, trims. */
  async #sweepPartition(p: number, retain: boolean): Promise<void> {
    const keys = this.#queue.keys(this.topic, p);
    await this.#promote(keys);
    if (!this.#o.ordered) {
      const free = this.#o.concurrency - this.#inFlight.size - this.#backlog.length;
      if (free > 0) {
        const start = this.#s.clock.now();
        const got = (await run(
          this.#s.client,
          `reclaim ${this.topic}`,
          RECLAIM,
          [keys.stream],
          [
            this.group,
            this.name,
            this.#o.visibilityMs,
            free,
            // Entries delivered to this name since this instance was made (less a second for
            // clock-rate drift) and not in flight here are its own lost reads (see RECLAIM).
            Math.max(0, Math.floor(start - this.#bornAt) - 1000),
            ...new Set([
              ...[...this.#inFlight.values()].filter((d) => d.p === p).map((d) => d.entryId),
              ...this.#backlog.filter((w) => w.p === p).map((w) => w.entry.entryId),
            ]),
          ],
        )) as [unknown, unknown, unknown, unknown][] | null;
        for (const [entryId, raw, previous, deliveries] of got ?? []) {
          if (raw === null || raw === undefined) {
            this.#report(
              new InvalidMessageError(
                String(entryId),
                `deleted from the stream while pending to ${String(previous)} (XDEL or XTRIM by another program): nothing is left to deliver; acked`,
              ),
            );
            continue;
          }
          if (this.#isClosing()) {
            await run(
              this.#s.client,
              `hand back ${this.topic}`,
              HAND_BACK,
              [keys.stream],
              [this.group, String(entryId), this.name, this.#o.visibilityMs, Number(deliveries)],
            );
            continue;
          }
          this.#dispatch(
            p,
            keys,
            decodeEntry(String(entryId), raw),
            Number(deliveries),
            start,
            String(previous),
          );
        }
      }
    }
    if (this.#forget.has(p)) await this.#forgetNow(p);
    // Acked entries a dead consumer had not deleted yet (see TRIM_DONE): one call per sweep.
    await run(this.#s.client, `trim ${this.topic}`, TRIM_DONE, [keys.stream], []);
    if (retain) await this.#queue.trimPartition(this.topic, p);
  }

  // ————— ordered mode —————

  async #membershipLoop(): Promise<void> {
    const heartbeat = Math.max(10, Math.floor(this.#o.visibilityMs / 3));
    const key = membersKey(this.#s.prefix, this.topic, this.group);
    while (!this.#isClosing()) {
      try {
        const sentAt = this.#s.clock.now();
        // A heartbeat that fails (reported) keeps the last view of the group and takes no new
        // partition, but the leases held are still renewed below — skipped, every partition
        // would be lost to a Redis error that outlasts a lease, each message in flight then
        // delivered again.
        const heard = await run(
          this.#s.client,
          `members ${this.topic}`,
          MEMBERS,
          [key],
          [this.name, this.#o.visibilityMs, '0'],
        ).then(
          // Only consumers' names: another program's members of the set (an empty string, a
          // lone surrogate) made the ring refuse the view every heartbeat, and every consumer
          // of the group stayed off every partition.
          (reply) => (reply as unknown[]).map(String).filter(isName),
          (error: unknown) => (this.#report(error), undefined),
        );
        const members = heard ?? this.#members;
        const changed = members.join('\n') !== this.#members.join('\n');
        this.#members = members;
        const ring = new RendezvousHash({ nodes: members.map((id) => ({ id })) });
        const mine = (p: number): boolean => ring.get(`p${p}`)?.id === this.name;
        // Renew what we hold; on a membership change let go of what is now someone else's.
        for (const owned of [...this.#owned.values()]) {
          if (owned.lost || owned.stopping) continue;
          const ok = await run(
            this.#s.client,
            `lease ${this.topic}`,
            LEASE,
            [owned.lease],
            [this.name, this.#o.visibilityMs],
          ).catch((error: unknown) => (this.#report(error), undefined));
          if (ok === 1) this.#armLease(owned, sentAt);
          else if (ok === 0) this.#lose(owned, 'the partition lease was taken over');
          if (changed && !mine(owned.p)) this.#stopOwned(owned);
        }
        const order = Array.from({ length: this.#s.partitions }, (_, p) => p).sort(
          (a, b) => Number(mine(b)) - Number(mine(a)),
        );
        for (const p of heard === undefined ? [] : order) {
          if (this.#isClosing() || this.#owned.size >= this.#o.concurrency) break;
          if (this.#owned.has(p)) continue;
          if (!mine(p) && this.#owned.size > 0 && changed) continue;
          const keys = this.#queue.keys(this.topic, p);
          const lease = leaseKey(this.#s.prefix, keys, this.group);
          const start = this.#s.clock.now();
          // A failure is this partition's (reported): the others are still taken this round.
          const ok = await run(
            this.#s.client,
            `lease ${this.topic}`,
            LEASE,
            [lease],
            [this.name, this.#o.visibilityMs],
          ).catch((error: unknown) => (this.#report(error), undefined));
          if (ok !== 1 || this.#isClosing()) {
            if (ok === 1)
              await run(this.#s.client, `unlease ${this.topic}`, UNLEASE, [lease], [this.name]);
            continue;
          }
          const owned: Owned = {
            p,
            keys,
            lease,
            controller: new AbortController(),
            expiry: undefined,
            stopping: false,
            lost: false,
            loop: Promise.resolve(),
          };
          this.#armLease(owned, start);
          this.#owned.set(p, owned);
          owned.loop = this.#partitionLoop(owned)
            .catch((error: unknown) => {
              this.#report(error);
            })
            .finally(() => {
              owned.expiry?.cancel();
              this.#owned.delete(p);
            });
        }
      } catch (error) {
        this.#report(error);
      }
      await this.#pause(heartbeat);
    }
  }

  /** The lease is valid until `sentAt + visibilityMs`; abort the partition's work before. */
  #armLease(owned: Owned, sentAt: number): void {
    owned.expiry?.cancel();
    const remaining = sentAt + this.#o.visibilityMs - this.#margin - this.#s.clock.now();
    owned.expiry = this.#s.clock.setTimer(() => {
      this.#lose(owned, 'the partition lease is running out (not renewed)');
    }, remaining);
    owned.expiry.unref();
  }

  #lose(owned: Owned, why: string): void {
    if (owned.lost) return;
    owned.lost = true;
    owned.expiry?.cancel();
    owned.controller.abort(new LeaseExpiredError(`partition ${owned.p}`, why));
  }

  async #partitionLoop(owned: Owned): Promise<void> {
    const { keys, lease } = owned;
    const mark = nextMarkKey(this.#s.prefix, keys, this.group);
    // The entry whose handler resolved, acked together with the read of the next one.
    let toAck = '';
    // The id of the call being made: kept until it is answered, so a call that failed on the
    // client after it ran in Redis (its reply lost: a command timeout, or ioredis giving up
    // after `maxRetriesPerRequest` reconnections) is sent again as itself, and NEXT's mark
    // answers it with what the first run delivered (a new id would claim that message again,
    // counting a second delivery, or find the entry it acks gone and give the partition up).
    let call = '';
    while (this.#active(owned)) {
      let next: unknown;
      call ||= `${this.#callIds}${++this.#calls}`;
      try {
        next = await run(
          this.#s.client,
          `next ${this.topic}`,
          NEXT,
          [keys.stream, lease, mark],
          [this.group, this.name, this.name, toAck, call],
        );
        toAck = '';
        call = '';
      } catch (error) {
        if (String((error as { cause?: unknown }).cause).includes('NOGROUP')) {
          await this.#ensureGroup(owned.p);
        } else {
          this.#report(error);
          await this.#pause(100, owned.controller.signal);
        }
        continue;
      }
      if (next === -1 || next === 0) {
        this.#lose(owned, TAKEN_OVER);
        break;
      }
      if (typeof next === 'string' || next instanceof Buffer) {
        // Nothing to read: wait for an entry after the stream's last one.
        await this.#whenNew(owned, String(next));
        continue;
      }
      const [entryId, raw, previous, deliveries] = (
        next as [unknown, unknown, unknown, unknown][]
      )[0] as [unknown, unknown, unknown, unknown];
      const prev = String(previous);
      toAck = await this.#ordered(
        owned,
        decodeEntry(String(entryId), raw),
        Number(deliveries),
        prev === '' ? undefined : prev,
      );
    }
    if (toAck !== '' && !owned.lost) {
      // Stopping with a handled message not yet acked: ack it on its own.
      const r = await this.#settle(
        'ack',
        ACK,
        [keys.stream, lease],
        [this.group, toAck, this.name, this.name],
        this.#s.clock.now() + this.#o.visibilityMs - this.#margin,
      );
      // 0 (the entry no longer pending to this consumer) under the lease, which was checked in
      // the same step: only the lease holder settles the partition's entries, so this call's
      // own first copy acked it (its reply lost with the connection, ioredis sent it again).
      // The lease is still ours to give back; not giving it back would hold the partition's
      // next owner off until it expires.
      if (r === -1) this.#lose(owned, TAKEN_OVER);
    }
    if (!owned.lost) {
      await run(this.#s.client, `unlease ${this.topic}`, UNLEASE, [lease], [this.name]).catch(
        (error: unknown) => {
          this.#report(error);
        },
      );
    }
  }

  /** Stops an owned partition's loop after its current message (and wakes it if idle). */
  #stopOwned(owned: Owned): void {
    owned.stopping = true;
    this.#idle.get(owned.p)?.wake();
  }

  /**
   * Waits until partition `owned` may have something new: an entry after `after` (the id of the
   * stream's last entry when the partition's read found nothing) — seen by one blocking `XREAD`
   * on the reader connection for all of this consumer's idle partitions, which does not touch
   * the group (the partition loop then reads it under its lease, as always) — or the lease is
   * lost, or the partition stops. A read that times out (`blockMs`) wakes its partitions to
   * look once more. Without a way to unblock the reader (Redis Cluster: the partitions' streams
   * are in different slots), polls every `pollMs` instead.
   * https://redis.io/docs/latest/commands/xread/ ,
   * https://redis.io/docs/latest/commands/client-unblock/
   */
  #whenNew(owned: Owned, after: string): Promise<void> {
    if (this.#readerId === undefined) return this.#pause(this.#o.pollMs, owned.controller.signal);
    const signal = owned.controller.signal;
    if (signal.aborted || !this.#active(owned)) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        if (this.#idle.get(owned.p)?.wake === wake) this.#idle.delete(owned.p);
        off();
        resolve();
      };
      const off = onAbort(signal, wake);
      this.#idle.set(owned.p, { stream: owned.keys.stream, after, wake });
      this.#kickWaiter();
    });
  }

  /** Starts the waiter, or has it re-block to cover a partition its current read leaves out. */
  #kickWaiter(): void {
    if (this.#waiter === undefined) {
      this.#waiter = this.#waitLoop()
        .catch((error: unknown) => {
          this.#report(error);
        })
        .finally(() => {
          this.#waiter = undefined;
          // A partition that went idle as the loop ended.
          if (this.#idle.size > 0 && !this.#isClosing()) this.#kickWaiter();
        });
      return;
    }
    const blocked = this.#blockedOn;
    if (blocked === undefined || this.#rearm) return;
    for (const p of this.#idle.keys()) {
      if (!blocked.has(p)) {
        this.#rearm = true;
        this.#unblock(0);
        return;
      }
    }
  }

  /**
   * Unblocks the waiter's read. `CLIENT UNBLOCK` answers 0 when the reader is not blocked: its
   * read may not have reached Redis yet (it went out on another connection), so that is tried
   * again shortly while the waiter is still blocked (an unblock that reaches a later read only
   * has it block again).
   */
  #unblock(tries: number): void {
    void this.#s.client.call('CLIENT', 'UNBLOCK', this.#readerId as number).then(
      (n) => {
        if (Number(n) !== 0 || tries >= 50) return;
        if (this.#blockedOn === undefined || this.#isClosing()) return;
        this.#s.clock
          .setTimer(() => {
            this.#unblock(tries + 1);
          }, 1)
          .unref();
      },
      () => undefined,
    );
  }

  async #waitLoop(): Promise<void> {
    while (!this.#isClosing() && this.#idle.size > 0) {
      const waits = [...this.#idle];
      this.#blockedOn = new Set(waits.map(([p]) => p));
      this.#rearm = false;
      const began = this.#s.clock.now();
      let reply: unknown;
      try {
        reply = await this.#reader.call(
          'XREAD',
          'COUNT',
          1,
          'BLOCK',
          this.#o.blockMs,
          'STREAMS',
          ...waits.map(([, w]) => w.stream),
          ...waits.map(([, w]) => w.after),
        );
      } catch (error) {
        this.#blockedOn = undefined;
        if (this.#isClosing()) return;
        this.#report(new QueueRedisError(`wait for ${this.topic}`, this.#reader, error));
        // Each partition looks again itself (and comes back here if still idle).
        for (const [, w] of waits) w.wake();
        await this.#pause(this.#o.pollMs);
        continue;
      }
      this.#blockedOn = undefined;
      if (reply === null || reply === undefined) {
        // Answered before its time: unblocked to add a partition (or by an unblock meant for
        // the read before, which reached this one): block again at once. Timed out: every
        // waiting partition looks once more (a slow poll, should a wake-up have been missed).
        if (this.#s.clock.now() - began < this.#o.blockMs - 1) continue;
        for (const [, w] of waits) w.wake();
        continue;
      }
      const streams = new Set(streamsOf(reply));
      for (const [, w] of waits) if (streams.has(w.stream)) w.wake();
    }
    this.#blockedOn = undefined;
  }

  /**
   * Handles one message of an owned partition, retrying in place. Returns the entry id to ack
   * when the handler resolved (the partition loop acks it with its next read), else ''.
   */
  async #ordered(
    owned: Owned,
    entry: DecodedEntry | ForeignEntry,
    deliveries: number,
    previous: string | undefined,
  ): Promise<string> {
    const { keys, lease } = owned;
    const token = this.name;
    const deadlineOf = (): number => this.#s.clock.now() + this.#o.visibilityMs - this.#margin;
    const refused = (r: unknown): void => {
      if (r === -1 || r === 0) this.#lose(owned, TAKEN_OVER);
    };
    if (!entry.ok) {
      refused(await this.#quarantine(keys, lease, token, '', entry, deadlineOf()));
      return '';
    }
    if (entry.group !== undefined && entry.group !== this.group) {
      // Only -1 (the lease) is a takeover here: 0 under the lease, checked in the same step,
      // means this call's own first copy acked the entry (its reply lost with the connection,
      // ioredis sent it again) — only the lease holder settles the partition's entries.
      const r = await this.#settle(
        'ack',
        ACK,
        [keys.stream, lease],
        [this.group, entry.entryId, this.name, token],
        deadlineOf(),
      );
      if (r === -1) refused(r);
      return '';
    }
    const consumers =
      previous === undefined || previous === this.name
        ? [...entry.consumers]
        : [...entry.consumers, previous];
    let attempt = entry.failed + deliveries;
    // Redis's delivery count of the entry, as REDELIVER checks it.
    let count = deliveries;
    let first = true;
    for (;;) {
      // The partition was given up since this message was read (its lease ran out unrenewed:
      // the read's answer came late, or a renewal's did): another owner may be handling this
      // message or the ones after it by now, so no handler runs for it here. It stays pending
      // for the partition's next owner, who counts it delivered once more.
      if (isLost(owned)) return '';
      if (attempt > this.#o.maxAttempts) {
        refused(
          await this.#dead(
            keys,
            lease,
            token,
            '',
            entry,
            attempt - 1,
            consumers,
            'expired',
            `delivered ${attempt - 1} time(s) without an ack`,
            deadlineOf(),
          ),
        );
        return '';
      }
      const controller = new AbortController();
      // A handler still running at its visibility timeout gives the partition up: the lease is
      // no longer renewed (so another consumer takes over once it lapses) and anything this
      // handler does later is refused by the lease check in the settling scripts.
      controller.signal.addEventListener('abort', () => {
        if (isLeaseExpiredError(controller.signal.reason)) {
          this.#lose(owned, 'a handler ran past its visibility timeout');
        }
      });
      // Each attempt gets its own copy of the payload: a handler may have changed the last one.
      const payload = first ? entry.payload : (JSON.parse(entry.payloadJson) as unknown);
      first = false;
      const outcome = await this.#invoke(
        owned.p,
        entry,
        payload,
        attempt,
        deadlineOf(),
        controller,
        owned.controller.signal,
      );
      if (owned.lost) return '';
      if (outcome.ok) return entry.entryId;
      // Aborted by close (past closeTimeoutMs): not a failure of the message. It stays pending
      // for the partition's next owner; retried here, each attempt would start aborted and fail
      // at once, dead-lettering it after maxAttempts.
      if (owned.controller.signal.aborted) return '';
      if (!consumers.includes(this.name)) consumers.push(this.name);
      if (attempt >= this.#o.maxAttempts) {
        refused(
          await this.#dead(
            keys,
            lease,
            token,
            '',
            entry,
            attempt,
            consumers,
            'failed',
            text(outcome.error),
            deadlineOf(),
          ),
        );
        return '';
      }
      await this.#pause(this.#delay(attempt), owned.controller.signal);
      if (!this.#active(owned) && !owned.stopping) return '';
      const r = await this.#settle(
        'redeliver',
        REDELIVER,
        [keys.stream, lease],
        [this.group, entry.entryId, this.name, token, count],
        deadlineOf(),
      );
      if (r !== 1) {
        refused(r);
        return '';
      }
      attempt++;
      count++;
    }
  }

  // ————— closing —————

  /**
   * Stops reading, lets in-flight handlers finish for up to `closeTimeoutMs`, then aborts the
   * rest and hands their messages back for immediate reclaim; releases partition leases; closes
   * the reader connection. Safe to call more than once. Redis that does not answer (paused, a
   * network dropping packets) is waited for at most `closeTimeoutMs` twice (at least 100 ms
   * for the second) plus `visibilityMs`: then it settles without it, and what it could not ack
   * or hand back is reclaimed by another consumer after its visibility timeout.
   */
  close(): Promise<void> {
    this.#closePromise ??= this.#close();
    return this.#closePromise;
  }

  async #close(): Promise<void> {
    this.#closing = true;
    this.#offSignal?.();
    this.#stop.abort(new QueueClosedError(`consumer ${this.name}`));
    this.#sweepTimer?.cancel();
    const wake = this.#slotWaiter;
    this.#slotWaiter = undefined;
    wake?.();
    // Redis may not answer at all (paused, or a network that drops packets: the connection
    // stays open and a call waits for good, since nothing here times calls out). Closing waits
    // for it up to this deadline — the handlers' time, the grace after it, and a visibility
    // timeout for the Redis steps — and then finishes without it: what it could not hand back
    // or ack stays pending and is reclaimed by another consumer after its visibility timeout,
    // as if this one had died. Without the bound, close() (and closeOnSignals' exit) never
    // settled while Redis was paused.
    const bound =
      this.#s.clock.now() +
      this.#o.closeTimeoutMs +
      Math.max(100, this.#o.closeTimeoutMs) +
      this.#o.visibilityMs;
    const upTo = (work: Promise<unknown>): Promise<void> => this.#upTo(work, bound);
    if (this.#readerId !== undefined) {
      await upTo(this.#s.client.call('CLIENT', 'UNBLOCK', this.#readerId));
    }
    await upTo(this.#main);
    await upTo(this.#sweeping);
    // Read but never started (no slot came free): another consumer takes them at once.
    for (const w of this.#backlog.splice(0)) {
      await upTo(
        run(
          this.#s.client,
          `hand back ${this.topic}`,
          HAND_BACK,
          [w.keys.stream],
          [this.group, w.entry.entryId, this.name, this.#o.visibilityMs, w.deliveries],
        ).catch((error: unknown) => {
          this.#report(error);
        }),
      );
    }
    for (const owned of this.#owned.values()) this.#stopOwned(owned);
    const pending = (): Promise<unknown> =>
      Promise.all([this.#whenDrained(), ...[...this.#owned.values()].map((o) => o.loop)]);
    let timer: Timer | undefined;
    await Promise.race([
      pending(),
      new Promise<void>((resolve) => {
        timer = this.#s.clock.setTimer(resolve, this.#o.closeTimeoutMs);
        timer.unref();
      }),
    ]);
    timer?.cancel();
    const reason = new QueueClosedError(`consumer ${this.name}`);
    for (const d of this.#inFlight.values()) {
      d.handedBack = true;
      d.controller.abort(reason);
      const keys = this.#queue.keys(this.topic, d.p);
      await upTo(
        run(
          this.#s.client,
          `hand back ${this.topic}`,
          HAND_BACK,
          [keys.stream],
          [this.group, d.entryId, this.name, this.#o.visibilityMs, d.deliveries],
        ).catch((error: unknown) => {
          this.#report(error);
        }),
      );
    }
    for (const owned of this.#owned.values()) owned.controller.abort(reason);
    // A handler that ignores its signal is not waited for forever: whatever it does later is
    // refused (its message was handed back, its partition lease given up).
    let grace: Timer | undefined;
    await Promise.race([
      pending().catch(() => undefined),
      new Promise<void>((resolve) => {
        grace = this.#s.clock.setTimer(resolve, Math.max(100, this.#o.closeTimeoutMs));
        grace.unref();
      }),
    ]);
    grace?.cancel();
    this.#deadlineTimer?.cancel();
    for (const p of [...this.#forget.keys()]) {
      await upTo(
        this.#forgetNow(p).catch((error: unknown) => {
          this.#report(error);
        }),
      );
    }
    if (this.#o.ordered) {
      await upTo(
        run(
          this.#s.client,
          `members ${this.topic}`,
          MEMBERS,
          [membersKey(this.#s.prefix, this.topic, this.group)],
          [this.name, this.#o.visibilityMs, '1'],
        ).catch((error: unknown) => {
          this.#report(error);
        }),
      );
    }
    this.#reader.disconnect();
    this.#resolveClosed();
  }

  /** Waits for `work` to settle (either way), or until `deadline` on the clock, whichever is first. */
  async #upTo(work: Promise<unknown>, deadline: number): Promise<void> {
    let timer: Timer | undefined;
    await Promise.race([
      work.catch(() => undefined),
      new Promise<void>((resolve) => {
        timer = this.#s.clock.setTimer(
          resolve,
          Math.min(MAX_TIMER_MS, Math.max(0, deadline - this.#s.clock.now())),
        );
        timer.unref();
      }),
    ]);
    timer?.cancel();
  }

  /** Same as {@link Consumer.close}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function resolveConsumer(options: unknown) {
  const o = resolveOptions(OWNER, options, spec);
  if (o.consumer !== undefined) checkName(OWNER, 'consumer', o.consumer);
  if (typeof o.backoff === 'object') {
    resolveOptions(
      OWNER,
      o.backoff,
      {
        initialMs: numberOption({ optional: true, min: 0, max: MAX_TIMER_MS }),
        maxMs: numberOption({ optional: true, min: 0, max: MAX_TIMER_MS }),
        factor: numberOption({ optional: true, min: 1 }),
        jitter: numberOption({ optional: true, min: 0, max: 1 }),
      },
      'backoff',
    );
  }
  return o;
}
