/**
 * Which Keel a suite measures. Peers run as plain JavaScript from node_modules; Keel's sources
 * run through tsx, whose esbuild transform keeps function names (`keepNames`) by wrapping every
 * function made at run time in a `__name` call — an `Object.defineProperty` per closure, which
 * users of the built package never pay (a quarter of Keel's JavaScript time per lock cycle in a
 * profile; for a saga transition, 0.19 kB of its allocation). Users run the build, so that is
 * what a suite measures when `dist/` is up to date; otherwise the sources, and the report says so.
 * esbuild's keepNames: https://esbuild.github.io/api/#keep-names
 *
 * @packageDocumentation
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = join(import.meta.dirname, '..');

/** The newest modification time of any file under `dir`. */
function newestFile(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestFile(path) : statSync(path).mtimeMs);
  }
  return newest;
}

/** A component of Keel as loaded, and which build it is (for the suite's report). */
export interface LoadedKeel<T> {
  readonly module: T;
  readonly from: string;
}

/**
 * Loads `dist/<component>/index.js` when it is at least as new as every file under `src/`, else
 * `sources()` (the suite's own `import('../src/<component>/index.js')`, so tsx resolves it).
 */
export async function loadKeel<T>(
  component: string,
  sources: () => Promise<T>,
): Promise<LoadedKeel<T>> {
  const built = join(root, 'dist', component, 'index.js');
  let fresh: boolean;
  try {
    fresh = statSync(built).mtimeMs >= newestFile(join(root, 'src'));
  } catch {
    fresh = false;
  }
  if (fresh) {
    return {
      module: (await import(pathToFileURL(built).href)) as T,
      from: 'the built package (dist/)',
    };
  }
  return {
    module: await sources(),
    from: 'the sources through tsx (dist/ missing or older than src/: run `npm run build` first to measure what users run)',
  };
}
