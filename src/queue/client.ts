/**
 * What the queue needs from a Redis client, and the one place its calls turn client failures
 * into {@link QueueRedisError}s. An ioredis `Redis` or `Cluster` fits as is; no ioredis type
 * appears in the queue's logic.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * @packageDocumentation
 */
import { isNoScriptError, runScript, type LuaScript } from '../core/index.js';
import { QueueRedisError } from './errors.js';

/** The commands a queue uses: scripts, any command by name, and a duplicate for blocking reads. */
export interface QueueRedisClient {
  /** Runs a cached script (`EVALSHA`). */
  evalsha(sha: string, numKeys: number, ...args: (string | number | Buffer)[]): Promise<unknown>;
  /** Runs a script from source (`EVAL`), after a `NOSCRIPT`. */
  eval(source: string, numKeys: number, ...args: (string | number | Buffer)[]): Promise<unknown>;
  /** Any command: `XADD`, `XREADGROUP`, `XGROUP`, `XRANGE`, `CLIENT`. */
  call(command: string, ...args: (string | number | Buffer)[]): Promise<unknown>;
  /** A new connection with the same settings (a consumer's blocking reader). */
  duplicate(): QueueRedisClient;
  /** Closes a connection at once (used only on the consumer's own duplicate). */
  disconnect(): void;
  /** `true` for an ioredis `Cluster`. */
  readonly isCluster?: boolean | undefined;
}

/**
 * A batch of commands sent in one write (ioredis's `pipeline()`): each call queues a command,
 * `exec` sends them all and resolves with `[error, reply]` per command, in order.
 */
export interface QueuePipeline {
  /** Queues any command. */
  call(command: string, ...args: (string | number | Buffer)[]): unknown;
  /** Queues a cached script call. */
  evalsha(sha: string, numKeys: number, ...args: (string | number | Buffer)[]): unknown;
  /** Sends the batch. */
  exec(): Promise<[Error | null, unknown][] | null>;
}

/**
 * A new pipeline of `client` when it has one (an ioredis `Redis` or `Cluster` does; a Cluster
 * pipeline must keep to one slot, which one partition's keys do), else `undefined`: the
 * caller then sends its commands one by one.
 */
export function pipelineOf(client: QueueRedisClient): QueuePipeline | undefined {
  const make = (client as { pipeline?: unknown }).pipeline;
  if (typeof make !== 'function') return undefined;
  const pipeline: unknown = (make as () => unknown).call(client);
  const p = pipeline as Partial<QueuePipeline> | null;
  return p !== null &&
    typeof p === 'object' &&
    typeof p.call === 'function' &&
    typeof p.evalsha === 'function' &&
    typeof p.exec === 'function'
    ? (p as QueuePipeline)
    : undefined;
}

/**
 * A new transaction of `client` (ioredis `multi()`: its commands queued, then sent with
 * `MULTI` … `EXEC` in one write) when it has one, else `undefined`.
 */
export function transactionOf(client: QueueRedisClient): QueuePipeline | undefined {
  const make = (client as { multi?: unknown }).multi;
  if (typeof make !== 'function') return undefined;
  const tx: unknown = (make as () => unknown).call(client);
  const t = tx as Partial<QueuePipeline> | null;
  return t !== null &&
    typeof t === 'object' &&
    typeof t.call === 'function' &&
    typeof t.exec === 'function'
    ? (t as QueuePipeline)
    : undefined;
}

/**
 * The error behind a refused transaction: ioredis rejects `exec()` with Redis's `EXECABORT`
 * and lists the errors of the commands refused while queued as `previousErrors`; the first
 * says why (`OOM …` when memory ran out). `EXECABORT … because of: OOM …` (memory ran out
 * after they were queued) is told apart from its text.
 */
export function transactionCause(error: unknown): unknown {
  const previous = (error as { previousErrors?: unknown } | null)?.previousErrors;
  if (Array.isArray(previous) && previous.length > 0) return previous[0];
  const text = error instanceof Error ? error.message : '';
  const because = /^EXECABORT .*because of: (.+)$/s.exec(text)?.[1];
  return because === undefined ? error : new Error(because, { cause: error });
}

/** True for anything shaped like a {@link QueueRedisClient}. */
export function isQueueClient(value: unknown): value is QueueRedisClient {
  if (typeof value !== 'object' || value === null) return false;
  const c = value as Record<string, unknown>;
  return (
    typeof c.evalsha === 'function' &&
    typeof c.eval === 'function' &&
    typeof c.call === 'function' &&
    typeof c.duplicate === 'function' &&
    typeof c.disconnect === 'function'
  );
}

/** Scripts a client's server is known to have cached (run once there): safe to pipeline by hash. */
const cached = new WeakMap<QueueRedisClient, Set<string>>();

/**
 * True once `script` ran on `client`: a pipeline can send it by hash without most of its calls
 * failing with NOSCRIPT on a fresh server (a server restart or SCRIPT FLUSH still can; those
 * calls are sent again). Before that, the caller sends one call alone first.
 */
export function isCached(client: QueueRedisClient, script: LuaScript): boolean {
  return cached.get(client)?.has(script.sha) === true;
}

/** Runs `script`, wrapping a client failure as a {@link QueueRedisError} naming `operation`. */
export async function run(
  client: QueueRedisClient,
  operation: string,
  script: LuaScript,
  keys: readonly string[],
  args: readonly (string | number)[],
): Promise<unknown> {
  try {
    const reply = await runScript(client, script, keys, args);
    let set = cached.get(client);
    if (set === undefined) cached.set(client, (set = new Set()));
    set.add(script.sha);
    return reply;
  } catch (error) {
    throw new QueueRedisError(operation, client, error);
  }
}

/** Runs one command, wrapping a client failure as a {@link QueueRedisError}. */
export async function command(
  client: QueueRedisClient,
  operation: string,
  name: string,
  args: readonly (string | number)[],
): Promise<unknown> {
  try {
    return await client.call(name, ...args);
  } catch (error) {
    throw new QueueRedisError(operation, client, error);
  }
}

/** A stream entry as replies give it: `[entry id, [field, value, …]]`. */
export type RawEntry = [unknown, unknown];

/**
 * The entries of an `XREADGROUP` reply for one stream, whatever the reply mapping: RESP2's
 * `[[key, entries]]`, RESP3 maps flattened to `[key, entries]` (ioredis 6's default), or an
 * object keyed by stream.
 */
export function entriesOf(reply: unknown): RawEntry[] {
  if (reply === null || reply === undefined) return [];
  if (Array.isArray(reply)) {
    if (reply.length === 0) return [];
    const first: unknown = reply[0];
    if (typeof first === 'string' || Buffer.isBuffer(first)) {
      return Array.isArray(reply[1]) ? (reply[1] as RawEntry[]) : [];
    }
    if (Array.isArray(first) && Array.isArray(first[1])) return first[1] as RawEntry[];
    return [];
  }
  if (typeof reply === 'object') {
    const values = Object.values(reply as Record<string, unknown>);
    return Array.isArray(values[0]) ? (values[0] as RawEntry[]) : [];
  }
  return [];
}

/**
 * The names of the streams an `XREAD` over several streams answered with entries, whatever the
 * reply mapping (as {@link entriesOf}: `[[key, entries], …]`, a flattened map
 * `[key, entries, key, entries, …]`, or an object keyed by stream).
 */
export function streamsOf(reply: unknown): string[] {
  if (!Array.isArray(reply))
    return typeof reply === 'object' && reply !== null ? Object.keys(reply) : [];
  // A pair's first item is its stream; in a flattened map the streams are the non-arrays.
  return reply.flatMap((x: unknown) =>
    Array.isArray(x) ? (Array.isArray(x[0]) ? [] : [String(x[0])]) : [String(x)],
  );
}

interface Queued {
  readonly operation: string;
  readonly script: LuaScript;
  readonly keys: readonly string[];
  readonly args: readonly (string | number)[];
  readonly resolve: (reply: unknown) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Script calls made in one tick on one client, sent together in one pipeline: one write and one
 * round trip for many handlers' effects instead of one each (what ioredis's
 * `enableAutoPipelining` does for every command, here only for these calls). Each call still
 * gets its own reply or error; a script the server lacks is sent again alone (`EVAL`). Not on a
 * Redis Cluster client (a Cluster pipeline must keep to one slot; the calls may not).
 */
class ScriptBatch {
  readonly #client: QueueRedisClient;
  #queue: Queued[] = [];
  #scheduled = false;

  constructor(client: QueueRedisClient) {
    this.#client = client;
  }

  run(
    operation: string,
    script: LuaScript,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      this.#queue.push({ operation, script, keys, args, resolve, reject });
      if (this.#scheduled) return;
      this.#scheduled = true;
      process.nextTick(() => {
        this.#flush();
      });
    });
  }

  #flush(): void {
    const items = this.#queue;
    this.#queue = [];
    this.#scheduled = false;
    const alone = (q: Queued): void => {
      void run(this.#client, q.operation, q.script, q.keys, q.args).then(q.resolve, q.reject);
    };
    const first = items[0];
    if (first !== undefined && items.length > 1 && !isCached(this.#client, first.script)) {
      // Not known to the server yet: one call alone (from source if need be), then the rest.
      void run(this.#client, first.operation, first.script, first.keys, first.args).then(
        (reply) => {
          first.resolve(reply);
          this.#queue.push(...items.slice(1));
          this.#flush();
        },
        (error: unknown) => {
          first.reject(error);
          this.#queue.push(...items.slice(1));
          this.#flush();
        },
      );
      return;
    }
    const pipeline = items.length > 1 ? pipelineOf(this.#client) : undefined;
    if (pipeline === undefined) {
      items.forEach(alone);
      return;
    }
    for (const q of items) pipeline.evalsha(q.script.sha, q.keys.length, ...q.keys, ...q.args);
    void pipeline.exec().then(
      (replies) => {
        // A script the server lacks: the first such call goes again alone, from source (which
        // caches it), then the others (by hash).
        let loaded: Promise<unknown> | undefined;
        items.forEach((q, i) => {
          const [error, reply] = replies?.[i] ?? [new Error('no reply'), undefined];
          if (error === null) q.resolve(reply);
          else if (!isNoScriptError(error)) {
            q.reject(new QueueRedisError(q.operation, this.#client, error));
          } else if (loaded === undefined) {
            const first = run(this.#client, q.operation, q.script, q.keys, q.args);
            loaded = first.catch(() => undefined);
            void first.then(q.resolve, q.reject);
          } else {
            void loaded.then(() => {
              alone(q);
            });
          }
        });
      },
      (error: unknown) => {
        for (const q of items) q.reject(new QueueRedisError(q.operation, this.#client, error));
      },
    );
  }
}

const batches = new WeakMap<QueueRedisClient, ScriptBatch>();

/**
 * Runs `script` like {@link run}, but batched with the other calls of this tick on `client`
 * (see {@link ScriptBatch}) when the client can pipeline and is not a Cluster.
 */
export function runBatched(
  client: QueueRedisClient,
  operation: string,
  script: LuaScript,
  keys: readonly string[],
  args: readonly (string | number)[],
): Promise<unknown> {
  if (
    client.isCluster === true ||
    typeof (client as { pipeline?: unknown }).pipeline !== 'function'
  ) {
    return run(client, operation, script, keys, args);
  }
  let batch = batches.get(client);
  if (batch === undefined) {
    batch = new ScriptBatch(client);
    batches.set(client, batch);
  }
  return batch.run(operation, script, keys, args);
}
