/**
 * Recent latencies and their percentile, for hedging "after the observed p95".
 *
 * @internal
 * @packageDocumentation
 */

/** The last `capacity` samples; the percentile is recomputed every `capacity / 16` samples. */
export class LatencyWindow {
  readonly #samples: Float64Array;
  readonly #percentile: number;
  #count = 0;
  #next = 0;
  #sinceComputed = 0;
  #cached = Number.NaN;

  constructor(percentile: number, capacity = 512) {
    this.#samples = new Float64Array(capacity);
    this.#percentile = percentile;
  }

  /** Samples held. */
  get count(): number {
    return this.#count;
  }

  record(ms: number): void {
    const samples = this.#samples;
    samples[this.#next] = ms;
    this.#next = (this.#next + 1) % samples.length;
    if (this.#count < samples.length) this.#count++;
    this.#sinceComputed++;
  }

  /** The percentile of the samples (nearest rank); NaN with none. */
  value(): number {
    if (this.#count === 0) return Number.NaN;
    if (Number.isNaN(this.#cached) || this.#sinceComputed >= this.#samples.length / 16) {
      const sorted = this.#samples.slice(0, this.#count).sort();
      const rank = Math.ceil((this.#percentile / 100) * sorted.length) - 1;
      this.#cached = sorted[Math.min(sorted.length - 1, Math.max(0, rank))] as number;
      this.#sinceComputed = 0;
    }
    return this.#cached;
  }
}
