/**
 * Bundle-size check (issue 16, item 2): every public subpath in package.json `exports` is
 * bundled from the built `dist/` the way a consumer's bundler would do it, and its minified and
 * gzip sizes are held to the budgets in package.json `keel.sizeBudgets`.
 *
 * How a subpath is measured: esbuild bundles the subpath's `import` entry (the ESM file a
 * bundler picks) with `bundle`, `minify`, `platform: 'node'` and `format: 'esm'`. Node's
 * built-in modules stay external (esbuild does that for `platform: 'node'`, see
 * https://esbuild.github.io/api/#platform), and so does `ioredis`, the peer dependency the
 * consumer installs and bundles once for their whole app. Runtime dependencies (`xxhash-wasm`,
 * …) are bundled, since they are part of what a subpath costs. The gzip size is zlib's level 9
 * over the minified output.
 *
 * Budgets are strings with a unit: `B`, `kB` (1000 bytes) or `KiB` (1024 bytes), e.g.
 * `{ "./discovery": { "minified": "60 kB", "gzip": "20 kB" } }`. Every subpath needs a budget,
 * and a budget for a subpath that is not exported is an error too, so the two lists stay in
 * step.
 *
 * The same bundles check the dependency lists: every package in `dependencies` must be imported
 * (directly or through another module) by some subpath — one only tests or benchmarks use
 * belongs in `devDependencies` — and every package a subpath imports from node_modules must be
 * in `dependencies`, else consumers would not get it installed.
 *
 * Usage: `npm run build && npm run size` (add `--json` for machine-readable output). Exits 1
 * when a subpath is over budget, a budget is missing or malformed, a dependency list is wrong,
 * or `dist/` is not built.
 */
import { build } from 'esbuild';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

const root = join(import.meta.dirname, '..');

/**
 * Packages a consumer's bundle keeps outside Keel's cost (besides Node's built-ins): the peer
 * dependencies, which the consumer installs and bundles once for their whole app.
 */
const EXTERNAL = ['ioredis', '@opentelemetry/api'];

interface Budget {
  readonly minified: number;
  readonly gzip: number;
}

interface Measured {
  readonly subpath: string;
  readonly file: string;
  readonly minified: number;
  readonly gzip: number;
  readonly budget: Budget | undefined;
  /** Packages from node_modules the subpath imports (even if minification drops all of it). */
  readonly packages: readonly string[];
}

const UNITS: Readonly<Record<string, number>> = { B: 1, kB: 1000, KiB: 1024 };

/** Parses `"60 kB"` into bytes; undefined when the text is not a size. */
function parseSize(text: unknown): number | undefined {
  if (typeof text !== 'string') return undefined;
  const match = /^\s*(\d+(?:\.\d+)?)\s*(B|kB|KiB)\s*$/.exec(text);
  if (match === null) return undefined;
  const unit = UNITS[match[2] ?? ''];
  return unit === undefined ? undefined : Math.round(Number(match[1]) * unit);
}

const kB = (bytes: number): string => `${(bytes / 1000).toFixed(1)} kB`;

/** The ESM file each subpath's `import` condition points at, from `exports`. */
function importEntries(exportsField: unknown): Map<string, string> {
  const entries = new Map<string, string>();
  if (typeof exportsField !== 'object' || exportsField === null) return entries;
  for (const [subpath, target] of Object.entries(exportsField as Record<string, unknown>)) {
    // `./package.json` (a plain string target) is metadata, not code.
    if (typeof target !== 'object' || target === null) continue;
    const imp = (target as Record<string, unknown>).import;
    const file =
      typeof imp === 'string'
        ? imp
        : typeof imp === 'object' && imp !== null
          ? (imp as Record<string, unknown>).default
          : undefined;
    if (typeof file === 'string') entries.set(subpath, file);
  }
  return entries;
}

/** The package a bundled input path comes from (`node_modules/@scope/name/…`), if any. */
function packageOf(input: string): string | undefined {
  const match = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
  return match?.[1];
}

async function measure(
  file: string,
): Promise<{ minified: number; gzip: number; packages: string[] }> {
  const result = await build({
    entryPoints: [join(root, file)],
    bundle: true,
    minify: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: EXTERNAL,
    write: false,
    metafile: true,
    // Keel's package.json says `"sideEffects": false`, so esbuild warns about the bare chunk
    // imports tsup writes; that is expected, not a problem of the measurement.
    logLevel: 'error',
  });
  const output = result.outputFiles[0];
  if (output === undefined) throw new Error(`esbuild produced no output for ${file}`);
  const packages = new Set<string>();
  for (const input of Object.keys(result.metafile.inputs)) {
    const name = packageOf(input);
    if (name !== undefined) packages.add(name);
  }
  return {
    minified: output.contents.length,
    gzip: gzipSync(output.contents, { level: 9 }).length,
    packages: [...packages].sort(),
  };
}

async function main(): Promise<number> {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    exports?: unknown;
    dependencies?: Record<string, string>;
    keel?: { sizeBudgets?: Record<string, { minified?: unknown; gzip?: unknown }> };
  };
  const entries = importEntries(pkg.exports);
  const budgets = pkg.keel?.sizeBudgets ?? {};
  const errors: string[] = [];

  for (const subpath of Object.keys(budgets)) {
    if (!entries.has(subpath)) errors.push(`budget for "${subpath}", which is not in exports`);
  }

  const rows: Measured[] = [];
  for (const [subpath, file] of entries) {
    if (!existsSync(join(root, file))) {
      errors.push(`${subpath}: ${file} is missing (run \`npm run build\` first)`);
      continue;
    }
    const raw = budgets[subpath];
    let budget: Budget | undefined;
    if (raw === undefined) {
      errors.push(`${subpath}: no budget in package.json keel.sizeBudgets`);
    } else {
      const minified = parseSize(raw.minified);
      const gzip = parseSize(raw.gzip);
      if (minified === undefined || gzip === undefined) {
        errors.push(
          `${subpath}: budget needs "minified" and "gzip" as sizes like "60 kB", got ${JSON.stringify(raw)}`,
        );
      } else {
        budget = { minified, gzip };
      }
    }
    const size = await measure(file);
    rows.push({ subpath, file, ...size, budget });
    if (budget !== undefined && size.minified > budget.minified) {
      errors.push(
        `${subpath}: ${kB(size.minified)} minified, over its ${kB(budget.minified)} budget`,
      );
    }
    if (budget !== undefined && size.gzip > budget.gzip) {
      errors.push(`${subpath}: ${kB(size.gzip)} gzipped, over its ${kB(budget.gzip)} budget`);
    }
  }

  const dependencies = new Set(Object.keys(pkg.dependencies ?? {}));
  const bundled = new Set(rows.flatMap((r) => r.packages));
  for (const r of rows) {
    for (const name of r.packages) {
      if (!dependencies.has(name)) {
        errors.push(`${r.subpath} imports "${name}", which is not in dependencies`);
      }
    }
  }
  for (const name of dependencies) {
    if (!bundled.has(name)) {
      errors.push(
        `"${name}" is in dependencies but no subpath imports it (move it to devDependencies)`,
      );
    }
  }

  if (process.argv.includes('--json')) {
    console.log(JSON.stringify({ rows, errors }, null, 2));
  } else {
    const line = (cells: readonly string[]): string =>
      cells.map((c, i) => (i === 0 ? c.padEnd(14) : c.padStart(11))).join(' ');
    console.log(line(['subpath', 'minified', 'budget', 'gzip', 'budget']));
    for (const r of rows) {
      console.log(
        line([
          r.subpath,
          kB(r.minified),
          r.budget ? kB(r.budget.minified) : '-',
          kB(r.gzip),
          r.budget ? kB(r.budget.gzip) : '-',
        ]),
      );
    }
    console.log('(esbuild --bundle --minify --platform=node --format=esm, ioredis external)');
    for (const e of errors) console.error(`size check: ${e}`);
    if (errors.length === 0) {
      console.log(
        `size check: ${rows.length} subpaths within budget; dependencies imported: ` +
          ([...bundled].join(', ') || 'none'),
      );
    }
  }
  return errors.length === 0 ? 0 : 1;
}

process.exitCode = await main();
