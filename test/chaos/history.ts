/**
 * The history of a lock or semaphore chaos run, the fenced register the holders write through,
 * and the checker over both. Pure code over plain data (tested on its own in
 * history.test.ts), so the checker can be shown to catch what it claims to catch.
 *
 * One timeline: every time here is `hostNow()` — CLOCK_MONOTONIC, shared by every process on
 * the host — so times reported by different worker processes compare directly.
 *
 * A hold is *valid* from `ack` (the holder's `acquire()` has resolved: the grant is known)
 * until the earlier of `validUntil` (the lock's own deadline, on the same clock: the workers'
 * Redlocks use `hostNow` as their clock) and `end` (read before the holder calls `release()`,
 * or when it stops using the lock because an extension failed or the deadline passed). Both
 * ends are conservative: the grant happened before `ack`, and the holder stops using the lock
 * at `end`; so two valid holds that overlap here overlapped in fact — no false alarm from
 * timing noise, only a chance of missing a violation narrower than the reporting delay.
 *
 * @packageDocumentation
 */

/** One acquisition, as the orchestrator assembles it from a worker's reports. */
export interface Hold {
  /** `<worker>.<client>.<n>`. */
  readonly id: string;
  /** Lock: the resources; semaphore: its name. */
  readonly resources: readonly string[];
  /** Fencing token per resource (lock only). */
  readonly tokens: Readonly<Record<string, number>>;
  /** Permits held (semaphore; 1 for a lock). */
  readonly permits: number;
  /** `acquire()` was called. */
  readonly start: number;
  /** `acquire()` resolved. */
  readonly ack: number;
  /** The lock's deadline (updated by each successful extension). */
  validUntil: number;
  /** The holder stopped using it (before `release()`), if it said so. */
  end?: number;
  /** Why it stopped: `release`, `expired`, `extend-failed`. */
  endWhy?: string;
}

/** One write a holder sent through the fenced register. */
export interface WriteRecord {
  readonly hold: string;
  readonly resource: string;
  readonly token: number;
  readonly sentAt: number;
  /** When the register received (and decided) it. */
  readonly receivedAt: number;
  readonly accepted: boolean;
}

/** End of a hold's validity on the shared timeline. */
export function validEnd(hold: Hold): number {
  return hold.end === undefined ? hold.validUntil : Math.min(hold.validUntil, hold.end);
}

/**
 * A fencing-checked register outside the lock set, as a store behind a lock should be: per
 * resource it remembers the highest token it accepted (and whose), refuses a lower token, and
 * accepts an equal one only from the same holder.
 */
export class FencedRegister {
  readonly #highest = new Map<string, { token: number; hold: string }>();
  readonly writes: WriteRecord[] = [];

  write(
    hold: string,
    resource: string,
    token: number,
    sentAt: number,
    receivedAt: number,
  ): boolean {
    const top = this.#highest.get(resource);
    const accepted =
      top === undefined || token > top.token || (token === top.token && hold === top.hold);
    if (accepted) this.#highest.set(resource, { token, hold });
    this.writes.push({ hold, resource, token, sentAt, receivedAt, accepted });
    return accepted;
  }
}

/** Two valid holds of one resource at once. */
export interface Overlap {
  readonly resource: string;
  readonly first: string;
  readonly second: string;
  /** How long they overlapped. */
  readonly ms: number;
}

/** A hold granted after another, with a token not above the other's. */
export interface Inversion {
  readonly resource: string;
  /** The earlier hold (the highest token granted before `later`). */
  readonly earlier: string;
  readonly earlierToken: number;
  readonly later: string;
  readonly laterToken: number;
}

/** More permits held at once than the semaphore has. */
export interface Overcommit {
  readonly resource: string;
  readonly at: number;
  readonly held: number;
  readonly holders: readonly string[];
}

const byResource = (holds: readonly Hold[]): Map<string, Hold[]> => {
  const out = new Map<string, Hold[]>();
  for (const hold of holds) {
    for (const resource of hold.resources) {
      let list = out.get(resource);
      if (list === undefined) out.set(resource, (list = []));
      list.push(hold);
    }
  }
  return out;
};

/** Holds whose validity is not empty (a holder may learn of its grant after its deadline). */
const nonEmpty = (hold: Hold): boolean => validEnd(hold) > hold.ack;

/** Every pair of overlapping valid holds of a resource (each later hold against the latest-ending earlier one). */
export function findOverlaps(holds: readonly Hold[]): Overlap[] {
  const out: Overlap[] = [];
  for (const [resource, list] of byResource(holds.filter(nonEmpty))) {
    const sorted = [...list].sort((a, b) => a.ack - b.ack);
    let reach: Hold | undefined;
    for (const hold of sorted) {
      if (reach !== undefined && hold.ack < validEnd(reach)) {
        out.push({
          resource,
          first: reach.id,
          second: hold.id,
          ms: Math.min(validEnd(reach), validEnd(hold)) - hold.ack,
        });
      }
      if (reach === undefined || validEnd(hold) > validEnd(reach)) reach = hold;
    }
  }
  return out;
}

/**
 * Fencing inversions: among holds with a non-empty validity, in the order their grants became
 * known (`ack`), a token not greater than one granted before it. Redlock's fencing claim (see
 * src/lock/redlock.ts) is that a lock granted later gets a greater token. For two valid holds
 * that do not overlap, `ack` order is grant order (the later one was granted after the earlier
 * one's validity ended, which is after the earlier one's `ack`), so this needs no finer clock;
 * overlapping holds are reported as overlaps anyway.
 */
export function findInversions(holds: readonly Hold[]): Inversion[] {
  const out: Inversion[] = [];
  for (const [resource, list] of byResource(holds.filter(nonEmpty))) {
    const byAck = [...list].sort((a, b) => a.ack - b.ack);
    let top: Hold | undefined;
    for (const later of byAck) {
      if (top !== undefined && tokenOf(later, resource) <= tokenOf(top, resource)) {
        out.push({
          resource,
          earlier: top.id,
          earlierToken: tokenOf(top, resource),
          later: later.id,
          laterToken: tokenOf(later, resource),
        });
      }
      if (top === undefined || tokenOf(later, resource) > tokenOf(top, resource)) top = later;
    }
  }
  return out;
}

const tokenOf = (hold: Hold, resource: string): number => hold.tokens[resource] ?? 0;

/** Instants where more than `limit` permits of a resource were validly held. */
export function findOvercommits(holds: readonly Hold[], limit: number): Overcommit[] {
  const out: Overcommit[] = [];
  for (const [resource, list] of byResource(holds.filter(nonEmpty))) {
    // Ends sort before starts at the same instant: a hold ending at t does not meet one from t.
    const events = list.flatMap((h) => [
      { at: h.ack, delta: h.permits, hold: h },
      { at: validEnd(h), delta: -h.permits, hold: h },
    ]);
    events.sort((a, b) => a.at - b.at || a.delta - b.delta);
    const current = new Set<Hold>();
    let held = 0;
    for (const e of events) {
      held += e.delta;
      if (e.delta > 0) current.add(e.hold);
      else current.delete(e.hold);
      if (e.delta > 0 && held > limit) {
        out.push({ resource, at: e.at, held, holders: [...current].map((h) => h.id) });
      }
    }
  }
  return out;
}

/**
 * Writes the register refused although the writer's hold was still valid when the register
 * received them: with no overlap, only a token that went backwards explains one.
 */
export function refusedLegitimate(
  writes: readonly WriteRecord[],
  holds: ReadonlyMap<string, Hold>,
): WriteRecord[] {
  return writes.filter((w) => {
    if (w.accepted) return false;
    const hold = holds.get(w.hold);
    return hold !== undefined && w.receivedAt < validEnd(hold);
  });
}
