/**
 * `Queue`: the producer side (send, sendMany, delayed messages, dedup), retention, the
 * dead-letter stream (list, replay) and the factory of consumers, over one Redis client.
 *
 * @packageDocumentation
 */
import { randomUUID } from 'node:crypto';
import {
  InvalidOptionError,
  KeelChannel,
  booleanOption,
  guardedOption,
  integerOption,
  isAbortSignal,
  isClock,
  isWellFormedText,
  onShutdownSignals,
  signalsOption,
  nestedOption,
  resolveOptions,
  stringOption,
  systemClock,
  throwIfAborted,
  wallTime,
  type Clock,
  type Subscription,
  warnIfEvicting,
} from '../core/index.js';
import {
  command,
  isQueueClient,
  run,
  transactionCause,
  transactionOf,
  type QueuePipeline,
  type QueueRedisClient,
  type RawEntry,
} from './client.js';
import {
  dedupKey,
  decodeEntry,
  encodeFields,
  partitionKeys,
  partitionOf,
  type PartitionKeys,
} from './codec.js';
import { Consumer, type ConsumerOptions, type Handler } from './consumer.js';
import { PayloadError, QueueClosedError, QueueRedisError } from './errors.js';
import { REPLAY, SEND, SEND_MAX, TRIM } from './scripts.js';

/** Retention of a topic's streams: trimmed by length and/or age, never past a pending message. */
export interface RetentionOptions {
  /** Keep at most about this many entries per partition stream. @defaultValue no limit */
  readonly maxLen?: number | undefined;
  /** Drop entries older than this (by stream id time). @defaultValue no limit */
  readonly maxAgeMs?: number | undefined;
}

/** Options of {@link Queue}. */
export interface QueueOptions {
  /** The Redis client (ioredis `Redis` or `Cluster`). Not closed by the queue. */
  readonly client: QueueRedisClient;
  /** Prefix of every key (no braces). @defaultValue 'keel:q' */
  readonly prefix?: string | undefined;
  /**
   * Streams per topic. Messages go to `murmur3(key ?? id) % partitions`; per-key ordered
   * consumers own one partition at a time each. Every producer and consumer of a topic must use
   * the same number. @defaultValue 1
   */
  readonly partitions?: number | undefined;
  /** How long a sent message id is remembered for dedup. @defaultValue 3_600_000 (1 h) */
  readonly dedupWindowMs?: number | undefined;
  /** Retention, applied by consumers' sweeps and by {@link Queue.trim}. @defaultValue none */
  readonly retention?: RetentionOptions | undefined;
  /** Monotonic clock for timers and deadlines. @defaultValue systemClock */
  readonly clock?: Clock | undefined;
}

/** Options of one {@link Queue.send}. */
export interface SendOptions {
  /** Ordering key: same-key messages share a partition (and, for ordered consumers, an order). */
  readonly key?: string | undefined;
  /**
   * Message id. When given, sending the same id again within `dedupWindowMs` enqueues nothing
   * (the result says `duplicate`). @defaultValue a random UUID (no dedup record kept)
   */
  readonly id?: string | undefined;
  /** Deliver no earlier than this many ms from now (Redis server time). @defaultValue 0 */
  readonly delayMs?: number | undefined;
  /** String headers carried with the message. */
  readonly headers?: Readonly<Record<string, string>> | undefined;
  /** Aborts the send before it is written. */
  readonly signal?: AbortSignal | undefined;
}

/** One item of {@link Queue.sendMany}. */
export interface SendItem<T = unknown> extends Omit<SendOptions, 'signal'> {
  /** The message body (JSON-serialisable). */
  readonly payload: T;
}

/** What a send did. */
export interface SendResult {
  /** The message id (given or generated). */
  readonly id: string;
  /** `sent` (in the stream), `delayed` (in the delayed set), `duplicate` (id seen, not sent). */
  readonly status: 'sent' | 'delayed' | 'duplicate';
  /** The partition it went to. */
  readonly partition: number;
  /** The stream entry id, for `sent`. */
  readonly entryId?: string | undefined;
}

/** Options of {@link Queue.closeOnSignals}. */
export interface CloseOnSignalsOptions {
  /** The signals that close the queue. @defaultValue `['SIGTERM', 'SIGINT']` */
  readonly signals?: readonly NodeJS.Signals[] | undefined;
  /**
   * After closing, raise the signal again so the process ends as it would have — unless other
   * listeners for it exist (they own the shutdown then). @defaultValue true
   */
  readonly exit?: boolean | undefined;
}

/** A message in the dead-letter stream. */
export interface DeadLetter {
  /** Partition whose DLQ holds it. */
  readonly partition: number;
  /** The DLQ entry id. */
  readonly dlqEntryId: string;
  /** `failed` (attempts exhausted), `expired` (delivered too often without an ack), `invalid`. */
  readonly reason: string;
  /** The last error, in words. */
  readonly error: string;
  /** Attempts made. */
  readonly attempts: number;
  /** Consumers that handled it, oldest first. */
  readonly consumers: readonly string[];
  /** The group that gave up on it. */
  readonly group: string;
  /** The Keel message id (`undefined` for foreign data). */
  readonly id: string | undefined;
  /** The ordering key. */
  readonly key: string | undefined;
  /** The payload (parsed JSON), `undefined` for foreign data. */
  readonly payload: unknown;
  /** Headers. */
  readonly headers: Readonly<Record<string, string>>;
  /** All fields of the DLQ entry, as stored. */
  readonly fields: Readonly<Record<string, string>>;
}

/** Options of {@link Queue.replay} and {@link Queue.deadLetters}. */
export interface ReplayOptions {
  /** Only dead letters for which this returns true. @defaultValue all */
  readonly filter?: ((letter: DeadLetter) => boolean) | undefined;
  /** At most this many. @defaultValue 1000 */
  readonly limit?: number | undefined;
  /** Aborts between entries. */
  readonly signal?: AbortSignal | undefined;
}

const OWNER = 'Queue';
const NAME = /^[^{}\s]{1,200}$/;
const sent = new KeelChannel<{ topic: string; id: string; status: string; time: number }>(
  'queue',
  'send',
);

const spec = {
  client: guardedOption(isQueueClient, 'an ioredis client (evalsha, eval, call, duplicate)', {
    required: true,
  }),
  prefix: stringOption({ default: 'keel:q', nonEmpty: true }),
  partitions: integerOption({ default: 1, min: 1, max: 1024 }),
  dedupWindowMs: integerOption({ default: 3_600_000, min: 1 }),
  retention: nestedOption({
    maxLen: integerOption({ optional: true, min: 1 }),
    maxAgeMs: integerOption({ optional: true, min: 1 }),
  }),
  clock: guardedOption(isClock, 'a Clock ({ now, setTimer })', { default: systemClock }),
};

/** Resolved queue settings, shared with its consumers. @internal */
export type QueueSettings = ReturnType<typeof resolveQueueOptions>;

function resolveQueueOptions(options: unknown) {
  const o = resolveOptions(OWNER, options, spec);
  if (/[{}]/.test(o.prefix) || !isWellFormedText(o.prefix)) {
    throw new InvalidOptionError(
      OWNER,
      'prefix',
      'a prefix without { or } or a lone UTF-16 surrogate',
      o.prefix,
    );
  }
  return o;
}

/**
 * True for a string Redis keeps as given. A lone UTF-16 surrogate is no text: the client sends it
 * as UTF-8, where it becomes U+FFFD, so names (or ids, keys) that differ only there reach Redis
 * as one — one stream for two topics, or a message id answered `duplicate` for another id's
 * dedup record, the message never enqueued.
 */
const isText = (v: unknown): v is string => typeof v === 'string' && isWellFormedText(v);

/** True for a valid topic, group or consumer name (see {@link checkName}). @internal */
export const isName = (value: unknown): value is string =>
  typeof value === 'string' && NAME.test(value) && isWellFormedText(value);

/** Checks a topic, group or consumer name. @internal */
export function checkName(owner: string, what: string, value: unknown): string {
  if (!isName(value)) {
    throw new InvalidOptionError(
      owner,
      what,
      'a non-empty string of at most 200 characters without braces, spaces or a lone UTF-16 surrogate',
      value,
    );
  }
  return value;
}

/**
 * Checks the options of one send (`owner` names the call in the error), as {@link Queue.send},
 * {@link Queue.sendMany} and `Outbox.stage` take them. @internal
 */
export function checkSend(owner: string, o: unknown): void {
  if (o === undefined || plainSend(o)) return;
  // Something to refuse, or an unusual shape: the full check, which names what is wrong.
  resolveOptions(owner, o, {
    key: guardedOption(isText, 'a string (without a lone UTF-16 surrogate)', { optional: true }),
    id: guardedOption(
      (v: unknown): v is string => isText(v) && v !== '',
      'a non-empty string (without a lone UTF-16 surrogate)',
      { optional: true },
    ),
    delayMs: integerOption({ optional: true, min: 0 }),
    headers: guardedOption(isHeaders, 'an object of string values', { optional: true }),
    signal: guardedOption(isAbortSignal, 'an AbortSignal', { optional: true }),
    payload: { parse: (v: unknown) => v },
  });
}

/**
 * The fast check of send options (every send runs it): true when each field is one
 * {@link checkSend}'s full check accepts. False is not a verdict: the full check decides then.
 */
function plainSend(o: unknown): boolean {
  if (typeof o !== 'object' || o === null || Object.getPrototypeOf(o) !== Object.prototype) {
    return false;
  }
  const r = o as Record<string, unknown>;
  for (const name in r) {
    const v = r[name];
    if (v === undefined || name === 'payload') continue;
    switch (name) {
      case 'key':
        if (!isText(v)) return false;
        break;
      case 'id':
        if (!isText(v) || v === '') return false;
        break;
      case 'delayMs':
        if (!Number.isSafeInteger(v) || (v as number) < 0) return false;
        break;
      case 'headers':
        if (!isHeaders(v)) return false;
        break;
      case 'signal':
        if (!isAbortSignal(v)) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

function isHeaders(v: unknown): v is Record<string, string> {
  return (
    typeof v === 'object' &&
    v !== null &&
    !Array.isArray(v) &&
    Object.values(v).every((x) => typeof x === 'string')
  );
}

/**
 * Reliable messaging on Redis Streams: producers `send`, consumers (`consume`) handle each
 * message at least once and ack only after the handler resolves; failures are retried with
 * backoff and, after `maxAttempts`, dead-lettered atomically with the ack.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { Queue } from 'keel/queue';
 *
 * const queue = new Queue({ client: new Redis() });
 * await queue.send('orders', { orderId: 7 }, { key: 'customer:42', id: 'order-7' });
 * const consumer = queue.consume('orders', 'billing', async (message) => {
 *   console.log(message.payload, message.attempt);
 * });
 * await consumer.close();
 * ```
 */
export class Queue implements AsyncDisposable {
  /** @internal */
  readonly settings: QueueSettings;
  readonly #consumers = new Set<Consumer<never>>();
  readonly #signalHandlers = new Set<() => void>();
  /** Partition keys by topic, built once (every send and every delivery needs them). */
  readonly #keys = new Map<string, PartitionKeys[]>();
  #closed = false;

  /**
   * @param options - see {@link QueueOptions}
   * @throws {@link keel!InvalidOptionError} for a bad option
   */
  constructor(options: QueueOptions) {
    this.settings = resolveQueueOptions(options);
    warnIfEvicting(this.settings.client, 'keel/queue');
  }

  /** The keys of partition `p` of `topic`. @internal */
  keys(topic: string, p: number): PartitionKeys {
    let byPartition = this.#keys.get(topic);
    if (byPartition === undefined) {
      // Bounded: a program sending to ever new topic names does not grow this without end.
      if (this.#keys.size >= 1000) this.#keys.clear();
      byPartition = [];
      this.#keys.set(topic, byPartition);
    }
    return (byPartition[p] ??= partitionKeys(this.settings.prefix, topic, p));
  }

  /**
   * The Redis Cluster hash tag (`{topic:p}`) of the partition a key (or id) goes to: name the
   * business keys an {@link Outbox} transaction writes with it, so they share the stream's slot.
   */
  hashTag(topic: string, keyOrId: string): string {
    checkName(OWNER, 'topic', topic);
    if (!isText(keyOrId)) {
      throw new InvalidOptionError(
        OWNER,
        'keyOrId',
        'a string (a message key or id, without a lone UTF-16 surrogate)',
        keyOrId,
      );
    }
    return this.keys(topic, partitionOf(keyOrId, this.settings.partitions)).tag;
  }

  /**
   * Sends one message. Resolves once Redis has it (in the stream, or in the delayed set).
   *
   * @throws {@link keel!InvalidOptionError} for a bad topic or option
   * @throws {@link PayloadError} when the payload is not JSON-serialisable
   * @throws {@link QueueRedisError} when Redis fails
   */
  async send(topic: string, payload: unknown, options?: SendOptions): Promise<SendResult> {
    this.#open();
    checkName(OWNER, 'topic', topic);
    checkSend(`Queue.send(${topic})`, options);
    throwIfAborted(options?.signal);
    const plan = this.plan(topic, { ...options, payload });
    const result = await this.#write(topic, plan);
    if (sent.active) {
      sent.publish({ topic, id: result.id, status: result.status, time: wallTime() });
    }
    return result;
  }

  /**
   * Sends several messages (written together; each is deduplicated and delayed on its own).
   * Results are in input order. A batch of up to 1000 messages is written by one script call,
   * all or nothing: when it fails — Redis out of memory, foreign data at a key it writes — none
   * of it was written, and sending it again duplicates nothing. A longer batch goes in calls of
   * 1000, one after another, and a failed call stops the rest (the earlier calls' messages were
   * written). On a Redis Cluster each partition's messages go in their own calls (a script's
   * keys share one slot), so there a batch is all-or-nothing per partition only. In those two
   * cases give the messages ids, so that sending the batch again after a failure duplicates
   * nothing. The call settles only once none of its writes is still on its way.
   *
   * @throws {@link keel!InvalidOptionError} for a bad topic, item or option
   * @throws {@link PayloadError} when a payload is not JSON-serialisable (nothing is sent)
   * @throws {@link QueueRedisError} when Redis fails (`failure: 'out-of-memory'` when it refused
   * the batch for memory)
   */
  async sendMany<T>(
    topic: string,
    items: readonly SendItem<T>[],
    options?: { readonly signal?: AbortSignal | undefined },
  ): Promise<SendResult[]> {
    this.#open();
    checkName(OWNER, 'topic', topic);
    if (!Array.isArray(items)) {
      throw new InvalidOptionError('Queue.sendMany', 'items', 'an array of { payload, … }', items);
    }
    if (options !== undefined) {
      resolveOptions('Queue.sendMany', options, {
        signal: guardedOption(isAbortSignal, 'an AbortSignal', { optional: true }),
      });
    }
    // By index: `for … of` reads a hole of a sparse array as undefined, which checkSend takes
    // for "no options" — the item then failed deep inside as a payload that is not JSON.
    for (let i = 0; i < items.length; i++) {
      const item: unknown = items[i];
      if (typeof item !== 'object' || item === null) {
        throw new InvalidOptionError(
          'Queue.sendMany',
          `items[${i}]`,
          'an object { payload, … }',
          item,
        );
      }
      checkSend(`Queue.send(${topic})`, item);
    }
    throwIfAborted(options?.signal);
    const plans = items.map((item: SendItem<T>) => this.plan(topic, item));
    if (plans.length < 2) return Promise.all(plans.map((plan) => this.#write(topic, plan)));
    const client = this.settings.client;
    // One script for the batch, so it lands whole or not at all (see SEND) — on a Redis
    // Cluster one per partition, as a script's keys must share a slot (all of one partition's
    // do): there a batch over several partitions is all-or-nothing per partition only.
    const groups = new Map<number, number[]>();
    plans.forEach((plan, i) => {
      const g = client.isCluster === true ? plan.partition : 0;
      const list = groups.get(g);
      if (list === undefined) groups.set(g, [i]);
      else list.push(i);
    });
    const results: SendResult[] = new Array<SendResult>(plans.length);
    // Settled, not raced: a failure is reported only once every partition's call is over, so a
    // caller sending the batch again does not race writes of this one still on their way.
    const outcomes = await Promise.allSettled(
      [...groups.values()].map(async (indexes) => {
        // A long batch in calls of SEND_MAX, one after another: a failed call stops the rest.
        for (let from = 0; from < indexes.length; from += SEND_MAX) {
          const part = indexes.slice(from, from + SEND_MAX);
          const written = await this.#writeMany(
            topic,
            part.map((i) => plans[i] as SendPlan),
          );
          part.forEach((i, j) => (results[i] = written[j] as SendResult));
        }
      }),
    );
    for (const outcome of outcomes) if (outcome.status === 'rejected') throw outcome.reason;
    return results;
  }

  /** Writes plans in one {@link SEND} call (or one transaction): all of them, or (it fails) none. */
  async #writeMany(topic: string, plans: readonly SendPlan[]): Promise<SendResult[]> {
    const stream = (plans[0] as SendPlan).keys.stream;
    if (plans.every((p) => p.window === 0 && p.delayMs === 0 && p.keys.stream === stream)) {
      const tx = transactionOf(this.settings.client);
      if (tx !== undefined) return this.#addMany(topic, stream, plans, tx);
    }
    const { keys, args } = sendCall(plans);
    const reply = (await run(this.settings.client, `send ${topic}`, SEND, keys, args)) as
      unknown[] | null;
    return plans.map((plan, i) => {
      const { id, partition } = plan;
      const code = Number(reply?.[2 * i]);
      return code === 1
        ? { id, partition, status: 'sent', entryId: String(reply?.[2 * i + 1]) }
        : { id, partition, status: code === 2 ? 'delayed' : 'duplicate' };
    });
  }

  /**
   * Adds plain messages (no dedup, no delay) to one stream: their `XADD`s in one `MULTI` …
   * `EXEC`, all or nothing as {@link SEND} is, at about half its Redis CPU (a script's
   * `redis.call('XADD', …)` costs about as much again as the `XADD` itself: ~7 µs against
   * ~3.5 µs per message, measured on Redis 7.0) and with no script call. Out of memory, Redis
   * refuses the whole transaction (`EXECABORT`), whether memory ran out before its commands
   * were queued or before `EXEC`: it holds writes that may grow memory. Foreign data at the
   * stream fails every `XADD` alike (`WRONGTYPE`): nothing is written either.
   */
  async #addMany(
    topic: string,
    stream: string,
    plans: readonly SendPlan[],
    tx: QueuePipeline,
  ): Promise<SendResult[]> {
    const client = this.settings.client;
    for (const plan of plans) tx.call('XADD', stream, '*', ...plan.fields);
    let replies: [Error | null, unknown][] | null;
    try {
      replies = await tx.exec();
    } catch (error) {
      throw new QueueRedisError(`send ${topic}`, client, transactionCause(error));
    }
    const failed = replies?.find(([error]) => error !== null)?.[0];
    if (replies === null || replies.length !== plans.length || failed != null) {
      const landed = replies?.filter(([error]) => error === null).length ?? 0;
      const why = failed?.message ?? 'the transaction was not answered';
      throw new QueueRedisError(
        `send ${topic}`,
        client,
        new Error(
          `${why} (XADD to ${stream}: ${landed === 0 ? 'nothing' : `${landed} of ${plans.length}`} of the batch was sent)`,
          { cause: failed ?? undefined },
        ),
      );
    }
    return plans.map((plan, i) => ({
      id: plan.id,
      partition: plan.partition,
      status: 'sent',
      entryId: String(replies[i]?.[1]),
    }));
  }

  /** The keys and arguments of one send (also what an outbox stages). @internal */
  plan(topic: string, item: SendItem): SendPlan {
    let json: string;
    try {
      json = JSON.stringify(item.payload);
    } catch (error) {
      throw new PayloadError(topic, 'the payload is not JSON-serialisable', error);
    }
    if ((json as string | undefined) === undefined) {
      throw new PayloadError(topic, 'the payload is not JSON-serialisable (undefined)');
    }
    const given = item.id !== undefined;
    const id = item.id ?? randomUUID();
    const key = item.key ?? '';
    const partition = partitionOf(item.key ?? id, this.settings.partitions);
    const keys = this.keys(topic, partition);
    const headers =
      item.headers === undefined || Object.keys(item.headers).length === 0
        ? ''
        : JSON.stringify(item.headers);
    const fields = encodeFields({ id, key, payload: json, headers, sentAt: wallTime() });
    return {
      id,
      partition,
      keys,
      dedup: given ? dedupKey(this.settings.prefix, keys, id) : keys.stream,
      window: given ? this.settings.dedupWindowMs : 0,
      delayMs: item.delayMs ?? 0,
      fields,
    };
  }

  async #write(topic: string, plan: SendPlan): Promise<SendResult> {
    const { id, partition } = plan;
    if (plan.window === 0 && plan.delayMs === 0) {
      // The default path: one XADD, no script.
      const entryId = await command(this.settings.client, `send ${topic}`, 'XADD', [
        plan.keys.stream,
        '*',
        ...plan.fields,
      ]);
      return { id, partition, status: 'sent', entryId: String(entryId) };
    }
    return (await this.#writeMany(topic, [plan]))[0] as SendResult;
  }

  /**
   * Starts a consumer of `topic` in consumer group `group` (created at the start of the stream
   * when missing). See {@link ConsumerOptions}.
   *
   * @throws {@link keel!InvalidOptionError} for a bad name or option
   */
  consume<T = unknown>(
    topic: string,
    group: string,
    handler: Handler<T>,
    options?: ConsumerOptions,
  ): Consumer<T> {
    this.#open();
    const consumer = new Consumer<T>(this, topic, group, handler, options);
    this.#consumers.add(consumer);
    consumer.closed.then(
      () => this.#consumers.delete(consumer as unknown as Consumer<never>),
      () => undefined,
    );
    return consumer;
  }

  /**
   * Applies retention to every partition of `topic` now (consumers also do it on their sweep).
   * Never trims a pending or undelivered entry. Returns how many entries were trimmed.
   */
  async trim(topic: string): Promise<number> {
    checkName(OWNER, 'topic', topic);
    const r = this.settings.retention;
    if (r.maxLen === undefined && r.maxAgeMs === undefined) return 0;
    let total = 0;
    for (let p = 0; p < this.settings.partitions; p++) total += await this.trimPartition(topic, p);
    return total;
  }

  /** @internal */
  async trimPartition(topic: string, p: number): Promise<number> {
    const r = this.settings.retention;
    return Number(
      await run(
        this.settings.client,
        `trim ${topic}`,
        TRIM,
        [this.keys(topic, p).stream],
        [r.maxLen ?? 0, r.maxAgeMs ?? 0],
      ),
    );
  }

  /** Lists dead letters of `topic` (oldest first, up to `limit`). */
  async deadLetters(topic: string, options?: ReplayOptions): Promise<DeadLetter[]> {
    checkName(OWNER, 'topic', topic);
    const o = resolveReplay(options);
    const out: DeadLetter[] = [];
    for (let p = 0; p < this.settings.partitions && out.length < o.limit; p++) {
      throwIfAborted(o.signal);
      for (const letter of await this.#readDlq(topic, p, o.limit)) {
        if (out.length >= o.limit) break;
        if (o.filter === undefined || o.filter(letter)) out.push(letter);
      }
    }
    return out;
  }

  /**
   * Puts dead letters of `topic` back on its stream for the group that gave up on them, with
   * their attempt count reset (each one is moved atomically: removed from the DLQ and added to
   * the stream in one script). Foreign entries (reason `invalid`) are never replayed. Returns
   * how many were replayed.
   */
  async replay(topic: string, options?: ReplayOptions): Promise<number> {
    this.#open();
    const letters = await this.deadLetters(topic, options);
    let n = 0;
    for (const letter of letters) {
      throwIfAborted(options?.signal);
      if (letter.reason === 'invalid' || letter.id === undefined) continue;
      const keys = this.keys(topic, letter.partition);
      const f = letter.fields;
      const fields = [
        'v',
        '1',
        'i',
        letter.id,
        'k',
        f.k ?? '',
        'p',
        f.p ?? 'null',
        'h',
        f.h ?? '',
        't',
        f.t ?? '0',
        'g',
        letter.group,
      ];
      const r = await run(
        this.settings.client,
        `replay ${topic}`,
        REPLAY,
        [keys.dlq, keys.stream],
        [letter.dlqEntryId, ...fields],
      );
      if (r !== 0 && r !== null) n++;
    }
    return n;
  }

  async #readDlq(topic: string, p: number, limit: number): Promise<DeadLetter[]> {
    const reply = (await command(this.settings.client, `dead letters ${topic}`, 'XRANGE', [
      this.keys(topic, p).dlq,
      '-',
      '+',
      'COUNT',
      limit,
    ])) as RawEntry[] | null;
    return (reply ?? []).map(([entryId, raw]) => toDeadLetter(p, String(entryId), raw));
  }

  /**
   * Graceful shutdown on a process signal: on SIGTERM or SIGINT (by default) the queue closes —
   * every consumer stops reading, lets its in-flight handlers finish for up to its
   * `closeTimeoutMs` and acks them, then aborts the rest and hands their messages back for
   * another consumer to take at once — and then the signal is raised again, so the process
   * ends as it would have (unless other listeners for the signal exist: they own the shutdown).
   * Opt-in; dispose the returned subscription to remove the handlers ({@link Queue.close}
   * removes them too).
   *
   * @example
   * ```ts
   * import { Redis } from 'ioredis';
   * import { Queue } from 'keel/queue';
   *
   * const queue = new Queue({ client: new Redis() });
   * queue.consume('orders', 'billing', async () => {});
   * queue.closeOnSignals(); // SIGTERM: finish or hand back in-flight messages, then exit
   * ```
   *
   * @throws {@link keel!InvalidOptionError} for a bad option
   */
  closeOnSignals(options?: CloseOnSignalsOptions): Subscription {
    this.#open();
    const o = resolveOptions('Queue.closeOnSignals', options, {
      signals: signalsOption,
      exit: booleanOption({ default: true }),
    });
    return onShutdownSignals(o.signals, o.exit, () => this.close(), this.#signalHandlers);
  }

  /**
   * Closes every consumer this queue started (the client stays open) and removes the handlers
   * of {@link Queue.closeOnSignals}. Safe to call twice.
   */
  async close(): Promise<void> {
    this.#closed = true;
    for (const remove of [...this.#signalHandlers]) remove();
    await Promise.all([...this.#consumers].map((c) => c.close()));
  }

  /** Same as {@link Queue.close}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #open(): void {
    if (this.#closed) throw new QueueClosedError('Queue');
  }
}

/** The keys and arguments of one planned send. @internal */
export interface SendPlan {
  readonly id: string;
  readonly partition: number;
  readonly keys: PartitionKeys;
  readonly dedup: string;
  readonly window: number;
  readonly delayMs: number;
  readonly fields: readonly string[];
}

/**
 * The KEYS and ARGV of one {@link SEND} call writing `plans` (see its layout): each distinct key
 * once, each message's keys as indexes into them. @internal
 */
export function sendCall(plans: readonly SendPlan[]): {
  keys: string[];
  args: (string | number)[];
} {
  const keys: string[] = [];
  const index = new Map<string, number>();
  const at = (key: string): number => {
    let i = index.get(key);
    if (i === undefined) {
      i = keys.push(key);
      index.set(key, i);
    }
    return i;
  };
  const args: (string | number)[] = [];
  for (const plan of plans) {
    args.push(
      at(plan.keys.stream),
      at(plan.keys.delayed),
      plan.window === 0 ? 0 : at(plan.dedup),
      plan.window,
      plan.delayMs,
      plan.fields.length,
      ...plan.fields,
    );
  }
  return { keys, args };
}

function resolveReplay(options: unknown) {
  return resolveOptions('Queue.replay', options, {
    filter: guardedOption(
      (v: unknown): v is (l: DeadLetter) => boolean => typeof v === 'function',
      'a function',
      { optional: true },
    ),
    limit: integerOption({ default: 1000, min: 1 }),
    signal: guardedOption(isAbortSignal, 'an AbortSignal', { optional: true }),
  });
}

function toDeadLetter(partition: number, dlqEntryId: string, raw: unknown): DeadLetter {
  const list = Array.isArray(raw) ? raw.map((x) => String(x)) : [];
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < list.length; i += 2) fields[list[i] as string] = list[i + 1] as string;
  const message = decodeEntry(dlqEntryId, list);
  let payload: unknown;
  if (message.ok) payload = JSON.parse(message.payloadJson);
  return {
    partition,
    dlqEntryId,
    reason: fields['x:reason'] ?? 'failed',
    error: fields['x:error'] ?? '',
    attempts: Number(fields['x:attempts'] ?? '0'),
    consumers: (fields['x:consumers'] ?? '').split(',').filter((c) => c !== ''),
    group: fields['x:group'] ?? '',
    id: message.ok ? message.id : undefined,
    key: message.ok ? message.key : undefined,
    payload,
    headers: message.ok ? message.headers : {},
    fields,
  };
}
