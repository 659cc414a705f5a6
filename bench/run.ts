/**
 * `npm run bench [-- <filter>...] [--quick] [--runs=N] [--html | --html-only]`
 *
 * Runs every `bench/*.bench.ts` (or those whose file or suite name contains a filter) with
 * tinybench. Every run of a suite is its own child process — a fresh V8 with `--expose-gc` and
 * the same loader as this one (tsx) — so one suite's JIT feedback, heap and inline caches never
 * colour another's, and each run starts from the same state. tinybench warms every task up
 * before it measures any.
 *
 * Full mode runs each suite three times (`--runs=N` changes it), one fresh process after
 * the other, and reports for every comparison the median ratio and its spread (min–max over the
 * runs). Why processes and not three rounds inside one: the variation that made earlier claims
 * unreliable is between processes (which functions V8 inlines, in which order it meets the
 * tasks, heap layout); three rounds in one process share all of that, so their spread would
 * understate what the next person running the benchmark sees.
 *
 * Every task that names a peer or baseline (`compareTo`) gets the ratio of the two, measured in
 * the same process — on a shared 2-core machine ratios are meaningful where absolute times are
 * not. `--quick` is a single short smoke run (CI uses it): it prints no verdicts.
 *
 * Output: tables at most 120 columns wide; `bench/results/<suite>.json` keeps, per suite, the
 * last {@link HISTORY} invocations with every run's figures; `bench/results/latest.json` holds
 * this invocation's summary (CI reads `suites[].tasks[].ratio` from it). `--html` also writes
 * `bench/results/report.html`, a self-contained chart page of every suite's newest recorded
 * invocation (see html.ts); `--html-only` writes it from the stored results without running.
 */
import { fork } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Bench } from 'tinybench';
import {
  compareTargets,
  type BenchReport,
  type BenchSuite,
  type MeasuredTask,
  type SuiteContext,
} from './suite.js';
import { renderHtml, type HtmlSuite, type HtmlTask } from './html.js';

/** One task's figures from one run (one child process). */
interface TaskReport {
  readonly name: string;
  readonly kind: string;
  readonly opsPerSec: number;
  readonly meanNs: number;
  readonly p50Ns: number;
  readonly p99Ns: number;
  readonly samples: number;
  /** Calls per timed sample; per-call figures are the sample figures divided by it. */
  readonly batch: number;
  readonly rmePercent: number;
  /** First (main) comparison: the task compared with and ops/s of this ÷ ops/s of that. */
  readonly compareTo?: string;
  /**
   * ops/s of this task ÷ ops/s of `compareTo` in the same process (the median over its
   * interleaved rounds); > 1 means this task is faster.
   */
  readonly ratio?: number;
  /** Every comparison, when a task is compared with more than one peer. */
  readonly comparisons?: readonly {
    readonly compareTo: string;
    readonly ratio: number;
    /** This task's ops/s ÷ the other's in each interleaved round of this run. */
    readonly roundRatios: readonly number[];
  }[];
}

/** One run of one suite, as the child process reports it. */
interface RunReport {
  readonly name: string;
  readonly file: string;
  readonly description: string;
  readonly date: string;
  readonly durationMs: number;
  readonly tasks: readonly TaskReport[];
  readonly reports: readonly BenchReport[];
}

/** A figure over the runs: median and spread. */
interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

/** A comparison over the runs: the ratio of every run, its median and spread. */
interface ComparisonSummary extends Spread {
  readonly compareTo: string;
  readonly runs: readonly number[];
}

/** One task over the runs. `ratio` is the median of the main comparison (CI reads it). */
interface TaskSummary {
  readonly name: string;
  readonly kind: string;
  readonly batch: number;
  readonly opsPerSec: Spread;
  readonly meanNs: Spread;
  readonly p50Ns: Spread;
  readonly p99Ns: Spread;
  readonly rmePercent: Spread;
  readonly compareTo?: string;
  readonly ratio?: number;
  readonly comparisons?: readonly ComparisonSummary[];
}

interface SuiteSummary {
  readonly name: string;
  readonly file: string;
  readonly description: string;
  readonly runs: number;
  readonly tasks: readonly TaskSummary[];
  /** The suite's non-timing reports, each numeric cell as "median (min–max)" over the runs. */
  readonly reports: readonly BenchReport[];
}

/** Messages from a child process to the runner. */
type ChildMessage =
  | { readonly type: 'result'; readonly report: RunReport }
  | { readonly type: 'skip'; readonly name: string };

const here = dirname(fileURLToPath(import.meta.url));
const resultsDir = join(here, 'results');
/** Invocations kept per suite in `bench/results/<suite>.json`. */
const HISTORY = 20;
/** Measured time per task and run in full mode, split over {@link ROUNDS} interleaved rounds. */
const TASK_MS = 1000;
const ROUNDS = 5;
/** Widest line the tables print. */
const WIDTH = 120;
const USAGE = 'usage: npm run bench [-- <filter>...] [--quick] [--runs=N] [--html | --html-only]';

const args = process.argv.slice(2);
const childIndex = args.indexOf('--child');
const childFile = childIndex >= 0 ? args[childIndex + 1] : undefined;
const userArgs =
  childIndex >= 0 ? args.filter((_, i) => i !== childIndex && i !== childIndex + 1) : args;
const quick = userArgs.includes('--quick');
const runsFlag = userArgs.find((a) => a.startsWith('--runs='));
const html = userArgs.includes('--html');
const htmlOnly = userArgs.includes('--html-only');
const unknownFlags = userArgs.filter(
  (a) =>
    a.startsWith('--') &&
    a !== '--quick' &&
    a !== '--html' &&
    a !== '--html-only' &&
    !a.startsWith('--runs='),
);
if (unknownFlags.length > 0) {
  console.error(`bench: unknown option(s) ${unknownFlags.join(', ')}; ${USAGE}`);
  process.exit(2);
}
const runs = runsFlag === undefined ? (quick ? 1 : 3) : Number(runsFlag.slice('--runs='.length));
if (!Number.isInteger(runs) || runs < 1 || runs > 50) {
  console.error(`bench: --runs wants an integer from 1 to 50, got "${runsFlag ?? ''}"; ${USAGE}`);
  process.exit(2);
}
const filters = userArgs.filter((a) => !a.startsWith('--')).map((a) => a.toLowerCase());
const context: SuiteContext = Object.freeze({ quick });

// ---------------------------------------------------------------------------------------------
// Formatting

function formatOps(ops: number): string {
  if (ops >= 1e6) return `${(ops / 1e6).toFixed(2)} M`;
  if (ops >= 1e3) return `${(ops / 1e3).toFixed(2)} k`;
  return ops.toFixed(1);
}

function formatNs(ns: number): string {
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(2)} ms`;
  if (ns >= 1e3) return `${(ns / 1e3).toFixed(2)} µs`;
  return `${ns.toFixed(1)} ns`;
}

function formatRatio(ratio: number): string {
  if (!Number.isFinite(ratio)) return '—';
  return `×${ratio >= 100 ? ratio.toFixed(0) : ratio >= 10 ? ratio.toFixed(1) : ratio.toFixed(2)}`;
}

function formatNumber(value: number): string {
  if (Number.isInteger(value)) return String(value);
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  return abs >= 1000 ? value.toFixed(0) : abs >= 10 ? value.toFixed(2) : value.toFixed(4);
}

/** Splits `text` into lines of at most `width` characters, at spaces where it can. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let rest = text;
  while (rest.length > width) {
    let cut = rest.lastIndexOf(' ', width);
    if (cut <= 0) cut = width;
    lines.push(rest.slice(0, cut).trimEnd());
    rest = rest.slice(cut).trimStart();
  }
  lines.push(rest);
  return lines;
}

/**
 * A table no wider than `WIDTH - indent`: the widest columns are narrowed until it fits, and
 * cells too long for their column continue on the next line of the same row.
 */
function table(
  header: readonly string[],
  rows: readonly string[][],
  indent = '',
  textColumns = 1,
): string[] {
  const gap = 2;
  const budget = WIDTH - indent.length - gap * (header.length - 1);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const floor = 8;
  while (widths.reduce((a, b) => a + b, 0) > budget) {
    const widest = widths.indexOf(Math.max(...widths));
    if ((widths[widest] ?? 0) <= floor) break;
    widths[widest] = (widths[widest] ?? 0) - 1;
  }
  // Figures line up on the right; text (names, targets, notes) reads left to right.
  const figure = /^(—|-|[<>≤≥~×+−-]?\s*[\d.]+\S*( \S+)?( \(.*\))?)?$/;
  const left = header.map((_, i) => i < textColumns || !rows.every((r) => figure.test(r[i] ?? '')));
  const render = (cells: readonly string[]): string[] => {
    const wrapped = cells.map((c, i) => wrap(c, widths[i] ?? floor));
    const height = Math.max(...wrapped.map((w) => w.length));
    const out: string[] = [];
    for (let line = 0; line < height; line++) {
      const parts = wrapped.map((w, i) => {
        const text = w[line] ?? '';
        const width = widths[i] ?? 0;
        return left[i] === true ? text.padEnd(width) : text.padStart(width);
      });
      out.push(`${indent}${parts.join(' '.repeat(gap))}`.trimEnd());
    }
    return out;
  };
  return [
    ...render(header),
    `${indent}${widths.map((w) => '-'.repeat(w)).join(' '.repeat(gap))}`,
    ...rows.flatMap(render),
  ];
}

/** Quick runs are too short to judge a target: the verdict words of suite reports go. */
function scrubVerdicts(text: string): string {
  return quick ? text.replace(/\b(met|MISSED|missed)\b/g, '(no verdict: quick run)') : text;
}

// ---------------------------------------------------------------------------------------------
// Child side: one run of one suite

/**
 * A fresh loop function per task. One shared wrapper would see every task's `fn` at its call
 * site, turn megamorphic and add an unpredictable call cost to every measurement; a loop
 * compiled per task calls one target and can inline it, as the caller's own loop would.
 */
function batchLoop(fn: () => unknown, batch: number): () => unknown {
  // eslint-disable-next-line @typescript-eslint/no-implied-eval -- a per-task copy of a fixed loop
  const make = new Function(
    'fn',
    'batch',
    'return function batched() { let last; for (let i = 0; i < batch; i++) last = fn(); return last; };',
  ) as (f: () => unknown, b: number) => () => unknown;
  return make(fn, batch);
}

async function runSuite(file: string, suite: BenchSuite): Promise<RunReport> {
  const started = Date.now();
  const fns = new Map(
    suite.tasks.map((t) => [t.name, (t.batch ?? 1) === 1 ? t.fn : batchLoop(t.fn, t.batch ?? 1)]),
  );
  const batchOf = new Map(suite.tasks.map((t) => [t.name, t.batch ?? 1]));
  // Interleaved rounds: every task is measured for a slice of its time in each round, so a
  // task and the one it is compared with meet the same background load (a shared machine's
  // load shifts within seconds). tinybench 6 warms every task up (warmupTime /
  // warmupIterations) before it measures any; later rounds find the code already warm.
  const rounds = quick ? 1 : ROUNDS;
  const slices = new Map<
    string,
    { samples: number; totalMs: number; p50: number; p99: number; rme: number }[]
  >();
  for (let round = 0; round < rounds; round++) {
    const bench = new Bench(
      quick
        ? { time: 100, warmupTime: 20, iterations: 10, warmupIterations: 5 }
        : {
            time: TASK_MS / rounds,
            iterations: 10,
            warmup: round === 0,
            warmupTime: 250,
            warmupIterations: 20,
          },
    );
    for (const [name, fn] of fns) {
      const task = suite.tasks.find((t) => t.name === name);
      const hooks: { beforeAll?: () => void; afterAll?: () => void } = {};
      if (task?.beforeAll !== undefined) hooks.beforeAll = task.beforeAll;
      if (task?.afterAll !== undefined) hooks.afterAll = task.afterAll;
      bench.add(name, fn, hooks);
    }
    await bench.run();
    for (const task of bench.tasks) {
      const result = task.result;
      if (result.state !== 'completed') {
        const detail = result.state === 'errored' ? `: ${result.error.message}` : '';
        throw new Error(
          `bench ${suite.name} / ${task.name} did not complete (${result.state}${detail})`,
        );
      }
      const list = slices.get(task.name) ?? [];
      list.push({
        samples: result.latency.samplesCount,
        totalMs: result.totalTime,
        p50: result.latency.p50,
        p99: result.latency.p99,
        rme: result.latency.rme,
      });
      slices.set(task.name, list);
    }
  }
  const measured = new Map<
    string,
    {
      ops: number;
      meanNs: number;
      p50Ns: number;
      p99Ns: number;
      samples: number;
      rme: number;
      roundOps: number[];
    }
  >();
  for (const [name, list] of slices) {
    const batch = batchOf.get(name) ?? 1;
    const calls = list.reduce((sum, x) => sum + x.samples * batch, 0);
    const totalMs = list.reduce((sum, x) => sum + x.totalMs, 0);
    measured.set(name, {
      // Calls per second of measured time (1 / mean latency). tinybench's throughput.mean
      // averages per-sample rates, which over-weights fast outliers and flatters noisy tasks.
      ops: (calls * 1000) / totalMs,
      meanNs: (totalMs * 1e6) / calls,
      p50Ns: (spreadOf(list.map((x) => x.p50)).median * 1e6) / batch,
      p99Ns: (spreadOf(list.map((x) => x.p99)).median * 1e6) / batch,
      samples: list.reduce((sum, x) => sum + x.samples, 0),
      rme: spreadOf(list.map((x) => x.rme)).median,
      roundOps: list.map((x) => (x.samples * batch * 1000) / x.totalMs),
    });
  }
  const tasks = suite.tasks.map((task): TaskReport => {
    const m = measured.get(task.name);
    if (m === undefined) throw new Error(`bench ${suite.name}: no result for ${task.name}`);
    const base = {
      name: task.name,
      kind: task.kind,
      opsPerSec: m.ops,
      meanNs: m.meanNs,
      p50Ns: m.p50Ns,
      p99Ns: m.p99Ns,
      samples: m.samples,
      batch: batchOf.get(task.name) ?? 1,
      rmePercent: m.rme,
    };
    const comparisons = compareTargets(task).map((target) => {
      const peer = measured.get(target);
      if (peer === undefined) throw new Error(`bench ${suite.name}: no result for ${target}`);
      // The median of the rounds' ratios: one round disturbed by a burst of load moves it little.
      const roundRatios = m.roundOps.map((ops, i) => ops / (peer.roundOps[i] ?? Number.NaN));
      return { compareTo: target, ratio: spreadOf(roundRatios).median, roundRatios };
    });
    const [main] = comparisons;
    return main === undefined
      ? base
      : { ...base, compareTo: main.compareTo, ratio: main.ratio, comparisons };
  });
  const perCall = new Map<string, MeasuredTask>(
    tasks.map((t) => [
      t.name,
      {
        opsPerSec: t.opsPerSec,
        meanNs: t.meanNs,
        p50Ns: t.p50Ns,
        p99Ns: t.p99Ns,
        ratios: new Map((t.comparisons ?? []).map((c) => [c.compareTo, c.ratio])),
      },
    ]),
  );
  const reports = (await suite.reports?.(perCall, context)) ?? [];
  return {
    name: suite.name,
    file,
    description: suite.description,
    date: new Date(started).toISOString(),
    durationMs: Date.now() - started,
    tasks,
    reports,
  };
}

/**
 * Runs `body` between the suite's `setup` and `teardown` hooks. Teardown runs once: after the
 * body, when the body or setup threw, or on the first SIGINT/SIGTERM (then the process exits;
 * later signals are ignored so they cannot cut the teardown short), so servers a suite started
 * never outlive the run.
 */
async function withSuiteResources<T>(suite: BenchSuite, body: () => Promise<T>): Promise<T> {
  const { setup, teardown } = suite;
  if (setup === undefined && teardown === undefined) return body();
  let tornDown: Promise<void> | undefined;
  const tearDown = (): Promise<void> =>
    (tornDown ??= Promise.resolve().then(() => teardown?.(context)));
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (signalled) return;
    signalled = true;
    console.error(`\nbench: ${signal}; tearing down suite ${suite.name} before exiting`);
    const bound = new Promise<void>((resolve) => setTimeout(resolve, 5000).unref());
    void Promise.race([tearDown().catch(() => undefined), bound]).finally(() =>
      process.exit(signal === 'SIGINT' ? 130 : 143),
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await setup?.(context);
    return await body();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await tearDown();
  }
}

function matches(file: string, name?: string): boolean {
  return (
    filters.length === 0 ||
    filters.some(
      (f) => file.toLowerCase().includes(f) || (name?.toLowerCase().includes(f) ?? false),
    )
  );
}

async function child(file: string): Promise<void> {
  const send = (message: ChildMessage): Promise<void> =>
    new Promise((resolve, reject) => {
      if (process.send === undefined) {
        reject(new Error('bench: --child is internal; run `npm run bench` instead'));
        return;
      }
      process.send(message, undefined, {}, (error) => {
        if (error === null) resolve();
        else reject(error);
      });
    });
  const mod = (await import(pathToFileURL(join(here, file)).href)) as { suite?: BenchSuite };
  const suite = mod.suite;
  if (suite === undefined)
    throw new Error(`bench/${file} does not export a suite (use defineSuite)`);
  if (!matches(file, suite.name)) {
    await send({ type: 'skip', name: suite.name });
    return;
  }
  const report = await withSuiteResources(suite, () => runSuite(file, suite));
  await send({ type: 'result', report });
}

// ---------------------------------------------------------------------------------------------
// Runner side

/** The process currently running a suite, so a signal to the runner reaches it. */
let current: ReturnType<typeof fork> | undefined;

/** Runs one suite once in a fresh process; `undefined` when the suite does not match. */
function runChild(file: string): Promise<ChildMessage> {
  // The same loader as this process (tsx), plus --expose-gc for the memory reports.
  const execArgv = process.execArgv.includes('--expose-gc')
    ? process.execArgv
    : [...process.execArgv, '--expose-gc'];
  return new Promise((resolve, reject) => {
    const proc = fork(fileURLToPath(import.meta.url), ['--child', file, ...userArgs], {
      execArgv,
      serialization: 'advanced', // structured clone: NaN and Infinity survive, unlike JSON
      stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    });
    current = proc;
    let message: ChildMessage | undefined;
    proc.on('message', (m) => {
      message = m as ChildMessage;
    });
    proc.on('error', reject);
    proc.on('exit', (code, signal) => {
      current = undefined;
      if (code === 0 && message !== undefined) resolve(message);
      else
        reject(
          new Error(
            `bench/${file}: its process ended with ${signal ?? `exit code ${String(code)}`}${message === undefined ? ' before reporting' : ''}`,
          ),
        );
    });
  });
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    // Pass it on (a terminal's Ctrl-C reaches the child too; it tears down once), then leave
    // when the child has gone.
    const proc = current;
    if (proc === undefined || proc.exitCode !== null) process.exit(signal === 'SIGINT' ? 130 : 143);
    proc.kill(signal);
    proc.once('exit', () => process.exit(signal === 'SIGINT' ? 130 : 143));
  });
}

function spreadOf(values: readonly number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median =
    sorted.length % 2 === 1
      ? (sorted[mid] as number)
      : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  return { median, min: sorted[0] as number, max: sorted[sorted.length - 1] as number };
}

function summarizeTasks(all: readonly RunReport[]): TaskSummary[] {
  const first = all[0] as RunReport;
  return first.tasks.map((task): TaskSummary => {
    const per = all.map((run) => {
      const t = run.tasks.find((x) => x.name === task.name);
      if (t === undefined) throw new Error(`bench ${run.name}: a run has no task "${task.name}"`);
      return t;
    });
    const base = {
      name: task.name,
      kind: task.kind,
      batch: task.batch,
      opsPerSec: spreadOf(per.map((t) => t.opsPerSec)),
      meanNs: spreadOf(per.map((t) => t.meanNs)),
      p50Ns: spreadOf(per.map((t) => t.p50Ns)),
      p99Ns: spreadOf(per.map((t) => t.p99Ns)),
      rmePercent: spreadOf(per.map((t) => t.rmePercent)),
    };
    const comparisons = (task.comparisons ?? []).map((c): ComparisonSummary => {
      const ratios = per.map(
        (t) => t.comparisons?.find((x) => x.compareTo === c.compareTo)?.ratio ?? Number.NaN,
      );
      return { compareTo: c.compareTo, runs: ratios, ...spreadOf(ratios) };
    });
    const [main] = comparisons;
    return main === undefined
      ? base
      : { ...base, compareTo: main.compareTo, ratio: main.median, comparisons };
  });
}

/**
 * The suite's reports over the runs: a numeric cell that differs between runs becomes
 * "median (min–max)", a text cell that differs lists its values; cells equal in every run
 * stay as they are. Reports whose shape differs between runs are kept from the first run.
 */
function summarizeReports(all: readonly RunReport[]): BenchReport[] {
  const first = all[0] as RunReport;
  return first.reports.map((report, r) => {
    const same = all.map((run) => run.reports[r]);
    const shaped = same.every(
      (x) => x !== undefined && x.title === report.title && x.rows.length === report.rows.length,
    );
    if (!shaped || all.length === 1) return report;
    const rows = report.rows.map((row, i) => {
      const out: Record<string, string | number> = {};
      for (const key of Object.keys(row)) {
        const values = same.map((x) => x?.rows[i]?.[key]);
        if (values.every((v) => v === values[0])) out[key] = values[0] ?? '';
        else if (values.every((v): v is number => typeof v === 'number')) {
          const s = spreadOf(values);
          out[key] = `${formatNumber(s.median)} (${formatNumber(s.min)}–${formatNumber(s.max)})`;
        } else out[key] = [...new Set(values.map((v) => String(v ?? '')))].join(' / ');
      }
      return out;
    });
    return { title: report.title, rows };
  });
}

function printSuite(summary: SuiteSummary): void {
  console.log('');
  for (const line of wrap(`${summary.name} — ${summary.description}`, WIDTH)) console.log(line);
  const over = summary.runs > 1 ? `, median of ${summary.runs} runs` : '';
  console.log(`tasks (per call${over}${quick ? '; quick run: smoke numbers only' : ''})`);
  const rows = summary.tasks.map((t) => [
    t.name,
    formatOps(t.opsPerSec.median),
    formatNs(t.meanNs.median),
    formatNs(t.p99Ns.median),
    t.rmePercent.median.toFixed(1),
  ]);
  for (const line of table(['task', 'ops/s', 'mean', 'p99*', '±%'], rows)) console.log(line);
  if (summary.tasks.some((t) => t.batch > 1))
    console.log('* p99 of batched tasks is the p99 of batch means, per call');
  const comparisons = summary.tasks.flatMap((t) =>
    (t.comparisons ?? []).map((c) => ({ task: t.name, ...c })),
  );
  if (comparisons.length > 0) {
    console.log('');
    console.log(
      summary.runs > 1
        ? `ratios (ops/s of task ÷ ops/s of the other, each run in one process; median and min–max of ${summary.runs} runs)`
        : `ratios (ops/s of task ÷ ops/s of the other, one run${quick ? '; quick run: no verdict' : ''})`,
    );
    const header = summary.runs > 1 ? ['task', 'vs', 'median', 'min–max'] : ['task', 'vs', 'ratio'];
    const ratioRows = comparisons.map((c) =>
      summary.runs > 1
        ? [
            c.task,
            c.compareTo,
            formatRatio(c.median),
            `${formatRatio(c.min)}–${formatRatio(c.max)}`,
          ]
        : [c.task, c.compareTo, formatRatio(c.median)],
    );
    for (const line of table(header, ratioRows, '', 2)) console.log(line);
  }
  for (const report of summary.reports) printReport(report);
}

function printReport(report: BenchReport): void {
  const first = report.rows[0];
  if (first === undefined) return;
  const header = Object.keys(first);
  const cell = (value: string | number | undefined): string =>
    typeof value === 'number' ? formatNumber(value) : scrubVerdicts(value ?? '');
  const rows = report.rows.map((row) => header.map((key) => cell(row[key])));
  console.log('');
  for (const line of wrap(scrubVerdicts(report.title), WIDTH - 2)) console.log(`  ${line}`);
  for (const line of table(header, rows, '  ')) console.log(line);
}

interface SuiteFile {
  readonly suite: string;
  readonly file: string;
  readonly description: string;
  readonly invocations: unknown[];
}

/** Appends this invocation to `bench/results/<suite>.json`, keeping the last HISTORY. */
function record(summary: SuiteSummary, all: readonly RunReport[], meta: object): string {
  const path = join(resultsDir, `${summary.name.replace(/[^A-Za-z0-9._-]+/g, '_')}.json`);
  let previous: unknown[] = [];
  if (existsSync(path)) {
    try {
      const parsed = JSON.parse(readFileSync(path, 'utf8')) as Partial<SuiteFile>;
      if (Array.isArray(parsed.invocations)) previous = parsed.invocations;
    } catch {
      console.error(`bench: ${path} is not readable JSON; starting its history afresh`);
    }
  }
  const entry = { ...meta, summary: { tasks: summary.tasks, reports: summary.reports }, runs: all };
  const file: SuiteFile = {
    suite: summary.name,
    file: summary.file,
    description: summary.description,
    invocations: [...previous, entry].slice(-HISTORY),
  };
  writeFileSync(path, `${JSON.stringify(file, null, 2)}\n`);
  return path;
}

/** Writes `bench/results/report.html` from every suite's newest recorded invocation. */
function writeHtml(): string {
  const suites: HtmlSuite[] = [];
  const names = existsSync(resultsDir) ? readdirSync(resultsDir) : [];
  for (const name of names.filter((n) => n.endsWith('.json') && n !== 'latest.json').sort()) {
    let parsed: Partial<SuiteFile>;
    try {
      parsed = JSON.parse(readFileSync(join(resultsDir, name), 'utf8')) as Partial<SuiteFile>;
    } catch {
      console.error(`bench: bench/results/${name} is not readable JSON; left out of the page`);
      continue;
    }
    const last = (Array.isArray(parsed.invocations) ? parsed.invocations.at(-1) : undefined) as
      | {
          date?: string;
          node?: string;
          command?: string;
          quick?: boolean;
          runsPerSuite?: number;
          summary?: { tasks?: HtmlTask[]; reports?: HtmlSuite['reports'] };
        }
      | undefined;
    if (last?.summary === undefined) continue;
    suites.push({
      name: parsed.suite ?? name.replace(/\.json$/, ''),
      description: parsed.description ?? '',
      date: last.date ?? '',
      node: last.node ?? '',
      command: last.command ?? '',
      quick: last.quick === true,
      runs: last.runsPerSuite ?? 1,
      tasks: last.summary.tasks ?? [],
      reports: last.summary.reports ?? [],
    });
  }
  const path = join(resultsDir, 'report.html');
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(path, renderHtml(suites, new Date().toISOString()));
  console.log(`wrote bench/results/report.html (${suites.length} suite(s))`);
  return path;
}

async function main(): Promise<void> {
  if (htmlOnly) {
    writeHtml();
    return;
  }
  const files = readdirSync(here)
    .filter((f) => f.endsWith('.bench.ts'))
    .sort();
  const meta = {
    date: new Date().toISOString(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    command: `npm run bench${userArgs.length > 0 ? ` -- ${userArgs.join(' ')}` : ''}`,
    quick,
    runsPerSuite: runs,
  };
  // Files whose name matches need no look inside; the others are loaded (in a child, which
  // answers "skip" without running anything) only when some filter matched no file name.
  const byName = filters.every((f) => files.some((file) => file.toLowerCase().includes(f)));
  const candidates = byName ? files.filter((f) => matches(f)) : files;
  const summaries: SuiteSummary[] = [];
  const failures: string[] = [];
  mkdirSync(resultsDir, { recursive: true });
  for (const file of candidates) {
    const all: RunReport[] = [];
    try {
      for (let run = 1; run <= runs; run++) {
        if (runs > 1) process.stderr.write(`bench: ${file}, run ${run} of ${runs}\n`);
        const message = await runChild(file);
        if (message.type === 'skip') break;
        all.push(message.report);
      }
    } catch (error) {
      console.error(error instanceof Error ? error.message : error);
      failures.push(file);
      continue;
    }
    const first = all[0];
    if (first === undefined) continue;
    const summary: SuiteSummary = {
      name: first.name,
      file,
      description: first.description,
      runs: all.length,
      tasks: summarizeTasks(all),
      reports: summarizeReports(all),
    };
    printSuite(summary);
    record(summary, all, meta);
    summaries.push(summary);
  }
  if (summaries.length === 0 && failures.length === 0) {
    console.error(`bench: no suite matches ${filters.join(', ')}; suites: ${files.join(', ')}`);
    process.exit(1);
  }
  writeFileSync(
    join(resultsDir, 'latest.json'),
    `${JSON.stringify({ ...meta, suites: summaries }, null, 2)}\n`,
  );
  const ratios = summaries.flatMap((s) => s.tasks).filter((t) => t.ratio !== undefined).length;
  console.log(
    `\nwrote bench/results/latest.json and ${summaries.map((s) => `${s.name}.json`).join(', ')} ` +
      `(${summaries.length} suite(s), ${ratios} ratio(s), ${runs} run(s) each)` +
      (quick ? ' — quick mode: smoke numbers only, no verdicts' : ''),
  );
  if (html) writeHtml();
  if (failures.length > 0) {
    console.error(`bench: failed: ${failures.join(', ')}`);
    process.exit(1);
  }
}

if (childFile !== undefined) {
  try {
    await child(childFile);
    process.exit(0);
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
} else {
  await main();
}
