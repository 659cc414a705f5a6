/**
 * `hedge()`: hedged ("backup") requests — when a call has not answered after a delay (fixed,
 * or the observed p95), start another attempt beside it; the first success wins and the others
 * are aborted through their signals. Dean & Barroso, "The Tail at Scale", CACM 56(2), 2013:
 * a backup request after the 95th-percentile latency cuts the tail for a few percent of load.
 *
 * @packageDocumentation
 */
import {
  InvalidOptionError,
  guardedOption,
  integerOption,
  isClock,
  numberOption,
  onAbort,
  resolveOptions,
  systemClock,
  type Clock,
  type Timer,
} from '../core/index.js';
import { HedgeLostError } from './errors.js';
import { LatencyWindow } from './latency.js';
import { NEVER, SinglePolicy, type Attempt, type Chain, type Policy } from './policy.js';

/** Options of {@link hedge}; give `afterMs`, `afterPercentile`, or both. */
export interface HedgeOptions {
  /**
   * Start a hedge this long (ms) after the previous attempt when no attempt has succeeded; with
   * `afterPercentile`, the delay used until `minSamples` latencies have been seen.
   */
  readonly afterMs?: number;
  /** Start a hedge after this percentile (0 < p < 100) of recent successful latencies. */
  readonly afterPercentile?: number;
  /** Latencies needed before `afterPercentile` applies, 1 … 10⁴. @defaultValue 20 */
  readonly minSamples?: number;
  /** Extra attempts at most, 1 … 10. @defaultValue 1 */
  readonly maxHedges?: number;
  /** Clock. @defaultValue `systemClock` */
  readonly clock?: Clock;
}

const OWNER = 'hedge';

const spec = {
  afterMs: numberOption({ min: 0, max: 86_400_000, optional: true }),
  afterPercentile: numberOption({ min: 0, minExclusive: true, max: 99.999, optional: true }),
  minSamples: integerOption({ min: 1, max: 10_000, default: 20 }),
  maxHedges: integerOption({ min: 1, max: 10, default: 1 }),
  clock: guardedOption(isClock, 'a Clock', { default: systemClock }),
};

/** When to hedge: a fixed delay, a percentile of what was seen, or both. @internal */
export class HedgeDelay {
  readonly #afterMs: number | undefined;
  readonly #window: LatencyWindow | undefined;
  readonly #minSamples: number;

  constructor(afterMs: number | undefined, percentile: number | undefined, minSamples: number) {
    this.#afterMs = afterMs;
    this.#window = percentile === undefined ? undefined : new LatencyWindow(percentile);
    this.#minSamples = minSamples;
  }

  /** The delay before the next hedge (ms); Infinity: not yet (no samples, no `afterMs`). */
  delay(): number {
    const window = this.#window;
    if (window !== undefined && window.count >= this.#minSamples) return window.value();
    return this.#afterMs ?? Infinity;
  }

  record(latencyMs: number): void {
    this.#window?.record(latencyMs);
  }
}

/** Validates hedge options (shared with `resilientCall`). @internal */
export function hedgeRules(
  owner: string,
  options: unknown,
  path = '',
): { readonly delay: HedgeDelay; readonly maxHedges: number; readonly clock: Clock } {
  const o = resolveOptions(owner, options, spec, path);
  if (o.afterMs === undefined && o.afterPercentile === undefined) {
    throw new InvalidOptionError(
      owner,
      path === '' ? 'afterMs' : `${path}.afterMs`,
      'afterMs or afterPercentile (or both)',
      undefined,
      'required',
    );
  }
  return {
    delay: new HedgeDelay(o.afterMs, o.afterPercentile, o.minSamples),
    maxHedges: o.maxHedges,
    clock: o.clock,
  };
}

class HedgePolicy extends SinglePolicy {
  readonly observesSignal = true;
  protected readonly owner = OWNER;
  readonly #delay: HedgeDelay;
  readonly #maxHedges: number;
  readonly #clock: Clock;

  constructor(options: HedgeOptions) {
    super();
    const rules = hedgeRules(OWNER, options);
    this.#delay = rules.delay;
    this.#maxHedges = rules.maxHedges;
    this.#clock = rules.clock;
  }

  run<R>(chain: Chain, next: number, fn: Attempt<R>, signal: AbortSignal): Promise<R> {
    // A stage outside may hand on a signal that aborted already (a bulkhead granting a slot to a
    // call whose caller gave up in the same turn): its abort event is over, so the listener
    // below would never run, and attempts on signals of their own would start — and, waiting
    // for those signals, might never end.
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    const clock = this.#clock;
    const delays = this.#delay;
    const maxAttempts = 1 + this.#maxHedges;
    // Losers are aborted through their own signals, which need a controller each — unless
    // nothing inside can see a signal, when there is nothing to abort.
    const observed = chain.observed(next, fn);
    return new Promise<R>((resolve, reject) => {
      const controllers: AbortController[] = [];
      let launched = 0;
      let running = 0;
      let settled = false;
      let lastError: unknown;
      let timer: Timer | undefined;
      let off: (() => void) | undefined;
      const end = (reason?: unknown): void => {
        settled = true;
        timer?.cancel();
        timer = undefined;
        off?.();
        if (controllers.length > 0) {
          const why = reason ?? new HedgeLostError();
          for (const controller of controllers) controller.abort(why);
        }
      };
      const launch = (): void => {
        timer?.cancel();
        timer = undefined;
        launched++;
        running++;
        let attemptSignal = signal;
        let controller: AbortController | undefined;
        if (observed) {
          controller = new AbortController();
          controllers.push(controller);
          attemptSignal = controller.signal;
        }
        const began = clock.now();
        chain.step(next, fn, attemptSignal).then(
          (value) => {
            running--;
            if (settled) return;
            delays.record(clock.now() - began);
            if (controller !== undefined) controllers.splice(controllers.indexOf(controller), 1);
            end();
            resolve(value);
          },
          (error: unknown) => {
            running--;
            if (settled) return;
            lastError = error;
            if (controller !== undefined) controllers.splice(controllers.indexOf(controller), 1);
            // A failed attempt starts the next hedge at once (it will not answer any more).
            if (launched < maxAttempts) launch();
            else if (running === 0) {
              end();
              reject(lastError);
            }
          },
        );
        if (!settled && launched < maxAttempts) {
          const wait = delays.delay();
          if (wait !== Infinity) timer = clock.setTimer(launch, wait);
        }
      };
      if (signal !== NEVER) {
        off = onAbort(signal, () => {
          if (settled) return;
          end(signal.reason);
          reject(signal.reason as Error);
        });
      }
      launch();
    });
  }
}

/**
 * A policy that sends hedged requests: when no attempt has succeeded `afterMs` (or the
 * observed `afterPercentile` latency) after the last one started, it starts another, up to
 * `maxHedges`; a failed attempt starts the next one at once. The first success wins and every
 * other attempt's signal is aborted with a {@link HedgeLostError}; when all fail, the call
 * rejects with the last error. Only for idempotent calls: each attempt may reach the callee.
 *
 * @example
 * ```ts
 * import { hedge } from 'keel/resilience';
 *
 * const policy = hedge({ afterMs: 5, maxHedges: 1 });
 * let attempt = 0;
 * const value = await policy.execute(
 *   (signal) =>
 *     new Promise<string>((resolve) => {
 *       const mine = ++attempt;
 *       const timer = setTimeout(() => resolve(`attempt ${mine}`), mine === 1 ? 1_000 : 1);
 *       signal.addEventListener('abort', () => clearTimeout(timer));
 *     }),
 * );
 * console.log(value); // attempt 2
 * ```
 */
export function hedge(options: HedgeOptions): Policy {
  return new HedgePolicy(options);
}
