/**
 * The opt-in shutdown helper end to end: a real child process registered on a real
 * redis-server gets SIGTERM; watchers see it draining, then deregistered (not expired), and the
 * process still ends by SIGTERM, as it would have without the helper.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { RedisBackend, Registry, type WatchChange } from '../../src/discovery/index.js';
import { describeRedis, processExists, useRedis } from '../support/vitest.js';

const child = fileURLToPath(new URL('./fixtures/signal-child.ts', import.meta.url));

describeRedis('discovery: deregisterOnSignals in a real process', () => {
  const redis = useRedis({ count: 1 });
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    cleanups.length = 0;
  });

  it('SIGTERM drains, deregisters, then ends the process by the signal', async () => {
    const service = `signals-${process.pid}`;
    const backend = new RedisBackend({ client: redis().client(0), blockMs: 500 });
    const registry = new Registry({ backend, reapIntervalMs: 0 });
    cleanups.push(async () => {
      await registry.close();
      await backend.close();
    });
    const watch = registry.watch(service);
    await watch.ready;
    const changes: WatchChange[] = [];
    watch.onChange((c) => changes.push(c));

    const proc = spawn(
      process.execPath,
      ['--import', 'tsx', child, String(redis().node(0).port), service, '300'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    cleanups.push(() => {
      if (proc.pid !== undefined && processExists(proc.pid)) proc.kill('SIGKILL');
    });
    let stderr = '';
    proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      proc.once('exit', (code, signal) => resolve({ code, signal })),
    );
    await new Promise<void>((resolve, reject) => {
      proc.stdout.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('ready')) resolve();
      });
      void exited.then(() => reject(new Error(`child exited early: ${stderr}`)));
    });
    const deadline = performance.now() + 10_000;
    while (watch.size === 0) {
      if (performance.now() > deadline) throw new Error('the child never appeared');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }

    proc.kill('SIGTERM');
    const { code, signal } = await exited;
    expect({ code, signal }).toEqual({ code: null, signal: 'SIGTERM' });
    const end = performance.now() + 5000;
    while (watch.size > 0) {
      if (performance.now() > end) throw new Error('the child was never removed');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(
      changes.map((c) =>
        c.type === 'removed' ? `removed ${c.reason}` : `${c.type} ${c.instance.status}`,
      ),
    ).toEqual(['added up', 'updated draining', 'removed deregistered']);
    watch.close();
  });
});
