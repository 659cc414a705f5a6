/**
 * The seeded fault scheduler of the lock and semaphore chaos suites: a plan of fault episodes
 * computed up front from the seed alone (so a seed reproduces the schedule, whatever the
 * machine's timing), and a runner that carries it out on the Redis harness's nodes while
 * keeping its promises in real time:
 *
 * - at most `maxDown` nodes (a minority) are faulted at once;
 * - an empty restart waits, after the kill, at least twice the lock ttl (Redlock's "delayed
 *   restart": every lock the node held has expired everywhere by then) and empty restarts
 *   happen one at a time, each followed by a settling period of one ttl;
 * - kills that keep data rely on the nodes running with `appendfsync always`;
 * - a full node (`oom`) is one under `noeviction`, the README's advice for lock nodes, and gets
 *   its memory back when the episode ends (or when the runner heals the nodes).
 *
 * @packageDocumentation
 */
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { RedisHarness } from '../support/redis.js';
import { FENCE_REPAIR } from '../../src/lock/scripts.js';
import { between, pickWeighted, prng, sleep } from './config.js';

/** The Redlock's default key prefix (the chaos workers use it). */
const KEY_PREFIX = 'keel:lock:';

/** Every fault kind the lock scheduler knows. */
export const LOCK_FAULTS = [
  /** SIGSTOP for a while (up to 2.5 × ttl), then SIGCONT. */
  'pause',
  /** SIGKILL, down up to one ttl, restart with its data (AOF, appendfsync always). */
  'restart',
  /** SIGKILL, data files deleted, restart empty after ≥ 2 × ttl; one at a time. */
  'restart-empty-delayed',
  /**
   * As `restart-empty-delayed`, and at once after the restart a repairer that dies half-way:
   * it begins a repair session and copies stale values (1) onto the node's fencing counters,
   * then never marks the node — before the Redlocks (reconnecting) repair it themselves.
   */
  'restart-empty-interrupted',
  /** SIGKILL and restart empty at once — outside the documented envelope. */
  'restart-empty',
  /** FLUSHALL on a live node — outside the documented envelope. */
  'flush',
  /**
   * Out of memory for a while (up to 2.5 × ttl) under `noeviction`, as the README advises for
   * lock nodes: `maxmemory` 1 byte, so the node refuses every write that takes memory (a new
   * lock, a counter, a permit), then `maxmemory` 0 again.
   */
  'oom',
  /** SCRIPT FLUSH: the node forgets every cached script (EVALSHA answers NOSCRIPT). */
  'script-flush',
  /**
   * CLIENT KILL of every client connection, then of every subscriber connection: ioredis
   * reconnects, sends what was unanswered again and subscribes again.
   */
  'drop-connections',
] as const;

export type LockFault = (typeof LOCK_FAULTS)[number];

/** The kinds inside the README's safety envelope. */
export const LOCK_ENVELOPE: ReadonlySet<LockFault> = new Set([
  'pause',
  'restart',
  'restart-empty-delayed',
  'restart-empty-interrupted',
  'oom',
  'script-flush',
  'drop-connections',
]);

/** The default mix: everything inside the envelope. */
export const DEFAULT_LOCK_MIX: Readonly<Partial<Record<LockFault, number>>> = {
  pause: 3,
  restart: 2,
  'restart-empty-delayed': 2,
  'restart-empty-interrupted': 1,
  oom: 1,
  'script-flush': 1,
  'drop-connections': 1,
};

/** One planned fault. */
export interface Episode {
  readonly seq: number;
  readonly kind: LockFault;
  readonly node: number;
  /** Planned start, ms after the run starts. */
  readonly at: number;
  /** How long the node stays paused or down. */
  readonly holdMs: number;
}

const isEmpty = (kind: LockFault): boolean => kind.startsWith('restart-empty');
const isDelayed = (kind: LockFault): boolean =>
  kind === 'restart-empty-delayed' || kind === 'restart-empty-interrupted';

/** Plans the fault episodes of one run from its seed (pure: same inputs, same plan). */
export function planFaults(input: {
  readonly seed: number;
  readonly durationMs: number;
  readonly nodes: number;
  readonly maxDown: number;
  readonly ttlMs: number;
  readonly mix: ReadonlyMap<LockFault, number>;
}): Episode[] {
  const { durationMs, nodes, maxDown, ttlMs, mix } = input;
  const random = prng(input.seed ^ 0x5eed);
  const busyUntil = new Array<number>(nodes).fill(0);
  let emptyUntil = 0;
  const plan: Episode[] = [];
  for (let t = between(random, 200, 600); t < durationMs - 500; t += between(random, 150, 900)) {
    const kind = pickWeighted(random, mix);
    const down = busyUntil.filter((until) => until > t).length;
    if (down >= maxDown || (isEmpty(kind) && emptyUntil > t)) continue;
    const free = busyUntil.flatMap((until, node) => (until <= t ? [node] : []));
    const node = free[between(random, 0, free.length - 1)];
    if (node === undefined) continue;
    const holdMs =
      kind === 'pause' || kind === 'oom'
        ? between(random, Math.round(ttlMs / 5), Math.round(ttlMs * 2.5))
        : kind === 'restart'
          ? between(random, 0, ttlMs)
          : isDelayed(kind)
            ? between(random, 2 * ttlMs, 3 * ttlMs)
            : kind === 'restart-empty'
              ? between(random, 0, Math.round(ttlMs / 2))
              : 0;
    // A restart takes a few hundred ms on a loaded machine; after an empty one, let one ttl
    // pass before the next (the runner enforces both in real time as well).
    const settle = isEmpty(kind) ? ttlMs + 300 : 300;
    busyUntil[node] = t + holdMs + settle;
    if (isEmpty(kind)) emptyUntil = t + holdMs + settle;
    plan.push({ seq: plan.length, kind, node, at: t, holdMs });
  }
  return plan;
}

/** What happened to one planned episode. */
export interface EpisodeRecord extends Episode {
  /** Actual start and end, ms after the run started (end: the node answers again). */
  started?: number;
  ended?: number;
  error?: string;
  /** `restart-empty-interrupted`: did the dead repairer write before the Redlocks repaired? */
  staleCopied?: boolean;
}

/**
 * Carries out a plan on a harness. Kept apart from planning so the plan is a pure function
 * of the seed; the runner only delays an episode (never reorders or drops one) to keep the
 * real-time promises listed at the top of this file.
 */
export class FaultRunner {
  readonly #redis: RedisHarness;
  readonly #ttlMs: number;
  readonly #maxDown: number;
  readonly #dirs: readonly string[];
  readonly #counters: readonly string[];
  readonly #busy = new Set<number>();
  #emptyBusy = false;
  readonly records: EpisodeRecord[] = [];

  private constructor(
    redis: RedisHarness,
    ttlMs: number,
    maxDown: number,
    dirs: string[],
    counters: readonly string[],
  ) {
    this.#redis = redis;
    this.#ttlMs = ttlMs;
    this.#maxDown = maxDown;
    this.#dirs = dirs;
    this.#counters = counters;
  }

  /**
   * Learns each node's data directory, for empty restarts. `counters`: the fencing counter keys
   * a `restart-empty-interrupted` writes stale values to.
   */
  static async create(
    redis: RedisHarness,
    ttlMs: number,
    maxDown: number,
    counters: readonly string[] = [],
  ): Promise<FaultRunner> {
    const dirs: string[] = [];
    for (let i = 0; i < redis.size; i++) dirs.push(await dataDirOf(redis, i));
    return new FaultRunner(redis, ttlMs, maxDown, dirs, counters);
  }

  /**
   * Runs `plan` with `t0` (hostNow-free: performance.now()) as time zero; resolves when every
   * episode is over and every node answers again.
   */
  async run(plan: readonly Episode[], t0: number): Promise<void> {
    const running: Promise<void>[] = [];
    for (const episode of plan) {
      await sleep(t0 + episode.at - performance.now());
      while (
        this.#busy.has(episode.node) ||
        this.#busy.size >= this.#maxDown ||
        (isEmpty(episode.kind) && this.#emptyBusy)
      ) {
        await sleep(20);
      }
      const record: EpisodeRecord = { ...episode, started: performance.now() - t0 };
      this.records.push(record);
      this.#busy.add(episode.node);
      if (isEmpty(episode.kind)) this.#emptyBusy = true;
      running.push(
        this.#carryOut(episode, record)
          .catch((error: unknown) => {
            record.error = error instanceof Error ? error.message : String(error);
          })
          .then(async () => {
            record.ended = performance.now() - t0;
            await sleep(isEmpty(episode.kind) ? this.#ttlMs : 0);
            this.#busy.delete(episode.node);
            if (isEmpty(episode.kind)) this.#emptyBusy = false;
          }),
      );
    }
    await Promise.all(running);
  }

  async #carryOut(episode: Episode, record: EpisodeRecord): Promise<void> {
    const redis = this.#redis;
    const node = episode.node;
    switch (episode.kind) {
      case 'pause':
        redis.pause(node);
        await sleep(episode.holdMs);
        redis.resume(node);
        return;
      case 'restart':
        await redis.kill(node);
        await sleep(episode.holdMs);
        await redis.restart(node);
        return;
      case 'restart-empty-delayed':
      case 'restart-empty-interrupted':
      case 'restart-empty': {
        await redis.kill(node);
        const killedAt = performance.now();
        wipeDir(this.#dirs[node]);
        const minimum = isDelayed(episode.kind) ? 2 * this.#ttlMs : 0;
        await sleep(Math.max(episode.holdMs, minimum) - (performance.now() - killedAt));
        await redis.restart(node);
        if (episode.kind === 'restart-empty-interrupted') {
          record.staleCopied = await this.#deadRepairer(node);
        }
        return;
      }
      case 'flush':
        await redis.flush(node);
        return;
      case 'oom':
        await this.#admin(node, async (admin) => {
          await admin.config('SET', 'maxmemory-policy', 'noeviction');
          await admin.config('SET', 'maxmemory', '1');
          await sleep(episode.holdMs);
          await admin.config('SET', 'maxmemory', '0');
        });
        return;
      case 'script-flush':
        await this.#admin(node, async (admin) => {
          await admin.script('FLUSH');
        });
        return;
      case 'drop-connections':
        // The admin connection itself is spared (CLIENT KILL skips the caller by default).
        await this.#admin(node, async (admin) => {
          await admin.call('CLIENT', 'KILL', 'TYPE', 'normal');
          await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
        });
        return;
    }
  }

  /** Runs `work` on a fresh admin connection to `node`, closed afterwards. */
  async #admin(node: number, work: (admin: Redis) => Promise<void>): Promise<void> {
    const admin: Redis = this.#redis.client(node);
    try {
      await work(admin);
    } finally {
      admin.disconnect();
    }
  }

  /**
   * A repairer that dies after its copy step: a session begun on the node, every counter in
   * `counters` raised to 1 (stale: far below the tokens issued), the node never marked. The
   * repair's copy never tags a counter, so these must not count. False when a Redlock had
   * already repaired the node (the session's begin answers 2).
   */
  async #deadRepairer(node: number): Promise<boolean> {
    const admin: Redis = this.#redis.client(node);
    try {
      const keys = [`${KEY_PREFIX}incarnation`, `${KEY_PREFIX}repairing`];
      const run = (more: string[], args: (string | number)[]): Promise<unknown> =>
        admin.eval(FENCE_REPAIR.source, keys.length + more.length, ...keys, ...more, ...args);
      if ((await run([], ['dead-repairer', 'begin', 60_000])) !== 1) return false;
      const ones = this.#counters.map(() => 1);
      await run([...this.#counters], ['dead-repairer', 'copy', 60_000, ...ones]);
      return true;
    } finally {
      admin.disconnect();
    }
  }

  /**
   * Brings every node back (resume the paused, restart the killed, lift a memory limit an `oom`
   * episode cut short left behind); for cleanup paths.
   */
  async heal(): Promise<void> {
    for (const node of this.#redis.nodes) {
      if (node.state === 'paused') this.#redis.resume(node.index);
      else if (node.state === 'killed') await this.#redis.restart(node.index);
    }
    for (const node of this.#redis.nodes) {
      if (node.state !== 'running') continue;
      await this.#admin(node.index, async (admin) => {
        await admin.config('SET', 'maxmemory', '0');
      });
    }
  }

  /** Episodes carried out, by kind. */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const r of this.records) out[r.kind] = (out[r.kind] ?? 0) + 1;
    return out;
  }
}

/** The data directory of harness node `index` (CONFIG GET dir): one of the harness's own. */
export async function dataDirOf(redis: RedisHarness, index: number): Promise<string> {
  const admin: Redis = redis.client(index);
  try {
    const reply = (await admin.config('GET', 'dir')) as unknown[];
    const dir = String(reply[1]);
    // Only ever delete inside the harness's own temporary directories.
    if (!dir.includes('keel-redis-')) throw new Error(`unexpected redis dir ${dir}`);
    return dir;
  } finally {
    admin.disconnect();
  }
}

/** Deletes a killed node's data files (AOF directory, RDB), so it restarts empty. */
export function wipeDir(dir: string | undefined): void {
  if (dir === undefined) return;
  for (const name of readdirSync(dir)) rmSync(join(dir, name), { recursive: true, force: true });
}
