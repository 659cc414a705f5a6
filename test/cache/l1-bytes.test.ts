/**
 * What a small L1 entry weighs, against lru-cache's own slot: measured by bench/cache-bytes.ts
 * in a fresh process per library (V8 heap + ArrayBuffers after two full GCs), not timed — the
 * median of three stores filled one after another in that process: one reading alone sometimes
 * carries ~4 bytes per entry that are not the entry's (see there; under load a single reading
 * was seen at 1.2525), the median of three lies within about 0.3 bytes run to run. Keel's L1 is an lru-cache; its own bookkeeping per entry
 * (deadlines, XFetch state, the namespaced key) may add at most a quarter.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const script = fileURLToPath(new URL('../../bench/cache-bytes.ts', import.meta.url));
const n = 50_000;
/** Stores measured per process; the median is taken. */
const repeats = 3;

const bytesPerEntry = async (lib: string): Promise<number> => {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--expose-gc', '--import', 'tsx', script, lib, String(n), String(repeats)],
    { cwd: fileURLToPath(new URL('../..', import.meta.url)) },
  );
  return Number(JSON.parse(stdout));
};

describe('Cache L1: bytes per small entry', () => {
  it('a set entry and a loaded-and-hit entry (XFetch off and on) each weigh at most 1.25× an lru-cache slot with a ttl', async () => {
    const lru = await bytesPerEntry('lru-cache');
    const set = await bytesPerEntry('keel-set');
    const loaded = await bytesPerEntry('keel-loaded');
    const xfetch = await bytesPerEntry('keel-loaded-xfetch');
    expect(lru).toBeGreaterThan(0);
    expect(set / lru).toBeLessThanOrEqual(1.25);
    expect(loaded / lru).toBeLessThanOrEqual(1.25);
    expect(xfetch / lru).toBeLessThanOrEqual(1.25);
  }, 120_000);
});
