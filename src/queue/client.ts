/**
 * What the queue needs from a Redis client, and the one place its calls turn client failures
 * into {@link QueueRedisError}s. An ioredis `Redis` or `Cluster` fits as is; no ioredis type
 * appears in the queue's logic.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * @packageDocumentation
 */
import { runScript, type LuaScript } from '../core/index.js';
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

/** Runs `script`, wrapping a client failure as a {@link QueueRedisError} naming `operation`. */
export async function run(
  client: QueueRedisClient,
  operation: string,
  script: LuaScript,
  keys: readonly string[],
  args: readonly (string | number)[],
): Promise<unknown> {
  try {
    return await runScript(client, script, keys, args);
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
