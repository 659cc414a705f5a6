/**
 * Redlock (the algorithm on the Redis documentation's "Distributed Locks with Redis" page) over
 * N independent Redis masters, with fencing tokens.
 *
 * One Lua script per node per attempt, sent to every node at once, each with its own timeout;
 * an attempt is decided as soon as a quorum (⌊N/2⌋ + 1) has granted or a quorum has become
 * impossible, so hung nodes never hold it up. Validity = ttl − elapsed − drift, measured on a
 * monotonic clock; a lock whose validity is not above `minValidityMs` is released and retried,
 * never returned.
 *
 * Fencing tokens. Each node keeps, per resource, a counter that the acquire script INCRs, and
 * (standalone nodes) an incarnation key that only a repair or the first bootstrap writes (see
 * fencing.ts): a node without it has lost its data since its counters were last known good, so
 * only nodes that have it count ("intact" nodes; the acquire script says, one EXISTS inside it).
 * Common path: a quorum of intact granting nodes returned the same counter F; the token is F.
 * Otherwise (they disagree, or too few are intact) the client picks F above every counter it
 * saw and raises the counters of a quorum of intact nodes whose counters were all strictly
 * below F (SETTLE_FENCE; a counter at or above F raises F and the round is repeated). Nodes
 * that answer after the round was decided, or without their incarnation key, are raised to F
 * in the background, so counters do not drift apart.
 *
 * Claim: a lock B whose acquisition round starts after a lock A was returned with token F_A gets
 * a token F_B > F_A, whatever nodes lost their data in between, provided that at every moment
 * fewer than a quorum of nodes had lost their counters unrepaired (rolling restarts, one at a
 * time, repaired as each comes back; otherwise acquisitions fail with `FencingLostError`).
 *
 * Proof sketch. (1) When A returns, a set S of ≥ Q intact nodes holds counters ≥ F_A (the
 * granting nodes that returned F_A, or those raised to it); at most N − Q < Q nodes are outside
 * S. Counters only grow. (2) From then on, every intact node lacking F_A is one of those
 * outside nodes. A node of S loses F_A only with its data, which takes its incarnation key
 * along; it becomes intact again only by a repair whose session began after that loss (the
 * session set goes with the data too), which reads the counters of ≥ Q nodes, each intact for
 * its whole scan — not all outside nodes, so one of them holds ≥ F_A — and raises the node to
 * the maximum: it holds F_A again. A bootstrap marks nodes without reading an intact quorum, but
 * only when no answering node is intact (see the README for what that cannot tell apart).
 * (3) B counts only nodes that were intact when its script ran there, Q of them, all after A
 * returned: by (2) one of them, x, held ≥ F_A. On the common path B's INCR at x returned F_B,
 * so F_B ≥ F_A + 1; on the other path x's counter was strictly below F_B. Before B returns, ≥ Q
 * intact nodes hold ≥ F_B: (1) for B.
 *
 * Tagged counters (see ACQUIRE in scripts.ts): a counter that passed the incarnation check once
 * is marked in its own value and counts without the check afterwards. A tag is written only
 * atomically with finding the incarnation key, never by a repair or a catch-up, and is lost
 * only with the data — so a node counted through a tagged counter had its key, with no loss
 * since, and everything above holds with "intact" read as "intact, or its counter tagged".
 * (The repair still reads only nodes with the key; any ≥ Q of those meet S all the same.)
 *
 * What this does not cover: a node that comes back with part of its data (AOF without
 * `appendfsync always`, an RDB snapshot) — it keeps its incarnation key with counters that may be
 * behind, so (2) fails for it; a majority losing its data at once (detected: FencingLostError);
 * every node, or a majority while all intact nodes are unreachable, losing it at once (not
 * detectable from the data — only durability, AOF with `appendfsync always` on a majority of
 * nodes, prevents it); Redis Cluster clients, where a node-wide key cannot share a slot with
 * every lock key, so the incarnation check is off there and fencing relies on that durability.
 * Lock safety itself needs less: a restarted node only has to stay down for the longest ttl
 * ("delayed restarts"), or persist its keys.
 *
 * @packageDocumentation
 */
import {
  ClosedError,
  isRandomSource,
  booleanOption,
  guardedOption,
  integerOption,
  InvalidOptionError,
  isClock,
  isInvalidOptionError,
  isWellFormedText,
  numberOption,
  redisAddress,
  resolveOptions,
  stringOption,
  systemClock,
  throwIfAborted,
  type Clock,
  type Timer,
  warnIfEvicting,
} from '../core/index.js';
import {
  acquireChannel,
  contendedChannel,
  lostChannel,
  quorumFailedChannel,
  type LockAcquireMessage,
} from './diagnostics.js';
import {
  FencingLostError,
  LockCrossSlotError,
  LockTakenError,
  isFencingLostError,
  isLockCrossSlotError,
  isLockTakenError,
  isLockTooSlowError,
  isQuorumUnavailableError,
  type NodeVote,
} from './errors.js';
import { FenceKeeper } from './fencing.js';
import { Turns } from './turns.js';
import { shortestTtl, ttlExpectation } from './plan.js';
import { ReleaseNotifier, canDuplicate, type DuplicableClient } from './notifier.js';
import type { RoundView } from './plan.js';
import { Quorum, TOO_SLOW, type AcquirePlan, type LockClient, type NodeResult } from './quorum.js';
import { ACQUIRE, EXTEND, RELEASE, SETTLE_FENCE } from './scripts.js';
import { Semaphore, type SemaphoreOptions } from './semaphore.js';
import { hashTag, keySlot } from './slot.js';
import { LockCounters, type AcquireFailure, type RedlockStats } from './stats.js';
import {
  Lock,
  holdWhile,
  holderId,
  resolveAcquire,
  waitDeadline,
  type AcquireOptions,
  type LockObserver,
  type LockService,
  type ReleaseOutcome,
  releaseOutcome,
  type UsingOptions,
} from './lock.js';

export type { LockClient } from './quorum.js';
export type { RedlockStats, DurationSummary, AcquireFailure } from './stats.js';

/** Options of {@link Redlock}. */
export interface RedlockOptions {
  /**
   * One client per independent Redis master (1 for a single-instance lock, 5 usually). A
   * client listed twice, two clients with the same address (`host:port`, socket path, Sentinel
   * group or Cluster seeds), and a client in (RESP2) subscriber or monitor mode are refused
   * with an `InvalidOptionError`: the majority counts servers, and such a client would count
   * one twice, or run no script.
   */
  readonly clients: readonly LockClient[];
  /** Lock time-to-live. @defaultValue 10000 */
  readonly ttlMs?: number;
  /** Clock drift allowance as a fraction of the ttl (plus 2 ms). @defaultValue 0.01 */
  readonly driftFactor?: number;
  /** A lock is returned only if its remaining validity exceeds this. @defaultValue 10 */
  readonly minValidityMs?: number;
  /**
   * Per-node timeout of one script call, plus 0.1 ms per key and argument it passes (a
   * 10 000-resource lock, 20 000 keys: +2 s). @defaultValue 100
   */
  readonly nodeTimeoutMs?: number;
  /**
   * Further attempts after the first when the lock is taken, each after about `retryDelayMs`
   * (sooner when a release notification or the holder's expiry comes first). After a split
   * vote, or while a release is still reaching some nodes, a retry is made sooner and may be
   * spread over several quick attempts within its `retryDelayMs`; only the first of those
   * counts. @defaultValue 10
   */
  readonly retryCount?: number;
  /** Base delay between attempts. @defaultValue 200 */
  readonly retryDelayMs?: number;
  /** Random extra delay, 0 … this, so contenders do not retry in lockstep. @defaultValue 100 */
  readonly retryJitterMs?: number;
  /**
   * Prefix of lock keys. A resource `r` is stored at `<prefix>{r}` (its fencing counter at
   * `<prefix>{r}:fence`), unless the key already has a hash tag — then at `<prefix>r:lock`
   * (counter `<prefix>r:lock:fence`). Each node also gets `<prefix>incarnation` (see the
   * README on fencing across restarts).
   *
   * The keys under the prefix are the Redlock's: repairing a node that restarted empty copies
   * onto it every key under the prefix whose name ends in `:fence` and that holds an integer,
   * taken for a fencing counter (nothing in a key's name or value tells a counter apart from
   * foreign data there). So the prefix must not be empty (`InvalidOptionError`), and no other
   * data should live under it — give the locks a prefix of their own.
   * @defaultValue 'keel:lock:'
   */
  readonly keyPrefix?: string;
  /**
   * Wake waiters through pub/sub when a lock is released, instead of waiting for the next
   * retry. Needs clients that can `duplicate()` (ioredis can): the Redlock then opens one
   * subscriber connection per node while someone waits, and closes them a second after the
   * last waiter is done, or on `close()`. Retries by timer remain the fallback.
   * @defaultValue true
   */
  readonly notifications?: boolean;
  /**
   * Send the script calls issued to a node in the same tick as one command (a batch script
   * that runs each call's own script and answers each separately; see the README). Not used
   * with Redis Cluster clients.
   * @defaultValue true
   */
  readonly batching?: boolean;
  /**
   * Line up this Redlock's acquisitions of one resource (with retries) in the process, oldest
   * first, so only one of them at a time contends in Redis; the turn passes on release. Waiting
   * in line spends the retry budget as polling would.
   * @defaultValue true
   */
  readonly localTurns?: boolean;
  /** Clock for validity, deadlines and retry delays. @defaultValue `systemClock` */
  readonly clock?: Clock;
  /**
   * Random numbers in [0, 1) for retry jitter (tokens come from `node:crypto`, not from this).
   * @defaultValue `Math.random`
   */
  readonly random?: () => number;
}

const OWNER = 'Redlock';

/**
 * Throws an InvalidOptionError naming `clients` unless each client reaches a server of its own
 * and can run scripts. Redlock's majority counts independent servers: one client listed twice,
 * or two clients of one server (the same `host:port`, socket path, Sentinel group or Cluster
 * seeds), gave that server two votes — [a, a, b] granted a lock that b refused. A client in
 * subscriber or monitor mode (ioredis `mode`) runs no script: its node would fail every round.
 * (Two addresses of one server, such as `localhost` and `127.0.0.1`, cannot be told apart.)
 */
function checkClients(clients: readonly LockClient[]): void {
  const seen = new Map<unknown, number>();
  const expected = 'one client per Redis server, each able to run scripts';
  clients.forEach((client, i) => {
    const mode = (client as { mode?: unknown }).mode;
    if (mode === 'subscriber' || mode === 'monitor') {
      throw new InvalidOptionError(
        OWNER,
        'clients',
        expected,
        clients,
        `client ${i} is in ${mode} mode`,
      );
    }
    const address = redisAddress(client);
    const first = seen.get(client) ?? (address === undefined ? undefined : seen.get(address));
    if (first !== undefined) {
      const what = seen.get(client) === undefined ? `both ${String(address)}` : 'the same client';
      throw new InvalidOptionError(
        OWNER,
        'clients',
        expected,
        clients,
        `clients ${first} and ${i} are ${what}`,
      );
    }
    seen.set(client, i);
    if (address !== undefined) seen.set(address, i);
  });
}

/**
 * Throws an InvalidOptionError naming `option` unless `name` is a string without a lone
 * surrogate (`given`: what to show as received). UTF-8 cannot encode a lone surrogate, so the
 * client sends U+FFFD in its place, and names that differ only there ('\uD800', '\uDC00',
 * '\uFFFD') would be one key on the nodes — one lock, or one key twice in a multi-resource lock
 * (whose release then deleted it once and reported the lock lost).
 */
function checkText(owner: string, option: string, name: unknown, given: unknown = name): void {
  if (typeof name !== 'string' || !isWellFormedText(name)) {
    throw new InvalidOptionError(owner, option, 'a string of well-formed Unicode', given);
  }
}

/**
 * Most lock keys a Redlock remembers as its own (to report a refusal by its own lock as held
 * by this process): beyond it, the oldest are forgotten — only that report is lost.
 */
const MAX_OWN_ENTRIES = 100_000;
/** Most resources whose acquisition keys a Redlock keeps built (all dropped at once beyond). */
const MAX_CACHED_KEYS = 1024;

/**
 * The keys of an acquisition: lock keys, their fencing counters, ACQUIRE's KEYS, and the
 * release channels to wait on. The channels are built with the keys (once per resource name
 * for one resource) rather than by a getter on the plan: an object literal with an accessor
 * cost about 1–2 % of an uncontended acquire + release.
 */
interface AcquireKeys {
  readonly lockKeys: readonly string[];
  readonly fenceKeys: readonly string[];
  readonly keys: readonly string[];
  readonly channels: readonly string[];
  /**
   * ACQUIRE's KEYS without the incarnation key (the lock key and its counter): one resource on
   * standalone nodes only, else undefined.
   */
  readonly taggedKeys: readonly string[] | undefined;
  /**
   * The resource's counter was tagged on every node that granted its last acquisition, so the
   * next one sends `taggedKeys` (one key less for every node to take in); cleared when a node
   * answers them with an untagged counter. A hint only: without the incarnation key ACQUIRE
   * counts only tagged counters, never one it cannot vouch for (see ACQUIRE).
   */
  tagged: boolean;
}
/** Background fencing checks that left a node unrepaired are tried again this many times… */
const RECHECKS = 5;
/** …this far apart. */
const RECHECK_MS = 1_000;

const isClientList = (value: unknown): value is readonly LockClient[] =>
  Array.isArray(value) &&
  value.length > 0 &&
  value.every(
    (c: unknown) =>
      typeof c === 'object' &&
      c !== null &&
      typeof (c as LockClient).evalsha === 'function' &&
      typeof (c as LockClient).eval === 'function',
  );

const spec = {
  clients: guardedOption(
    isClientList,
    'a non-empty array of Redis clients (with evalsha and eval)',
    { required: true },
  ),
  ttlMs: integerOption({ min: 1, max: 86_400_000, default: 10_000 }),
  driftFactor: numberOption({ min: 0, max: 0.5, default: 0.01 }),
  minValidityMs: numberOption({ min: 0, max: 86_400_000, default: 10 }),
  nodeTimeoutMs: numberOption({ min: 1, max: 60_000, default: 100 }),
  retryCount: integerOption({ min: 0, max: 1_000_000, default: 10 }),
  retryDelayMs: numberOption({ min: 0, max: 600_000, default: 200 }),
  retryJitterMs: numberOption({ min: 0, max: 600_000, default: 100 }),
  // Not empty: the fencing repair takes every integer key under the prefix named `…:fence` for
  // a counter (see `RedlockOptions.keyPrefix`), and with no prefix that is every such key.
  keyPrefix: stringOption({ default: 'keel:lock:', nonEmpty: true }),
  notifications: booleanOption({ default: true }),
  batching: booleanOption({ default: true }),
  localTurns: booleanOption({ default: true }),
  clock: guardedOption(isClock, 'a Clock', { default: systemClock }),
  random: guardedOption(isRandomSource, 'a function returning numbers in [0, 1)', {
    default: Math.random,
  }),
};

type Resolved = ReturnType<typeof resolveOptions<typeof spec>>;

/**
 * A node granted the attempt: the acquire script answered its fence (negated from a node that
 * lost its incarnation key), or `{1, fence…}` (`{2, fence…}` from such a node).
 */
const isGrant = (r: NodeResult): boolean =>
  typeof r.value === 'number' || (Array.isArray(r.value) && (r.value[0] === 1 || r.value[0] === 2));

/** The fencing counter of resource `i` a granting node returned. */
const fenceOf = (r: NodeResult, i: number): number =>
  typeof r.value === 'number' ? Math.abs(r.value) : Number((r.value as unknown[])[i + 1]);

/**
 * Did a granting node still have its incarnation key, or a tagged counter (its counters count)?
 * On standalone nodes; on Redis Cluster there is no incarnation check, and every grant counts.
 * A negative answer (`-fence`) means "not vouched for": the node lost its data, or — in the
 * two-key form, sent without the incarnation key — its counter is merely not tagged yet (e.g.
 * it missed the grants that tagged the others); either way the next acquisition sends the key,
 * and a stale hint costs one fencing check, never a wrong count.
 */
const intactOf = (r: NodeResult): boolean =>
  typeof r.value === 'number' ? r.value > 0 : (r.value as unknown[])[0] === 1;
const counted = (): boolean => true;

/** How a node is named in errors: `host:port` when the client says, else its index. */
const nameOf = (client: LockClient, node: number): string => {
  const options = (client as { options?: { host?: unknown; port?: unknown } }).options;
  return typeof options?.host === 'string' && typeof options.port === 'number'
    ? `${options.host}:${options.port}`
    : `node ${node}`;
};

/**
 * Who holds the lock on a refusing node (`{0, index, pttl, holder}`): the holder's id (see
 * `holderId`), or `undefined` when the node did not say.
 */
const holderOf = (r: NodeResult): string | undefined => {
  if (!Array.isArray(r.value) || r.value[0] !== 0) return undefined;
  const holder: unknown = r.value[3];
  return typeof holder === 'string' && holder !== '' ? holder : undefined;
};

/** The remaining ttl a refusing node reported (`{0, index, pttl, holder}`), or Infinity. */
const pttlOf = (r: NodeResult): number => {
  const pttl = Array.isArray(r.value) ? Number(r.value[2]) : NaN;
  return Number.isFinite(pttl) && pttl >= 0 ? pttl : Infinity;
};

/** What an acquisition's plan asks of its Redlock (made once per Redlock: no closures per call). */
interface AttemptHost {
  readonly quorum: Quorum;
  readonly minValidityMs: number;
  readonly ownHolder: (holder: string, keys: readonly string[]) => boolean;
  settle(
    attempt: LockAttempt,
    token: string,
    started: number,
    granted: readonly NodeResult[],
  ): Lock | undefined | typeof TOO_SLOW | Promise<Lock | undefined | typeof TOO_SLOW>;
  catchUp(fenceKeys: readonly string[], fences: readonly number[], r: NodeResult): void;
  /** Is `key` held by this Redlock with `token` (acquired and not released since)? */
  holds(key: string, token: string): boolean;
  refused(attempt: LockAttempt, results: readonly NodeResult[], view: RoundView): void;
}

/**
 * A release round's yes for one key (made once: a release is the hot path). An answer of a copy
 * sent again (`resent`: the connection dropped with the reply unread) is a yes whatever it says:
 * the first copy may have deleted the key, and the second then finds it gone (or taken by the
 * next holder) — nothing in it shows the lock was lost before the release (see the README).
 */
const releasedOne = (r: NodeResult): boolean => Number(r.value) === 1 || r.resent === true;
/** A release round's yes for `n` keys: the node deleted every one (or see `releasedOne`). */
const releasedAll =
  (n: number) =>
  (r: NodeResult): boolean =>
    Number(r.value) === n || r.resent === true;

/**
 * One acquisition of a Redlock, as the plan `Quorum.acquire` executes: its keys and settings,
 * and what its rounds learned. A class rather than an object literal of closures: an
 * uncontended acquire used to make eight closures (and their context) for its plan.
 */
class LockAttempt implements AcquirePlan<Lock> {
  readonly script = ACQUIRE;
  readonly granted = isGrant;
  readonly freesIn = pttlOf;
  readonly heldBy = holderOf;
  readonly ownHolder: (holder: string, keys: readonly string[]) => boolean;
  readonly minValidityMs: number;
  readonly lockKeys: readonly string[];
  readonly fenceKeys: readonly string[];
  readonly keys: readonly string[];
  readonly channels: readonly string[];
  /** The keys it was made from (their `tagged` hint is kept there, per resource). */
  readonly source: AcquireKeys;
  /** Sent without the incarnation key (see `AcquireKeys.tagged`). */
  readonly tagged: boolean;
  /** The attempt that won (its token) and its fencing tokens, for late nodes. */
  wonWith: string | undefined = undefined;
  fences: readonly number[] | undefined = undefined;
  /** Set when an attempt was undone because the nodes' counters had to be repaired first. */
  repaired = false;
  /** When the lock was granted (the clock read of `Redlock.#made`), for the wait time. */
  grantedAt = 0;
  /** Rounds made so far, and the last one's answers. */
  rounds = 0;
  last: readonly NodeResult[] | undefined = undefined;
  /** Found the resource held (counted once), and waiting for it now (see `Redlock.stats`). */
  contended = false;
  waiting = false;

  constructor(
    readonly host: AttemptHost,
    readonly resources: readonly string[],
    keys: AcquireKeys,
    readonly ttlMs: number,
    /** The local turn's key (see `localTurns`), if the acquisition lines up for one. */
    readonly line: string | undefined,
    readonly retryCount: number,
    readonly deadline: number | undefined,
    readonly message: LockAcquireMessage | undefined,
  ) {
    this.ownHolder = host.ownHolder;
    this.minValidityMs = host.minValidityMs;
    this.lockKeys = keys.lockKeys;
    this.fenceKeys = keys.fenceKeys;
    this.channels = keys.channels;
    this.source = keys;
    const taggedKeys = keys.tagged ? keys.taggedKeys : undefined;
    this.tagged = taggedKeys !== undefined;
    this.keys = taggedKeys ?? keys.keys;
  }

  /** See {@link AcquirePlan.firstRoundUnmarked}. */
  readonly firstRoundUnmarked = true;

  /**
   * ACQUIRE's arguments: the token and ttl, and from the second round on a flag: a refusal
   * marks interest in the release (see `WAITING_MARK`). The first round goes without: most acquisitions succeed
   * at once, and every argument costs the client and each node (about 2 % of a node's work
   * per acquire + release, measured in instructions); a waiter's first wait is preceded by a
   * round that marks it (see `firstRoundUnmarked`).
   */
  args(token: string): readonly (string | number)[] {
    // The ttl as the client sends it (an integer, in decimal), made once per round rather than
    // by the client once per node.
    const ttl = String(this.ttlMs);
    return ++this.rounds === 1 ? [token, ttl] : [token, ttl, '1'];
  }

  settle(
    token: string,
    started: number,
    granted: readonly NodeResult[],
  ): Lock | undefined | typeof TOO_SLOW | Promise<Lock | undefined | typeof TOO_SLOW> {
    return this.host.settle(this, token, started, granted);
  }

  /** An attempt undone after a repair is made again at once, not counted as a retry. */
  retryAtOnce(): boolean {
    const again = this.repaired;
    this.repaired = false;
    return again;
  }

  late(token: string, r: NodeResult): void {
    // A grant that ran on the node after calls sent behind it (its EVAL after NOSCRIPT, or a
    // copy ioredis sent again) may have landed after this token's release or undo there, and would hold the key until the
    // ttl: release it on that node unless the lock is held (its release, sent later, lands
    // after). In doubt it is released: a late grant was never counted in the lock's quorum.
    if (r.overtaken === true && isGrant(r) && !this.host.holds(this.lockKeys[0] as string, token))
      void this.undo(token, [r.node]);
    const fences = this.fences;
    if (this.wonWith === token && fences !== undefined)
      this.host.catchUp(this.fenceKeys, fences, r);
  }

  undo(token: string, nodes: readonly number[]): Promise<unknown> {
    return this.host.quorum.undo(RELEASE, this.lockKeys, [token, '0'], nodes, this.ttlMs);
  }

  observe(results: readonly NodeResult[]): void {
    this.last = results;
  }

  refused(results: readonly NodeResult[], view: RoundView): void {
    this.host.refused(this, results, view);
  }
}

/** Does a granting node hold counters at least `fences` (every resource)? */
function atLeast(r: NodeResult, fences: readonly number[]): boolean {
  for (let i = 0; i < fences.length; i++) if (fenceOf(r, i) < (fences[i] as number)) return false;
  return true;
}

/** Reads a lock's signal, which arms its loss timer (so a loss is seen, and published, when it happens). */
function watchLoss(lock: Lock): AbortSignal {
  return lock.signal;
}

/** Why an acquisition failed, for the stats. */
function failureOf(error: unknown, signal: AbortSignal | undefined): AcquireFailure {
  if (signal?.aborted === true && error === signal.reason) return 'aborted';
  if (isLockTakenError(error)) return 'taken';
  if (isQuorumUnavailableError(error)) return 'unavailable';
  if (isLockTooSlowError(error)) return 'too-slow';
  if (isFencingLostError(error)) return 'fencing-lost';
  if (isInvalidOptionError(error) || isLockCrossSlotError(error)) return 'invalid';
  return 'other';
}

/**
 * Redlock over several independent Redis masters.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { Redlock } from 'keel/lock';
 *
 * const redlock = new Redlock({
 *   clients: [6379, 6380, 6381].map((port) => new Redis({ port, lazyConnect: true })),
 *   ttlMs: 5_000,
 * });
 * const lock = await redlock.acquire('sku:1234');
 * try {
 *   // write stock for sku:1234, passing lock.fencingToken to the store
 *   console.log(lock.fencingToken, lock.validUntil);
 * } finally {
 *   await lock.release();
 * }
 * ```
 */
export class Redlock implements LockService, AsyncDisposable {
  // Also the LockBackend of its Locks (checked where it passes `this` to `Lock.made`), but
  // not declared with `implements`: that interface is internal, and the .d.ts build strips it.
  readonly #o: Resolved;
  readonly #q: Quorum;
  readonly #cluster: boolean;
  readonly #notifier: ReleaseNotifier | undefined;
  readonly #turns: Turns;
  /**
   * Lock key → token of the lock this Redlock last granted on it, until released: so that a
   * refusal by our own lock is reported as held by this process (read only on refusals).
   */
  readonly #mine = new Map<string, string>();
  /** Resource → its acquisition keys, for the resources acquired lately (see `#keysOfOne`). */
  readonly #keyCache = new Map<string, AcquireKeys>();
  /** The shortest ttl that can leave more than `minValidityMs` of validity (see `#checkTtl`). */
  readonly #minTtlMs: number;
  /** Incarnation checks and repairs of the fencing counters (standalone nodes only). */
  readonly #fence: FenceKeeper | undefined;
  /** Do a granting node's counters count? (`intactOf`; on Redis Cluster, always.) */
  readonly #intactOf: (r: NodeResult) => boolean;
  /** Whether reconnections start fencing checks (from the first acquisition until `close()`). */
  #watching = false;
  /** A fencing check scheduled again (see `#checkFencing`). */
  #recheck: Timer | undefined;
  /** The attempt number the pending recheck runs as (see `#checkFencing`). */
  #recheckAttempt = 0;
  /** Set by {@link Redlock.close}. */
  #closed = false;
  /** What `stats()` reports. */
  readonly #counters = new LockCounters();
  /** What the acquisitions' plans call back (see `LockAttempt`). */
  readonly #host: AttemptHost;
  /** The delay between attempts, for waiting in a local turn (made once: no closure per call). */
  readonly #retryDelay = (): number => this.#q.retryDelay();
  /**
   * What this Redlock's locks report (extensions, the end of each hold), and the nodes the
   * diagnostics messages name.
   *
   * @internal
   */
  readonly observer: LockObserver;

  constructor(options: RedlockOptions) {
    this.#o = resolveOptions(OWNER, options, spec);
    checkText(OWNER, 'keyPrefix', this.#o.keyPrefix);
    checkClients(this.#o.clients);
    this.#minTtlMs = shortestTtl(this.#o.minValidityMs, this.#o.driftFactor);
    this.#checkTtl(OWNER, this.#o.ttlMs);
    this.#cluster = this.#o.clients.some((c) => (c as { isCluster?: unknown }).isCluster === true);
    const clients = this.#o.clients;
    // A node that may evict keys (maxmemory with a policy other than noeviction) can drop a
    // held lock's key before its ttl: warned about once per client (see core/eviction.ts).
    for (const c of clients) warnIfEvicting(c, 'keel/lock');
    const duplicable = clients.filter((c): c is LockClient & DuplicableClient => canDuplicate(c));
    this.#notifier =
      this.#o.notifications && duplicable.length === clients.length
        ? new ReleaseNotifier(duplicable, this.#o.clock, this.#o.nodeTimeoutMs)
        : undefined;
    this.#turns = new Turns(this.#o.clock);
    this.#q = new Quorum(
      { ...this.#o, batching: this.#o.batching && !this.#cluster },
      this.#notifier,
    );
    this.#fence = this.#cluster ? undefined : new FenceKeeper(this.#q, this.#o.keyPrefix);
    this.#intactOf = this.#cluster ? counted : intactOf;
    const q = this.#q;
    this.#host = {
      quorum: q,
      minValidityMs: this.#o.minValidityMs,
      ownHolder: this.#ownHolder,
      settle: (attempt, token, started, granted) =>
        this.#settleAttempt(attempt, token, started, granted),
      catchUp: (fenceKeys, fences, r) => {
        this.#catchUp(fenceKeys, fences, r);
      },
      holds: (key, token) => this.#mine.get(key) === token,
      refused: (attempt, results, view) => {
        this.#refused(attempt, results, view);
      },
    };
    const nodes = Object.freeze(clients.map((_, node) => q.address(node)));
    const counters = this.#counters;
    this.observer = {
      nodes,
      quorum: q.size,
      extended: () => {
        counters.extensions++;
      },
      ended: (lock, lost, heldMs) => {
        counters.held--;
        counters.hold.record(heldMs);
        if (lost === undefined) return;
        counters.lost++;
        if (lostChannel.active) {
          lostChannel.publish({
            resources: lock.resources,
            nodes,
            fencingToken: lock.fencingToken,
            kind: lost.kind,
            reason: lost.message,
            error: lost,
            holdMs: heldMs,
            validUntil: lock.validUntil,
            time: Date.now(),
          });
        }
      },
    };
  }

  /**
   * A ttl that cannot leave more than `minValidityMs` of validity even if the round took no
   * time is refused at once: every attempt would be granted, found too short and undone.
   */
  #checkTtl(owner: string, ttlMs: number): void {
    if (ttlMs >= this.#minTtlMs) return;
    throw new InvalidOptionError(
      owner,
      'ttlMs',
      ttlExpectation(this.#minTtlMs, this.#o.minValidityMs, this.#o.driftFactor),
      ttlMs,
    );
  }

  /** Is `holder` (a holder id a node refused with) a lock of this Redlock on one of `keys`? */
  readonly #ownHolder = (holder: string, keys: readonly string[]): boolean => {
    for (const key of keys) {
      const token = this.#mine.get(key);
      if (token !== undefined && holderId(token) === holder) return true;
    }
    return false;
  };

  /**
   * The Redis key of a resource's lock: `<prefix>{r}`, or `<prefix>r:lock` when that key
   * already has a hash tag (from the resource or the prefix). Its fencing counter adds
   * `:fence`, a semaphore `:semaphore`. No resource's key is another's counter or other key:
   * every lock key ends in `}` or `:lock`, every other key in a suffix that is neither, and
   * the two forms differ in their last characters too.
   */
  keyOf(resource: string): string {
    checkText('Redlock.keyOf', 'resource', resource);
    return this.#keyOf(resource);
  }

  /** {@link Redlock.keyOf} for a name checked already. */
  #keyOf(resource: string): string {
    const key = this.#o.keyPrefix + resource;
    return hashTag(key) === undefined ? `${this.#o.keyPrefix}{${resource}}` : `${key}:lock`;
  }

  /**
   * Closes the Redlock: closes the connections it opened itself (the subscriber connections
   * behind release notifications), stops its fencing checks (one running ends after the round
   * it has in flight; a node it left unrepaired is repaired by the next Redlock that checks)
   * and removes its listeners from your clients. Your clients stay yours to quit. Afterwards `acquire()`,
   * `using()` and `semaphore()` — and the semaphores it made — fail with a `ClosedError`;
   * locks already held can still be released (through your clients). Acquisitions still
   * waiting go on by polling until they win or give up. Safe to call twice.
   *
   * Resolves once no call to a node is in flight — a release or extension is decided by a
   * quorum, and the slower nodes' calls (with the `EVAL` a node that lost its script cache
   * needs after `EVALSHA`) go on after it — or after `2 × nodeTimeoutMs` for a node that does
   * not answer. So quitting your clients after `close()` cuts off no command of Keel's.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#notifier?.end();
    this.#watching = false;
    this.#q.onReconnect(undefined);
    this.#q.forgetUndos();
    this.#recheck?.cancel();
    this.#recheck = undefined;
    // A fencing check running (a reconnect's, a recheck's) is several rounds in a row; drain()
    // alone waits only for the one in flight, and the next would be sent after close resolved.
    // Stopped first (synchronously), it sends none, so drain()'s bound still holds.
    await Promise.all([this.#fence?.stop(), this.#q.drain(2 * this.#o.nodeTimeoutMs)]);
    this.#q.detach();
    this.#q.rest();
  }

  /**
   * Checks the nodes' fencing counters when a client reconnects (a node may have restarted
   * empty): repaired at once from the intact nodes, a node that restarted is whole again before
   * the next one goes down. Until `close()`.
   */
  #watch(): void {
    if (this.#watching || this.#fence === undefined) return;
    this.#watching = true;
    // A client's first connection is no reconnection: the channels hear only later `ready`s.
    this.#q.onReconnect(() => {
      this.#checkFencing();
    });
  }

  /**
   * A fencing check in the background (its outcome matters to the next acquisition). While
   * watching, a check that left a node unrepaired (it did not answer in time, a repair round
   * failed) is tried again a few times, a second apart — nothing else may come along to do it
   * before the next node goes down. A node that did not answer at all counts as unrepaired: the
   * check a reconnect starts may not hear the node that just came back (its first replies
   * slower than `nodeTimeoutMs`), and would otherwise have been the last look at it.
   */
  #checkFencing(attempt = 0): void {
    const fence = this.#fence;
    if (fence === undefined) return;
    fence.check().then(
      (check) => {
        if (
          check.state === 'lost' ||
          (check.state === 'intact' &&
            check.emptied.length === 0 &&
            check.intact.length === this.#q.nodes)
        ) {
          return;
        }
        if (!this.#watching) return;
        if (this.#recheck !== undefined) {
          // A recheck is already pending: a new event (another reconnect) gives it a fresh
          // budget rather than being dropped, so a node that came back meanwhile still gets
          // RECHECKS looks of its own.
          if (attempt === 0) this.#recheckAttempt = 1;
          return;
        }
        if (attempt >= RECHECKS) return;
        this.#recheckAttempt = attempt + 1;
        this.#recheck = this.#o.clock
          .setTimer(() => {
            this.#recheck = undefined;
            this.#checkFencing(this.#recheckAttempt);
          }, RECHECK_MS)
          .unref();
      },
      () => undefined,
    );
  }

  /** Closes the Redlock (see {@link Redlock.close}): what `await using` calls. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Nodes that must agree: ⌊N/2⌋ + 1. */
  get quorum(): number {
    return this.#q.size;
  }

  /**
   * A counting semaphore named `name` with `permits` permits, on this Redlock's nodes and
   * quorum rules. Expiry is computed from Redis server time inside the scripts.
   */
  semaphore(name: string, options: SemaphoreOptions): Semaphore {
    if (this.#closed) throw new ClosedError(OWNER, 'semaphore');
    // Checked before its key is made from it (a Symbol there threw a plain TypeError).
    checkText('Redlock.semaphore', 'name', name);
    return Semaphore.made(name, options, {
      closed: () => this.#closed,
      quorum: this.#q,
      key: `${this.#keyOf(name)}:semaphore`,
      ttlMs: this.#o.ttlMs,
      retryCount: this.#o.retryCount,
      minValidityMs: this.#o.minValidityMs,
      driftFactor: this.#o.driftFactor,
      random: this.#o.random,
    });
  }

  /**
   * Locks one resource or several (all or none). Retries while the lock is taken, up to
   * `retryCount` times or until `signal` aborts. Rejects with {@link LockTakenError} when it
   * stays taken, {@link QuorumUnavailableError} when too many nodes fail.
   *
   * Traced on `keel:lock:acquire` while someone subscribes (see the README's Observability
   * section); without a subscriber the trace costs one property read.
   */
  acquire(resources: string | readonly string[], options: AcquireOptions = {}): Promise<Lock> {
    if (!acquireChannel.hasSubscribers) return this.#acquire(resources, options, undefined);
    const message: LockAcquireMessage = {
      resources: typeof resources === 'string' ? [resources] : resources,
      nodes: this.observer.nodes,
      quorum: this.#q.size,
      time: Date.now(),
      attempts: 0,
      waitMs: 0,
    };
    return acquireChannel.tracePromise(this.#acquire, message, this, resources, options, message);
  }

  /**
   * {@link Redlock.acquire}, counted in the stats, with the trace context if traced: the local
   * turn first (see `localTurns`), then the quorum rounds. One async function for the whole
   * acquisition (each one more is a promise and a frame per acquire).
   */
  async #acquire(
    resources: string | readonly string[],
    options: AcquireOptions,
    message: LockAcquireMessage | undefined,
  ): Promise<Lock> {
    if (this.#closed) throw new ClosedError(OWNER, 'acquire');
    const clock = this.#o.clock;
    const called = clock.now();
    const counters = this.#counters;
    // Read before the options are checked (by `#attempt`): `null` is refused there, by name.
    const signal = (options as AcquireOptions | null)?.signal;
    let attempt: LockAttempt | undefined;
    let inTurn = false;
    /** Waited behind this process's own acquisitions (else `called` starts the first round). */
    let waited = false;
    try {
      attempt = this.#attempt(resources, options, message);
      this.#watch();
      const { line, retryCount, deadline } = attempt;
      let remaining = retryCount;
      if (line !== undefined) {
        const entered = this.#turns.enter(line, retryCount, this.#retryDelay, signal, deadline);
        if (typeof entered !== 'number') {
          this.#behindOwn(attempt);
          waited = true;
        }
        const used = typeof entered === 'number' ? entered : await entered;
        if (used === undefined) throw this.#turnTaken(attempt, line);
        inTurn = true;
        remaining = retryCount - used;
      }
      const lock = await this.#q.acquire(
        attempt,
        remaining,
        signal,
        deadline,
        waited ? undefined : called,
      );
      counters.held++; // before a release below (its end of hold counts it off)
      if (signal?.aborted === true) {
        // Aborted while the round that won was under way: a caller that aborted has stopped
        // waiting (it may never look at this promise again), so the lock goes back at once —
        // its release passes the local turn on — and the acquisition fails with the reason.
        inTurn = false;
        await lock.release();
        throwIfAborted(signal);
      }
      // Until the grant was seen (the clock read that measured the lock's validity).
      const waitMs = attempt.grantedAt - called;
      counters.acquired++;
      counters.wait.record(waitMs);
      if (message !== undefined) {
        message.attempts = attempt.rounds;
        message.waitMs = waitMs;
        message.fencingToken = lock.fencingToken;
        message.fencingTokens = lock.fencingTokens;
        if (attempt.last !== undefined) message.votes = this.#q.votes(attempt.last, attempt);
      }
      // Somebody listens for lost locks: watch this one's validity (its signal arms the timer).
      if (lostChannel.active) watchLoss(lock);
      return lock;
    } catch (error) {
      if (inTurn) this.#turns.leave(attempt?.line as string);
      counters.failed[failureOf(error, signal)]++;
      if (message !== undefined) {
        message.attempts = attempt?.rounds ?? 0;
        message.waitMs = clock.now() - called;
        const votes = (error as { votes?: unknown }).votes;
        if (Array.isArray(votes)) message.votes = votes as NodeVote[];
      }
      throw error;
    } finally {
      if (attempt?.waiting === true) counters.waiting--;
    }
  }

  /**
   * The retry budget ran out waiting behind this process's own acquisitions: held by this
   * process if one of them holds the lock, else the one whose turn it is is still trying —
   * against someone else.
   */
  #turnTaken(attempt: LockAttempt, line: string): LockTakenError {
    const list = attempt.resources;
    const mine = this.#mine.has(line);
    return new LockTakenError(
      list,
      [],
      attempt.retryCount + 1,
      mine
        ? undefined
        : `lock on ${list.join(', ')} is held by someone else (another acquisition of ` +
            'this Redlock is still waiting for it, ahead of this one)',
      mine ? 'this-process' : 'another',
    );
  }

  /** Checks an acquisition's arguments: its attempt, not started yet. */
  #attempt(
    resources: string | readonly string[],
    options: AcquireOptions,
    message: LockAcquireMessage | undefined,
  ): LockAttempt {
    const { list, ttlMs, retryCount, waitMs, signal } = resolveAcquire(
      'Redlock.acquire',
      resources,
      options,
      this.#o,
    );
    throwIfAborted(signal);
    if (ttlMs < this.#minTtlMs) this.#checkTtl('Redlock.acquire', ttlMs);
    if (message !== undefined) message.resources = list;
    const keys = list.length === 1 ? this.#keysOfOne(list[0] as string) : this.#keysOf(list);
    // One resource with retries: line up behind this process's other acquisitions of it.
    const line =
      this.#o.localTurns && list.length === 1 && retryCount > 0 ? keys.lockKeys[0] : undefined;
    return new LockAttempt(
      this.#host,
      list,
      keys,
      ttlMs,
      line,
      retryCount,
      waitDeadline(this.#o.clock, waitMs),
      message,
    );
  }

  /**
   * What this Redlock has done since it was made: acquisitions (returned, failed by reason,
   * contended), acquisitions waiting and locks held now, extensions, lost locks, and wait and
   * hold times (p50 and p99 from fixed-size histograms, within about 9 %). Counting costs a few
   * additions per operation and allocates nothing; the snapshot is a new object.
   *
   * @example
   * ```ts
   * import { Redis } from 'ioredis';
   * import { Redlock } from 'keel/lock';
   *
   * const redlock = new Redlock({ clients: [new Redis({ lazyConnect: true })] });
   * const { acquired, failed, waitMs, time } = redlock.stats();
   * console.log(new Date(time).toISOString(), acquired, failed.taken, waitMs.p99);
   * ```
   */
  stats(): RedlockStats {
    return this.#counters.snapshot(this.#o.clock.now());
  }

  /**
   * A failed round of an acquisition (see {@link LockAttempt.refused}): counts and publishes
   * contention (once per acquisition) and rounds without a quorum of working nodes.
   */
  #refused(attempt: LockAttempt, results: readonly NodeResult[], view: RoundView): void {
    let taken = false;
    for (const r of results) if (r.ok && !isGrant(r)) taken = true;
    if (taken && !attempt.contended) {
      attempt.contended = true;
      this.#counters.contended++;
      if (contendedChannel.active) {
        const votes = this.#q.votes(results, attempt);
        let mine = 0;
        for (const v of votes) if (v.kind === 'held-by-this-process') mine++;
        contendedChannel.publish({
          resources: attempt.resources,
          nodes: this.observer.nodes,
          attempt: attempt.rounds,
          takenBy: mine >= this.#q.size ? 'this-process' : 'another',
          ...(Number.isFinite(view.freesIn) ? { freesInMs: view.freesIn } : {}),
          votes,
          time: Date.now(),
        });
      }
    }
    if (taken && !attempt.waiting) {
      attempt.waiting = true;
      this.#counters.waiting++;
    }
    if (view.failed > view.nodes - view.quorum && quorumFailedChannel.active) {
      quorumFailedChannel.publish({
        operation: 'acquire',
        resources: attempt.resources,
        nodes: this.observer.nodes,
        quorum: this.#q.size,
        attempt: attempt.rounds,
        votes: this.#q.votes(results, attempt),
        time: Date.now(),
      });
    }
  }

  /** An acquisition waits behind this process's own acquisitions of the resource. */
  #behindOwn(attempt: LockAttempt): void {
    if (!attempt.contended) {
      attempt.contended = true;
      this.#counters.contended++;
      if (contendedChannel.active) {
        contendedChannel.publish({
          resources: attempt.resources,
          nodes: this.observer.nodes,
          attempt: 0,
          takenBy: 'this-process',
          votes: [],
          time: Date.now(),
        });
      }
    }
    if (!attempt.waiting) {
      attempt.waiting = true;
      this.#counters.waiting++;
    }
  }

  /** A granted attempt: settle it, and hold the local turn with the lock. */
  #settleAttempt(
    attempt: LockAttempt,
    token: string,
    started: number,
    granted: readonly NodeResult[],
  ): Lock | undefined | typeof TOO_SLOW | Promise<Lock | undefined | typeof TOO_SLOW> {
    const lock = this.#settle(attempt, token, started, granted);
    if (!(lock instanceof Promise)) {
      attempt.wonWith = token;
      return this.#holdTurn(attempt.line, token, lock);
    }
    return lock.then((settled) => {
      attempt.wonWith = token;
      return this.#holdTurn(attempt.line, token, settled);
    });
  }

  /**
   * After a quorum granted: settle the fencing tokens and check the validity. The lock, or
   * `undefined` when it must be undone.
   */
  #settle(
    attempt: LockAttempt,
    token: string,
    started: number,
    granted: readonly NodeResult[],
  ): Lock | undefined | typeof TOO_SLOW | Promise<Lock | undefined | typeof TOO_SLOW> {
    const { resources: list, fenceKeys } = attempt;
    // Fencing tokens: the maximum counter over the intact granting nodes, per resource; settled
    // without a further await when a quorum of them is intact and returned that maximum (the
    // path of every uncontended acquisition). See the proof at the top of this file.
    const fences: number[] = [];
    const highest: number[] = [];
    let inSync = true;
    let intact = 0;
    const intactOf = this.#intactOf;
    for (const r of granted) if (intactOf(r)) intact++;
    for (let i = 0; i < list.length; i++) {
      let max = -Infinity;
      let min = Infinity;
      let top = 0;
      for (const r of granted) {
        const fence = fenceOf(r, i);
        if (fence > top) top = fence;
        if (!intactOf(r)) continue;
        if (fence > max) max = fence;
        if (fence < min) min = fence;
      }
      fences.push(max);
      highest.push(Math.max(top, max));
      if (min !== max) inSync = false;
    }
    if (intact < granted.length) {
      this.#checkFencing();
      // An untagged counter answered a round without the incarnation key: send the key again.
      attempt.source.tagged = false;
    } else if (!attempt.tagged && inSync && (fences[0] as number) > 1) {
      // Every granting node had its incarnation key and a counter past its first grant, so
      // ACQUIRE left each of them tagged (see ACQUIRE): the next acquisition can skip the key.
      attempt.source.tagged = true;
    }
    if (inSync && intact >= this.#q.size) {
      const lock = this.#made(attempt, token, started, fences);
      if (lock !== TOO_SLOW && intact < granted.length) {
        // Granting nodes without their incarnation key: raise their counters (they are not
        // counted until repaired, but need not lag meanwhile).
        for (const r of granted) if (!intactOf(r)) this.#catchUp(fenceKeys, fences, r);
      }
      return lock;
    }
    return this.#settleSlowly(attempt, token, started, highest);
  }

  /**
   * The fencing tokens when the granting nodes disagree or too few of them are intact: a token
   * above every counter seen, raised onto a quorum of intact nodes whose counters were all below
   * it (higher counters raise the token, and the round is repeated). With too few intact nodes,
   * one fencing check (repair) first, then again; if that does not settle it, the attempt is
   * undone and made again at once (`repaired`). A majority that lost its counters fails the
   * acquisition with {@link FencingLostError}, after undoing it.
   */
  async #settleSlowly(
    attempt: LockAttempt,
    token: string,
    started: number,
    highest: readonly number[],
  ): Promise<Lock | undefined | typeof TOO_SLOW> {
    const { resources: list, lockKeys, fenceKeys } = attempt;
    const n = list.length;
    const wanted = highest.map((f) => f + 1);
    const keys = this.#fence === undefined ? fenceKeys : [...fenceKeys, this.#fence.marker];
    const covered = (r: NodeResult): boolean =>
      Array.isArray(r.value) && r.value[0] === 1 && r.value[1] === n;
    let checked = false;
    for (let round = 0; round < 4; round++) {
      const results = await this.#q.round(SETTLE_FENCE, keys, [n, ...wanted], covered);
      if (this.#q.count(results, covered) >= this.#q.size) {
        const lock = this.#made(attempt, token, started, wanted);
        // Too little validity left after a repair (which took the time): undone, and the next
        // attempt goes at once — not a too-slow round of the nodes.
        if (lock === TOO_SLOW && checked) {
          attempt.repaired = true;
          return undefined;
        }
        return lock;
      }
      let intact = 0;
      for (const r of results) {
        if (!r.ok || !Array.isArray(r.value) || r.value[0] !== 1) continue;
        intact++;
        for (let i = 0; i < n; i++) {
          const current = Number(r.value[i + 2]);
          if (current >= (wanted[i] as number)) wanted[i] = current + 1;
        }
      }
      if (intact >= this.#q.size || this.#fence === undefined) continue;
      if (checked) break;
      checked = true;
      const check = await this.#fence.check();
      if (check.state === 'lost') {
        // Undone like any failed attempt (a node whose client fails it gets it again).
        const all = Array.from({ length: this.#q.nodes }, (_, node) => node);
        await this.#q.undo(RELEASE, lockKeys, [token, '0'], all, attempt.ttlMs);
        const names = this.#o.clients.map(nameOf);
        throw new FencingLostError(list, check.intact, check.emptied, names, this.#q.size);
      }
      // Repaired (or bootstrapped): settle again. Not known yet (nodes did not answer): the
      // next attempt, at once, may know more.
      if (check.state !== 'intact') break;
    }
    attempt.repaired = checked;
    return undefined;
  }

  /**
   * A node answered an acquisition that settled on `fences` (late, or without its incarnation
   * key): raise its counters to them, in the background, unless it is intact and already there.
   */
  #catchUp(fenceKeys: readonly string[], fences: readonly number[], r: NodeResult): void {
    if (!r.ok) return;
    const grant = isGrant(r);
    const intact = grant && this.#intactOf(r);
    if (grant && !intact) this.#checkFencing();
    if (intact && atLeast(r, fences)) return;
    const keys = this.#fence === undefined ? fenceKeys : [...fenceKeys, this.#fence.marker];
    this.#q
      .round(SETTLE_FENCE, keys, [fences.length, ...fences], () => true, { nodes: [r.node] })
      .catch(() => undefined);
  }

  /**
   * The lock, when its validity (measured from `started`) is still above the minimum; else
   * `TOO_SLOW`.
   */
  #made(
    attempt: LockAttempt,
    token: string,
    started: number,
    fences: readonly number[],
  ): Lock | typeof TOO_SLOW {
    const validUntil = this.#q.deadline(started, attempt.ttlMs);
    const now = this.#o.clock.now();
    if (validUntil - now <= this.#o.minValidityMs) return TOO_SLOW;
    attempt.grantedAt = now;
    for (const key of attempt.lockKeys) this.#mine.set(key, token);
    // Locks dropped without a release leave their entries behind: keep the newest only.
    if (this.#mine.size > MAX_OWN_ENTRIES) this.#forgetOldest();
    attempt.fences = fences;
    return Lock.made(this, attempt.resources, attempt.lockKeys, token, validUntil, fences, now);
  }

  /**
   * The script keys of an acquisition of `list` (see ACQUIRE). Refuses names with a lone
   * surrogate here, where each name is seen once (one resource's keys are cached, see
   * `#keysOfOne`): not on the path of a lock taken again.
   */
  #keysOf(list: readonly string[]): AcquireKeys {
    for (const r of list)
      checkText('Redlock.acquire', 'resources', r, list.length === 1 ? r : list);
    const lockKeys = list.map((r) => this.#keyOf(r));
    if (this.#cluster && lockKeys.length > 1) {
      const slots = lockKeys.map(keySlot);
      if (slots.some((slot) => slot !== slots[0])) throw new LockCrossSlotError(list, slots);
    }
    const fenceKeys = lockKeys.map((k) => `${k}:fence`);
    const keys = [...lockKeys, ...fenceKeys];
    // One resource on standalone nodes may go without the incarnation key once its counter is
    // tagged (see ACQUIRE and `AcquireKeys.tagged`); a copy of `keys` before the key is added.
    const taggedKeys = this.#fence !== undefined && lockKeys.length === 1 ? [...keys] : undefined;
    if (this.#fence !== undefined) keys.push(this.#fence.marker);
    const channels = lockKeys.map((k) => `${k}:released`);
    return { lockKeys, fenceKeys, keys, channels, taggedKeys, tagged: false };
  }

  /**
   * {@link #keysOf} for one resource, kept for the resources acquired lately (an application
   * locks the same names again and again): no key strings and arrays built per acquisition.
   * Read-only arrays, shared by the locks made from them.
   */
  #keysOfOne(resource: string): AcquireKeys {
    let made = this.#keyCache.get(resource);
    if (made === undefined) {
      made = this.#keysOf([resource]);
      if (this.#keyCache.size >= MAX_CACHED_KEYS) this.#keyCache.clear();
      this.#keyCache.set(resource, made);
    }
    return made;
  }

  /** Drops the oldest entries of `#mine` (a Map iterates in insertion order). */
  #forgetOldest(): void {
    for (const key of this.#mine.keys()) {
      this.#mine.delete(key);
      if (this.#mine.size <= MAX_OWN_ENTRIES / 2) return;
    }
  }

  /** A lock won through the local turn of `line` holds that turn until it is released. */
  #holdTurn<L extends Lock | undefined | typeof TOO_SLOW>(
    line: string | undefined,
    token: string,
    lock: L,
  ): L {
    if (lock instanceof Lock && line !== undefined) {
      this.#turns.hold(line, token, () => lock.validUntil);
    }
    return lock;
  }

  /**
   * Runs `routine` while holding the lock: acquires, extends automatically while the routine
   * runs (each time half the validity is used up, as long as the total hold stays within
   * `maxHoldMs` and `maxExtensions`), aborts the routine's signal if the lock is lost or the
   * caller's signal aborts, and always releases in `finally` — keeping the routine's own error
   * rather than masking it. Leaves no timer behind.
   *
   * The options may be left out: `using(resources, routine)` is
   * `using(resources, {}, routine)` — the Redlock's `ttlMs` and retries, `maxHoldMs` 300 000,
   * `maxExtensions` 1000.
   *
   * @example
   * ```ts
   * import { Redis } from 'ioredis';
   * import { Redlock } from 'keel/lock';
   *
   * const clients = [6379, 6380, 6381].map((port) => new Redis({ port, lazyConnect: true }));
   * const redlock = new Redlock({ clients });
   * const token = await redlock.using('order:42', async (signal, lock) => {
   *   signal.throwIfAborted();
   *   return lock.fencingToken;
   * });
   * console.log(token);
   * await redlock.close();
   * await Promise.all(clients.map((client) => client.quit())); // the clients stay yours
   * ```
   */
  using<R>(
    resources: string | readonly string[],
    routine: (signal: AbortSignal, lock: Lock) => Promise<R>,
  ): Promise<R>;
  /**
   * Runs `routine` while holding the lock, with `options` (an acquisition's `ttlMs`,
   * `retryCount`, `waitMs`, `signal`, and the hold limits `maxHoldMs`, `maxExtensions`).
   */
  using<R>(
    resources: string | readonly string[],
    options: UsingOptions,
    routine: (signal: AbortSignal, lock: Lock) => Promise<R>,
  ): Promise<R>;
  using<R>(
    resources: string | readonly string[],
    optionsOrRoutine: UsingOptions | ((signal: AbortSignal, lock: Lock) => Promise<R>),
    routine?: (signal: AbortSignal, lock: Lock) => Promise<R>,
  ): Promise<R> {
    if (this.#closed) return Promise.reject(new ClosedError(OWNER, 'using'));
    return holdWhile(
      'Redlock.using',
      this,
      (o) => this.acquire(resources, o),
      optionsOrRoutine,
      routine,
    );
  }

  /** @internal */
  async extendKeys(
    lockKeys: readonly string[],
    token: string,
    ttlMs: number,
    resources?: readonly string[],
  ): Promise<number | undefined> {
    const started = this.#o.clock.now();
    const yes = (r: NodeResult): boolean => Number(r.value) === 1;
    this.#q.heldFor(ttlMs);
    const results = await this.#q.round(EXTEND, lockKeys, [token, ttlMs], yes);
    if (quorumFailedChannel.active) this.#quorumFailed('extend', resources, results, yes);
    return this.#q.count(results, yes) >= this.#q.size
      ? this.#q.deadline(started, ttlMs)
      : undefined;
  }

  /** @internal */
  async releaseKeys(
    lockKeys: readonly string[],
    token: string,
    resources?: readonly string[],
    now?: number,
  ): Promise<ReleaseOutcome> {
    // Decided like an acquire: as soon as a quorum deleted every key, or cannot. Stragglers
    // finish on their own (each within the per-node timeout). A node whose client fails the
    // call (ioredis gave up on it while reconnecting) gets it again when that client is next
    // ready, while the keys may still be there (see `Quorum.again`): it would refuse everyone
    // else until their ttl. The keys were set at most the longest ttl ago.
    const started = now ?? this.#o.clock.now();
    const yes = lockKeys.length === 1 ? releasedOne : releasedAll(lockKeys.length);
    for (const key of lockKeys) if (this.#mine.get(key) === token) this.#mine.delete(key);
    // The script publishes the release (and computes the holder's id) only on nodes where an
    // acquisition was refused, i.e. where someone may wait — or everywhere when an acquisition
    // of this Redlock is waiting for one of the keys (it may not have marked this holder's
    // token: see RELEASE).
    const results = await this.#q.round(
      RELEASE,
      lockKeys,
      this.#awaited(lockKeys) ? [token, '1'] : [token],
      yes,
      // The round's timeout counts from the caller's clock read, if it made one just before.
      { started, resendUntil: started + this.#q.longestTtlMs },
    );
    if (quorumFailedChannel.active) this.#quorumFailed('release', resources, results, yes);
    // The next acquisition of this process in line goes now: its attempt follows this release
    // on every connection.
    if (lockKeys.length === 1) this.#turns.leave(lockKeys[0] as string, token);
    return releaseOutcome(results, yes, this.#q.size);
  }

  /** Whether an acquisition of this Redlock waits for a release of one of `lockKeys`. */
  #awaited(lockKeys: readonly string[]): boolean {
    const notifier = this.#notifier;
    if (notifier === undefined || !notifier.listening) return false;
    for (const key of lockKeys) if (notifier.awaits(`${key}:released`)) return true;
    return false;
  }

  /**
   * Publishes `keel:lock:quorum-failed` for an extend or release round in which too many nodes
   * failed (errors, timeouts) for a quorum to answer either way.
   */
  #quorumFailed(
    operation: 'extend' | 'release',
    resources: readonly string[] | undefined,
    results: readonly NodeResult[],
    yes: (r: NodeResult) => boolean,
  ): void {
    let failed = 0;
    for (const r of results) if (!r.ok && r.pending !== true) failed++;
    if (failed <= results.length - this.#q.size) return;
    quorumFailedChannel.publish({
      operation,
      resources: resources ?? [],
      nodes: this.observer.nodes,
      quorum: this.#q.size,
      votes: this.#q.votes(results, { keys: [], granted: yes }),
      time: Date.now(),
    });
  }

  /** @internal */
  get clock(): Clock {
    return this.#o.clock;
  }

  /** @internal */
  get ttlMs(): number {
    return this.#o.ttlMs;
  }

  /** @internal */
  get minValidityMs(): number {
    return this.#o.minValidityMs;
  }
}
