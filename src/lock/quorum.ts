/**
 * The quorum machinery shared by `Redlock` and its semaphores: script rounds over N independent
 * nodes with per-node timeouts and early decisions, and the acquisition loop (attempt, undo,
 * jittered retry, wake-up by release notification).
 *
 * @internal
 * @packageDocumentation
 */
import { sleep, type Clock, type Timer } from '../core/index.js';
import { LockTakenError, QuorumUnavailableError, type NodeVote } from './errors.js';
import type { ReleaseNotifier, Subscription } from './notifier.js';
import type { Script } from './scripts.js';

/**
 * What the lock needs from a Redis client: EVALSHA and EVAL. An ioredis `Redis` fits as is;
 * no ioredis type appears in the lock's logic.
 */
export interface LockClient {
  evalsha(sha: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
}

/** One node's answer in a round. */
export interface NodeResult {
  readonly node: number;
  readonly ok: boolean;
  readonly value?: unknown;
  readonly error?: string;
  /** Had not answered when the round was decided (not a failure of the node). */
  readonly pending?: true;
}

/** Settings of the machinery (resolved Redlock options). */
export interface QuorumSettings {
  readonly clients: readonly LockClient[];
  readonly nodeTimeoutMs: number;
  readonly retryDelayMs: number;
  readonly retryJitterMs: number;
  readonly driftFactor: number;
  readonly clock: Clock;
  readonly random: () => number;
}

/** One kind of acquisition (a lock, a semaphore permit), as the loop drives it. */
export interface AcquirePlan<T> {
  /** For errors: what is being acquired. */
  readonly resources: readonly string[];
  readonly script: Script;
  readonly keys: readonly string[];
  /** Script arguments of one attempt with this token. */
  readonly args: (token: string) => readonly (string | number)[];
  /** Did this node grant the attempt? */
  readonly granted: (r: NodeResult) => boolean;
  /** Sees each attempt's answers once (to report what they carry besides the vote). */
  readonly observe?: (results: readonly NodeResult[]) => void;
  /** When a refusing node expects to free up (ms), if it said; else Infinity. */
  readonly freesIn: (r: NodeResult) => number;
  /** After a quorum granted: the result, or `undefined` to undo and retry. */
  readonly settle: (
    token: string,
    started: number,
    granted: readonly NodeResult[],
  ) => Promise<T | undefined>;
  /** Undo a failed attempt wherever it landed (never publishes a release). */
  readonly undo: (token: string) => Promise<unknown>;
  /** Release channels to wait on when the resource is held. */
  readonly channels: readonly string[];
  /** For LockTakenError: what "taken" means here. */
  readonly takenDetail?: string;
}

/** An unguessable token: 128 random bits (and then some), hex. */
export function newToken(): string {
  return (
    crypto.randomUUID().replaceAll('-', '') + crypto.randomUUID().replaceAll('-', '').slice(0, 8)
  );
}

/** Retries of rounds in which too many nodes failed, before QuorumUnavailableError. */
const UNAVAILABLE_RETRIES = 2;

export class Quorum {
  readonly #s: QuorumSettings;
  readonly #notifier: ReleaseNotifier | undefined;
  /** Nodes that must agree: ⌊N/2⌋ + 1. */
  readonly size: number;

  constructor(settings: QuorumSettings, notifier: ReleaseNotifier | undefined) {
    this.#s = settings;
    this.#notifier = notifier;
    this.size = Math.floor(settings.clients.length / 2) + 1;
  }

  get clock(): Clock {
    return this.#s.clock;
  }

  /** The validity deadline of a grant whose round started at `started`: ttl − drift. */
  deadline(started: number, ttlMs: number): number {
    return started + ttlMs - (ttlMs * this.#s.driftFactor + 2);
  }

  /** How many answers satisfy `yes`. */
  count(results: readonly NodeResult[], yes: (r: NodeResult) => boolean): number {
    let n = 0;
    for (const r of results) if (r.ok && yes(r)) n++;
    return n;
  }

  votes(results: readonly NodeResult[], granted: (r: NodeResult) => boolean): NodeVote[] {
    return results.map((r) =>
      !r.ok
        ? { node: r.node, vote: 'error' as const, error: r.error ?? 'error' }
        : granted(r)
          ? { node: r.node, vote: 'granted' as const }
          : { node: r.node, vote: 'taken' as const },
    );
  }

  /**
   * The acquisition loop: attempt; on a quorum, settle; otherwise undo, and retry — soon after
   * a split vote, on a release notification or the holder's reported expiry when held, after
   * the jittered retry delay otherwise — up to `retryCount` times or until `signal` aborts.
   */
  async acquire<T>(
    plan: AcquirePlan<T>,
    retryCount: number,
    signal: AbortSignal | undefined,
  ): Promise<T> {
    const s = this.#s;
    let lastVotes: NodeVote[] = [];
    let subscription: Subscription | undefined;
    try {
      let delay = 0;
      let seen = 0;
      let unavailable = 0;
      for (let attempt = 0; attempt <= retryCount; attempt++) {
        if (attempt > 0 && delay > 0) {
          if (subscription === undefined) await sleep(delay, { signal, clock: s.clock });
          else await subscription.wait(seen, delay, signal);
        }
        if (subscription !== undefined) seen = subscription.count;
        const token = newToken();
        const started = s.clock.now();
        const results = await this.round(plan.script, plan.keys, plan.args(token), plan.granted);
        plan.observe?.(results);
        lastVotes = this.votes(results, plan.granted);
        const granted = results.filter((r) => r.ok && plan.granted(r));
        if (granted.length >= this.size) {
          const won = await plan.settle(token, started, granted);
          if (won !== undefined) return won;
        }
        // Failed attempt: undo wherever it may have landed (stragglers included), then retry.
        await plan.undo(token);
        // Only real failures count against availability, not nodes the round did not wait for.
        // A round where too many nodes failed may be a blip (a reconnect, a slow first
        // connection): retried, but only twice, so a majority that is down is reported promptly.
        const errors = results.filter((r) => !r.ok && r.pending !== true).length;
        if (errors > s.clients.length - this.size && ++unavailable > UNAVAILABLE_RETRIES) {
          throw new QuorumUnavailableError(plan.resources, lastVotes, this.size);
        }
        if (attempt === retryCount && errors > s.clients.length - this.size) {
          throw new QuorumUnavailableError(plan.resources, lastVotes, this.size);
        }
        delay = s.retryDelayMs + s.random() * s.retryJitterMs;
        if (granted.length > 0) {
          // A split vote: nobody may hold a quorum, so no release will come; retry soon, at a
          // random moment so the contenders stop colliding.
          delay = s.random() * s.retryJitterMs;
        } else if (this.#notifier !== undefined && attempt < retryCount) {
          // Held by someone: wait for their release (pub/sub), or for the hold to expire on
          // the first node that reported it, whichever comes first — polling is the fallback.
          const frees = Math.min(...results.map((r) => (r.ok ? plan.freesIn(r) : Infinity)));
          if (frees >= 0 && frees < delay) delay = frees + 1;
          if (subscription === undefined) {
            subscription = await this.#notifier.subscribe(plan.channels);
            // The holder may have released between our attempt and the subscription: try
            // again at once rather than wait for a message that already went by.
            delay = 0;
          }
        }
      }
    } finally {
      subscription?.[Symbol.dispose]();
    }
    throw new LockTakenError(plan.resources, lastVotes, retryCount + 1, plan.takenDetail);
  }

  /**
   * Runs a script on every node at once, each with its own timeout, and settles as soon as
   * the outcome is known: a quorum answered "yes", or too few nodes are left to make one
   * (`waitAll` waits for every node: releases leave nothing in flight). Nodes not waited for
   * are reported as `pending`.
   */
  round(
    script: Script,
    keys: readonly string[],
    args: readonly (string | number)[],
    yes: (r: NodeResult) => boolean,
    waitAll = false,
  ): Promise<NodeResult[]> {
    const clients = this.#s.clients;
    const n = clients.length;
    return new Promise((resolve) => {
      const results: (NodeResult | undefined)[] = new Array<NodeResult | undefined>(n);
      let settled = false;
      let answered = 0;
      let yeses = 0;
      const finish = (): void => {
        if (settled) return;
        settled = true;
        // Array.from, not map: map skips the holes of nodes that have not answered.
        resolve(
          Array.from(
            { length: n },
            (_, node) =>
              results[node] ?? {
                node,
                ok: false,
                pending: true,
                error: 'pending (decided without it)',
              },
          ),
        );
      };
      clients.forEach((client, node) => {
        void this.#call(client, script, keys, args).then((result) => {
          const r: NodeResult = { node, ...result };
          results[node] = r;
          answered++;
          if (r.ok && yes(r)) yeses++;
          const noes = answered - yeses;
          if (answered === n || (!waitAll && (yeses >= this.size || noes > n - this.size)))
            finish();
        });
      });
    });
  }

  /** One script call on one node, bounded by the per-node timeout; never rejects. */
  async #call(
    client: LockClient,
    script: Script,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<{ ok: boolean; value?: unknown; error?: string }> {
    const { clock, nodeTimeoutMs } = this.#s;
    let timer: Timer | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = clock.setTimer(() => {
        reject(new Error(`timed out after ${nodeTimeoutMs} ms`));
      }, nodeTimeoutMs);
    });
    try {
      const run = async (): Promise<unknown> => {
        try {
          return await client.evalsha(script.sha, keys.length, ...keys, ...args);
        } catch (error) {
          if (error instanceof Error && error.message.includes('NOSCRIPT')) {
            return await client.eval(script.source, keys.length, ...keys, ...args);
          }
          throw error;
        }
      };
      const call = run();
      call.catch(() => undefined);
      const value = await Promise.race([call, timeout]);
      return { ok: true, value };
    } catch (error) {
      return { ok: false, error: error instanceof Error ? error.message : String(error) };
    } finally {
      timer?.cancel();
      timeout.catch(() => undefined);
    }
  }
}
