/**
 * Scenario settings: command-line options, their defaults, and the seeded random numbers every
 * seeded decision in the demo draws from.
 */
import { murmur3String } from 'keel/hashring';

/** How the services run: separate processes over Redis, or one process over Keel's memory backends. */
export type Mode = 'redis' | 'memory';

/** The simulated payment provider. */
export interface PaymentSettings {
  /** Usual latency of a charge, uniformly between these (ms). */
  readonly latencyMs: readonly [number, number];
  /** Share of charges that hang past the orders' per-call timeout (the ambiguous case). */
  readonly slowRate: number;
  /** How long such a slow charge takes (ms). */
  readonly slowMs: number;
  /** Share of buyers whose card is declined (decided by the buyer's idempotency key). */
  readonly declineRate: number;
}

/** Everything a run needs; every field has a command-line option. */
export interface DemoOptions {
  readonly buyers: number;
  readonly skus: number;
  /** Buyers in flight at once. */
  readonly concurrency: number;
  /** Buyers arrive spread over this long (ms); 0 sends them as fast as the system answers. */
  readonly arrivalMs: number;
  readonly seed: number;
  /** Total stock ÷ total demand (units). */
  readonly stockRatio: number;
  /** Share of buyers who submit the same order twice (double click, or a retry after success). */
  readonly duplicateRate: number;
  /** How long payments stay down (ms). */
  readonly outageMs: number;
  readonly payments: PaymentSettings;
  /** Forced mode; `undefined` picks Redis when redis-server is installed. */
  readonly mode: Mode | undefined;
  /** Existing Redis servers to use instead of starting some (`--redis url1,url2,…`). */
  readonly redisUrls: readonly string[] | undefined;
  /** Redis servers the demo starts itself in Redis mode. */
  readonly redisServers: number;
  /** Where to write the JSON report. */
  readonly json: string | undefined;
  /** Show the live status line even when stdout is not a terminal. */
  readonly live: boolean;
  /** Serve Prometheus text at `http://127.0.0.1:<port>/metrics` during the run (0: any free port). */
  readonly metricsPort: number | undefined;
  /** Where to write the HTML report. */
  readonly html: string;
}

export const DEFAULTS: DemoOptions = {
  buyers: 3000,
  skus: 40,
  concurrency: 96,
  arrivalMs: 12_000,
  seed: 42,
  stockRatio: 0.3,
  duplicateRate: 0.12,
  outageMs: 2500,
  payments: { latencyMs: [2, 12], slowRate: 0.01, slowMs: 700, declineRate: 0.03 },
  mode: undefined,
  redisUrls: undefined,
  redisServers: 3,
  json: undefined,
  live: false,
  metricsPort: undefined,
  html: 'demo-report.html',
};

export const USAGE = `Usage: npm run demo -- [options]

  --buyers N        buyers in the flash sale (default ${DEFAULTS.buyers})
  --skus N          products on sale (default ${DEFAULTS.skus})
  --concurrency N   buyers in flight at once (default ${DEFAULTS.concurrency})
  --arrival-ms N    buyers arrive spread over this long (default ${DEFAULTS.arrivalMs}; 0 = all at once)
  --seed N          seed of every random choice (default ${DEFAULTS.seed})
  --stock-ratio X   total stock / total demand (default ${DEFAULTS.stockRatio})
  --outage-ms N     how long payments stay down (default ${DEFAULTS.outageMs})
  --memory          embedded mode: one process, in-memory lock and registry
  --redis URLS      Redis mode on existing servers (comma-separated redis:// URLs; the first
                    also holds the registry and the stock; locks use all of them)
  --redis-servers N redis-server processes to start in Redis mode (default ${DEFAULTS.redisServers})
  --json FILE       also write the report as JSON
  --live            live status line even when stdout is not a terminal
  --metrics-port N  serve Prometheus text at http://127.0.0.1:N/metrics while the demo runs
                    (keel/otel instrument() in every service process; 0 = any free port)
  --html FILE       where to write the HTML report (default ${DEFAULTS.html})
  --help            this text`;

/** Numeric options: the field they set, their range, and whether they are whole numbers. */
const NUMERIC: Readonly<
  Record<string, readonly [keyof DemoOptions, number, number, 'int' | 'real']>
> = {
  '--buyers': ['buyers', 1, 1_000_000, 'int'],
  '--skus': ['skus', 1, 10_000, 'int'],
  '--concurrency': ['concurrency', 1, 2000, 'int'],
  '--arrival-ms': ['arrivalMs', 0, 3_600_000, 'int'],
  '--seed': ['seed', 0, 2 ** 31 - 1, 'int'],
  '--stock-ratio': ['stockRatio', 0.01, 10, 'real'],
  '--outage-ms': ['outageMs', 0, 600_000, 'int'],
  '--redis-servers': ['redisServers', 1, 9, 'int'],
  '--metrics-port': ['metricsPort', 0, 65535, 'int'],
};

/** Parses the command line (without `node` and the script). Throws a readable Error on bad input. */
export function parseArgs(argv: readonly string[]): DemoOptions | 'help' {
  const o: Record<string, unknown> = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const numeric = NUMERIC[arg];
    if (numeric !== undefined) {
      const [field, min, max, kind] = numeric;
      const raw = argv[++i];
      const value = Number(raw);
      if (raw === undefined || !Number.isFinite(value) || value < min || value > max) {
        throw new Error(`${arg} expects a number in [${min}, ${max}], got ${String(raw)}`);
      }
      o[field] = kind === 'int' ? Math.round(value) : value;
    } else if (arg === '--help' || arg === '-h') {
      return 'help';
    } else if (arg === '--memory') {
      o.mode = 'memory';
    } else if (arg === '--live') {
      o.live = true;
    } else if (arg === '--redis') {
      const urls = (argv[++i] ?? '').split(',').filter(Boolean);
      if (urls.length === 0) throw new Error('--redis expects redis://host:port[,…]');
      o.redisUrls = urls;
      o.mode = 'redis';
    } else if (arg === '--json') {
      const file = argv[++i];
      if (file === undefined || file === '') throw new Error('--json expects a file name');
      o.json = file;
    } else if (arg === '--html') {
      const file = argv[++i];
      if (file === undefined || file === '') throw new Error('--html expects a file name');
      o.html = file;
    } else {
      throw new Error(`unknown option ${arg}\n\n${USAGE}`);
    }
  }
  return o as unknown as DemoOptions;
}

/**
 * Seeded random numbers in [0, 1): Keel's murmur3 over a counter — deterministic for a seed,
 * and plenty for choosing buyers and SKUs.
 */
export function seededRandom(seed: number): () => number {
  let counter = 0;
  return () => murmur3String(`draw:${counter++}`, seed) / 4294967296;
}

/** A number in [0, 1) fixed by `key` and `seed`: the same decision in every process and retry. */
export function keyedChance(key: string, seed: number): number {
  return murmur3String(key, seed) / 4294967296;
}

/** Price of one unit of a SKU, in cents (deterministic, for the ledger). */
export function priceOf(sku: string): number {
  return 500 + (murmur3String(sku, 7) % 100) * 50;
}
