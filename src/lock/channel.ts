/**
 * One node's command channel: runs a lock script with `EVALSHA`, falling back to `EVAL` when
 * the node does not have it cached (`NOSCRIPT`: a restarted or flushed node), and batches the
 * calls issued in the same tick into one pipeline.
 *
 * Why batch. Every call on its own is one socket write (a system call, and a TCP segment for
 * Redis to read); under concurrency that is where the time goes, on the client and on the
 * server. The first call of a tick is sent at once; the calls issued after it while the same
 * burst of replies is processed are collected until the microtasks of that burst have run
 * (`process.nextTick`) and then written together as one ioredis pipeline — still one
 * `EVALSHA` per call, each atomic on its own, answered one by one; only the writes are merged. A pipeline is not a transaction (the Redis documentation's
 * "Redis pipelining" page), so nothing about the scripts' semantics changes, and a lone call
 * is sent as it is. Batching is used only for clients that offer `pipeline()` and are not
 * Redis Cluster clients (a cluster pipeline needs every key in one slot).
 *
 * @internal
 * @packageDocumentation
 */
import type { Script } from './scripts.js';

/** A pipeline as the lock uses it. An ioredis pipeline fits as is. */
export interface LockPipeline {
  evalsha(sha: string, numKeys: number, ...args: (string | number)[]): unknown;
  exec(): Promise<[Error | null, unknown][] | null>;
}

/**
 * What the lock needs from a Redis client: EVALSHA and EVAL, and optionally `pipeline()` for
 * batching. An ioredis `Redis` fits as is; no ioredis type appears in the lock's logic.
 */
export interface LockClient {
  evalsha(sha: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  pipeline?(): LockPipeline;
}

interface Queued {
  readonly script: Script;
  readonly numKeys: number;
  readonly argv: readonly (string | number)[];
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

const isNoScript = (error: unknown): boolean =>
  error instanceof Error && error.message.includes('NOSCRIPT');

export class NodeChannel {
  readonly #client: LockClient;
  readonly #batching: boolean;
  #queue: Queued[] = [];
  #scheduled = false;

  constructor(client: LockClient, batching: boolean) {
    this.#client = client;
    this.#batching = batching && typeof client.pipeline === 'function';
  }

  /** Runs `script` with `numKeys` keys first in `argv`; rejects with the node's error. */
  call(script: Script, numKeys: number, argv: readonly (string | number)[]): Promise<unknown> {
    if (!this.#batching) return this.#direct(script, numKeys, argv);
    // The first call of a tick goes out at once (no added latency when calls are sparse); the
    // calls that follow it in the same tick wait for the tick's end and go out together, after
    // it — the order of the node's commands is the order of the calls.
    if (!this.#scheduled) {
      this.#scheduled = true;
      process.nextTick(this.#flush);
      return this.#direct(script, numKeys, argv);
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ script, numKeys, argv, resolve, reject });
    });
  }

  #direct(script: Script, numKeys: number, argv: readonly (string | number)[]): Promise<unknown> {
    const client = this.#client;
    let sent: Promise<unknown>;
    try {
      sent = client.evalsha(script.sha, numKeys, ...argv);
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    return sent.catch((error: unknown) => {
      if (isNoScript(error)) return client.eval(script.source, numKeys, ...argv);
      throw error;
    });
  }

  readonly #flush = (): void => {
    this.#scheduled = false;
    const queue = this.#queue;
    if (queue.length === 0) return;
    this.#queue = [];
    if (queue.length === 1) {
      const only = queue[0] as Queued;
      this.#direct(only.script, only.numKeys, only.argv).then(only.resolve, only.reject);
      return;
    }
    let exec: Promise<[Error | null, unknown][] | null>;
    try {
      const pipeline = (this.#client.pipeline as () => LockPipeline).call(this.#client);
      for (const q of queue) pipeline.evalsha(q.script.sha, q.numKeys, ...q.argv);
      exec = pipeline.exec();
    } catch (error) {
      for (const q of queue) q.reject(error);
      return;
    }
    exec.then(
      (replies) => {
        queue.forEach((q, i) => {
          const [error, value] = replies?.[i] ?? [new Error('no reply in the pipeline'), null];
          if (error === null) q.resolve(value);
          else if (isNoScript(error)) {
            this.#client.eval(q.script.source, q.numKeys, ...q.argv).then(q.resolve, q.reject);
          } else q.reject(error);
        });
      },
      (error: unknown) => {
        for (const q of queue) q.reject(error);
      },
    );
  };
}
