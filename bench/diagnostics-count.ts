/**
 * The counting child of `diagnostics.bench.ts`: bundled by esbuild with one variant of Keel
 * (as shipped, or with publishing compiled out) and run as plain Node under
 *
 *   valgrind --tool=callgrind --separate-threads=yes --dump-before=uv_getrusage \
 *     --callgrind-out-file=<dir>/cg.%p node --expose-gc --min-semi-space-size=16 \
 *     --single-threaded <bundle> --dir=<dir> [--inject=0.03]
 *
 * It counts, for pick, execute and MemoryLock acquire + release, the instructions its main
 * thread runs per call in steady state, and the bytes each call allocates. Every
 * `process.cpuUsage()` (libuv's `uv_getrusage`) makes callgrind write a dump of what ran since
 * the previous one, so a window is the code between two such calls; the child reads the dump
 * just written (its own main thread's, thread 01: `--separate-threads=yes` keeps the
 * background compiler's and collector's threads out) and prints one JSON line per operation.
 *
 * A window holds `calls` calls of the driver's block; its count minus a one-call window's (the
 * window's own fixed part: the markers, the block's timer reads, and one call) ÷ `calls − 1`
 * is the per-call count. The young generation is emptied before a window and sized (16 MB) so that no window
 * fills it: a window a collection fell into is reported as such and not used (a scavenge adds
 * tens of instructions per call to the parts it falls in).
 *
 * `--single-threaded` (V8's: compile on the main thread, no background compiler or collector
 * threads): with the optimizing compiler on its own thread, when optimized code lands and
 * with what feedback depends on how that thread is scheduled against the main one, which
 * differs from process to process — two processes of the same shipped bundle counted 5 242 and
 * 5 322 instructions per lock cycle (a third, in a loaded run, 5 523), and one's pick was still
 * unoptimized after 200 000 calls. Single-threaded, two processes counted the same to 0.5
 * instruction (lock 5 112.7–5 113.2, pick 166.0–166.4): the variants then differ in their
 * code, not in a race. The compiler's own work falls in the warm-up, before any window.
 *
 * `--inject=f` (the injected-cost variant, compiled out): the drivers' extra work (`spin`) is
 * sized, per operation, so that it adds the fraction `f` to the count: windows at 0, 1 and 33
 * spins give the spin's fixed and per-iteration instructions (the count is linear in it once
 * optimized), and the windows are then counted at the size that gives `f`.
 *
 * @packageDocumentation
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';
import { instructionTotal, newestDump } from './callgrind.js';
import * as drivers from './diagnostics-drivers.js';
import { median } from './diagnostics-counted.js';

const flag = (name: string): string | undefined =>
  process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);

const collect = (globalThis as { gc?: (options?: { type: 'minor' | 'major' }) => void }).gc;

/** What one operation is counted with (calls per window; warm-up calls before any window). */
interface Counted {
  readonly op: 'pick' | 'execute' | 'lock';
  readonly driver: () => drivers.Driver;
  readonly calls: number;
  readonly warmup: number;
}

const COUNTED: readonly Counted[] = [
  { op: 'pick', driver: drivers.pickDriver, calls: 20_000, warmup: 100_000 },
  { op: 'execute', driver: drivers.executeDriver, calls: 4_000, warmup: 20_000 },
  { op: 'lock', driver: drivers.lockDriver, calls: 2_048, warmup: 10_240 },
];

/** Measured windows per operation and variant. */
const WINDOWS = 4;

let collections = 0;
new PerformanceObserver((list) => {
  collections += list.getEntries().length;
}).observe({ entryTypes: ['gc'] });

const newSpaceUsed = (): number =>
  v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_used_size ?? 0;

/** The window marker: `uv_getrusage`, before which callgrind dumps. */
function mark(): void {
  process.cpuUsage();
}

/** The instructions of the dump the last marker wrote into `dir`. */
function lastDump(dir: string): number {
  const file = newestDump(readdirSync(dir), 'cg', process.pid);
  if (file === undefined) throw new Error('diagnostics-count: no dump (not under callgrind?)');
  return instructionTotal(readFileSync(join(dir, file), 'utf8'));
}

interface Window {
  readonly instructions: number;
  readonly bytes: number;
  readonly collections: number;
}

/**
 * Lets the gc observer hear of what has happened: Node delivers its entries two turns of the
 * event loop after the collection (one `setImmediate` was not enough, three are taken).
 */
async function heard(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((done) => setImmediate(done));
}

async function window(dir: string, block: drivers.Block, calls: number): Promise<Window> {
  collect?.({ type: 'minor' });
  await heard();
  const before = collections;
  const used = newSpaceUsed();
  mark();
  await block(calls);
  mark();
  const bytes = newSpaceUsed() - used;
  const instructions = lastDump(dir);
  await heard();
  return { instructions, bytes, collections: collections - before };
}

/** Per-call instructions and bytes of `calls`-call windows, less an empty window's. */
async function perCall(
  dir: string,
  block: drivers.Block,
  calls: number,
  n: number,
): Promise<{ instructions: number[]; bytes: number[]; collected: number }> {
  // One call, not none: the pick's block checks that it picked something. Taken again if a
  // collection fell into it (it is subtracted from every window, so the spread would not show it).
  let empty = await window(dir, block, 1);
  for (let retry = 0; empty.collections > 0 && retry < 3; retry++)
    empty = await window(dir, block, 1);
  if (empty.collections > 0) return { instructions: [], bytes: [], collected: n };
  const out = { instructions: [] as number[], bytes: [] as number[], collected: 0 };
  for (let i = 0; i < n; i++) {
    const w = await window(dir, block, calls);
    if (w.collections > 0) {
      out.collected++;
      continue;
    }
    out.instructions.push((w.instructions - empty.instructions) / (calls - 1));
    out.bytes.push((w.bytes - empty.bytes) / (calls - 1));
  }
  return out;
}

/** Counts every operation in turn and prints one JSON line per operation. */
export async function main(): Promise<void> {
  const dir = flag('dir');
  if (dir === undefined) throw new Error('diagnostics-count: --dir=<callgrind output dir> needed');
  if (collect === undefined) throw new Error('diagnostics-count: run node with --expose-gc');
  const inject = Number(flag('inject') ?? '0');
  for (const c of COUNTED) {
    const { block } = c.driver();
    // The injected variant warms up with its work switched on, as in the timed rows.
    drivers.setExtraWork(inject > 0 ? 1 : 0);
    for (let done = 0; done < c.warmup; done += c.calls) await block(c.calls);
    let spins = 0;
    if (inject > 0) {
      const at = async (k: number): Promise<number> => {
        drivers.setExtraWork(k);
        await block(c.calls);
        return median((await perCall(dir, block, c.calls, 2)).instructions);
      };
      const none = await at(0);
      const one = await at(1);
      const many = await at(33);
      const perSpin = (many - one) / 32;
      const fixed = one - none - perSpin;
      // NaN when a sizing window had a collection: one spin then (judged as sized).
      const sized = Math.round((inject * none - fixed) / perSpin);
      spins = Number.isFinite(sized) ? Math.max(1, sized) : 1;
      drivers.setExtraWork(spins);
      await block(c.calls);
    }
    const counted = await perCall(dir, block, c.calls, WINDOWS);
    drivers.setExtraWork(0);
    console.log(JSON.stringify({ op: c.op, calls: c.calls, warmup: c.warmup, spins, ...counted }));
  }
}
