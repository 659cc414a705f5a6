/**
 * Backoff with jitter, once for every component (DESIGN.md: "shared mechanisms live once in
 * `core/`"). Pure functions of the attempt number, the previous delay and an injected random
 * source, so they are testable without timers.
 *
 * - {@link exponentialDelay}: `min(maxMs, initialMs × factor^(attempt−1))`.
 * - {@link jitter}: spreads a delay by ± a fraction, uniformly.
 * - {@link fullJitter}: uniform in `[0, delay]` ("Full Jitter").
 * - {@link equalJitter}: uniform in `[delay / 2, delay]` ("Equal Jitter").
 * - {@link decorrelatedJitter}: `min(capMs, uniform(baseMs, previous × 3))` ("Decorrelated
 *   Jitter"), the formula as published by Marc Brooker, "Exponential Backoff And Jitter", AWS
 *   Architecture Blog, 2015 (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * @packageDocumentation
 */

/**
 * A number in [0, 1] from `random`; an injected source that throws or returns anything else
 * (NaN, 7, a string) reads as 0.5 — a backoff must never become NaN or stop a retry.
 */
export function unitRandom(random: () => number): number {
  let r: unknown;
  try {
    r = random();
  } catch {
    return 0.5;
  }
  return typeof r === 'number' && r >= 0 && r <= 1 ? r : 0.5;
}

/** `min(maxMs, initialMs × factor^(attempt − 1))` for attempt 1, 2, …; never negative or NaN. */
export function exponentialDelay(
  attempt: number,
  initialMs: number,
  maxMs: number,
  factor = 2,
): number {
  const n = Math.max(0, Math.min(attempt - 1, 1024));
  const delay = initialMs * factor ** n;
  return Number.isFinite(delay) ? Math.max(0, Math.min(maxMs, delay)) : Math.max(0, maxMs);
}

/** `delayMs` spread uniformly by ± `fraction` of itself (fraction in [0, 1]). */
export function jitter(delayMs: number, fraction: number, random: () => number): number {
  if (fraction === 0) return delayMs;
  return Math.max(0, delayMs * (1 + (unitRandom(random) * 2 - 1) * fraction));
}

/** Uniform in `[0, delayMs]` (AWS's "Full Jitter"). */
export function fullJitter(delayMs: number, random: () => number): number {
  return delayMs * unitRandom(random);
}

/** Uniform in `[delayMs / 2, delayMs]` (AWS's "Equal Jitter": never less than half the delay). */
export function equalJitter(delayMs: number, random: () => number): number {
  return delayMs * (0.5 + unitRandom(random) / 2);
}

/**
 * AWS's "Decorrelated Jitter": `min(capMs, uniform(baseMs, previousMs × 3))`, with
 * `previousMs = baseMs` before the first retry.
 */
export function decorrelatedJitter(
  previousMs: number,
  baseMs: number,
  capMs: number,
  random: () => number,
): number {
  const high = Math.max(baseMs, previousMs * 3);
  return Math.min(capMs, baseMs + unitRandom(random) * (high - baseMs));
}
