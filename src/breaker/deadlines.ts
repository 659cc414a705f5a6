/**
 * Deadlines of calls with a per-call timeout, shared by every breaker on one clock: a binary
 * min-heap of {@link Deadline}s with ONE unref'd timer armed for the earliest — instead of a
 * `setTimeout` per call (the usual structure for many timeouts; Varghese & Lauck, "Hashed and
 * Hierarchical Timing Wheels", 1987, compare it with wheels; a heap suits deadlines that are
 * mostly cancelled long before they fall due).
 *
 * The timer is never moved later: when the earliest entry goes, the timer still fires at its
 * old time, finds nothing due and arms for the new earliest. So a steady stream of calls that
 * finish in time arms about one timer per timeout period, not one per call. When the heap
 * empties, the timer is cleared at the end of the current tick (unless an entry came back),
 * so an idle process holds no timer at all.
 *
 * @internal
 * @packageDocumentation
 */
import type { Clock, Timer } from '../core/index.js';

/** Something that falls due once: a bucket of calls sharing a deadline. @internal */
export abstract class Deadline {
  /** When it falls due, on the queue's clock (ms); moved only through {@link DeadlineQueue.postpone}. */
  due: number;
  /** Position in the heap; -1 while not queued. */
  index = -1;

  constructor(due: number) {
    this.due = due;
  }

  /** Runs once, when `due` has passed while queued (the entry is already out of the heap). */
  abstract expire(): void;
}

/** The deadlines of one clock. @internal */
export class DeadlineQueue {
  readonly #clock: Clock;
  readonly #heap: Deadline[] = [];
  #timer: Timer | undefined;
  /** When the armed timer fires (Infinity when none is armed). */
  #timerDue = Infinity;
  #idleCheckQueued = false;
  readonly #fire = (): void => {
    this.#timer = undefined;
    this.#timerDue = Infinity;
    const heap = this.#heap;
    const now = this.#clock.now();
    // A timer may run a fraction of a millisecond early (Node counts from the loop's cached
    // millisecond): whatever is not due yet is simply armed for again below.
    while (heap.length > 0 && (heap[0] as Deadline).due <= now) {
      const first = heap[0] as Deadline;
      this.#removeAt(0);
      first.expire();
    }
    const next = heap[0];
    if (next !== undefined) this.#arm(next.due);
  };
  readonly #idleCheck = (): void => {
    this.#idleCheckQueued = false;
    if (this.#heap.length === 0) this.#disarm();
  };

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** Entries queued. */
  get size(): number {
    return this.#heap.length;
  }

  /** Whether a timer is armed. */
  get armed(): boolean {
    return this.#timer !== undefined;
  }

  /** Queues `entry` (not queued yet); arms the timer if it is now the earliest. */
  add(entry: Deadline): void {
    const heap = this.#heap;
    entry.index = heap.length;
    heap.push(entry);
    this.#up(entry.index);
    if (entry.due < this.#timerDue) this.#arm(entry.due);
  }

  /** Takes `entry` out (nothing if it is not queued). */
  remove(entry: Deadline): void {
    if (entry.index < 0) return;
    this.#removeAt(entry.index);
    if (this.#heap.length === 0 && this.#timer !== undefined && !this.#idleCheckQueued) {
      // Cleared at the end of this tick, not now: the next call, often only a few microtasks
      // away, would arm a new timer again.
      this.#idleCheckQueued = true;
      process.nextTick(this.#idleCheck);
    }
  }

  /**
   * Moves `entry` to fall due at `due`, later than now (queued or not). Its old time may keep
   * the timer armed earlier: the timer then fires, finds nothing due and arms again.
   */
  postpone(entry: Deadline, due: number): void {
    if (entry.index < 0) {
      entry.due = due;
      return;
    }
    this.#removeAt(entry.index);
    entry.due = due;
    this.add(entry);
  }

  #arm(due: number): void {
    this.#timer?.cancel();
    const delay = due - this.#clock.now();
    // Whole milliseconds: what a timer can do, and one list per duration in Node's timers.
    this.#timer = this.#clock.setTimer(this.#fire, delay > 0 ? Math.ceil(delay) : 0).unref();
    this.#timerDue = due;
  }

  #disarm(): void {
    this.#timer?.cancel();
    this.#timer = undefined;
    this.#timerDue = Infinity;
  }

  #removeAt(index: number): void {
    const heap = this.#heap;
    const removed = heap[index] as Deadline;
    const last = heap.pop() as Deadline;
    removed.index = -1;
    if (last === removed) return;
    heap[index] = last;
    last.index = index;
    this.#up(index);
    this.#down(last.index);
  }

  #up(index: number): void {
    const heap = this.#heap;
    const entry = heap[index] as Deadline;
    let at = index;
    while (at > 0) {
      const parentAt = (at - 1) >> 1;
      const parent = heap[parentAt] as Deadline;
      if (parent.due <= entry.due) break;
      heap[at] = parent;
      parent.index = at;
      at = parentAt;
    }
    heap[at] = entry;
    entry.index = at;
  }

  #down(index: number): void {
    const heap = this.#heap;
    const n = heap.length;
    const entry = heap[index] as Deadline;
    let at = index;
    for (;;) {
      const left = 2 * at + 1;
      if (left >= n) break;
      const right = left + 1;
      const child =
        right < n && (heap[right] as Deadline).due < (heap[left] as Deadline).due ? right : left;
      const smaller = heap[child] as Deadline;
      if (smaller.due >= entry.due) break;
      heap[at] = smaller;
      smaller.index = at;
      at = child;
    }
    heap[at] = entry;
    entry.index = at;
  }
}

const queues = new WeakMap<Clock, DeadlineQueue>();

/** The deadline queue of `clock`, made on first use. @internal */
export function deadlineQueueFor(clock: Clock): DeadlineQueue {
  let queue = queues.get(clock);
  if (queue === undefined) {
    queue = new DeadlineQueue(clock);
    queues.set(clock, queue);
  }
  return queue;
}
