/**
 * The backoffs a retry can wait between attempts, validated into a small pure function of the
 * attempt number and the previous delay. The formulas live once, in `core/backoff`.
 *
 * @packageDocumentation
 */
import {
  InvalidOptionError,
  decorrelatedJitter,
  exponentialDelay,
  fullJitter,
  jitter,
  numberOption,
  oneOfOption,
  resolveOptions,
} from '../core/index.js';

/**
 * How long a retry waits before its next attempt.
 *
 * - `none`: retry at once (right for a retry on a *different* endpoint, where waiting gains
 *   nothing; the retry budget still bounds the load).
 * - `constant`: always `delayMs`.
 * - `exponential`: `initialMs × factor^(retry − 1)`, capped at `maxMs`, spread by `jitter`
 *   (`'full'`: uniform in [0, delay]; a fraction f: ± f of the delay; 0: none).
 * - `decorrelated`: AWS's "Decorrelated Jitter", `min(capMs, uniform(baseMs, previous × 3))`
 *   (Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015) — fewer calls and
 *   less total wait than plain exponential backoff when many clients retry at once.
 *
 * The defaults are RPC-sized (Envoy's retry backoff: 25 ms base, 250 ms cap).
 */
export type BackoffOptions =
  | {
      /** Retry at once. */
      readonly type: 'none';
    }
  | {
      /** Always wait `delayMs`. */
      readonly type: 'constant';
      /** The wait (ms), 0 … 86 400 000. @defaultValue 25 */
      readonly delayMs?: number;
    }
  | {
      /** Exponential backoff, capped and jittered. */
      readonly type: 'exponential';
      /** The first wait (ms). @defaultValue 25 */
      readonly initialMs?: number;
      /** The longest wait (ms). @defaultValue 250 */
      readonly maxMs?: number;
      /** Growth per retry, 1 … 100. @defaultValue 2 */
      readonly factor?: number;
      /** `'full'`, or a fraction 0 … 1 to spread each wait by. @defaultValue 'full' */
      readonly jitter?: 'full' | number;
    }
  | {
      /** AWS's decorrelated jitter. */
      readonly type: 'decorrelated';
      /** The shortest wait and the first one's lower bound (ms). @defaultValue 25 */
      readonly baseMs?: number;
      /** The longest wait (ms). @defaultValue 250 */
      readonly capMs?: number;
    };

/** A validated backoff: the wait before retry number `retry` (1, 2, …). @internal */
export type Backoff = (retry: number, previousMs: number, random: () => number) => number;

const MS = { min: 0, max: 86_400_000 } as const;

/** The default of `retry()`: decorrelated jitter, 25 ms base, 250 ms cap. @internal */
export const DEFAULT_BACKOFF: BackoffOptions = Object.freeze({ type: 'decorrelated' });

/** Validates `options` (at `path` of `owner`'s options) into a {@link Backoff}. @internal */
export function resolveBackoff(owner: string, path: string, options: unknown): Backoff {
  const given: unknown = options ?? DEFAULT_BACKOFF;
  const type: unknown =
    typeof given === 'object' && given !== null ? (given as { type?: unknown }).type : undefined;
  switch (type) {
    case 'none':
      resolveOptions(owner, given, { type: oneOfOption(['none'], { required: true }) }, path);
      return () => 0;
    case 'constant': {
      const o = resolveOptions(
        owner,
        given,
        {
          type: oneOfOption(['constant'], { required: true }),
          delayMs: numberOption({ ...MS, default: 25 }),
        },
        path,
      );
      const delay = o.delayMs;
      return () => delay;
    }
    case 'exponential': {
      const o = resolveOptions(
        owner,
        given,
        {
          type: oneOfOption(['exponential'], { required: true }),
          initialMs: numberOption({ ...MS, default: 25 }),
          maxMs: numberOption({ ...MS, default: 250 }),
          factor: numberOption({ min: 1, max: 100, default: 2 }),
          jitter: {
            parse(value: unknown, who: string, option: string): 'full' | number {
              if (value === undefined || value === 'full') return 'full';
              if (typeof value === 'number' && value >= 0 && value <= 1) return value;
              throw new InvalidOptionError(who, option, "'full' or a number from 0 to 1", value);
            },
          },
        },
        path,
      );
      if (o.maxMs < o.initialMs) {
        throw new InvalidOptionError(
          owner,
          `${path}.maxMs`,
          `>= initialMs (${o.initialMs})`,
          o.maxMs,
        );
      }
      const { initialMs, maxMs, factor, jitter: spread } = o;
      return spread === 'full'
        ? (retry, _previous, random) =>
            fullJitter(exponentialDelay(retry, initialMs, maxMs, factor), random)
        : (retry, _previous, random) =>
            Math.min(
              maxMs,
              jitter(exponentialDelay(retry, initialMs, maxMs, factor), spread, random),
            );
    }
    case 'decorrelated': {
      const o = resolveOptions(
        owner,
        given,
        {
          type: oneOfOption(['decorrelated'], { required: true }),
          baseMs: numberOption({ ...MS, default: 25 }),
          capMs: numberOption({ ...MS, default: 250 }),
        },
        path,
      );
      if (o.capMs < o.baseMs) {
        throw new InvalidOptionError(owner, `${path}.capMs`, `>= baseMs (${o.baseMs})`, o.capMs);
      }
      const { baseMs, capMs } = o;
      // The first retry starts from previous = base, as the published formula does.
      return (retry, previous, random) =>
        decorrelatedJitter(retry === 1 ? baseMs : previous, baseMs, capMs, random);
    }
    default:
      throw new InvalidOptionError(
        owner,
        path,
        "a backoff { type: 'none' | 'constant' | 'exponential' | 'decorrelated', … }",
        given,
      );
  }
}
