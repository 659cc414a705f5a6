/**
 * Whether a Redis server may evict keys, and a one-time warning when it may. A server with
 * `maxmemory` set evicts keys when it reaches it, under every `maxmemory-policy` but
 * `noeviction` (https://redis.io/docs/latest/develop/reference/eviction/): the `volatile-*`
 * policies take keys that have a ttl — a lock key, a partition lease, an idempotency claim —
 * and the `allkeys-*` policies any key — a fencing counter, a stream of messages, a saga. Keel's
 * locks, queues and sagas need their keys to live until they expire or are deleted, so a server
 * that may evict them is outside their safety envelope. The check reads the configuration once
 * per client (`CONFIG GET maxmemory*`: one command, off every hot path) and, when the server may
 * evict, emits one Node process warning (`process.emitWarning`, type `KeelWarning`, code
 * `KEEL_REDIS_EVICTION`): printed to stderr unless the process handles `'warning'` events or
 * runs with `--no-warnings`. A server that refuses `CONFIG` (an ACL, a renamed command, a
 * managed service) is not judged.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { redisAddress } from './redis-address.js';

/** What the check needs of a client: ioredis's `call` (a standalone client or a Cluster node). */
export interface EvictionCheckClient {
  call(command: string, ...args: (string | number)[]): Promise<unknown>;
}

/** A server's eviction settings, when it may evict. */
export interface EvictionRisk {
  readonly policy: string;
  /** `maxmemory` in bytes (above 0). */
  readonly maxmemory: number;
}

/** `CONFIG GET` answers: a flat name/value list (RESP2) or a map (RESP3, as ioredis gives it). */
function configOf(reply: unknown): Map<string, string> {
  const out = new Map<string, string>();
  if (Array.isArray(reply)) {
    for (let i = 0; i + 1 < reply.length; i += 2) out.set(String(reply[i]), String(reply[i + 1]));
  } else if (reply instanceof Map) {
    for (const [k, v] of reply) out.set(String(k), String(v));
  } else if (typeof reply === 'object' && reply !== null) {
    for (const [k, v] of Object.entries(reply)) out.set(k, String(v));
  }
  return out;
}

/**
 * The server's eviction settings when it may evict keys; `undefined` when it may not
 * (`noeviction`, or no `maxmemory`) or when its configuration cannot be read.
 */
export async function evictionRisk(client: EvictionCheckClient): Promise<EvictionRisk | undefined> {
  let config: Map<string, string>;
  try {
    config = configOf(await client.call('CONFIG', 'GET', 'maxmemory*'));
  } catch {
    return undefined;
  }
  const policy = config.get('maxmemory-policy');
  const maxmemory = Number(config.get('maxmemory'));
  if (policy === undefined || policy === 'noeviction') return undefined;
  if (!Number.isFinite(maxmemory) || maxmemory <= 0) return undefined;
  return { policy, maxmemory };
}

/** Clients already checked (per component: each names itself in its warning). */
const checked = new WeakMap<object, Set<string>>();

/**
 * Checks `client`'s server once for `component` (later calls with the same client do nothing)
 * and warns when it may evict keys. Never throws and never rejects: the check runs in the
 * background. With a Redis Cluster client, each master known when the check runs is checked.
 */
export function warnIfEvicting(client: unknown, component: string): void {
  if (typeof client !== 'object' || client === null) return;
  let components = checked.get(client);
  if (components === undefined) checked.set(client, (components = new Set()));
  if (components.has(component)) return;
  components.add(component);
  const cluster = client as { isCluster?: unknown; nodes?: (role: string) => unknown };
  let targets: readonly unknown[] = [client];
  if (cluster.isCluster === true && typeof cluster.nodes === 'function') {
    const nodes: unknown = cluster.nodes('master');
    targets = Array.isArray(nodes) ? (nodes as unknown[]) : [];
  }
  for (const target of targets) {
    if (typeof (target as Partial<EvictionCheckClient>).call !== 'function') continue;
    void evictionRisk(target as EvictionCheckClient).then((risk) => {
      if (risk === undefined) return;
      process.emitWarning(
        `${component}: Redis at ${redisAddress(target) ?? '?'} may evict keys (maxmemory ` +
          `${risk.maxmemory}, maxmemory-policy ${risk.policy}); its keys must live until they ` +
          `expire or are deleted: use noeviction`,
        { type: 'KeelWarning', code: 'KEEL_REDIS_EVICTION' },
      );
    });
  }
}

/**
 * True for the message of the error Redis gives a write it refuses at `maxmemory` under
 * `noeviction` (`OOM command not allowed when used memory > 'maxmemory'`; in a script, at its
 * first write that could grow memory). Not a bug of the call: nothing was written, and the same
 * call succeeds once memory is freed. Reads, and writes that free memory (`DEL`), still go
 * through.
 */
export function isOutOfMemoryError(message: string): boolean {
  return message.startsWith('OOM ');
}
