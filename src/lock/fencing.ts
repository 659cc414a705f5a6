/**
 * Fencing counters that survive node restarts the client can see.
 *
 * Each standalone node carries an incarnation key (`<keyPrefix>incarnation`, a random id). It
 * is created only by a repair (below) or, on a deployment where no node has one, by the first
 * bootstrap; nothing else writes it, so a node without it lost its data since its counters were
 * last known good (a restart without persistence, a flush). Every acquire script reports
 * whether the key is there (one EXISTS inside the script), and the Redlock counts only the
 * counters of nodes that have it ("intact" nodes; the proof is in redlock.ts).
 *
 * A node without it ("emptied") is repaired from a quorum of intact nodes, and only then marked
 * intact again: a repair session joins the node's session set (gone if the node restarts again
 * meanwhile), then every fencing counter of the intact nodes is read (SCAN, MATCH
 * `<keyPrefix>*:fence`, from each of at least a quorum of them, each intact for its whole
 * scan; every integer key of that name is taken for a counter — the keys under the prefix are
 * the Redlock's, and the prefix is never empty: no key outside it is copied), the maximum of
 * each is copied onto the node (raised to, never lowered), and the
 * incarnation key is set — each step checking the session first. A Redlock runs this check
 * when one of its clients reconnects (ioredis `ready`), so a node that restarts is repaired as
 * soon as it is back, while the others are intact: rolling restarts, one node at a time, keep
 * every token. It also runs when an acquisition sees an emptied node, and before an
 * acquisition gives up for want of intact nodes.
 *
 * When fewer than a quorum of nodes are intact and the rest answered emptied, a majority lost
 * its counters at once: no repair can be trusted, and the check says `lost` (acquisitions then
 * fail with `FencingLostError`). When no node that answers is intact and a quorum answered, the
 * deployment is taken to be new (or to have lost everything — the two cannot be told apart, see
 * the README): the answering nodes are bootstrapped from the maximum of their own counters.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { newToken } from './lock.js';
import type { NodeResult, Quorum } from './quorum.js';
import { FENCE_REPAIR, FENCE_SCAN, FENCE_STATUS } from './scripts.js';

/** What the nodes' incarnation keys say. */
export interface FenceCheck {
  /** `intact`: a quorum is; `unavailable`: not known (too many nodes did not answer). */
  readonly state: 'intact' | 'unavailable' | 'lost';
  /** Nodes with their incarnation key (after any repair this check made). */
  readonly intact: readonly number[];
  /** Nodes that answered without it. */
  readonly emptied: readonly number[];
}

/** Counters read per SCAN page. */
const PAGE = 1000;
/** Counters written per repair call. */
const CHUNK = 256;
/** A repair session left behind (a client that died mid-repair) expires after this. */
const SESSION_TTL_MS = 60_000;

/** `text` with the glob characters of SCAN MATCH escaped. */
const globEscaped = (text: string): string => text.replace(/[*?[\]\\]/g, '\\$&');

const isOne = (r: NodeResult): boolean => Number(r.value) === 1;
/** Did node `n` answer 1 in `results`? */
const saidOne = (results: readonly NodeResult[], n: number): boolean => {
  const r = results[n];
  return r !== undefined && r.ok && isOne(r);
};
const always = (): boolean => true;

/**
 * The incarnation check and repair of one Redlock's nodes (standalone nodes only: on Redis
 * Cluster the keys of one script must share a slot, and a node-wide key cannot).
 */
export class FenceKeeper {
  /** The incarnation key. */
  readonly marker: string;
  readonly #sessions: string;
  readonly #pattern: string;
  readonly #q: Quorum;
  #queued: Promise<FenceCheck> | undefined;
  #tail: Promise<unknown> = Promise.resolve();
  /** Set by {@link FenceKeeper.stop}: no round is sent any more. */
  #stopped = false;

  constructor(q: Quorum, keyPrefix: string) {
    this.#q = q;
    this.marker = `${keyPrefix}incarnation`;
    this.#sessions = `${keyPrefix}repairing`;
    this.#pattern = `${globEscaped(keyPrefix)}*:fence`;
  }

  /**
   * Reads every node's incarnation key and repairs (or bootstraps) the nodes without it where
   * that is safe. Checks requested while one runs share the next run.
   */
  check(): Promise<FenceCheck> {
    if (this.#queued !== undefined) return this.#queued;
    const run = this.#tail.then(() => {
      this.#queued = undefined;
      return this.#run();
    });
    this.#queued = run;
    this.#tail = run.catch(() => undefined);
    return run;
  }

  /**
   * Stops checking (the Redlock's `close()`): no check sends a round any more, and the one
   * running ends at its next step (a repair cut short is what a client that died mid-repair
   * leaves: a session that expires, the node still unmarked for the next Redlock to repair).
   * Resolves once that check has ended — after the round it had in flight, each bounded by the
   * node timeout.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#tail;
  }

  /** Stopped? (A call, not the field: a check reads it again after each await.) */
  #halted(): boolean {
    return this.#stopped;
  }

  async #run(): Promise<FenceCheck> {
    const q = this.#q;
    if (this.#halted()) return { state: 'unavailable', intact: [], emptied: [] };
    const status = await q.round(FENCE_STATUS, [this.marker], [], always, { waitAll: true });
    const intact: number[] = [];
    const emptied: number[] = [];
    for (const r of status) if (r.ok) (isOne(r) ? intact : emptied).push(r.node);
    const unknown = q.nodes - intact.length - emptied.length;
    if (emptied.length === 0) {
      return { state: intact.length >= q.size ? 'intact' : 'unavailable', intact, emptied };
    }
    if (intact.length >= q.size || (intact.length === 0 && emptied.length >= q.size)) {
      // Repair from the intact quorum; or, on a deployment where no answering node is intact,
      // bootstrap the answering nodes from their own counters.
      const bootstrap = intact.length === 0;
      const repaired = await this.#repair(emptied, bootstrap ? emptied : intact, bootstrap);
      const now = [...intact, ...repaired].sort((a, b) => a - b);
      return {
        state: now.length >= q.size ? 'intact' : 'unavailable',
        intact: now,
        emptied: emptied.filter((n) => !repaired.includes(n)),
      };
    }
    return {
      state: intact.length + unknown >= q.size ? 'unavailable' : 'lost',
      intact,
      emptied,
    };
  }

  /**
   * Copies onto `targets` the maximum of every counter over `sources` (at least a quorum of
   * them read completely) and marks them intact. Returns the nodes repaired.
   */
  async #repair(
    targets: readonly number[],
    sources: readonly number[],
    bootstrap: boolean,
  ): Promise<number[]> {
    const q = this.#q;
    if (this.#halted()) return [];
    const session = newToken();
    const keys = [this.marker, this.#sessions];
    const begun = await q.round(FENCE_REPAIR, keys, [session, 'begin', SESSION_TTL_MS], isOne, {
      waitAll: true,
      nodes: targets,
    });
    let writing = targets.filter((n) => saidOne(begun, n));
    if (writing.length === 0 || this.#halted()) return [];
    // A bootstrap reads the nodes it writes, each valid while its session holds (no restart).
    const from = bootstrap ? writing : sources;
    const counters = new Map<string, number>();
    const complete = await Promise.all(
      from.map((n) => this.#scan(n, session, bootstrap, counters)),
    );
    if (complete.filter(Boolean).length < q.size || this.#halted()) return [];
    const entries = [...counters];
    for (let i = 0; i < entries.length && writing.length > 0 && !this.#halted(); i += CHUNK) {
      const chunk = entries.slice(i, i + CHUNK);
      const copied = await q.round(
        FENCE_REPAIR,
        [...keys, ...chunk.map(([key]) => key)],
        [session, 'copy', SESSION_TTL_MS, ...chunk.map(([, value]) => value)],
        isOne,
        { waitAll: true, nodes: writing },
      );
      writing = writing.filter((n) => saidOne(copied, n));
    }
    if (writing.length === 0 || this.#halted()) return [];
    const ended = await q.round(FENCE_REPAIR, keys, [session, 'end', newToken()], isOne, {
      waitAll: true,
      nodes: writing,
    });
    return writing.filter((n) => saidOne(ended, n));
  }

  /**
   * Reads every counter of `node` into `into` (keeping the maximum per key). True when the
   * whole scan ran while the node stayed valid: intact, or (bootstrap) in our session.
   */
  async #scan(
    node: number,
    session: string,
    bootstrap: boolean,
    into: Map<string, number>,
  ): Promise<boolean> {
    let cursor = '0';
    do {
      if (this.#halted()) return false;
      const page = (
        await this.#q.round(
          FENCE_SCAN,
          [this.marker, this.#sessions],
          [cursor, this.#pattern, PAGE, session],
          always,
          { waitAll: true, nodes: [node] },
        )
      )[node];
      if (page?.ok !== true || !Array.isArray(page.value)) return false;
      const value = page.value as unknown[];
      for (let j = 3; j + 1 < value.length; j += 2) {
        const key = String(value[j]);
        const count = Number(value[j + 1]);
        if (Number.isSafeInteger(count) && count > (into.get(key) ?? 0)) into.set(key, count);
      }
      if (Number(value[bootstrap ? 1 : 0]) !== 1) return false;
      cursor = String(value[2]);
    } while (cursor !== '0');
    return true;
  }
}
