/**
 * The cache suite's Bloom row (bench/cache-bloom.ts, the code `npm run bench -- cache` runs) in
 * many fresh processes, to show the spread between processes that three suite runs cannot.
 *
 *   npx tsx bench/cache-bloom-spread.ts [processes=30] [arm...]
 *
 * An arm is `<dist dir>` or `<dist dir>@<measure module>`: the built Keel to load
 * (`<dist dir>/cache/index.js`; default this worktree's `dist/`, so `npm run build` first) and,
 * optionally, another module exporting `measureBloom` (e.g. a copy of an older bench/cache-bloom.ts,
 * to compare bench methods). Each process is `node --expose-gc --import tsx`, as the suite's, and
 * runs one arm's row once. With several arms the processes cycle through them, so builds (or
 * methods) are compared in the same time window on a shared machine. Prints a line per process
 * (Keel's probes/s per round, the peer's median, the row's ratio: the median of the rounds'),
 * then per arm min / median / max of the per-process medians (what the suite reports), of every
 * round, and of the ratios, and how many processes read under ×50.
 *
 * @packageDocumentation
 */
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { loadArm } from './cache-bloom.js';

interface ProcessResult {
  readonly arm: string;
  readonly keel: number[];
  readonly peer: number[];
  readonly ratios: number[];
  readonly fp: number;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.ceil(s.length / 2) - 1] as number;
};
const mega = (x: number): string => (x / 1e6).toFixed(2);

if (process.env.KEEL_BLOOM_ARM !== undefined) {
  const arm = process.env.KEEL_BLOOM_ARM;
  const { BloomFilter, measure } = await loadArm(arm);
  const r = measure(BloomFilter, false);
  const out: ProcessResult = {
    arm,
    keel: r.keelOps.map(Math.round),
    peer: r.peerOps.map(Math.round),
    ratios: r.ratios.map((x) => Number(x.toFixed(1))),
    fp: r.keelFp,
  };
  console.log(JSON.stringify(out));
} else {
  const count = Number(process.argv[2] ?? 30);
  const arms =
    process.argv.length > 3
      ? process.argv.slice(3)
      : [fileURLToPath(new URL('../dist', import.meta.url))];
  const self = fileURLToPath(import.meta.url);
  const results: ProcessResult[] = [];
  for (let i = 0; i < count; i++) {
    for (const arm of arms) {
      const line = execFileSync(process.execPath, ['--expose-gc', '--import', 'tsx', self], {
        env: { ...process.env, KEEL_BLOOM_ARM: arm },
        encoding: 'utf8',
      });
      const r = JSON.parse(line.trim().split('\n').at(-1) as string) as ProcessResult;
      results.push(r);
      const load = loadavg()[0]?.toFixed(1);
      console.log(
        `${i} ${arm}: keel ${mega(median(r.keel))} M/s (rounds ${r.keel.map(mega).join(' ')}), ` +
          `peer ${(median(r.peer) / 1e3).toFixed(1)} k/s, ×${median(r.ratios).toFixed(1)}, load ${load}`,
      );
    }
  }
  const range = (xs: number[], f: (x: number) => string): string =>
    `min ${f(Math.min(...xs))} / median ${f(median(xs))} / max ${f(Math.max(...xs))}`;
  for (const arm of arms) {
    const mine = results.filter((r) => r.arm === arm);
    const ratios = mine.map((r) => median(r.ratios));
    console.log(`${arm} (${mine.length} processes)`);
    console.log(
      `  keel M probes/s, per process: ${range(
        mine.map((r) => median(r.keel)),
        mega,
      )}`,
    );
    console.log(
      `  keel M probes/s, every round: ${range(
        mine.flatMap((r) => r.keel),
        mega,
      )}`,
    );
    console.log(
      `  peer k probes/s, per process: ${range(
        mine.map((r) => median(r.peer) / 1e3),
        (x) => x.toFixed(1),
      )}`,
    );
    console.log(`  ratio, per process:           ${range(ratios, (x) => `×${x.toFixed(1)}`)}`);
    console.log(`  processes under ×50: ${ratios.filter((x) => x < 50).length} of ${mine.length}`);
  }
}
