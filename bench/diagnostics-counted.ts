/**
 * The counted verdict of `diagnostics.bench.ts`: instructions and bytes per call of each
 * variant, counted exactly by valgrind's callgrind in a child process per variant
 * (`diagnostics-count.ts`), and the rule that judges them.
 *
 * Why counts: the timed rows compare copies of the code in one process, and copies of
 * identical code differ by a fixed few per cent there (where their code lands; the A/A row) —
 * as much as the 2 % the target allows, so timing could not settle the lock's row (session 14:
 * one quiet run MISSED at +4.4 %, another "no verdict"). An instruction count does not depend
 * on where the code lands or on what else runs on the machine: windows of one process agree
 * to a fraction of an instruction per call, so 2 % of a call is resolved many times over. What
 * a count cannot see is time an instruction takes beyond its count (a cache miss, a
 * mispredicted branch); a guard the optimizing compiler folds away (as the counts show it is)
 * has neither.
 *
 * @packageDocumentation
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One operation's windows in one variant's child, as the child prints them. */
export interface CountedOp {
  readonly op: string;
  readonly calls: number;
  readonly warmup: number;
  /** Iterations of the injected work per call (0 outside the injected variant). */
  readonly spins: number;
  /** Instructions per call, one figure per window without a collection in it. */
  readonly instructions: readonly number[];
  /** Bytes allocated per call, per window, as `instructions`. */
  readonly bytes: readonly number[];
  /** Windows dropped because a collection ran in them. */
  readonly collected: number;
}

/** Compiled out, as shipped, compiled out + injected work. */
export type CountedVariant = 'off' | 'on' | 'inj';

/** The limits the rule applies (the target's and the method's own). */
export interface CountLimits {
  /** Largest cost allowed, as a fraction of the compiled-out count (0.02). */
  readonly maxFraction: number;
  /** Bytes per call the shipped code may add (slack for the windows' own bytes). */
  readonly maxExtraBytes: number;
  /**
   * How far a variant's windows may spread, (max − min) ÷ median, for its count to be judged:
   * a tenth of the limit, so a cost the size of the limit cannot hide in it.
   */
  readonly maxSpread: number;
}

/** What the rule says about one operation. */
export interface CountedJudgement {
  readonly off: number;
  readonly on: number;
  readonly inj: number;
  /** Shipped − compiled out, instructions per call, and as a fraction of compiled out. */
  readonly cost: number;
  readonly costFraction: number;
  readonly injectedFraction: number;
  /** The largest spread of any variant's windows, (max − min) ÷ median. */
  readonly spread: number;
  readonly offBytes: number;
  readonly onBytes: number;
  readonly verdict: string;
}

/** The middle value (the mean of the two middle ones for an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

function spreadOf(values: readonly number[]): number {
  return (Math.max(...values) - Math.min(...values)) / median(values);
}

/**
 * The counted verdict for one operation: "MISSED" when as shipped counts more than
 * `maxFraction` over compiled out (or allocates more than `maxExtraBytes` more per call);
 * "met" when it does not and the same counting caught the injected variant's cost as over the
 * limit; "no verdict: …" when the counts cannot be judged — fewer than two clean windows in a
 * variant, windows spread wider than `maxSpread`, or the injected cost not caught.
 */
export function judgeCounted(
  counted: Readonly<Record<CountedVariant, CountedOp>>,
  limits: CountLimits,
): CountedJudgement {
  const { off, on, inj } = counted;
  const few = [off, on, inj].some((c) => c.instructions.length < 2 || c.bytes.length < 2);
  const offN = few ? NaN : median(off.instructions);
  const onN = few ? NaN : median(on.instructions);
  const injN = few ? NaN : median(inj.instructions);
  const spread = few
    ? NaN
    : Math.max(spreadOf(off.instructions), spreadOf(on.instructions), spreadOf(inj.instructions));
  const offBytes = few ? NaN : median(off.bytes);
  const onBytes = few ? NaN : median(on.bytes);
  const costFraction = (onN - offN) / offN;
  const injectedFraction = (injN - offN) / offN;
  let verdict: string;
  if (few) verdict = 'no verdict: under 2 windows without a collection';
  else if (!(spread <= limits.maxSpread))
    verdict = `no verdict: windows spread ${(spread * 100).toFixed(2)} %`;
  else if (costFraction > limits.maxFraction) verdict = 'MISSED';
  else if (onBytes - offBytes > limits.maxExtraBytes) verdict = 'MISSED (bytes)';
  else if (!(injectedFraction > limits.maxFraction))
    verdict = 'no verdict: injected cost not caught';
  else verdict = 'met';
  return {
    off: offN,
    on: onN,
    inj: injN,
    cost: onN - offN,
    costFraction,
    injectedFraction,
    spread,
    offBytes,
    onBytes,
    verdict,
  };
}

/** Whether `valgrind` runs here (on PATH and answering `--version`). */
export function valgrindAvailable(): boolean {
  const probe = spawnSync('valgrind', ['--version'], { stdio: 'ignore' });
  return probe.error === undefined && probe.status === 0;
}

/** Parses a child's output: one {@link CountedOp} per JSON line. */
export function parseCounted(stdout: string): CountedOp[] {
  return stdout
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as CountedOp);
}

/** Starts the counting child: `bundle` under callgrind, with `args`, its dumps in `dir`. */
function spawnCounting(dir: string, bundle: string, args: readonly string[]) {
  return spawn(
    'valgrind',
    [
      '--tool=callgrind',
      // Node's main thread alone: the background compiler's and collector's threads run at
      // their own pace, which differs from process to process.
      '--separate-threads=yes',
      // Every process.cpuUsage() of the child ends a window (libuv's uv_getrusage).
      '--dump-before=uv_getrusage',
      `--callgrind-out-file=${join(dir, 'cg.%p')}`,
      process.execPath,
      '--expose-gc',
      // A young generation no window fills (a lock window allocates ~1.8 MB).
      '--min-semi-space-size=16',
      // One deterministic JIT outcome per bundle (see diagnostics-count.ts).
      '--single-threaded',
      bundle,
      `--dir=${dir}`,
      ...args,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
}

/**
 * Runs the counting child `bundle` (a file) under callgrind, with `args`, and returns what it
 * printed. Its dumps go to a fresh temporary directory in `parent`, removed on every path: the
 * child ran, could not be spawned (spawn() throws on a bad argument), or failed to start (an
 * `error` event; Node does not promise a `close` after one).
 */
export function countUnderCallgrind(
  bundle: string,
  args: readonly string[],
  parent: string = tmpdir(),
): Promise<CountedOp[]> {
  const dir = mkdtempSync(join(parent, 'keel-diag-cg-'));
  const removeDir = (): void => {
    rmSync(dir, { recursive: true, force: true });
  };
  let child: ReturnType<typeof spawnCounting>;
  try {
    child = spawnCounting(dir, bundle, args);
  } catch (error) {
    removeDir();
    return Promise.reject(error instanceof Error ? error : new Error(String(error)));
  }
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise<CountedOp[]>((resolve, reject) => {
    child.on('error', (error) => {
      removeDir();
      reject(error);
    });
    child.on('close', (code) => {
      removeDir();
      if (code === 0) resolve(parseCounted(stdout));
      else
        reject(
          new Error(
            `counting child ${bundle} exited with ${String(code)}: ${stderr
              .split('\n')
              .filter((l) => !l.startsWith('=='))
              .join('\n')
              .slice(-2000)}`,
          ),
        );
    });
  });
}
