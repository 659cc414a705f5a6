/**
 * A registering process whose event loop stalls (a synchronous busy-wait: a runaway loop, a long
 * GC pause) for longer than its ttl, on a real redis-server: meanwhile another process reaps the
 * instance (`expired`, by right: it did not heartbeat); when the loop runs again the
 * registration finds its record gone and registers again by itself — state `lost` → `active` —
 * and watchers see it come back.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { RedisBackend, Registry } from '../../src/discovery/index.js';
import { until } from '../support/helpers.js';
import { describeRedis, processExists, useRedis } from '../support/vitest.js';
import { WatchHistory } from './history.js';
import { faultBackendOptions, faultRegistryOptions } from './redis-fixture.js';

const child = fileURLToPath(new URL('./fixtures/stall-child.ts', import.meta.url));

describeRedis('discovery: a registering process stalled past its ttl', () => {
  const redis = useRedis({ count: 1 });
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    await redis().flushAll();
  });

  it('is reaped while stalled, re-registers by itself when it runs again (lost → active), and watchers see it back', async () => {
    const service = `stall-${process.pid}`;
    const backend = new RedisBackend({ client: redis().client(0), ...faultBackendOptions });
    const registry = new Registry({ backend, ...faultRegistryOptions });
    cleanups.push(async () => {
      await registry.close();
      await backend.close();
    });
    const watch = registry.watch(service);
    await watch.ready;
    const history = new WatchHistory(watch);
    cleanups.push(() => {
      history.dispose();
    });

    const proc = spawn(
      process.execPath,
      ['--import', 'tsx', child, String(redis().node(0).port), service, '1000'],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    cleanups.push(() => {
      if (proc.pid !== undefined && processExists(proc.pid)) proc.kill('SIGKILL');
    });
    const lines: Record<string, unknown>[] = [];
    createInterface({ input: proc.stdout }).on('line', (line) => {
      lines.push(JSON.parse(line) as Record<string, unknown>);
    });
    let stderr = '';
    proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    await until(() => {
      expect(
        lines.some((l) => l.ready === true),
        stderr,
      ).toBe(true);
    }, 20_000);
    await until(() => {
      expect(history.ids()).toEqual(['stalled']);
    }, 5000);

    // Stalled for 3 ttls: this process's reaper removes it meanwhile.
    proc.stdin.write('block 3000\n');
    await until(() => {
      expect(history.changes.map((c) => c.type)).toContain('removed');
    }, 10_000);
    await until(() => {
      expect(lines.some((l) => l.resumed === true)).toBe(true);
    }, 10_000);
    await until(() => {
      expect(lines.filter((l) => 'state' in l)).toEqual([
        { state: 'lost', from: 'active' },
        { state: 'active', from: 'lost' },
      ]);
      expect(history.ids()).toEqual(['stalled']);
    }, 5000);
    expect(
      history.changes.map((c) => (c.type === 'removed' ? `removed ${c.reason}` : c.type)),
    ).toEqual(['added', 'removed expired', 'added']);
    expect(history.problems).toEqual([]);
    proc.stdin.write('exit\n');
    await until(() => {
      expect(history.ids()).toEqual([]);
    }, 10_000);
  });
});
