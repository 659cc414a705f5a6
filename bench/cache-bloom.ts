/**
 * The Bloom row of the cache suite (issue 18), measured by `bloomRow` in bench/cache.bench.ts and
 * by the spread tool bench/cache-bloom-spread.ts in many fresh processes — one copy of the
 * measurement, so the tool times exactly what the suite times.
 *
 * @packageDocumentation
 */
// CommonJS: Node's ESM loader sees no named exports in it.
import bloomFilters from 'bloom-filters';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { BloomFilter as KeelBloomFilter } from '../src/cache/index.js';

const PeerBloom = bloomFilters.BloomFilter;

/** Full collections, when the process runs with `--expose-gc` (`npm run bench` does). */
export function collect(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  gc?.();
}

/** What one process measured: per-round rates and ratios, the last round's FP, the shapes. */
export interface BloomMeasurement {
  readonly n: number;
  readonly probes: number;
  readonly peerProbes: number;
  readonly rounds: number;
  readonly keelOps: readonly number[];
  readonly peerOps: readonly number[];
  readonly ratios: readonly number[];
  readonly keelFp: number;
  readonly peerFp: number;
  readonly keelBits: number;
  readonly peerBits: number;
}

/** For tools only (the suite passes none): see bench/cache-bloom-cost.ts. */
export interface BloomToolOptions {
  /** Items in the peer's filter (default: as many as Keel's). */
  readonly peerItems?: number;
  /** Called right before and after each of Keel's timed passes (outside its timing). */
  readonly aroundKeelPass?: (edge: 'before' | 'after') => void;
}

/**
 * Bloom filter at n items / 1 % FP: `mightContain` of absent keys, in interleaved rounds (both
 * warmed up first; per round, Keel over every probe and the peer over a tenth of them (a
 * hundredth in quick mode), its ~10 µs a call making the full set take seconds; who goes first
 * alternates, and each pass starts after a full GC).
 */
export function measureBloom(
  BloomFilter: typeof KeelBloomFilter,
  quick: boolean,
  tool: BloomToolOptions = {},
): BloomMeasurement {
  const n = quick ? 100_000 : 1_000_000;
  // Keel's probes are cheap, so as many in quick mode: a pass of 20 000 (some ms) was shorter
  // than the optimizing compiler takes to settle, and quick runs read ×15 where full ones ×68.
  const probes = 200_000;
  const rounds = quick ? 2 : 9;
  const keel = new BloomFilter({ expectedItems: n, falsePositiveRate: 0.01 });
  const peerItems = tool.peerItems ?? n;
  const peer = PeerBloom.create(peerItems, 0.01);
  for (let i = 0; i < n; i++) {
    keel.add(`in-${i}`);
    if (i < peerItems) peer.add(`in-${i}`);
  }
  const absent = Array.from({ length: probes }, (_, i) => `out-${i}`);
  const peerAbsent = absent.slice(0, quick ? 2_000 : probes / 10);
  // One timing loop per library, each calling its own filter directly. Before session 17 one
  // loop served both, calling through a function argument: that call site saw Keel's and the
  // peer's closures in turn, so V8 deoptimized the loop at each switch ("wrong call target")
  // and it ran, in a given process, interpreted, OSR-compiled or optimized with either library
  // inlined — a ~50 ns share of the loop's own overhead landed on Keel's ~60 ns probes in some
  // processes and not others (the peer's ~10 µs calls hid it). Two copies of the loop are
  // the point: each keeps monomorphic feedback, as in a program that uses one filter.
  type Pass = (keys: readonly string[]) => { opsPerSec: number; fp: number };
  const keelPass: Pass = (keys) => {
    let fp = 0;
    const t = performance.now();
    for (const k of keys) if (keel.mightContain(k)) fp++;
    return { opsPerSec: keys.length / ((performance.now() - t) / 1000), fp: fp / keys.length };
  };
  const peerPass: Pass = (keys) => {
    let fp = 0;
    const t = performance.now();
    for (const k of keys) if (peer.has(k)) fp++;
    return { opsPerSec: keys.length / ((performance.now() - t) / 1000), fp: fp / keys.length };
  };
  const around = tool.aroundKeelPass;
  const keelTimed: Pass =
    around === undefined
      ? keelPass
      : (keys) => {
          around('before');
          const result = keelPass(keys);
          around('after');
          return result;
        };
  keelPass(absent); // warm-up
  keelPass(absent);
  peerPass(peerAbsent.slice(0, 2_000));
  const keelOps: number[] = [];
  const peerOps: number[] = [];
  const ratios: number[] = [];
  let keelFp = 0;
  let peerFp = 0;
  // Each timed pass starts with no garbage to collect: the peer allocates per call, and without
  // a collection first its garbage's GC (and incremental marking) lands in whichever pass comes
  // next. Which library goes first alternates by round. (Each pass is called at its own call
  // sites, for the reason above.)
  for (let round = 0; round < rounds; round++) {
    const keelFirst = round % 2 === 0;
    collect();
    const first = keelFirst ? keelTimed(absent) : peerPass(peerAbsent);
    collect();
    const second = keelFirst ? peerPass(peerAbsent) : keelTimed(absent);
    const k = keelFirst ? first : second;
    const p = keelFirst ? second : first;
    keelOps.push(k.opsPerSec);
    peerOps.push(p.opsPerSec);
    ratios.push(k.opsPerSec / p.opsPerSec);
    keelFp = k.fp;
    peerFp = p.fp;
  }
  return {
    n,
    probes,
    peerProbes: peerAbsent.length,
    rounds,
    keelOps,
    peerOps,
    ratios,
    keelFp,
    peerFp,
    keelBits: keel.shape.bits / n,
    peerBits: peer.size / n,
  };
}

/**
 * For the tools, an arm `<dist dir>[@<measure module>]`: that build's `BloomFilter`
 * (`<dist dir>/cache/index.js`) and the `measureBloom` of `<measure module>` (e.g. a copy of an
 * older version of this file, to compare bench methods) or this one.
 */
export async function loadArm(
  arm: string,
): Promise<{ BloomFilter: typeof KeelBloomFilter; measure: typeof measureBloom }> {
  const [dist, module] = arm.split('@') as [string, string | undefined];
  const url = (path: string): string => pathToFileURL(resolve(path)).href;
  const built = (await import(url(`${dist}/cache/index.js`))) as {
    BloomFilter: typeof KeelBloomFilter;
  };
  const measure =
    module === undefined
      ? measureBloom
      : ((await import(url(module))) as { measureBloom: typeof measureBloom }).measureBloom;
  return { BloomFilter: built.BloomFilter, measure };
}
