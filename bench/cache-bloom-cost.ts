/**
 * Instructions per absent probe in each of Keel's timed passes of the cache suite's Bloom row
 * (bench/cache-bloom.ts), counted exactly, for builds (and bench methods) to be compared on a
 * loaded machine where wall-clock rates are not:
 *
 *   valgrind --tool=callgrind --callgrind-out-file=<dir>/cg.%p \
 *     node --expose-gc --import tsx bench/cache-bloom-cost.ts <dist dir>[@<measure module>] [peerItems]
 *
 * Runs the row once, as the suite does (1 000 000 items, 200 000 absent probes, 9 interleaved
 * rounds), except that the peer's filter holds `peerItems` (default 10 000: its million adds
 * take minutes under valgrind; its size does not enter Keel's passes). Around each Keel pass
 * it zeroes callgrind's counters and dumps them (`callgrind_control`), then prints one JSON
 * line: instructions per probe per round. The count is the whole process's (every thread), so
 * a pass during which the background compiler works counts that too: that is part of what
 * differs between processes, and why this counts rather than samples.
 *
 * @packageDocumentation
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { instructionTotal } from './callgrind.js';
import { loadArm } from './cache-bloom.js';

const arm = process.argv[2] ?? 'dist';
const peerItems = Number(process.argv[3] ?? 10_000);
const { BloomFilter, measure } = await loadArm(arm);

const pid = String(process.pid);
const dir = process.cwd();
const counts: number[] = [];
let before = new Set<string>();
const r = measure(BloomFilter, false, {
  peerItems,
  aroundKeelPass: (edge) => {
    if (edge === 'before') {
      before = new Set(readdirSync(dir));
      execFileSync('callgrind_control', ['--zero', pid], { stdio: 'ignore' });
      return;
    }
    execFileSync('callgrind_control', ['--dump', pid], { stdio: 'ignore' });
    const fresh = readdirSync(dir).filter((f) => f.startsWith('cg.') && !before.has(f));
    const total = fresh.reduce(
      (sum, f) => sum + instructionTotal(readFileSync(resolve(dir, f), 'utf8')),
      0,
    );
    counts.push(total / 200_000);
  },
});
console.log(
  JSON.stringify({ arm, instructionsPerProbe: counts.map((x) => Math.round(x)), fp: r.keelFp }),
);
