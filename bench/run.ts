/**
 * `npm run bench [-- <filter>...] [--quick]`
 *
 * Runs every `bench/*.bench.ts` (or those whose file or suite name contains a filter) with
 * tinybench, prints a table per suite and writes `bench/results/latest.json`. Every task that
 * names a peer or baseline (`compareTo`) gets the ratio of the two, measured in the same run —
 * on a shared 2-core machine ratios are meaningful where absolute times are not.
 * `--quick` is a short smoke run (CI uses it): its numbers only show that the suites work.
 */
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
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
  /** ops/s of this task ÷ ops/s of `compareTo`, same run; > 1 means this task is faster. */
  readonly ratio?: number;
  /** Every comparison, when a task is compared with more than one peer. */
  readonly comparisons?: readonly { readonly compareTo: string; readonly ratio: number }[];
}

interface SuiteReport {
  readonly name: string;
  readonly file: string;
  readonly description: string;
  readonly tasks: readonly TaskReport[];
  readonly reports: readonly BenchReport[];
}

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const unknownFlags = args.filter((a) => a.startsWith('--') && a !== '--quick');
if (unknownFlags.length > 0) {
  console.error(
    `bench: unknown option(s) ${unknownFlags.join(', ')}; usage: npm run bench [-- <filter>...] [--quick]`,
  );
  process.exit(2);
}
const filters = args.filter((a) => !a.startsWith('--')).map((a) => a.toLowerCase());
const context: SuiteContext = Object.freeze({ quick });

const files = readdirSync(here)
  .filter((f) => f.endsWith('.bench.ts'))
  .sort();

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

function printTable(report: SuiteReport): void {
  const header = ['task', 'ops/s', 'mean', 'p99*', 'samples', '±%', 'vs'];
  const rows = report.tasks.map((t) => [
    t.name,
    formatOps(t.opsPerSec),
    formatNs(t.meanNs),
    formatNs(t.p99Ns),
    String(t.samples),
    t.rmePercent.toFixed(1),
    (t.comparisons ?? []).map((c) => `×${c.ratio.toFixed(2)} vs ${c.compareTo}`).join('; '),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) =>
        i === 0 || i === cells.length - 1 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0),
      )
      .join('  ');
  console.log(`\n${report.name} — ${report.description}`);
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of rows) console.log(line(row));
  if (report.tasks.some((t) => t.batch > 1))
    console.log('* p99 of batched tasks is the p99 of batch means, per call');
  for (const extra of report.reports) printReport(extra);
}

function printReport(report: BenchReport): void {
  const first = report.rows[0];
  if (first === undefined) return;
  const header = Object.keys(first);
  const cell = (value: string | number | undefined): string =>
    typeof value === 'number'
      ? Number.isInteger(value)
        ? String(value)
        : value.toFixed(4)
      : (value ?? '');
  const rows = report.rows.map((row) => header.map((key) => cell(row[key])));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join('  ');
  console.log(`\n  ${report.title}`);
  console.log(`  ${line(header)}`);
  console.log(`  ${widths.map((w) => '-'.repeat(w)).join('  ')}`);
  for (const row of rows) console.log(`  ${line(row)}`);
}

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

async function runSuite(file: string, suite: BenchSuite): Promise<SuiteReport> {
  const bench = new Bench(
    quick
      ? { time: 100, warmupTime: 20, iterations: 10, warmupIterations: 5 }
      : { time: 1000, warmupTime: 250, iterations: 50, warmupIterations: 20 },
  );
  for (const task of suite.tasks) {
    const { fn, batch = 1 } = task;
    bench.add(task.name, batch === 1 ? fn : batchLoop(fn, batch));
  }
  const batchOf = new Map(suite.tasks.map((t) => [t.name, t.batch ?? 1]));
  await bench.run();
  const measured = new Map<
    string,
    { ops: number; meanNs: number; p50Ns: number; p99Ns: number; samples: number; rme: number }
  >();
  for (const task of bench.tasks) {
    const result = task.result;
    if (result.state !== 'completed') {
      const detail = result.state === 'errored' ? `: ${result.error.message}` : '';
      throw new Error(
        `bench ${suite.name} / ${task.name} did not complete (${result.state}${detail})`,
      );
    }
    const batch = batchOf.get(task.name) ?? 1;
    measured.set(task.name, {
      // Calls per second of measured time (1 / mean latency). tinybench's throughput.mean
      // averages per-sample rates, which over-weights fast outliers and flatters noisy tasks.
      ops: (1000 / result.period) * batch,
      meanNs: (result.latency.mean * 1e6) / batch,
      p50Ns: (result.latency.p50 * 1e6) / batch,
      p99Ns: (result.latency.p99 * 1e6) / batch,
      samples: result.latency.samplesCount,
      rme: result.latency.rme,
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
      return { compareTo: target, ratio: m.ops / peer.ops };
    });
    const [main] = comparisons;
    return main === undefined
      ? base
      : { ...base, compareTo: main.compareTo, ratio: main.ratio, comparisons };
  });
  const perCall = new Map<string, MeasuredTask>(
    tasks.map((t) => [
      t.name,
      { opsPerSec: t.opsPerSec, meanNs: t.meanNs, p50Ns: t.p50Ns, p99Ns: t.p99Ns },
    ]),
  );
  const reports = (await suite.reports?.(perCall, context)) ?? [];
  return { name: suite.name, file, description: suite.description, tasks, reports };
}

/**
 * Runs `body` between the suite's `setup` and `teardown` hooks. Teardown runs once: after the
 * body, when the body or setup threw, or on SIGINT/SIGTERM (then the process exits), so servers
 * a suite started never outlive the run.
 */
async function withSuiteResources<T>(suite: BenchSuite, body: () => Promise<T>): Promise<T> {
  const { setup, teardown } = suite;
  if (setup === undefined && teardown === undefined) return body();
  let tornDown: Promise<void> | undefined;
  const tearDown = (): Promise<void> =>
    (tornDown ??= Promise.resolve().then(() => teardown?.(context)));
  const onSignal = (signal: NodeJS.Signals): void => {
    console.error(`\nbench: ${signal}; tearing down suite ${suite.name} before exiting`);
    const bound = new Promise<void>((resolve) => setTimeout(resolve, 5000).unref());
    void Promise.race([tearDown().catch(() => undefined), bound]).finally(() =>
      process.exit(signal === 'SIGINT' ? 130 : 143),
    );
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await setup?.(context);
    return await body();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await tearDown();
  }
}

const reports: SuiteReport[] = [];
for (const file of files) {
  const mod = (await import(pathToFileURL(join(here, file)).href)) as { suite?: BenchSuite };
  const suite = mod.suite;
  if (suite === undefined)
    throw new Error(`bench/${file} does not export a suite (use defineSuite)`);
  const matches =
    filters.length === 0 ||
    filters.some((f) => file.toLowerCase().includes(f) || suite.name.toLowerCase().includes(f));
  if (!matches) continue;
  const report = await withSuiteResources(suite, () => runSuite(file, suite));
  printTable(report);
  reports.push(report);
}

if (reports.length === 0) {
  console.error(`bench: no suite matches ${filters.join(', ')}; suites: ${files.join(', ')}`);
  process.exit(1);
}

const out = join(here, 'results', 'latest.json');
mkdirSync(dirname(out), { recursive: true });
writeFileSync(
  out,
  `${JSON.stringify(
    {
      date: new Date().toISOString(),
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
      command: `npm run bench${args.length > 0 ? ` -- ${args.join(' ')}` : ''}`,
      quick,
      suites: reports,
    },
    null,
    2,
  )}\n`,
);
const ratios = reports.flatMap((r) => r.tasks).filter((t) => t.ratio !== undefined).length;
console.log(
  `\nwrote bench/results/latest.json (${reports.length} suite(s), ${ratios} ratio(s))${quick ? ' — quick mode: smoke numbers only' : ''}`,
);
