/**
 * Redis access for saga instances: key layout, one script call per operation, replies decoded
 * into plain data. No decisions here (see state.ts and coordinator.ts).
 *
 * Transitions issued in the same tick share one script call ({@link TransitionBatcher}); each
 * caller still waits for its own transition's reply, so each state change is still one round
 * trip for its caller.
 *
 * Internal module.
 * @packageDocumentation
 */
import {
  lastResolvers,
  pending,
  runScript,
  type LuaScript,
  type ScriptClient,
} from '../core/index.js';
import { SagaStoreError } from './errors.js';
import { CANCEL, CLAIM, LIST, READ, START, TRANSITION, TRANSITIONS } from './scripts.js';
import { decodeRow, shardOf, type Row, type SagaStatus } from './state.js';

/** The store's settings (resolved coordinator options). @internal */
export interface StoreConfig {
  readonly client: ScriptClient;
  readonly prefix: string;
  readonly shards: number;
  readonly leaseMs: number;
  readonly historyLimit: number;
  readonly finishedHistory: number;
  readonly retentionMs: number;
}

/** The keys of one instance and of its shard. @internal */
export interface InstanceKeys {
  /** hash, history, live, fin:completed, fin:compensated, fin:needs-attention */
  readonly all: readonly string[];
  readonly base: string;
}

/** A transition's operation. @internal */
export type TransitionOp =
  'begin' | 'done' | 'next' | 'fail' | 'cbegin' | 'cdone' | 'park' | 'renew';

/** The reply to a transition. @internal */
export type TransitionReply =
  | {
      readonly ok: true;
      readonly version: number;
      readonly now: number;
      readonly lease: number;
      readonly status: SagaStatus;
      readonly cj: number;
      /** The instance's reason (why it compensates, or was parked), if any. */
      readonly why: string | undefined;
    }
  | {
      readonly ok: false;
      readonly why: 'missing' | 'fenced' | 'version' | 'state';
      readonly fence: number;
      readonly version: number;
      readonly status: string;
    };

/**
 * Most transitions one script call carries; a queue that reaches it goes at once, before its tick
 * ends. Why so few: so that Node and Redis work at the same time. A burst of replies wakes many
 * sagas in one tick; had their next transitions all waited for the tick's end, Redis would sit
 * idle while Node handled the whole burst, then Node while Redis ran it — with 100 sagas in
 * flight each transition's wall time was the sum of Node's CPU and Redis's. Sent in chunks, the
 * first chunk runs on the server while Node still handles the rest of the burst. The price is a
 * script call per chunk instead of per tick (0.23 -> ~0.56 calls per saga); measured on a quiet
 * machine, 6 interleaved pairs, 32 against 256: more transitions/s with step I/O in 6 of 6 pairs
 * (+3-30 %), without I/O in 5 of 6 (bench/saga-overlap.ts, see bench/README.md, saga, session 17). A batch also
 * holds the server for all its transitions (about 10 µs each): this bounds that too.
 * @internal
 */
export const MAX_BATCH = 32;

/**
 * Most text (details and op arguments, in UTF-16 code units: at most 3 UTF-8 bytes each) one
 * script call carries. A batch's texts travel joined in one argument ({@link encodeBatch}), so
 * without a cap a tick of large step outputs would make one string past V8's limit (~2²⁹
 * characters: `join` throws) or one bulk string past Redis's `proto-max-bulk-len` (512 MB by
 * default: Redis drops the connection, failing every command on it). A transition that would
 * take its queue past the cap sends the queue first and starts the next one; a single larger
 * transition goes alone, as an unbatched one always did. @internal
 */
export const MAX_BATCH_TEXT = 1 << 20;

/** The texts of one transition, as counted against {@link MAX_BATCH_TEXT}. */
function textOf(item: Queued): number {
  return (item.args[6] as string).length + (item.args[7] as string).length;
}

/** The transitions of one group waiting for the end of the tick, and their texts' size. */
interface Queue {
  readonly items: Queued[];
  text: number;
}

/** A transition (or start) on its way: waiting for the end of the tick, or sent. */
interface Queued {
  /** The saga's name (for the error's message). */
  readonly saga: string;
  readonly keys: readonly string[];
  /** id, owner, fence, version, op, step, detail, op argument */
  readonly args: readonly (string | number)[];
  readonly resolve: (reply: unknown) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * The pieces of a batch's one text argument, written by index and cut to length before the
 * join (cutting a longer array trims it in place; only growing allocates). Reused: a batch is
 * encoded synchronously, start to end.
 */
const batchParts: (string | number)[] = [];

/**
 * The keys and arguments of one {@link TRANSITIONS} call for `items` (each: its six keys, as
 * {@link SagaStore.keys} gives them, and its eight arguments: id, owner, fence, version, op,
 * step, detail, op argument). Each shard's four keys go once, and the owner once: the batch's
 * owner is the first item's, and an item carrying it sends `''` instead — unless some item's
 * owner is `''` itself (no coordinator has one: the option refuses it), in which case the batch's
 * owner is `''` and every item sends its own, so `''` always decodes to what was meant.
 * Every transition's own arguments go in ONE text, joined once (see TRANSITIONS).
 * @internal
 */
export function encodeBatch(
  items: readonly {
    readonly keys: readonly string[];
    readonly args: readonly (string | number)[];
  }[],
  settings: Pick<StoreConfig, 'leaseMs' | 'historyLimit' | 'retentionMs' | 'finishedHistory'>,
): { keys: string[]; args: (string | number)[] } {
  let owner = String(items[0]?.args[1] ?? '');
  for (const item of items) if (item.args[1] === '') owner = '';
  // The result is built in place (no per-item arrays spread together afterwards): the shard
  // keys lead the keys, so a first pass numbers the shards and a second adds each item's own.
  // Runs once per batch; what it allocates per item is paid by every transition.
  const shards = new Map<string, number>();
  const shardKeys: string[] = [];
  /** Each item's shard number, 1..m (m ≤ the number of items). */
  const group = new Uint16Array(items.length);
  for (let i = 0; i < items.length; i++) {
    const k = (items[i] as (typeof items)[number]).keys;
    const live = k[2] as string;
    let g = shards.get(live);
    if (g === undefined) {
      g = shards.size + 1;
      shards.set(live, g);
      shardKeys.push(live, k[3] as string, k[4] as string, k[5] as string);
    }
    group[i] = g;
  }
  // Sized up front (no growth copies): the shard keys, then each item's hash and history.
  const keys = new Array<string>(shardKeys.length + 2 * items.length);
  for (let i = 0; i < shardKeys.length; i++) keys[i] = shardKeys[i] as string;
  // Per transition, eleven pieces joined by `|`: shard, fence, version, op, step, then the
  // UTF-8 byte lengths of owner, detail and op argument (Lua cuts bytes), then those three
  // texts. One argument for the whole batch: the client writes (and Redis parses) one bulk
  // string instead of one per transition, and no text is made per transition on the way.
  const parts = batchParts;
  let j = 0;
  for (let i = 0, at = shardKeys.length; i < items.length; i++, at += 2) {
    const { keys: k, args: a } = items[i] as (typeof items)[number];
    keys[at] = k[0] as string;
    keys[at + 1] = k[1] as string;
    const who = a[1] === owner ? '' : (a[1] as string);
    const detail = a[6] as string;
    const argument = a[7] as string;
    parts[j] = group[i] as number;
    parts[j + 1] = a[2] as string | number;
    parts[j + 2] = a[3] as string | number;
    parts[j + 3] = a[4] as string;
    parts[j + 4] = a[5] as string | number;
    parts[j + 5] = who === '' ? 0 : Buffer.byteLength(who);
    parts[j + 6] = detail === '' ? 0 : Buffer.byteLength(detail);
    parts[j + 7] = argument === '' ? 0 : Buffer.byteLength(argument);
    parts[j + 8] = who;
    parts[j + 9] = detail;
    parts[j + 10] = argument;
    j += 11;
  }
  parts.length = j;
  const joined = parts.join('|');
  // The texts (an op argument is a step's output) are not kept alive until the next batch;
  // `parts.length = 0` would do it but give up the backing store.
  for (let x = 8; x < j; x += 11) {
    parts[x] = '';
    parts[x + 1] = '';
    parts[x + 2] = '';
  }
  return {
    keys,
    args: [
      items.length,
      shards.size,
      settings.leaseMs,
      settings.historyLimit,
      settings.retentionMs,
      settings.finishedHistory,
      owner,
      joined,
    ],
  };
}

/**
 * The integer in `text` from `from` to `to`: digits, or `-` and digits (`cj` is -1 until a saga
 * compensates), read in place; anything else as `Number` reads the text.
 */
function intIn(text: string, from: number, to: number): number {
  if (from === to) return 0; // as Number('')
  const negative = text.charCodeAt(from) === 45 && to - from > 1;
  let n = 0;
  for (let i = negative ? from + 1 : from; i < to; i++) {
    const d = text.charCodeAt(i) - 48;
    if (d < 0 || d > 9 || n > 1e14) return Number(text.slice(from, to));
    n = n * 10 + d;
  }
  return negative ? -n : n;
}

const STATUS_TEXTS: readonly SagaStatus[] = [
  'running',
  'compensating',
  'completed',
  'compensated',
  'needs-attention',
];

/** The status in `text` from `from` to `to`: one of the constants when it is one (no copy). */
function statusIn(text: string, from: number, to: number): string {
  for (const status of STATUS_TEXTS) {
    if (status.length === to - from && text.startsWith(status, from)) return status;
  }
  return text.slice(from, to);
}

/**
 * Decodes a {@link TRANSITION} reply: `1|version|now|lease|cj|status[|why]` or
 * `0|why|fence|version|status` (see scripts.ts). Read in place (no split, no string per number):
 * it runs once per transition. A reply of any other shape is a store error.
 * @internal
 */
export function decodeTransitionReply(reply: unknown): TransitionReply {
  if (typeof reply !== 'string' || reply.length < 2 || reply[1] !== '|') {
    throw new Error(`keel saga: unexpected transition reply ${JSON.stringify(reply)}`);
  }
  const a = 2;
  const b = reply.indexOf('|', a);
  const c = b < 0 ? -1 : reply.indexOf('|', b + 1);
  const d = c < 0 ? -1 : reply.indexOf('|', c + 1);
  if (d < 0) throw new Error(`keel saga: unexpected transition reply ${JSON.stringify(reply)}`);
  if (reply[0] === '0') {
    return {
      ok: false,
      why: reply.slice(a, b) as 'missing',
      fence: intIn(reply, b + 1, c),
      version: intIn(reply, c + 1, d),
      status: reply.slice(d + 1),
    };
  }
  const e = reply.indexOf('|', d + 1);
  if (reply[0] !== '1' || e < 0) {
    throw new Error(`keel saga: unexpected transition reply ${JSON.stringify(reply)}`);
  }
  const f = reply.indexOf('|', e + 1);
  const cjAt = d + 1;
  return {
    ok: true,
    version: intIn(reply, a, b),
    now: intIn(reply, b + 1, c),
    lease: intIn(reply, c + 1, d),
    // cj may be -1: intIn reads anything but digits as Number does.
    cj: intIn(reply, cjAt, e),
    status: statusIn(reply, e + 1, f < 0 ? reply.length : f) as SagaStatus,
    why: f < 0 ? undefined : reply.slice(f + 1),
  };
}

/** A transition's reply inside a batch that raised an error there: `{-1, message}`. */
function batchError(reply: unknown): Error | undefined {
  if (!Array.isArray(reply) || Number(reply[0]) !== -1) return undefined;
  const error = new Error(String(reply[1]));
  error.name = 'ReplyError'; // as ioredis names an error Redis answered
  return error;
}

/** The store error of a failed transition (or start), naming it. */
function storeError(q: Queued, cause: unknown): SagaStoreError {
  const [id, , , , op, step] = q.args;
  const what =
    op === 'start'
      ? `start ${q.saga}/${String(id)}`
      : `${String(op)} step ${String(step)} of ${q.saga}/${String(id)}`;
  return new SagaStoreError(what, { cause });
}

/** Settles `q` by its reply: a transition's decoded, a start's as it is. */
function settle(q: Queued, reply: unknown): void {
  if (q.args[4] === 'start') {
    q.resolve(reply);
    return;
  }
  let decoded: TransitionReply;
  try {
    decoded = decodeTransitionReply(reply);
  } catch (error) {
    q.reject(error); // not a store error: a reply of the wrong shape is not retried
    return;
  }
  q.resolve(decoded);
}

/**
 * Sends transitions (and starts) to Redis, batching the ones issued in the same tick into one
 * call of {@link TRANSITIONS}.
 *
 * Why. Each call on its own is one command: a socket write (a system call), a command for the
 * client library to encode and a reply to parse, and a script run for Redis to dispatch (argument
 * tables, script lookup, reply). With many sagas in flight on one coordinator that per-command
 * cost is most of what a transition costs, on both sides. A batch pays it once and runs each
 * transition's own logic on its own keys, answering each separately; the batch is atomic as a
 * whole, which is never weaker than each transition being atomic.
 *
 * When. A transition issued while none is in flight or queued goes out at once, alone, as
 * {@link TRANSITION} (no added latency when transitions are sparse: a lone saga's state change
 * is one `EVALSHA` as before). One issued while others are in flight waits for the end of the
 * tick (`process.nextTick`: after the microtasks of the burst of replies that woke its saga have
 * run, so the sagas woken by one burst go together) and goes out with the others queued by then,
 * in the order they were issued — a connection runs its commands in the order they are sent, so
 * a heartbeat queued behind a transition of the same saga still lands after it. On Redis Cluster
 * a batch holds the transitions of one hash tag only (one slot), so it never crosses slots.
 * Pattern as in keel/lock's node channel (src/lock/channel.ts).
 */
class TransitionBatcher {
  readonly #config: StoreConfig;
  /** On Redis Cluster: one queue per hash tag (a batch never mixes slots). */
  readonly #perTag: boolean;
  /** Queued transitions by group (`''`, or the shard's `live` key on a Cluster). */
  #queues = new Map<string, Queue>();
  #scheduled = false;
  /** Script calls sent and not answered yet (a batch counts once). */
  #inflight = 0;

  constructor(config: StoreConfig) {
    this.#config = config;
    this.#perTag = (config.client as { isCluster?: unknown }).isCluster === true;
  }

  /**
   * Runs one transition of saga `saga`: `keys` its six keys, `args` its eight arguments (see
   * {@link TRANSITIONS}). Resolves with its decoded reply ({@link decodeTransitionReply}; a
   * start's as Redis answered it), so the store adds no promise of its own per transition;
   * rejects with a {@link SagaStoreError} for the client's error or Redis's (for this
   * transition), or with the decoding error for a reply of the wrong shape.
   */
  send(
    saga: string,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<unknown> {
    // One promise and no executor closure per transition (see core's pending()).
    const promise = pending<unknown>();
    const { resolve, reject } = lastResolvers as Pick<Queued, 'resolve' | 'reject'>;
    const item: Queued = { saga, keys, args, resolve, reject };
    try {
      this.#enqueue(item);
    } catch (error) {
      item.reject(error); // as a throw inside a promise's executor would
    }
    return promise;
  }

  #enqueue(item: Queued): void {
    if (!this.#scheduled && this.#inflight === 0) {
      this.#one(item);
      return;
    }
    const group = this.#perTag ? (item.keys[2] ?? '') : '';
    const text = textOf(item);
    let queue = this.#queues.get(group);
    if (queue !== undefined && queue.text + text > MAX_BATCH_TEXT) {
      // Sent before this one, in issue order (a connection keeps it), and a new queue begun.
      this.#queues.delete(group);
      this.#send(queue.items);
      queue = undefined;
    }
    if (queue === undefined) {
      queue = { items: [], text: 0 };
      this.#queues.set(group, queue);
    }
    queue.items.push(item);
    queue.text += text;
    if (queue.items.length >= MAX_BATCH || queue.text >= MAX_BATCH_TEXT) {
      this.#queues.delete(group);
      this.#send(queue.items);
    }
    if (!this.#scheduled) {
      this.#scheduled = true;
      process.nextTick(this.#endTick);
    }
  }

  readonly #endTick = (): void => {
    this.#scheduled = false;
    const queues = this.#queues;
    this.#queues = new Map();
    for (const queue of queues.values()) this.#send(queue.items);
  };

  /**
   * One write alone: {@link TRANSITION} with its twelve arguments, or {@link START} with its
   * eight for a start.
   */
  #one(item: Queued): void {
    this.#inflight++;
    this.#script(item.keys, item.args).then(
      (reply) => {
        this.#inflight--;
        settle(item, reply);
      },
      (error: unknown) => {
        this.#inflight--;
        item.reject(storeError(item, error));
      },
    );
  }

  #script(keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    const c = this.#config;
    if (args[4] === 'start') {
      return runScript(c.client, START, keys.slice(0, 3), [
        args[0] as string,
        args[1] as string,
        args[6] as string,
        args[7] as string,
        c.leaseMs,
        c.historyLimit,
        args[3] as number,
        args[5] as number,
      ]);
    }
    return runScript(c.client, TRANSITION, keys, [
      args[0] as string,
      args[1] as string,
      args[2] as number,
      args[3] as number,
      c.leaseMs,
      c.historyLimit,
      c.retentionMs,
      c.finishedHistory,
      args[4] as string,
      args[5] as number,
      args[6] as string,
      args[7] as string,
    ]);
  }

  #send(queue: readonly Queued[]): void {
    if (queue.length === 1) {
      this.#one(queue[0] as Queued);
      return;
    }
    const c = this.#config;
    let batch: { keys: string[]; args: (string | number)[] };
    try {
      batch = encodeBatch(queue, c);
    } catch (error) {
      // Not expected (texts are capped per batch, see MAX_BATCH_TEXT); if it happens, every
      // transition of the batch is answered, none left waiting, and the other queues still go.
      for (const q of queue) q.reject(error);
      return;
    }
    const { keys, args } = batch;
    this.#inflight++;
    runScript(c.client, TRANSITIONS, keys, args).then(
      (replies) => {
        this.#inflight--;
        const list = Array.isArray(replies) ? (replies as unknown[]) : [];
        for (let i = 0; i < queue.length; i++) {
          const q = queue[i] as Queued;
          const reply = list[i];
          const error = batchError(reply);
          if (error !== undefined) q.reject(storeError(q, error));
          else if (typeof reply === 'string' || Array.isArray(reply)) settle(q, reply);
          else {
            const missing = new Error('keel saga: no reply for this transition in its batch');
            q.reject(storeError(q, missing));
          }
        }
      },
      (error: unknown) => {
        this.#inflight--;
        for (const q of queue) q.reject(storeError(q, error));
      },
    );
  }
}

/** Saga instance storage on Redis. @internal */
export class SagaStore {
  readonly config: StoreConfig;
  readonly #batcher: TransitionBatcher;

  constructor(config: StoreConfig) {
    this.config = config;
    this.#batcher = new TransitionBatcher(config);
  }

  /** `<prefix>{<saga>:<shard>}:` — every key of the shard starts with it. */
  base(saga: string, shard: number): string {
    return `${this.config.prefix}{${saga}:${shard}}:`;
  }

  keys(saga: string, id: string): InstanceKeys {
    const base = this.base(saga, shardOf(id, this.config.shards));
    return { base, all: shardKeys(base, id) };
  }

  async #run(
    operation: string,
    script: LuaScript,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<unknown> {
    try {
      return await runScript(this.config.client, script, keys, args);
    } catch (error) {
      throw new SagaStoreError(operation, { cause: error });
    }
  }

  /**
   * Starts instance `id` (or finds it: see {@link START}). Batched with the other writes of the
   * tick like a transition: a coordinator given many sagas at once starts them in one call.
   */
  async start(
    saga: string,
    id: string,
    owner: string,
    input: string,
    timeoutMs: number,
    steps: number,
  ): Promise<{
    kind: 'created' | 'claimed' | 'exists' | 'conflict';
    now: number;
    row: Row | undefined;
  }> {
    // A start's arguments in a transition's slots (see TRANSITIONS in scripts.ts). A failure
    // is a SagaStoreError naming the start (see TransitionBatcher.send).
    const reply = (await this.#batcher.send(saga, this.keys(saga, id).all, [
      id,
      owner,
      '',
      timeoutMs,
      'start',
      steps,
      saga,
      input,
    ])) as unknown[];
    if (Number(reply[0]) === 0) return { kind: 'conflict', now: 0, row: undefined };
    const kind = String(reply[1]) as 'created' | 'claimed' | 'exists';
    const now = Number(reply[2]);
    if (kind !== 'created') return { kind, now, row: decodeRow(reply[3] as unknown[]) };
    // What START wrote, known without reading it back.
    const row: Row = {
      saga,
      input,
      status: 'running',
      cur: 0,
      cj: -1,
      phase: 'idle',
      version: 1,
      fence: 1,
      owner,
      leaseUntil: Number(reply[3]),
      // Not reply[4]: Redis turns a Lua number into an integer reply, and a fractional
      // timeoutMs makes a fractional deadline (stored as START wrote it: now + timeoutMs).
      deadline: timeoutMs > 0 ? now + timeoutMs : 0,
      createdAt: now,
      updatedAt: now,
      steps,
      reason: undefined,
      cancel: false,
      outputs: new Map(),
      attempts: new Map(),
      compensations: new Map(),
    };
    return { kind, now, row };
  }

  /**
   * One transition script call. `keys` are the instance's keys ({@link SagaStore.keys}), which a
   * caller driving one instance computes once rather than per transition.
   */
  transition(
    saga: string,
    id: string,
    row: Pick<Row, 'owner' | 'fence' | 'version'>,
    op: TransitionOp,
    step: number,
    detail: string,
    argument: string,
    keys: readonly string[] = this.keys(saga, id).all,
  ): Promise<TransitionReply> {
    // Decoded, and a failure named, by the batcher: no async frame of its own here (one promise
    // less per transition).
    return this.#batcher.send(saga, keys, [
      id,
      row.owner,
      row.fence,
      row.version,
      op,
      step,
      detail,
      argument,
    ]) as Promise<TransitionReply>;
  }

  /** Claims the expired instances of one shard. */
  async claim(
    saga: string,
    shard: number,
    owner: string,
    limit: number,
  ): Promise<{ now: number; rows: [string, Row][]; foreign: string[] }> {
    const c = this.config;
    const base = this.base(saga, shard);
    const reply = (await this.#run(
      `claim ${saga} shard ${shard}`,
      CLAIM,
      [`${base}live`],
      [owner, c.leaseMs, c.historyLimit, limit, base],
    )) as unknown[];
    const flat = (reply[1] ?? []) as unknown[];
    const rows: [string, Row][] = [];
    /** Ids in `live` whose key holds another type (see CLAIM): dropped from recovery. */
    const foreign: string[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const row = decodeRow(flat[i + 1] as unknown[]);
      if (row !== undefined) rows.push([String(flat[i]), row]);
      else foreign.push(String(flat[i]));
    }
    return { now: Number(reply[0]), rows, foreign };
  }

  async read(saga: string, id: string): Promise<{ row: Row; history: string[] } | undefined> {
    const keys = this.keys(saga, id).all;
    const reply = (await this.#run(`read ${saga}/${id}`, READ, keys.slice(0, 2), [
      this.config.historyLimit,
    ])) as unknown[];
    const row = decodeRow((reply[0] ?? []) as unknown[]);
    if (row === undefined) return undefined;
    return { row, history: ((reply[1] ?? []) as unknown[]).map(String) };
  }

  async cancel(saga: string, id: string): Promise<boolean> {
    const reply = await this.#run(
      `cancel ${saga}/${id}`,
      CANCEL,
      this.keys(saga, id).all.slice(0, 1),
      [],
    );
    return Number(reply) === 1;
  }

  async list(
    saga: string,
    status: SagaStatus | '',
    limit: number,
  ): Promise<{ id: string; status: SagaStatus }[]> {
    const out: { id: string; status: SagaStatus }[] = [];
    for (let shard = 0; shard < this.config.shards && out.length < limit; shard++) {
      const base = this.base(saga, shard);
      const keys = shardKeys(base, '').slice(2);
      const flat = (await this.#run(`list ${saga} shard ${shard}`, LIST, keys, [
        status,
        limit - out.length,
        base,
      ])) as unknown[];
      for (let i = 0; i + 1 < flat.length; i += 2) {
        out.push({ id: String(flat[i]), status: String(flat[i + 1]) as SagaStatus });
      }
    }
    return out;
  }
}

function shardKeys(base: string, id: string): string[] {
  return [
    `${base}s:${id}`,
    `${base}h:${id}`,
    `${base}live`,
    `${base}fin:completed`,
    `${base}fin:compensated`,
    `${base}fin:needs-attention`,
  ];
}
