import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import type { CacheWorkerConfig, CacheWorkerMessage } from './worker.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const workerScript = fileURLToPath(new URL('./worker.ts', import.meta.url));
const root = fileURLToPath(new URL('../..', import.meta.url));

interface Worker {
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  readonly loading: Promise<void>;
  /** The report of the next round (`go`) to finish. */
  next(): Promise<Done>;
}

type Done = Extract<CacheWorkerMessage, { t: 'done' }>;

const children: ChildProcess[] = [];

function start(config: CacheWorkerConfig): Worker {
  const child = fork(workerScript, [JSON.stringify(config)], {
    cwd: root,
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  children.push(child);
  let ready = (): void => undefined;
  let loading = (): void => undefined;
  const reports: Done[] = [];
  const waiting: ((report: Done) => void)[] = [];
  const worker: Worker = {
    child,
    ready: new Promise((resolve) => (ready = resolve)),
    loading: new Promise((resolve) => (loading = resolve)),
    next: () => {
      const report = reports.shift();
      return report !== undefined
        ? Promise.resolve(report)
        : new Promise((resolve) => waiting.push(resolve));
    },
  };
  child.on('message', (m: CacheWorkerMessage) => {
    if (m.t === 'ready') ready();
    else if (m.t === 'loading') loading();
    else {
      const resolve = waiting.shift();
      if (resolve !== undefined) resolve(m);
      else reports.push(m);
    }
  });
  return worker;
}

describeRedis('Cache across real processes (child processes, real Redis)', () => {
  const redis = useRedis();

  afterEach(async () => {
    for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
    await redis().flushAll();
  });

  it('N processes × M concurrent getOrLoad of one cold key call the loader once, every round', async () => {
    const port = redis().port(0);
    // The table: 4 processes × 250 concurrent callers, a 50 ms loader.
    const workers = Array.from({ length: 4 }, () =>
      start({ port, key: '', callers: 250, loaderMs: 50, hang: false, leaseTtlMs: 5_000 }),
    );
    await Promise.all(workers.map((w) => w.ready));
    const client = redis().client(0);
    for (let round = 0; round < 10; round++) {
      const key = `cold-${round}`;
      for (const w of workers) w.child.send({ t: 'go', key });
      const reports = await Promise.all(workers.map((w) => w.next()));
      expect(await client.get(`loads:${key}`)).toBe('1');
      const values = reports.flatMap((r) => r.values);
      expect(reports.flatMap((r) => r.errors)).toEqual([]);
      expect(values).toHaveLength(1000);
      expect(new Set(values.map((v) => JSON.stringify(v))).size).toBe(1);
    }
    client.disconnect();
    for (const w of workers) w.child.send({ t: 'stop' });
  }, 120_000);

  it('a lease holder SIGKILLed mid-load: another process loads within the lease ttl', async () => {
    const port = redis().port(0);
    const leaseTtlMs = 1_000;
    const holder = start({ port, key: 'k', callers: 1, loaderMs: 0, hang: true, leaseTtlMs });
    const other = start({ port, key: 'k', callers: 20, loaderMs: 10, hang: false, leaseTtlMs });
    await Promise.all([holder.ready, other.ready]);
    holder.child.send({ t: 'go' });
    await holder.loading;
    other.child.send({ t: 'go' });
    holder.child.kill('SIGKILL');
    const killedAt = performance.now();
    const report = await other.next();
    // Bounded "how long until", with a generous margin over the lease ttl for a loaded machine.
    expect(performance.now() - killedAt).toBeLessThan(leaseTtlMs + 10_000);
    expect(report.errors).toEqual([]);
    expect(new Set(report.values.map((v) => JSON.stringify(v)))).toEqual(
      new Set([JSON.stringify({ by: other.child.pid })]),
    );
    const client = redis().client(0);
    expect(await client.get('loads:k')).toBe('2');
    expect(await client.exists('keel:cache:{default:k}')).toBe(1);
    client.disconnect();
  }, 60_000);
});
