/**
 * The quorum machinery shared by `Redlock` and its semaphores: script rounds over N independent
 * nodes with per-node timeouts and early decisions, and the acquisition loop (attempt, undo,
 * jittered retry, wake-up by release notification).
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { sleep, type Clock, type Timer } from '../core/index.js';
import {
  LockTakenError,
  LockTooSlowError,
  QuorumUnavailableError,
  type NodeOutcome,
  type NodeVote,
} from './errors.js';
import { newToken } from './lock.js';
import type { ReleaseNotifier, ReleaseSubscription } from './notifier.js';
import { NodeChannel, classify, nodeAddress, type Answer, type LockClient } from './channel.js';
import { newPlanState, planNext, type PlanState, type RoundView } from './plan.js';
import type { Script } from './scripts.js';

export type { LockClient } from './channel.js';

/** One node's answer in a round. */
export interface NodeResult {
  readonly node: number;
  readonly ok: boolean;
  readonly value?: unknown;
  readonly error?: string;
  /** For a failure: what happened (see {@link NodeOutcome}). */
  readonly kind?: NodeOutcome;
  /** For a failure: the client's error, if any. */
  readonly cause?: unknown;
  /** Had not answered when the round was decided (not a failure of the node). */
  readonly pending?: true;
  /**
   * May have run late on the node, after calls sent behind it (its `EVAL` fallback after
   * `NOSCRIPT`, or a copy ioredis sent again: every `resent` answer; see `NodeChannel`): a late
   * grant so marked may have landed after its own release or undo.
   */
  readonly overtaken?: true;
  /**
   * The connection dropped after the call was written and before its reply was read; this is
   * the answer of the copy ioredis sent again, which ran after the first copy's effects, if
   * that one ran (see `sentOn` in channel.ts).
   */
  readonly resent?: true;
  /**
   * For a failure: the client failed the call without ever writing it to the node (see
   * `Answer` in channel.ts), so it did nothing there.
   */
  readonly unsent?: true;
}

/**
 * What `settle` answers when a quorum granted, but too late: too little validity was left.
 * The attempt is undone like a refused one, and reported as too slow rather than as taken.
 */
export const TOO_SLOW: unique symbol = Symbol('keel.lock.tooSlow');

/** What {@link Quorum.votes} needs of a plan to tell the votes apart. */
export interface VotePlan {
  readonly keys: readonly string[];
  readonly granted: (r: NodeResult) => boolean;
  readonly heldBy?: (r: NodeResult) => string | undefined;
  readonly ownHolder?: (holder: string, keys: readonly string[]) => boolean;
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
  /** Batch the calls of one tick per node into one command (see channel.ts). */
  readonly batching: boolean;
}

/** Options of {@link Quorum.round}. */
export interface RoundOptions {
  /** Wait for every node called (or the timeout), not just for the outcome. */
  readonly waitAll?: boolean;
  /** Call only these nodes (the others are reported as pending). */
  readonly nodes?: readonly number[];
  /** Sees each answer that came after the round was decided (or timed out). */
  readonly late?: (r: NodeResult) => void;
  /**
   * An acquisition's attempt, whose plan sees its late answers (`plan.late(token, r)`, called
   * on the plan): what `late` does, without a closure per round.
   */
  readonly attempt?: { readonly plan: AcquirePlan<unknown>; readonly token: string };
  /**
   * When the round starts on the clock, if the caller has just read it (its timeout counts
   * from there; else the round reads the clock).
   */
  readonly started?: number | undefined;
  /**
   * A call that a node's client fails (see {@link Quorum.again}) is sent to that node again the
   * next time its client is ready, and so on until this time on the clock: for undos and
   * releases, whose keys would otherwise stay there until their ttl.
   */
  readonly resendUntil?: number | undefined;
}

/** One kind of acquisition (a lock, a semaphore permit), as the loop drives it. */
export interface AcquirePlan<T> extends VotePlan {
  /** For errors: what is being acquired. */
  readonly resources: readonly string[];
  /** For LockTooSlowError: the ttl asked for, and the validity a grant must leave. */
  readonly ttlMs: number;
  readonly minValidityMs: number;
  readonly script: Script;
  readonly keys: readonly string[];
  /** Script arguments of one attempt with this token. */
  readonly args: (token: string) => readonly (string | number)[];
  /** Did this node grant the attempt? */
  readonly granted: (r: NodeResult) => boolean;
  /** Sees the answers of an attempt that came after its round was decided. */
  readonly late?: (token: string, r: NodeResult) => void;
  /** Sees each attempt's answers once (to report what they carry besides the vote). */
  readonly observe?: (results: readonly NodeResult[]) => void;
  /** When a refusing node expects to free up (ms), if it said; else Infinity. */
  readonly freesIn: (r: NodeResult) => number;
  /**
   * Who holds what a refusing node refused (its id, as its release publishes), if it said.
   * When a quorum of nodes name one holder whose release has not been seen, the resource is
   * held — a refused attempt that some nodes granted is then not a split vote between
   * contenders, and waits for the release like any other refusal.
   */
  readonly heldBy?: (r: NodeResult) => string | undefined;
  /**
   * Is `holder` (an id from `heldBy`) a lock of this very service on these `keys`? A refusal
   * by such a node is reported as held by this process.
   */
  readonly ownHolder?: (holder: string, keys: readonly string[]) => boolean;
  /**
   * After a quorum granted: the result, or `undefined` to undo and retry, or {@link TOO_SLOW}
   * when too little validity was left (a promise only when settling needs another round).
   */
  readonly settle: (
    token: string,
    started: number,
    granted: readonly NodeResult[],
  ) => T | undefined | typeof TOO_SLOW | Promise<T | undefined | typeof TOO_SLOW>;
  /**
   * Undo a failed attempt on `nodes`, where it may have landed (never publishes a release).
   * Must send its calls before returning (the loop may not await the promise).
   */
  readonly undo: (token: string, nodes: readonly number[]) => Promise<unknown>;
  /**
   * After a refused attempt: would a new attempt, with what the answers taught, likely
   * succeed at once (a semaphore that asked for slots another holder has, while others are
   * free)? Then it is made at once, without counting as a retry (a few times per acquire).
   */
  readonly retryAtOnce?: () => boolean;
  /**
   * Sees each failed round (no lock came of it), with the planner's view of it, before the
   * loop acts on it (for statistics and diagnostics: never on the path of a granted round).
   */
  readonly refused?: (results: readonly NodeResult[], view: RoundView) => void;
  /**
   * The first round's script does not mark interest in a release (a lock's first attempt,
   * which succeeds whenever the resource is free, sends one argument less): when it is refused
   * and the loop is to wait for a release notification, it first retries at once — that
   * attempt marks its interest, so the release it then waits for is announced.
   */
  readonly firstRoundUnmarked?: boolean;
  /** Release channels to wait on when the resource is held. */
  readonly channels: readonly string[];
  /** For LockTakenError: what "taken" means here. */
  readonly takenDetail?: string;
}

/**
 * The options of an attempt's round: it starts at `started`, and hands its late answers to
 * `plan.late`, if it has one.
 */
function roundOf(plan: AcquirePlan<unknown>, token: string, started: number): RoundOptions {
  return plan.late === undefined ? { started } : { started, attempt: { plan, token } };
}

/**
 * A release that woke an acquisition and that it will not use goes to the next waiter (a
 * function, not a closure per acquisition: most acquisitions never subscribe).
 */
function passOnUnused(subscription: ReleaseSubscription | undefined, seen: number): void {
  if (subscription !== undefined && subscription.count !== seen) subscription.passOn();
}

/** The yes of a round whose answers are not votes (an undo). */
const never = (): boolean => false;

/**
 * Time a node is allowed per script argument (key or value), on top of `nodeTimeoutMs`: the
 * node runs the script over every one and the client encodes and sends them all, so a round
 * over many keys must not be timed out as if it touched one. A 10 000-resource lock passes
 * 20 000 keys: ~20–40 ms of script per node and as much encoding on an idle machine, ten times
 * that on a loaded one (and twice on a node that has not cached the script), hence +2 s; a
 * one-resource lock gets +0.4 ms.
 */
const ARGUMENT_ALLOWANCE_MS = 0.1;

/** How early a timer may fire against the clock (Node's timers count whole milliseconds). */
const TIMER_GRANULARITY_MS = 1;

/**
 * A round waiting for answers: when it times out, and what does it; linked into its Quorum's
 * list of waiting rounds while `listed` (a list rather than a Set: no hashing per round).
 */
interface Waiting {
  readonly due: number;
  expire(): void;
  listed: boolean;
  prev: Waiting | undefined;
  next: Waiting | undefined;
}

/** Times out a round (`setImmediate`'s callback, one function for every round). */
const expireRound = (waiting: Waiting): void => {
  waiting.expire();
};

/**
 * One round of {@link Quorum.round} waiting for its answers: its state and the steps that
 * settle it, as one object with one closure (`reply`, the handler the nodes' channels call)
 * rather than a closure per step — this is the hot path of every acquire, extend and release.
 */
class Round implements Waiting {
  readonly results: (NodeResult | undefined)[];
  settled = false;
  answered = 0;
  yeses = 0;
  listed = false;
  prev: Waiting | undefined = undefined;
  next: Waiting | undefined = undefined;
  /** One reply handler for every node of the round (the channel hands back the node). */
  readonly reply: Answer = (ok, value, node, overtaken, resent, unsent) => {
    if (!ok) {
      this.failed(node, value, unsent);
      return;
    }
    this.answer(
      overtaken === undefined && resent === undefined
        ? { node, ok: true, value }
        : { node, ok: true, value, ...(overtaken && { overtaken }), ...(resent && { resent }) },
    );
  };

  constructor(
    readonly quorum: Quorum,
    readonly script: Script,
    readonly keys: readonly string[],
    readonly args: readonly (string | number)[],
    readonly channels: readonly NodeChannel[],
    readonly pending: readonly NodeResult[],
    readonly yes: (r: NodeResult) => boolean,
    readonly options: RoundOptions,
    readonly called: number,
    readonly timeoutMs: number,
    readonly nodeTimeoutMs: number,
    readonly due: number,
    readonly resolve: (results: NodeResult[]) => void,
  ) {
    this.results = new Array<NodeResult | undefined>(channels.length);
  }

  finish(): void {
    if (this.settled) return;
    this.settled = true;
    this.quorum.unwatch(this);
    // Fill in the nodes that have not answered (a plain loop: map would skip the holes), with
    // the Quorum's shared answers for them (one object per node, not per round).
    // A node called that has not answered owes its channel a late answer (see `NodeChannel.late`).
    const results = this.results;
    const pending = this.pending;
    const nodes = this.options.nodes;
    for (let node = 0; node < results.length; node++) {
      if (results[node] !== undefined) continue;
      if (nodes === undefined || nodes.includes(node)) (this.channels[node] as NodeChannel).late();
      results[node] = pending[node];
    }
    this.resolve(results as NodeResult[]);
  }

  /**
   * The node's client failed the call (in time or late): a call that must not be lost is sent
   * again when the client is next ready (see `resendUntil`). Only an answer counts, never the
   * round's timeout: a call still queued in the client goes out when it reconnects, and is
   * either answered or failed then.
   */
  failed(node: number, error: unknown, unsent: true | undefined): void {
    const failure = classify(
      (this.channels[node] as NodeChannel).client,
      error,
      this.nodeTimeoutMs,
    );
    const until = this.options.resendUntil;
    if (until !== undefined) {
      this.quorum.again(this.script, this.keys, this.args, node, failure.kind, until);
    }
    this.answer({ node, ok: false, ...failure, ...(unsent && { unsent }) });
  }

  answer(r: NodeResult): void {
    if (this.settled) {
      // Counted as late when the round was decided (see `finish` and `expire`).
      (this.channels[r.node] as NodeChannel).lateAnswered();
      const { late, attempt } = this.options;
      late?.(r);
      attempt?.plan.late?.(attempt.token, r); // called on the plan: it may be a class instance
      return;
    }
    this.results[r.node] = r;
    this.answered++;
    if (r.ok && this.yes(r)) this.yeses++;
    const noes = this.answered - this.yeses;
    const n = this.results.length;
    const size = this.quorum.size;
    if (
      this.answered === this.called ||
      (this.options.waitAll !== true && (this.yeses >= size || noes > n - size))
    ) {
      this.finish();
    }
  }

  expire(): void {
    if (this.settled) return;
    const results = this.results;
    const nodes = this.options.nodes;
    for (let node = 0; node < results.length; node++) {
      if (results[node] === undefined && (nodes === undefined || nodes.includes(node))) {
        const failure = classify(
          (this.channels[node] as NodeChannel).client,
          undefined,
          this.timeoutMs,
        );
        results[node] = { node, ok: false, ...failure };
        // Its answer, if it comes, comes late (see `NodeChannel.late`).
        (this.channels[node] as NodeChannel).late();
      }
    }
    this.finish();
  }
}

export class Quorum {
  readonly #s: QuorumSettings;
  readonly #notifier: ReleaseNotifier | undefined;
  readonly #channels: readonly NodeChannel[];
  /** Nodes that must agree: ⌊N/2⌋ + 1. */
  readonly size: number;
  /** Rounds still waiting for answers, newest first (see {@link Quorum.round} and `#bark`). */
  #waiting: Waiting | undefined;
  /** The one timer behind every round's timeout, and when it is due (Infinity: not armed). */
  #watchdog: Timer | undefined;
  #watchdogDue = Infinity;
  /** Set by {@link Quorum.forgetUndos}: no undo is sent again any more (the Redlock closed). */
  #undosForgotten = false;
  /** See {@link Quorum.longestTtlMs}. */
  #longestTtlMs = 0;
  /**
   * What a round reports for each node it did not wait for: the same answer every time (rounds
   * are the hot path; two of five nodes are left pending in most of them). Read-only, as every
   * NodeResult: nothing writes to a round's answers.
   */
  readonly #pending: readonly NodeResult[];

  constructor(settings: QuorumSettings, notifier: ReleaseNotifier | undefined) {
    this.#s = settings;
    this.#notifier = notifier;
    this.#channels = settings.clients.map((c) => new NodeChannel(c, settings.batching));
    this.size = Math.floor(settings.clients.length / 2) + 1;
    this.#pending = settings.clients.map((_, node): NodeResult => ({
      node,
      ok: false,
      pending: true,
      error: 'the round was decided without its answer',
    }));
  }

  get clock(): Clock {
    return this.#s.clock;
  }

  /** The jittered delay before a retry: `retryDelayMs` + random `retryJitterMs`. */
  retryDelay(): number {
    return this.#s.retryDelayMs + this.#s.random() * this.#s.retryJitterMs;
  }

  /**
   * Resolves once no node has a call in flight (a straggler of a round decided without it, its
   * `EVAL` fallback after `NOSCRIPT`), or after `boundMs` — a node that never answers does not
   * hold the caller longer than that.
   */
  async drain(boundMs: number): Promise<void> {
    const busy = this.#channels.filter((channel) => channel.busy);
    if (busy.length === 0) return;
    let timer: Timer | undefined;
    try {
      await Promise.race([
        Promise.all(busy.map((channel) => channel.idle())),
        new Promise<void>((resolve) => {
          timer = this.#s.clock.setTimer(resolve, boundMs).unref();
        }),
      ]);
    } finally {
      timer?.cancel();
    }
  }

  /** How many nodes there are. */
  get nodes(): number {
    return this.#channels.length;
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

  /** The node's address, as errors name it (`host:port`; see `nodeAddress`). */
  address(node: number): string {
    const channel = this.#channels[node];
    return channel === undefined ? `node ${node}` : nodeAddress(channel.client, node);
  }

  /** The evidence of a round, per node, for an error (never on the success path). */
  votes(results: readonly NodeResult[], plan: VotePlan): NodeVote[] {
    return results.map((r): NodeVote => {
      const address = this.address(r.node);
      if (!r.ok) {
        const vote = {
          node: r.node,
          address,
          vote: 'error' as const,
          kind: r.pending === true ? ('pending' as const) : (r.kind ?? 'failed'),
          error: r.error ?? 'error',
        };
        return r.cause === undefined ? vote : { ...vote, cause: r.cause };
      }
      if (plan.granted(r)) return { node: r.node, address, vote: 'granted', kind: 'granted' };
      const holder = plan.heldBy?.(r);
      const mine = holder !== undefined && plan.ownHolder?.(holder, plan.keys) === true;
      return {
        node: r.node,
        address,
        vote: 'taken',
        kind: mine ? 'held-by-this-process' : 'held-by-another',
      };
    });
  }

  /**
   * The acquisition loop: attempt; on a quorum, settle; otherwise undo, and do what the
   * planner ({@link planNext}) says — retry soon after a split vote, on a release notification
   * or the holder's reported expiry when held, after the jittered retry delay otherwise — up to
   * `retryCount` counted retries (informed re-attempts, and quick retries within a counted
   * retry's delay, are not counted) or until `signal` aborts. `calledAt`: the clock, read by
   * the caller just before with no await since (saves the first round a clock read).
   */
  async acquire<T>(
    plan: AcquirePlan<T>,
    retryCount: number,
    signal: AbortSignal | undefined,
    deadline?: number,
    calledAt?: number,
  ): Promise<T> {
    const s = this.#s;
    this.heldFor(plan.ttlMs);
    let last: readonly NodeResult[] = [];
    let subscription: ReleaseSubscription | undefined;
    let seen = 0;
    // Made on the first failed round: an acquisition that wins at once never needs it.
    let state: PlanState | undefined;
    try {
      let delay = 0;
      // `attempt` counts what the budget counts; `rounds`, every round made.
      let rounds = 0;
      for (let attempt = 0; attempt <= retryCount; attempt++) {
        if (rounds > 0 && deadline !== undefined) {
          // waitMs: no attempt starts after the deadline; the last wait ends at it.
          const left = deadline - s.clock.now();
          if (left < 0) {
            passOnUnused(subscription, seen);
            break;
          }
          delay = Math.min(delay, left);
        }
        if (rounds > 0 && delay > 0) {
          if (subscription === undefined) await sleep(delay, { signal, clock: s.clock });
          else await subscription.wait(seen, delay, signal);
        }
        rounds++;
        if (subscription !== undefined) seen = subscription.count;
        // Whether a release on the channels could be noticed from here on, without a
        // subscription of our own yet (another waiter of this Redlock may have one).
        const mark =
          subscription === undefined && this.#notifier?.listening === true
            ? this.#notifier.mark(plan.channels)
            : undefined;
        const token = newToken();
        // The first round may count from the caller's own clock read (`calledAt`, made with no
        // await since): an earlier start only shortens the validity the round grants.
        const started = rounds === 1 && calledAt !== undefined ? calledAt : s.clock.now();
        const results = await this.round(
          plan.script,
          plan.keys,
          plan.args(token),
          plan.granted,
          roundOf(plan, token, started),
        );
        plan.observe?.(results);
        last = results;
        const granted = results.filter((r) => r.ok && plan.granted(r));
        let tooSlow = false;
        if (granted.length >= this.size) {
          const settled = plan.settle(token, started, granted);
          const won = settled instanceof Promise ? await settled : settled;
          if (won === TOO_SLOW) tooSlow = true;
          else if (won !== undefined) return won;
        }
        // Failed attempt: undo wherever it may have landed — every node except those that
        // refused, and those whose client failed the attempt without writing it (`unsent`):
        // nothing landed there. (An undo there would fail the same way and wait for the
        // client's next `ready`, to be sent with every other such undo on reconnection.) Each
        // node runs its commands in the order they were sent on its connection, so the undo
        // lands before our next attempt: we wait for it only when giving up (callers may look
        // at the keys once we return).
        const landed: number[] = [];
        for (const r of results) {
          if (r.ok ? plan.granted(r) : r.unsent !== true) landed.push(r.node);
        }
        const undone = landed.length > 0 ? plan.undo(token, landed) : undefined;
        state ??= newPlanState();
        const view = this.#view(plan, results, granted.length, tooSlow, attempt, retryCount);
        plan.refused?.(results, view);
        const next = planNext(view, state, s);
        switch (next.step) {
          case 'unavailable':
          case 'too-slow':
            await undone;
            throw this.#failure(next.step, plan, results, attempt + 1, s.clock.now() - started);
          case 'again':
            attempt--;
            delay = 0;
            continue;
          case 'give-up':
            await undone;
            passOnUnused(subscription, seen); // a release that woke us after the last attempt
            break;
          case 'retry':
            if (!next.counted) attempt--; // a quick retry within a counted retry's delay
            delay = next.delayMs;
            if (next.wait && subscription === undefined && this.#notifier !== undefined) {
              // Held by someone: wait for their release (pub/sub) as well as the delay.
              subscription = await this.#notifier.subscribe(plan.channels);
              seen = subscription.count;
              // The holder may have released between our attempt and the subscription: try
              // again at once rather than wait for a message that already went by — unless
              // the channels were subscribed all along and no release came since the attempt
              // began.
              if (mark === undefined || this.#notifier.mark(plan.channels) !== mark) delay = 0;
            }
            // The first round left no mark of interest on the nodes (see `firstRoundUnmarked`):
            // a release would not be announced, so mark it before waiting for one.
            if (next.wait && rounds === 1 && plan.firstRoundUnmarked === true) delay = 0;
        }
      }
    } catch (error) {
      passOnUnused(subscription, seen); // giving up: aborted, or the quorum is unavailable
      throw error;
    } finally {
      subscription?.[Symbol.dispose]();
    }
    throw this.#taken(plan, last, retryCount + 1);
  }

  /** A failed round, as the planner sees it. */
  #view(
    plan: AcquirePlan<unknown>,
    results: readonly NodeResult[],
    granted: number,
    tooSlow: boolean,
    attempt: number,
    retryCount: number,
  ): RoundView {
    let failed = 0;
    let freesIn = Infinity;
    for (const r of results) {
      // Only real failures count against availability, not nodes the round did not wait for.
      if (!r.ok && r.pending !== true) failed++;
      if (r.ok) freesIn = Math.min(freesIn, plan.freesIn(r));
    }
    return {
      attempt,
      retryCount,
      nodes: this.#channels.length,
      quorum: this.size,
      granted,
      failed,
      tooSlow,
      refusals: this.#refusals(results, plan),
      freesIn,
      notifications: this.#notifier !== undefined,
      // Called on the plan (it may be a class instance), only when the rules get that far.
      retryAtOnce: plan.retryAtOnce === undefined ? undefined : () => plan.retryAtOnce?.() === true,
    };
  }

  /** The error of an acquisition the planner gave up on: nodes unavailable, or too slow. */
  #failure(
    step: 'unavailable' | 'too-slow',
    plan: AcquirePlan<unknown>,
    results: readonly NodeResult[],
    attempts: number,
    elapsedMs: number,
  ): Error {
    const votes = this.votes(results, plan);
    return step === 'unavailable'
      ? new QuorumUnavailableError(plan.resources, votes, this.size)
      : new LockTooSlowError(
          plan.resources,
          votes,
          attempts,
          elapsedMs,
          plan.ttlMs,
          plan.minValidityMs,
        );
  }

  /**
   * The error of an acquisition that stayed refused: held by this process when a quorum of
   * nodes named a lock of this service as the holder, else by another.
   */
  #taken(plan: AcquirePlan<unknown>, last: readonly NodeResult[], attempts: number): Error {
    const votes = this.votes(last, plan);
    let mine = 0;
    for (const v of votes) if (v.kind === 'held-by-this-process') mine++;
    return new LockTakenError(
      plan.resources,
      votes,
      attempts,
      plan.takenDetail,
      mine >= this.size ? 'this-process' : 'another',
    );
  }

  /**
   * What the refusing nodes said of their holder: `'landing'` when one named a holder whose
   * release we saw (the release is still reaching that node), `'held'` when a quorum named one
   * holder, else `undefined` (nothing said, or different holders: contenders).
   */
  #refusals(
    results: readonly NodeResult[],
    plan: AcquirePlan<unknown>,
  ): 'landing' | 'held' | undefined {
    if (plan.heldBy === undefined) return undefined;
    const counts = new Map<string, number>();
    let held = false;
    for (const r of results) {
      const holder = r.ok ? plan.heldBy(r) : undefined;
      if (holder === undefined) continue;
      if (this.#notifier?.released(plan.channels, holder) === true) return 'landing';
      const count = (counts.get(holder) ?? 0) + 1;
      counts.set(holder, count);
      if (count >= this.size) held = true;
    }
    return held ? 'held' : undefined;
  }

  /**
   * Times out `waiting` at its due time, by the Quorum's one timer: armed for the earliest due
   * round, and left armed when rounds finish before it (they leave `#waiting`). A round
   * finishes in well under its timeout almost always, so a timer of its own — a `setTimeout`
   * and a `clearTimeout` per round, each a timer list made and dropped and the event loop's
   * timer re-armed — was work on every acquire and release for a timer that never fired. Each
   * round is still timed out when its own timeout has passed (the timer is re-armed for the
   * next due round whenever it fires; see `#bark`), so a node that does not answer is not
   * waited for any longer than before.
   */
  #watch(waiting: Waiting): void {
    const head = this.#waiting;
    waiting.listed = true;
    waiting.next = head;
    if (head !== undefined) head.prev = waiting;
    this.#waiting = waiting;
    if (waiting.due < this.#watchdogDue) this.#arm(waiting.due);
  }

  /** Takes a round out of the waiting list (if it is still there). */
  unwatch(waiting: Waiting): void {
    if (!waiting.listed) return;
    waiting.listed = false;
    const { prev, next } = waiting;
    if (prev === undefined) this.#waiting = next;
    else prev.next = next;
    if (next !== undefined) next.prev = prev;
    waiting.prev = undefined;
    waiting.next = undefined;
  }

  #arm(due: number): void {
    const clock = this.#s.clock;
    this.#watchdog?.cancel();
    this.#watchdogDue = due;
    // Unref'd: a round waits for answers on the nodes' connections, which keep the process
    // alive on their own; a watchdog left armed after the last round must not.
    this.#watchdog = clock.setTimer(this.#bark, due - clock.now()).unref();
  }

  /**
   * The timer fired: time out every round that is due (its `expire` runs after the I/O that is
   * ready now — one setImmediate, see core/io-timeout.ts — so replies that arrived while the
   * process was busy past the timeout still decide the round), and re-arm for the next one. A
   * round due within the timer's granularity (1 ms) counts as due: the timer may fire up to that
   * much before the clock reaches it, as a timer of the round's own could.
   */
  readonly #bark = (): void => {
    this.#watchdog = undefined;
    this.#watchdogDue = Infinity;
    const now = this.#s.clock.now();
    let soonest = Infinity;
    for (let waiting = this.#waiting; waiting !== undefined;) {
      const after = waiting.next;
      if (waiting.due - now < TIMER_GRANULARITY_MS) {
        this.unwatch(waiting);
        setImmediate(expireRound, waiting);
      } else if (waiting.due < soonest) soonest = waiting.due;
      waiting = after;
    }
    if (soonest !== Infinity) this.#arm(soonest);
  };

  /** Calls `listener` each time a node's client reconnects (see `NodeChannel.onReconnect`). */
  onReconnect(listener: (() => void) | undefined): void {
    for (const channel of this.#channels) channel.onReconnect = listener;
  }

  /**
   * Undoes a failed attempt on `nodes` (the compare-and-delete `script` on `keys` with `args`,
   * which never publishes), waiting for each. A node whose client fails the call gets it again
   * when that client is next ready (see {@link Quorum.again}), while what it would delete may
   * be there (`ttlMs` from now; a copy of the attempt that lands later is undone by the
   * attempt's late answer).
   */
  undo(
    script: Script,
    keys: readonly string[],
    args: readonly (string | number)[],
    nodes: readonly number[],
    ttlMs: number,
  ): Promise<NodeResult[]> {
    const resendUntil = this.#s.clock.now() + ttlMs;
    return this.round(script, keys, args, never, { waitAll: true, nodes, resendUntil });
  }

  /**
   * A node's client failed an undo or a release (a round with `resendUntil`) — gave up on it
   * while reconnecting (ioredis's `maxRetriesPerRequest`), or was not connected: the node may
   * still hold what the call would delete, and would refuse others there until its ttl. The
   * call is sent to it again the next time its client is ready (a round of its own, with the
   * same `until`), and so on until `until` has passed or the Redlock closes; at most
   * `MAX_WHEN_READY` (1024) such calls wait per node. Safe to repeat: every such script is a
   * compare-and-delete of a token no other holder has, so a copy that comes late deletes
   * nothing of a lock acquired since. Not for a script error (the node ran it), nor for a round
   * that timed out (`timed-out`, or a client reconnecting with the call queued: the call is
   * still on its way, and its own answer — or failure — comes later).
   *
   * An attempt the client failed without writing it (`unsent`) gets no undo at all. One undo is
   * still sent again for nothing: that of an attempt whose round timed out while the client
   * held it queued (reconnecting), and which the client then failed, unwritten, together with
   * its undo queued behind it — the undo does not learn of the attempt's own late failure.
   * Harmless: it deletes only what holds the attempt's token (nothing), and counts within the
   * per-node bound.
   */
  again(
    script: Script,
    keys: readonly string[],
    args: readonly (string | number)[],
    node: number,
    kind: NodeOutcome,
    until: number,
  ): void {
    if (kind === 'script-error' || kind === 'timed-out' || this.#undosForgotten) return;
    const clock = this.#s.clock;
    // Registered at once, while the failure is fresh: the client is not ready (it failed the
    // call), so its next `ready` is heard.
    (this.#channels[node] as NodeChannel).whenReady(until, clock.now(), () => {
      // The Redlock closed meanwhile: nothing is sent again after close().
      if (until - clock.now() <= 0 || this.#undosForgotten) return;
      void this.round(script, keys, args, never, {
        waitAll: true,
        nodes: [node],
        resendUntil: until,
      });
    });
  }

  /**
   * The longest ttl a lock or permit of this Quorum was acquired or extended for so far: how
   * long after a release its keys may still be on a node (see `Redlock.releaseKeys`).
   */
  get longestTtlMs(): number {
    return this.#longestTtlMs;
  }

  /** A lock or permit was acquired or extended for `ttlMs` (see {@link Quorum.longestTtlMs}). */
  heldFor(ttlMs: number): void {
    if (ttlMs > this.#longestTtlMs) this.#longestTtlMs = ttlMs;
  }

  /**
   * Drops the undos and releases waiting for a client to be ready again (see
   * {@link Quorum.again}): the Redlock closes.
   */
  forgetUndos(): void {
    this.#undosForgotten = true;
    for (const channel of this.#channels) channel.forgetWhenReady();
  }

  /** Stops listening to the clients (see `NodeChannel.detach`): the Redlock is closed. */
  detach(): void {
    for (const channel of this.#channels) channel.detach();
  }

  /** Cancels the rounds' timer if no round is waiting (a round made later arms it again). */
  rest(): void {
    if (this.#waiting !== undefined) return;
    this.#watchdog?.cancel();
    this.#watchdog = undefined;
    this.#watchdogDue = Infinity;
  }

  /**
   * Runs a script on every node at once (or on `nodes` only), bounded by one per-node timeout
   * for the whole round, and settles as soon as the outcome is known: a quorum answered "yes",
   * or too few nodes are left to make one (`waitAll` waits for every node called, or the
   * timeout). Nodes not waited for are reported as `pending`; their late answers are ignored.
   *
   * Deliberately no async wrappers, no timer of its own and no `Promise.race`: this is the hot
   * path of every acquire, extend and release.
   */
  round(
    script: Script,
    keys: readonly string[],
    args: readonly (string | number)[],
    yes: (r: NodeResult) => boolean,
    options: RoundOptions = {},
  ): Promise<NodeResult[]> {
    const { clock, nodeTimeoutMs } = this.#s;
    const channels = this.#channels;
    const n = channels.length;
    const nodes = options.nodes;
    const called = nodes === undefined ? n : nodes.length;
    const argv = keys.length === 0 ? [...args] : [...keys, ...args];
    const timeoutMs = nodeTimeoutMs + argv.length * ARGUMENT_ALLOWANCE_MS;
    const due = (options.started ?? clock.now()) + timeoutMs;
    return new Promise((resolve) => {
      const round = new Round(
        this,
        script,
        keys,
        args,
        channels,
        this.#pending,
        yes,
        options,
        called,
        timeoutMs,
        nodeTimeoutMs,
        due,
        resolve,
      );
      // Timed out by the Quorum's one timer (see `#watch`), which runs `expire` after the I/O
      // that is ready when it fires.
      this.#watch(round);
      const numKeys = keys.length;
      const reply = round.reply;
      if (nodes === undefined) {
        for (let node = 0; node < n; node++) {
          (channels[node] as NodeChannel).send(script, numKeys, argv, reply, node);
        }
      } else {
        for (const node of nodes) {
          (channels[node] as NodeChannel).send(script, numKeys, argv, reply, node);
        }
      }
      if (called === 0) round.finish();
    });
  }
}
