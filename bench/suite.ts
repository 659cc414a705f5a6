/**
 * The shape of a benchmark suite. Each `bench/<component>.bench.ts` exports `suite`, made by
 * {@link defineSuite}; `bench/run.ts` runs it with tinybench, each run in a fresh child process
 * (three runs in full mode), so module-level state is per run.
 */

/** One measured function. */
export interface BenchTask {
  /** Shown in the table and the JSON; unique within the suite. */
  readonly name: string;
  /** The work measured per iteration. Return a value so the engine cannot drop the work. */
  readonly fn: () => unknown;
  /**
   * Name of the task in the same suite this one is compared with (a peer library or a
   * baseline). The runner reports `ratio = ops/s of this task ÷ ops/s of that task`, both
   * measured in the same run: above 1 means this task is faster.
   */
  readonly compareTo?: string | readonly string[];
  /**
   * Calls of `fn` per timed sample, for operations of a few nanoseconds, which a per-call timer
   * read would swamp. Reported figures are always per call. @defaultValue 1
   */
  readonly batch?: number;
  /** Who the task measures: Keel itself, a peer library users would otherwise pick, or a baseline. */
  readonly kind: 'keel' | 'peer' | 'baseline';
  /**
   * Runs before the task is measured (each round), e.g. to subscribe to a diagnostics channel
   * for a "with a subscriber" row; {@link BenchTask.afterAll} undoes it, so other tasks run
   * without.
   */
  readonly beforeAll?: () => void;
  /** Runs after the task was measured (each round). */
  readonly afterAll?: () => void;
}

/** Per-call figures of one task from the current run. */
export interface MeasuredTask {
  readonly opsPerSec: number;
  readonly meanNs: number;
  /** Median latency per call (for batched tasks, of batch means). */
  readonly p50Ns: number;
  /** 99th-percentile latency per call (for batched tasks, of batch means). */
  readonly p99Ns: number;
  /**
   * This task's ops/s ÷ each `compareTo` task's, the median over the run's interleaved rounds:
   * the figures of the ratio table, for a report's verdict. Empty without `compareTo`.
   */
  readonly ratios: ReadonlyMap<string, number>;
}

/** What the runner tells a suite's hooks about the run. */
export interface SuiteContext {
  /**
   * `--quick`: a short smoke run (CI); keep hooks and reports short too, and judge no target
   * (the runner also replaces the words "met" and "MISSED" in quick-mode report cells).
   */
  readonly quick: boolean;
}

/** Figures that are not timings (memory, balance, keys moved), reported beside the tasks. */
export interface BenchReport {
  readonly title: string;
  /** One object per row; every row has the same keys, which become the columns. */
  readonly rows: readonly Record<string, string | number>[];
}

/** A group of tasks measured together. */
export interface BenchSuite {
  readonly name: string;
  /** One line saying what is compared and why. */
  readonly description: string;
  readonly tasks: readonly BenchTask[];
  /**
   * Non-timing measurements, computed after the tasks ran (so quick mode still runs them),
   * given each task's per-call figures from this run. May be async (measurements against
   * servers started in `setup`).
   */
  readonly reports?: (
    measured: ReadonlyMap<string, MeasuredTask>,
    context: SuiteContext,
  ) => readonly BenchReport[] | Promise<readonly BenchReport[]>;
  /**
   * Acquires what the tasks and reports need (servers, connections) before anything of this
   * suite runs; suites without external resources leave it out.
   */
  readonly setup?: (context: SuiteContext) => void | Promise<void>;
  /**
   * Releases what `setup` acquired. The runner calls it once, after the tasks and reports — also
   * when they or `setup` itself failed part-way (so it must cope with a partial setup), and on
   * SIGINT/SIGTERM.
   */
  readonly teardown?: (context: SuiteContext) => void | Promise<void>;
}

/** Checks a suite's internal references once, when the file is loaded. */
export function defineSuite(suite: BenchSuite): BenchSuite {
  const names = new Set<string>();
  for (const task of suite.tasks) {
    if (task.batch !== undefined && (!Number.isInteger(task.batch) || task.batch < 1)) {
      throw new Error(`bench suite ${suite.name}: "${task.name}" batch must be an integer >= 1`);
    }
    if (names.has(task.name))
      throw new Error(`bench suite ${suite.name}: duplicate task "${task.name}"`);
    names.add(task.name);
  }
  for (const task of suite.tasks) {
    for (const target of compareTargets(task)) {
      if (!names.has(target)) {
        throw new Error(
          `bench suite ${suite.name}: "${task.name}" compares to unknown task "${target}"`,
        );
      }
    }
  }
  return suite;
}

/** The tasks a task is compared with, as a list. */
export function compareTargets(task: BenchTask): readonly string[] {
  if (task.compareTo === undefined) return [];
  return typeof task.compareTo === 'string' ? [task.compareTo] : task.compareTo;
}
