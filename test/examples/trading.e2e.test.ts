/**
 * End to end: `examples/trading` runs a small flash sale with every fault of the full demo —
 * a lock holder paused past its ttl, an orders instance killed without warning, a payments
 * outage, a third inventory shard joining — and its JSON report must show every invariant
 * holding. Run as the user runs it (`tsx examples/trading/main.ts`), in embedded mode, in Redis
 * mode on the harness's servers (`--redis`), and in Redis mode with the demo's own servers.
 * The verdicts are deterministic under the seed; only timings vary.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Report } from '../../examples/trading/report.js';
import { redisServerPath } from '../support/redis.js';
import { describeRedis, processExists, useRedis } from '../support/vitest.js';

const root = join(import.meta.dirname, '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'keel-trading-e2e-'));
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

// A sale small enough for CI, long enough for every fault to land while buyers are buying.
const SCENARIO = ['--buyers', '500', '--skus', '20', '--arrival-ms', '4000', '--outage-ms', '1200'];
const SEED = ['--seed', '7'];

interface Run {
  readonly code: number | null;
  readonly output: string;
  readonly report: Report;
}

/** Runs the demo to completion (killing it if it overruns) and reads its JSON report. */
function demo(name: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const json = join(dir, `${name}.json`);
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'examples/trading/main.ts',
        ...SCENARIO,
        ...SEED,
        ...args,
        '--json',
        json,
      ],
      {
        cwd: root,
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
        // SIGTERM lets the demo stop its services and servers before it exits.
        signal: AbortSignal.timeout(100_000),
      },
    );
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      try {
        resolve({ code, output, report: JSON.parse(readFileSync(json, 'utf8')) as Report });
      } catch (error) {
        reject(
          new Error(`no report from the demo (exit ${String(code)}):\n${output}`, { cause: error }),
        );
      }
    });
  });
}

/** Whether something accepts connections on a loopback port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      resolve(false);
    });
  });
}

/** Every invariant of the report, and the evidence that every fault happened. */
function expectSound(run: Run, mode: 'redis' | 'memory'): void {
  const r = run.report;
  const failed = r.invariants.filter((i) => !i.ok);
  expect(failed, run.output).toEqual([]);
  expect(r.ok).toBe(true);
  expect(run.code).toBe(0);
  expect(r.mode).toBe(mode);
  expect(r.oversold).toBe(0);
  expect(r.invariants.map((i) => i.name)).toEqual([
    'every order final',
    'sold + remaining == initial, per SKU',
    'oversold == 0',
    'one charge per confirmed order, none without one',
    'retries never create a second order',
    'every answer matches the stored order',
  ]);
  for (const s of r.skus) {
    expect(s.sold + s.remaining).toBe(s.initial);
    expect(s.sold).toBe(s.confirmedUnits);
  }
  expect(r.buyers).toBe(500);
  expect(r.idempotency.ordersForRepeatedKeys).toBe(1);
  expect(r.idempotency.duplicateBuyers).toBeGreaterThan(0);
  expect(r.units.demand).toBeGreaterThan(r.units.initial);
  // Every kind of outcome shows up: stock far below demand, declines, the outage.
  expect(r.outcomes.confirmed).toBeGreaterThan(0);
  expect(r.outcomes['rejected:sold-out']).toBeGreaterThan(0);
  expect(r.outcomes['rejected:payment-unavailable']).toBeGreaterThan(0);
  expect(r.charges.charged).toBe(r.outcomes.confirmed);
  // The faults happened and were seen.
  expect(r.killed.id).toBe('orders-2');
  expect(r.killed.removedAfterMs).toBeDefined();
  expect(r.breakerTransitions.some((t) => t.from === 'closed' && t.to === 'open')).toBe(true);
  expect(r.rebalance.joined).toBe('inventory-3');
  expect(r.rebalance.movedSkus).toBeGreaterThan(0);
  expect(r.fencing.stalls).toBeGreaterThan(0);
  // The order sagas (keel/saga): none stuck, one per order, and the killed instance was in the
  // middle of payment steps that another instance finished or compensated.
  expect(r.sagas.stuck).toEqual([]);
  expect(r.sagas.completed).toBe(r.outcomes.confirmed);
  expect(r.sagas.completed + r.sagas.compensated + r.sagas.needsAttention.length).toBe(
    Object.entries(r.outcomes)
      .filter(([state]) => !state.startsWith('('))
      .reduce((a, [, n]) => a + n, 0),
  );
  expect(r.sagas.traced.length).toBeGreaterThan(0);
  for (const t of r.sagas.traced) {
    expect(['completed', 'compensated']).toContain(t.status);
    expect(t.owner.split(':')[0]).not.toBe(r.killed.id);
  }
}

describe('examples/trading end to end', () => {
  it('embedded mode (--memory): every invariant holds through every fault', async () => {
    const run = await demo('memory', ['--memory']);
    expectSound(run, 'memory');
    expect(run.output).toContain('Embedded mode (--memory)');
  }, 120_000);
});

describeRedis('examples/trading end to end on real redis-servers', () => {
  const redis = useRedis({ count: 3 });

  it('Redis mode on existing servers (--redis): every invariant holds, and its keys are gone after', async () => {
    const urls = redis()
      .nodes.map((n) => `redis://127.0.0.1:${n.port}`)
      .join(',');
    const run = await demo('redis-existing', ['--redis', urls]);
    expectSound(run, 'redis');
    // Separate processes, all gone now: the service instances (the killed one included).
    expect(run.report.processes.services.length).toBe(9);
    for (const pid of run.report.processes.services) expect(processExists(pid)).toBe(false);
    for (const client of redis().clients()) expect(await client.dbsize()).toBe(0);
  }, 120_000);

  it('Redis mode with its own redis-servers: every invariant holds, and no server outlives it', async () => {
    const run = await demo('redis-own', [], { KEEL_REDIS_SERVER: redisServerPath() });
    expectSound(run, 'redis');
    expect(run.report.processes.redisPorts.length).toBe(3);
    for (const port of run.report.processes.redisPorts) expect(await listening(port)).toBe(false);
    for (const pid of run.report.processes.services) expect(processExists(pid)).toBe(false);
  }, 120_000);
});
