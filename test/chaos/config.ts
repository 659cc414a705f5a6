/**
 * Settings shared by the chaos suites, all from the environment, and the few primitives they
 * share with their worker processes (which import nothing from vitest):
 *
 * - `KEEL_CHAOS_S` — seconds of chaos per suite. Unset: the bounded form `npm test` runs (a
 *   few seconds per suite, so lock + semaphore + discovery stay under a minute in all).
 *   `KEEL_CHAOS_S=300 npm run test:chaos` is the long local run.
 * - `KEEL_CHAOS_SEED` — the seed of the fault schedule and of the workload's choices. Unset: a
 *   fresh one, printed with every report; a failing run prints the command that reruns it.
 * - `KEEL_CHAOS_FAULTS` — the lock/semaphore fault mix, `kind[:weight],…` (see `LOCK_FAULTS`
 *   in faults.ts); `KEEL_CHAOS_DISCOVERY_FAULTS` the same for discovery. A mix with a kind
 *   outside the documented envelope makes the run exploratory: violations are reported, not
 *   asserted.
 * - `KEEL_CHAOS_KNOWN_BUGS` — a comma list of check names (see each suite) that are reported
 *   but do not fail the run, for checks that fail because of a bug being fixed elsewhere. Unset
 *   (the default) every check is strict. Only CI may set it, and only until the fix lands.
 *
 * @packageDocumentation
 */

import { seededRandom } from '../support/random.js';

/** Seconds of chaos for one suite: `KEEL_CHAOS_S`, else the suite's bounded default. */
export function chaosSeconds(boundedDefault: number): number {
  const raw = process.env.KEEL_CHAOS_S;
  if (raw === undefined || raw === '') return boundedDefault;
  const seconds = Number(raw);
  if (!Number.isFinite(seconds) || seconds <= 0) {
    throw new Error(
      `KEEL_CHAOS_S must be a positive number of seconds, got ${JSON.stringify(raw)}`,
    );
  }
  return seconds;
}

/** The run's seed: `KEEL_CHAOS_SEED`, else a fresh one (printed by every report). */
export function chaosSeed(): number {
  const raw = process.env.KEEL_CHAOS_SEED;
  if (raw === undefined || raw === '') return Math.floor(Math.random() * 2 ** 31);
  const seed = Number(raw);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) {
    throw new Error(`KEEL_CHAOS_SEED must be an integer in [0, 2^32), got ${JSON.stringify(raw)}`);
  }
  return seed;
}

/** Check names listed in `KEEL_CHAOS_KNOWN_BUGS` (reported, not gating). */
export function knownBugs(): ReadonlySet<string> {
  const raw = process.env.KEEL_CHAOS_KNOWN_BUGS ?? '';
  return new Set(
    raw
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== ''),
  );
}

/**
 * Parses a fault mix `kind[:weight],…` against the known kinds; `undefined` input gives the
 * default mix. Unknown kinds or bad weights throw, naming what was wrong.
 */
export function faultMix<K extends string>(
  variable: string,
  known: readonly K[],
  defaults: Readonly<Partial<Record<K, number>>>,
): Map<K, number> {
  const raw = process.env[variable];
  if (raw === undefined || raw.trim() === '') {
    return new Map(Object.entries(defaults) as [K, number][]);
  }
  const mix = new Map<K, number>();
  for (const part of raw.split(',')) {
    const [name = '', weightText] = part.trim().split(':');
    if (!(known as readonly string[]).includes(name)) {
      throw new Error(
        `${variable}: unknown fault kind ${JSON.stringify(name)}; known: ${known.join(', ')}`,
      );
    }
    const weight = weightText === undefined ? 1 : Number(weightText);
    if (!Number.isFinite(weight) || weight < 0) {
      throw new Error(`${variable}: weight of ${name} must be a number >= 0, got ${weightText}`);
    }
    mix.set(name as K, weight);
  }
  return mix;
}

/**
 * A seeded PRNG (mulberry32), numbers in [0, 1). Everything a chaos run decides at random draws
 * from one of these, so a seed reproduces the schedule.
 */
export const prng: (seed: number) => () => number = seededRandom;

/** An integer in [lo, hi] drawn from `random`. */
export function between(random: () => number, lo: number, hi: number): number {
  return lo + Math.floor(random() * (hi - lo + 1));
}

/** Picks by weight from `weights` (at least one weight must be > 0). */
export function pickWeighted<K>(random: () => number, weights: ReadonlyMap<K, number>): K {
  let total = 0;
  for (const w of weights.values()) total += w;
  let x = random() * total;
  let last: K | undefined;
  for (const [kind, w] of weights) {
    if (w <= 0) continue;
    last = kind;
    if (x < w) return kind;
    x -= w;
  }
  if (last === undefined) throw new Error('a fault mix needs at least one kind with weight > 0');
  return last;
}

/**
 * Milliseconds on the machine-wide monotonic clock (CLOCK_MONOTONIC, which
 * `process.hrtime.bigint()` reads on Linux): every process on the host reads the same timeline,
 * so acquire and validity times reported by different workers, and the register's receipt
 * times, can be compared directly. (`performance.now()` counts from each process's own start.)
 */
export function hostNow(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** The command that reruns a chaos file with this run's seed, duration and fault mixes. */
export function rerunCommand(file: string, seed: number, seconds: number): string {
  const mixes = ['KEEL_CHAOS_FAULTS', 'KEEL_CHAOS_DISCOVERY_FAULTS']
    .filter((name) => (process.env[name] ?? '') !== '')
    .map((name) => `${name}=${process.env[name] ?? ''} `)
    .join('');
  return `${mixes}KEEL_CHAOS_SEED=${seed} KEEL_CHAOS_S=${seconds} npx vitest run ${file}`;
}
