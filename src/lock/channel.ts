/**
 * One node's command channel: runs a lock script with `EVALSHA`, falling back to `EVAL` when
 * the node does not have it cached (`NOSCRIPT`: a restarted or flushed node), and batches the
 * calls issued in the same tick into one command.
 *
 * Why batch. Every call on its own is one command: one socket write (a system call, and a TCP
 * segment for Redis to read), one command object and reply for the client library to build and
 * parse, one script run for Redis to dispatch; under concurrency that is where the time goes,
 * on the client and on the server. A call to a node with nothing queued is sent at once when
 * every answer the node owes is late (its round was decided without it; no added latency when
 * calls are sparse); calls to a node owing answers somebody waits for are collected
 * until the microtasks of the current burst of replies have run (`process.nextTick`) and sent
 * as one `EVALSHA` of the {@link BATCH} script, which runs each call's own script on its
 * own keys and arguments and answers each call separately. Every call is exactly the script it
 * would have run alone; the batch is atomic on the node as a whole, which is never weaker.
 * Order is kept: a node runs its commands in the order they are sent on the connection. Not
 * used for Redis Cluster clients (a batch would mix keys of different slots).
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { redisAddress } from '../core/index.js';
import type { NodeOutcome } from './errors.js';
import { BATCH, type Script } from './scripts.js';

/**
 * What the lock needs from a Redis client: EVALSHA and EVAL. An ioredis `Redis` fits as is;
 * no ioredis type appears in the lock's logic.
 */
export interface LockClient {
  /** `EVALSHA sha numKeys ...keys ...args`: runs a script the node has cached. */
  evalsha(sha: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  /** `EVAL script numKeys ...keys ...args`: the fallback when the node answers `NOSCRIPT`. */
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
}

/**
 * What an ioredis client shows of itself: read when describing a failure, and (`status`,
 * `stream`) to tell whether a call's answer may come from a second copy of it (see
 * {@link sentOn}). Every field is optional: a `LockClient` need not be an ioredis client.
 */
interface ClientView {
  readonly status?: unknown;
  readonly stream?: { readonly errored?: unknown; readonly writable?: unknown } | null;
}

/**
 * The connection a command is written to right now, if the client shows one: ioredis writes a
 * command at once to its `stream` when it is `ready` and the stream writable, and otherwise
 * queues it until it (re)connects. If the stream has been replaced by the time the answer comes,
 * the connection dropped after the command was written, before its reply was read; ioredis then
 * sent it again on the new connection (`autoResendUnfulfilledCommands`, its default), and the
 * first copy may have run — the answer is the second copy's, given after the first one's effects.
 * (A command queued instead is told apart by the connections made ready since: see
 * `NodeChannel.#readies`.)
 */
function sentOn(client: LockClient): object | undefined {
  const view = client as ClientView;
  const stream = view.stream;
  return view.status === 'ready' && stream?.writable === true ? stream : undefined;
}

/**
 * How a client's node is named in errors (see `redisAddress`: `host:port`, or the Sentinel
 * name or Cluster startup nodes), or `node <index>` for a client that says nothing.
 */
export function nodeAddress(client: LockClient, index: number): string {
  return redisAddress(client) ?? `node ${index}`;
}

/** A non-Error rejection, in words. */
const describe = (value: unknown): string =>
  typeof value === 'string' ? value : `a rejection that is not an Error (${typeof value})`;

/** The marker of an error answered by Redis itself (as ioredis names its `ReplyError`). */
const REPLY_ERROR = 'ReplyError';

/** An error a script call answered inside a batch, named as ioredis names Redis's replies. */
function replyError(message: string): Error {
  const error = new Error(message);
  error.name = REPLY_ERROR;
  return error;
}

/** A failed call, classified: what happened, in words, and the client error behind it. */
export interface Failure {
  readonly kind: NodeOutcome;
  readonly error: string;
  readonly cause?: unknown;
}

/** The error with which the client's last connection attempt failed, if it shows one. */
function connectionError(view: ClientView): unknown {
  const errored = view.stream?.errored;
  return errored instanceof Error ? errored : undefined;
}

const isRefused = (error: unknown): boolean =>
  typeof error === 'object' &&
  error !== null &&
  (error as { code?: unknown }).code === 'ECONNREFUSED';

/**
 * Why a node failed a call — `error` is what the client rejected with, or `undefined` when
 * the node did not answer within `timeoutMs`. With ioredis's offline queue a command to a node
 * that is down waits for a reconnection, so the round only ever sees a timeout (or, with
 * `maxRetriesPerRequest`, a retry error) while the real reason is on the client's socket
 * (`stream.errored`, e.g. `ECONNREFUSED`): a client that is not connected (ioredis `status`
 * other than `ready`) whose last connection attempt failed is `connection-refused` (refused)
 * or `not-connected` (another reason), with that connection error as `cause`. Redis's own
 * error replies are `script-error`; a node that is connected (or still connecting) but does
 * not answer in time is `timed-out`.
 */
export function classify(client: LockClient, error: unknown, timeoutMs: number): Failure {
  const view = client as ClientView;
  if (error instanceof Error && error.name === REPLY_ERROR) {
    return { kind: 'script-error', error: error.message, cause: error };
  }
  const status = view.status;
  if (typeof status === 'string' && status !== 'ready') {
    const last = connectionError(view);
    const also = error instanceof Error ? `; ${error.message}` : '';
    if (last instanceof Error) {
      return isRefused(last)
        ? { kind: 'connection-refused', error: `${last.message}${also}`, cause: last }
        : {
            kind: 'not-connected',
            error: `${last.message} (client ${status})${also}`,
            cause: last,
          };
    }
    if (status === 'reconnecting' || status === 'close' || status === 'end') {
      return {
        kind: 'not-connected',
        error: `not connected (client ${status})${also}`,
        ...(error === undefined ? {} : { cause: error }),
      };
    }
  }
  if (error === undefined)
    return { kind: 'timed-out', error: `timed out after ${Math.floor(timeoutMs)} ms` };
  return {
    kind: 'failed',
    error: error instanceof Error ? error.message : describe(error),
    cause: error,
  };
}

/**
 * Receives a call's outcome: `ok` with the reply, or not with the error; `tag` is the number
 * the call was sent with (a round's node index: one handler serves all its nodes). `resent`: the
 * connection the call was written to dropped before its reply was read, and the answer is that of
 * the copy ioredis sent again (see {@link sentOn}). `overtaken`: the call may have run after
 * calls sent behind it had run on the node — by its `EVAL` fallback after `NOSCRIPT` (see
 * `NodeChannel.#failed`), or as a copy sent again (`resent`: ioredis can queue it behind calls
 * issued while it reconnected). `unsent` (with `ok` false): the client failed the call without
 * ever writing it to the node — issued while not connected, and failed before a connection was
 * ready again (ioredis with `enableOfflineQueue: false`, or giving up after
 * `maxRetriesPerRequest`), or thrown synchronously — so it did nothing there.
 */
export type Answer = (
  ok: boolean,
  value: unknown,
  tag: number,
  overtaken?: true,
  resent?: true,
  unsent?: true,
) => void;

interface Queued {
  readonly script: Script;
  readonly numKeys: number;
  readonly argv: readonly (string | number)[];
  readonly answer: Answer;
  readonly tag: number;
}

const isNoScript = (error: unknown): boolean =>
  error instanceof Error && error.message.includes('NOSCRIPT');

/**
 * Sends one call and tells `answer` how it went, once. A client that throws synchronously
 * counts as an error too.
 */
function issue(call: () => Promise<unknown>, answer: (ok: boolean, value: unknown) => void): void {
  let sent: Promise<unknown>;
  try {
    sent = call();
  } catch (error) {
    answer(false, error);
    return;
  }
  sent.then(
    (value) => {
      answer(true, value);
    },
    (error: unknown) => {
      answer(false, error);
    },
  );
}

/**
 * Most arguments one batch may carry. The client is called with them spread (`evalsha(sha, n,
 * ...argv)`), and V8 throws "Maximum call stack size exceeded" for a spread of ~125 000 on
 * Node 20: seven 10 000-resource locks (20 002 arguments each) issued in one tick would make
 * one such batch. A call that would take a batch past this sends what is queued first.
 */
const MAX_BATCH_ARGS = 50_000;

/** Channels that sent or queued a call in the current tick; one `nextTick` ends them all. */
const active: NodeChannel[] = [];
let tickScheduled = false;

function endTick(): void {
  tickScheduled = false;
  // In place (no copy per tick): a channel that queues again while this runs — a call issued
  // from an answer — is pushed behind and ended in this same pass, as a later tick would.
  for (let i = 0; i < active.length; i++) (active[i] as NodeChannel).endTick();
  active.length = 0;
}

/**
 * Most calls one node keeps waiting for its client's next `ready` (see `NodeChannel.whenReady`):
 * undos of failed attempts while the node is unreachable, one per attempt, each for its ttl.
 */
const MAX_WHEN_READY = 1024;

/** A client we can hear (re)connect: ioredis emits `ready` each time a connection is ready. */
interface Readying {
  on(event: 'ready', listener: () => void): unknown;
  off(event: 'ready', listener: () => void): unknown;
}
const canReady = (client: LockClient): client is LockClient & Readying =>
  typeof (client as Partial<Readying>).on === 'function' &&
  typeof (client as Partial<Readying>).off === 'function';

export class NodeChannel {
  readonly #client: LockClient;
  readonly #batching: boolean;
  /**
   * Connections the client made ready so far (until {@link NodeChannel.detach}). A call issued
   * while the client was not ready waits in ioredis's offline queue and is written when the
   * next connection is ready; if another one became ready before its answer came, the one it
   * was written on dropped with the reply unread, and the answer is that of a copy sent again.
   */
  #readies = 0;
  /**
   * Whether the client is an ioredis `Redis` (not a Cluster): it shows its status and
   * connection, and tells of each connection made ready, so a call it failed can be known never
   * written (see {@link Answer}'s `unsent`).
   */
  readonly #tellsReady: boolean;
  /** Whether the client has had a connection ready: the next `ready` is then a reconnection. */
  #connected: boolean;
  /** Told of each reconnection (see {@link NodeChannel.onReconnect}). */
  #reconnected: (() => void) | undefined;
  /** Calls waiting for the client's next `ready` (see {@link NodeChannel.whenReady}). */
  #whenReady: { readonly due: number; readonly call: () => void }[] | undefined;
  /**
   * The channel's one `ready` listener on the client, for all a Redlock needs to hear of it (a
   * listener per use would bring Node's MaxListenersExceededWarning sooner to clients that
   * several Redlocks share).
   */
  readonly #onReady = (): void => {
    this.#readies++;
    const reconnected = this.#connected;
    this.#connected = true;
    const waiting = this.#whenReady;
    this.#whenReady = undefined;
    if (waiting !== undefined) for (const w of waiting) w.call();
    if (reconnected) this.#reconnected?.();
  };
  #queue: Queued[] = [];
  /** Arguments of the queued calls (see MAX_BATCH_ARGS). */
  #queuedArgs = 0;
  #scheduled = false;
  /** Commands sent and not answered yet (a batch counts once). */
  #inflight = 0;
  /** Calls sent or queued and not answered yet (a batch counts each of its calls). */
  #owed = 0;
  /**
   * Of the calls owed, those nobody waits for any more: their round was decided without them
   * (see {@link NodeChannel.late}).
   */
  #late = 0;
  /** Callers of {@link NodeChannel.idle} waiting for the last answer (undefined: none). */
  #idleWaiters: (() => void)[] | undefined;

  constructor(client: LockClient, batching: boolean) {
    this.#client = client;
    this.#batching = batching;
    const status = (client as ClientView).status;
    this.#connected = status === 'ready';
    // A Cluster client shows no connection (`stream`) to tell a call written at once by.
    this.#tellsReady =
      canReady(client) &&
      typeof status === 'string' &&
      (client as { readonly isCluster?: unknown }).isCluster === false;
    if (canReady(client)) client.on('ready', this.#onReady);
  }

  /**
   * Called each time the client reconnects — a `ready` after its first connection (the Redlock's
   * fencing check: the node may have restarted empty); `undefined` stops it.
   */
  set onReconnect(listener: (() => void) | undefined) {
    this.#reconnected = listener;
  }

  /** Stops listening to the client (the Redlock's `close()`: your clients stay yours). */
  detach(): void {
    this.#whenReady = undefined;
    if (canReady(this.#client)) this.#client.off('ready', this.#onReady);
  }

  /**
   * Calls `call` the next time the client has a connection ready (ioredis `ready`; never for a
   * client that does not say), to send again what it failed. `due`: when the call stops
   * mattering, on the clock `now` was read from. At most {@link MAX_WHEN_READY} wait; when that
   * many do, those past due are dropped, and if none is, `call` is not kept (false).
   */
  whenReady(due: number, now: number, call: () => void): boolean {
    if (!canReady(this.#client)) return false;
    let waiting = (this.#whenReady ??= []);
    if (waiting.length >= MAX_WHEN_READY) {
      waiting = this.#whenReady = waiting.filter((w) => w.due > now);
      if (waiting.length >= MAX_WHEN_READY) return false;
    }
    waiting.push({ due, call });
    return true;
  }

  /** How many connections the client has made ready so far (see `#readies`). */
  get readies(): number {
    return this.#readies;
  }

  /** Drops the calls waiting for the next `ready` (the Redlock is closing). */
  forgetWhenReady(): void {
    this.#whenReady = undefined;
  }

  /** The client behind this channel (to describe its failures). */
  get client(): LockClient {
    return this.#client;
  }

  /** Whether a call is in flight or queued (what `Redlock.close()` waits for). */
  get busy(): boolean {
    return this.#inflight > 0 || this.#queue.length > 0;
  }

  /**
   * Resolves once no call is in flight or queued on this node — counting a call's `EVAL`
   * fallback after `NOSCRIPT`, which is sent after the round may have been decided without it.
   */
  idle(): Promise<void> {
    if (!this.busy) return Promise.resolve();
    return new Promise((resolve) => {
      (this.#idleWaiters ??= []).push(resolve);
    });
  }

  /**
   * A command (of `calls` calls) got its answer: one fewer in flight; wake `idle()` callers if
   * that was the last.
   */
  #answered(calls: number): void {
    this.#inflight--;
    this.#owed -= calls;
    const waiters = this.#idleWaiters;
    if (waiters === undefined || this.busy) return;
    this.#idleWaiters = undefined;
    for (const wake of waiters) wake();
  }

  /**
   * A call sent here is owed to a round that was decided without it (its answer will come
   * late); {@link NodeChannel.lateAnswered} when it comes. A call to a node that owes only such
   * answers is not held back for a batch (see {@link NodeChannel.send}).
   */
  late(): void {
    this.#late++;
  }

  /** A call counted by {@link NodeChannel.late} was answered. */
  lateAnswered(): void {
    if (this.#late > 0) this.#late--;
  }

  /**
   * Runs `script` with `numKeys` keys first in `argv` and tells `answer` how it went (once,
   * never synchronously throwing), passing it `tag`. Callbacks rather than a promise: this is
   * the hot path.
   */
  send(
    script: Script,
    numKeys: number,
    argv: readonly (string | number)[],
    answer: Answer,
    tag = 0,
  ): void {
    if (!this.#batching) {
      this.#owed++;
      this.#direct(script, numKeys, argv, answer, tag, 1);
      return;
    }
    // A call goes out at once when nothing is queued for the node and every answer it owes is
    // late — owed to rounds that were decided without it (no added latency when calls are
    // sparse). Late answers are the uncontended case: a round decided at a quorum leaves its
    // slower nodes owing their answer, and the caller's next round (the release after an
    // acquire) reaches them before it comes in; held back, 4 of the 10 calls of an acquire +
    // release waited for the tick's end, each with a queue entry and a tick of their own. While
    // the node owes answers somebody waits for (calls issued faster than it answers), calls
    // wait for the end of the tick and go out together, after what was sent before: the order
    // of the node's commands is the order of the calls either way (nothing is queued when one
    // goes out at once).
    if (!this.#scheduled && this.#owed <= this.#late) {
      this.#owed++;
      this.#direct(script, numKeys, argv, answer, tag, 1);
      return;
    }
    // Too much for one batch: what is queued goes now, in order, and this call starts the next.
    if (this.#queuedArgs + argv.length > MAX_BATCH_ARGS) this.#sendQueued();
    this.#queue.push({ script, numKeys, argv, answer, tag });
    this.#owed++;
    this.#queuedArgs += argv.length + 3;
    if (!this.#scheduled) {
      this.#scheduled = true;
      active.push(this);
      if (!tickScheduled) {
        tickScheduled = true;
        process.nextTick(endTick);
      }
    }
  }

  #direct(
    script: Script,
    numKeys: number,
    argv: readonly (string | number)[],
    answer: Answer,
    tag: number,
    calls: number,
  ): void {
    // Two closures per call (the hot path: every node of every round): the reply handlers.
    this.#inflight++;
    const client = this.#client;
    const on = sentOn(client);
    // Not written at once (queued until the client is ready again): see `#readies`.
    const readies = on === undefined ? this.#readies : 0;
    let sent: Promise<unknown>;
    try {
      sent = this.#client.evalsha(script.sha, numKeys, ...argv);
    } catch (error) {
      this.#failed(script, numKeys, argv, answer, tag, calls, error, true);
      return;
    }
    sent.then(
      (value) => {
        this.#answered(calls);
        if (on === undefined ? this.#readies - readies < 2 : (client as ClientView).stream === on)
          answer(true, value, tag);
        // A copy sent again may also have run after calls made behind it: ioredis, when the
        // connection it reconnected on drops again as it becomes ready, queues what it sends
        // again behind the calls issued meanwhile — an undo or release sent after this call
        // then ran first on the node. So it counts as overtaken too (see `#failed`).
        else answer(true, value, tag, true, true);
      },
      (error: unknown) => {
        // Not written at once, and no connection made ready since: ioredis flushes its offline
        // queue onto a connection before it tells of `ready` (see `#readies`), so the call was
        // still queued when it was failed — never written.
        // (Only for a client that shows its status and tells of `ready`, as ioredis does.)
        const unsent =
          on === undefined &&
          this.#tellsReady &&
          this.#readies === readies &&
          !(error instanceof Error && error.name === REPLY_ERROR);
        this.#failed(script, numKeys, argv, answer, tag, calls, error, unsent);
      },
    );
  }

  /**
   * An EVALSHA failed (or threw): when the node has not cached the script (restarted or
   * flushed), send the script itself; else the call failed.
   *
   * The `EVAL` breaks the channel's order: calls sent after this one on the connection have run
   * on the node already (or will, before the `EVAL`) — e.g. the release of a lock whose acquire
   * this is, decided without this node. Redis answers a connection's commands in the order it
   * runs them, so those calls are exactly the ones still unanswered now besides this one: with
   * any, the answer is marked `overtaken` (over-approximated by calls whose own fallback is
   * pending; only on this rare path), and the caller may have to undo what it did late. The
   * `EVAL` may also be answered by a copy ioredis sent again, as `#direct` tells apart for an
   * `EVALSHA` (the connection it was written on dropped, or it was queued and more than one
   * connection became ready since): that answer is `resent` and `overtaken` too, whatever the
   * count of unanswered calls said when it was sent — ioredis can queue the copy behind calls
   * issued while it reconnected. `unsent`: the call was never written (see {@link Answer}).
   */
  #failed(
    script: Script,
    numKeys: number,
    argv: readonly (string | number)[],
    answer: Answer,
    tag: number,
    calls: number,
    error: unknown,
    unsent: boolean,
  ): void {
    if (!isNoScript(error)) {
      this.#answered(calls);
      answer(false, error, tag, undefined, undefined, unsent || undefined);
      return;
    }
    const client = this.#client;
    const overtaken = this.#inflight > 1 ? true : undefined;
    const on = sentOn(client);
    const readies = on === undefined ? this.#readies : 0;
    issue(
      () => client.eval(script.source, numKeys, ...argv),
      (ok, value) => {
        const resent =
          ok &&
          (on === undefined ? this.#readies - readies >= 2 : (client as ClientView).stream !== on)
            ? true
            : undefined;
        // Answered before it stops counting: a call the answer sends to this node (an undo of
        // an overtaken grant) keeps the channel busy, so `idle()` waits for that one too.
        try {
          answer(ok, value, tag, resent ?? overtaken, resent);
        } finally {
          this.#answered(calls);
        }
      },
    );
  }

  /** The tick is over: send what it queued (as one batch when there are several). */
  endTick(): void {
    this.#scheduled = false;
    this.#sendQueued();
  }

  /** Sends the queued calls (as one batch when there are several). */
  #sendQueued(): void {
    const queue = this.#queue;
    if (queue.length === 0) return;
    this.#queuedArgs = 0;
    if (queue.length === 1) {
      // The one queued call goes alone; the array is kept for the next ones (the common case:
      // a call to a node that still owed a straggler's answer, e.g. a release after an acquire
      // decided without that node).
      const only = queue[0] as Queued;
      queue.length = 0;
      this.#direct(only.script, only.numKeys, only.argv, only.answer, only.tag, 1);
      return;
    }
    this.#queue = [];
    const keys: (string | number)[] = [];
    const args: (string | number)[] = [queue.length];
    for (const q of queue) {
      args.push(q.script.id, q.numKeys, q.argv.length - q.numKeys);
      for (let i = 0; i < q.argv.length; i++) {
        (i < q.numKeys ? keys : args).push(q.argv[i] as string | number);
      }
    }
    this.#direct(
      BATCH,
      keys.length,
      [...keys, ...args],
      (ok, replies, _, overtaken, resent, unsent) => {
        queue.forEach((q, i) => {
          if (!ok) {
            q.answer(false, replies, q.tag, undefined, undefined, unsent);
            return;
          }
          const reply: unknown = Array.isArray(replies) ? replies[i] : undefined;
          if (Array.isArray(reply) && reply[0] === 1) {
            q.answer(true, reply[1] ?? null, q.tag, overtaken, resent);
          } else if (Array.isArray(reply)) q.answer(false, replyError(String(reply[1])), q.tag);
          else q.answer(false, new Error('no reply for this call in the batch'), q.tag);
        });
      },
      0,
      queue.length,
    );
  }
}
