/**
 * The queue chaos suite's drain: after the chaos, the orchestrator counts the messages still
 * open (neither handled nor dead-lettered) until none is left. This decides when it stops
 * waiting and what the messages still open then mean. Pure (times are passed in), so the rule
 * is tested on hand-made counts (drain.test.ts).
 *
 * @packageDocumentation
 */

/** How a drain ended: nothing open, no message finished for `stallMs`, or its time ran out. */
export type DrainEnd = 'done' | 'stalled' | 'out of time';

/** The rule's settings, all in ms on one monotonic clock. */
export interface DrainOptions {
  /** When the drain began. */
  readonly startedAt: number;
  /** No message finished for this long: a stall. */
  readonly stallMs: number;
  /** The drain gives up this long after it began. */
  readonly budgetMs: number;
}

/** What the messages open when the drain ended count as. */
export interface DrainVerdict {
  /** Open when the drain stalled: nothing moves them any more. */
  readonly lost: number;
  /** Open when the time ran out while messages were still finishing: not judged lost. */
  readonly undrained: number;
}

/** Follows the open count of a drain and says when to stop. */
export class DrainWatch {
  readonly #o: DrainOptions;
  #progressAt: number;
  #openBefore = Infinity;

  constructor(options: DrainOptions) {
    this.#o = options;
    this.#progressAt = options.startedAt;
  }

  /** Records `open` messages at `now`; the drain's end, or undefined to keep waiting. */
  observe(open: number, now: number): DrainEnd | undefined {
    if (open < this.#openBefore) this.#progressAt = now;
    this.#openBefore = open;
    if (open === 0) return 'done';
    if (now > this.#o.startedAt + this.#o.budgetMs) return 'out of time';
    if (now - this.#progressAt > this.#o.stallMs) return 'stalled';
    return undefined;
  }

  /** When a message last finished. */
  get progressAt(): number {
    return this.#progressAt;
  }
}

/**
 * What the `open` messages left when the drain ended (`end`) count as. Only a stall makes them
 * lost: a drain whose time ran out while messages were still finishing says nothing about the
 * ones left (they are undrained — and the run still fails, asking for a longer drain).
 */
export function drainVerdict(end: DrainEnd, open: number): DrainVerdict {
  return end === 'out of time' ? { lost: 0, undrained: open } : { lost: open, undrained: 0 };
}
