/**
 * End to end: `examples/trading` runs a small flash sale with every fault of the full demo —
 * a lock holder paused past its ttl, an orders instance killed without warning, a payments
 * outage, a third inventory shard joining — and its JSON report must show every invariant
 * holding. Run as the user runs it (`tsx examples/trading/main.ts`), in embedded mode, in Redis
 * mode on the harness's servers (`--redis`), and in Redis mode with the demo's own servers.
 * The verdicts are deterministic under the seed; only timings vary.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { get } from 'node:http';
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
  /** With `--metrics-port`: the last `/metrics` scrape taken while the demo ran. */
  readonly scrape: Sample[] | undefined;
  /** The HTML report's path (`--html`). */
  readonly html: string;
}

/** One sample of Prometheus text: name, labels, value. */
interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Parses Prometheus text exposition (the samples; comments skipped). */
function parsePrometheus(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) throw new Error(`not a Prometheus sample: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[k as string] = v as string;
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return samples;
}

/** GETs a URL's body (loopback). */
function fetchText(url: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    get(url, { signal: AbortSignal.timeout(15_000) }, (res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => (text += chunk.toString()));
      res.once('end', () => {
        resolve({ status: res.statusCode ?? 0, text });
      });
    }).once('error', reject);
  });
}

/** Whether a scrape shows all four components, the breaker already open once. */
const SERIES = {
  lock: 'keel_lock_acquire_duration_count',
  breaker: 'keel_breaker_transitions_total',
  balancer: 'keel_balancer_picks_total',
  discovery: 'keel_discovery_view_size',
} as const;
const complete = (samples: readonly Sample[]): boolean =>
  Object.values(SERIES).every((name) => samples.some((s) => s.name === name)) &&
  samples.some((s) => s.name === SERIES.breaker && s.labels.keel_breaker_to === 'open');

/** Runs the demo to completion (killing it if it overruns) and reads its JSON report. */
function demo(name: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const json = join(dir, `${name}.json`);
  const html = join(dir, `${name}.html`);
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
        '--html',
        html,
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
    let closed = false;
    // With --metrics-port: scrape /metrics while the demo runs, until a scrape shows every
    // component (the breaker having opened in the outage) or the demo ends.
    let scrape: Sample[] | undefined;
    let scraping: Promise<void> | undefined;
    const poll = async (url: string): Promise<void> => {
      while (!closed) {
        const reply = await fetchText(url).catch(() => undefined);
        if (reply?.status === 200) {
          scrape = parsePrometheus(reply.text);
          if (complete(scrape)) return;
        }
        await new Promise((r) => setTimeout(r, 300));
      }
    };
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const url = /Prometheus metrics \(keel\/otel\) at (http:\/\/\S+\/metrics)/.exec(output)?.[1];
      if (url !== undefined && scraping === undefined) scraping = poll(url);
    });
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      closed = true;
      void (scraping ?? Promise.resolve()).then(() => {
        try {
          resolve({
            code,
            output,
            report: JSON.parse(readFileSync(json, 'utf8')) as Report,
            scrape,
            html,
          });
        } catch (error) {
          reject(
            new Error(`no report from the demo (exit ${String(code)}):\n${output}`, {
              cause: error,
            }),
          );
        }
      });
    });
  });
}

/**
 * The scrape taken mid-run has lock, breaker, balancer and discovery series with sane values:
 * locks acquired, a breaker opened in the outage, the gateway's balancer picking orders
 * instances, and the gateway's view of `orders` holding 1 to 3 instances.
 */
function expectScraped(run: Run, gateway: string): void {
  const samples = run.scrape;
  expect(samples, `no /metrics scrape during the run:\n${run.output}`).toBeDefined();
  const all = samples ?? [];
  const sum = (name: string, where: (l: Readonly<Record<string, string>>) => boolean): number =>
    all.filter((s) => s.name === name && where(s.labels)).reduce((a, s) => a + s.value, 0);
  expect(sum(SERIES.lock, () => true)).toBeGreaterThan(0);
  expect(sum('keel_lock_acquire_duration_sum', () => true)).toBeGreaterThanOrEqual(0);
  expect(sum(SERIES.breaker, (l) => l.keel_breaker_to === 'open')).toBeGreaterThanOrEqual(1);
  // A breaker per called instance (keel/resilience's BreakerRegistry, keyed by instance id):
  // the gateway's per orders instance, each orders instance's per payments instance.
  for (const s of all.filter((x) => x.name === SERIES.breaker))
    expect(s.labels.keel_breaker_name).toMatch(/^(orders-[1-3]|payments-[12])$/);
  expect(
    sum(SERIES.balancer, (l) => l.instance === gateway && l.keel_balancer_name === 'orders'),
  ).toBeGreaterThan(0);
  const view = all.filter(
    (s) =>
      s.name === SERIES.discovery &&
      s.labels.instance === gateway &&
      s.labels.keel_discovery_service === 'orders' &&
      s.labels.keel_discovery_status === 'up',
  );
  expect(view).toHaveLength(1);
  expect(view[0]?.value).toBeGreaterThanOrEqual(1);
  expect(view[0]?.value).toBeLessThanOrEqual(3);
  // Every value is a number; every sample is labelled with the process it came from.
  for (const s of all) {
    expect(Number.isNaN(s.value), `${s.name} ${JSON.stringify(s.labels)}`).toBe(false);
    expect(s.labels.instance).toBeDefined();
  }
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

/**
 * The HTML report: written where `--html` said, self-contained (inline SVG and CSS; nothing
 * fetched: no script, no external URL), with its charts and the invariants table, and named at
 * the end of the run.
 */
function expectHtml(run: Run): void {
  expect(existsSync(run.html), run.output).toBe(true);
  const html = readFileSync(run.html, 'utf8');
  expect(run.output).toContain(`HTML report written to ${run.html}`);
  expect(html.startsWith('<!doctype html>')).toBe(true);
  expect(html).not.toMatch(/<script|<link|<img|(src|href)\s*=\s*["']?https?:/i);
  for (const title of [
    'throughput and p99 latency over time',
    'circuit breaker state per orders instance',
    "the gateway's view of orders",
    'lock waits and fencing refusals',
  ])
    expect(html).toContain(`aria-label="${title}"`);
  for (const i of run.report.invariants) expect(html).toContain(i.name);
  expect(html).toContain('all invariants hold');
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
    ...(mode === 'redis' ? ['events: every one handled or dead-lettered, once'] : []),
    'cache: loader calls for the hot SKU per expiry ≤ 1',
    'cache: absent SKUs never reach the database',
  ]);
  if (mode === 'redis') {
    // Order events (keel/queue): one per confirmed order plus the drill's poison message,
    // every one handled once or dead-lettered — with a ledger instance SIGKILLed mid-run.
    const e = r.events;
    expect(e?.sent).toBe((r.outcomes.confirmed ?? 0) + 1);
    expect(e?.deadLettered).toBe(1);
    expect(e?.handled).toBe(r.outcomes.confirmed);
    expect(e?.lost).toBe(0);
    expect(e?.duplicateEffects).toBe(0);
    expect(run.output).toContain('killed ledger-1');
  } else {
    expect(r.events).toBeUndefined();
  }
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
    const run = await demo('memory', ['--memory', '--metrics-port', '0']);
    expectSound(run, 'memory');
    expect(run.output).toContain('Embedded mode (--memory)');
    expectScraped(run, 'embedded');
    expectHtml(run);
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
    // Separate processes, all gone now: the service instances (the killed ones included; the
    // two ledger instances consume the order events).
    expect(run.report.processes.services.length).toBe(11);
    for (const pid of run.report.processes.services) expect(processExists(pid)).toBe(false);
    for (const client of redis().clients()) expect(await client.dbsize()).toBe(0);
  }, 120_000);

  it('Redis mode with its own redis-servers: every invariant holds, and no server outlives it', async () => {
    const run = await demo('redis-own', ['--metrics-port', '0'], {
      KEEL_REDIS_SERVER: redisServerPath(),
    });
    expectSound(run, 'redis');
    expectScraped(run, 'gateway');
    expectHtml(run);
    // Lock series come from the instances that lock: inventory shards and orders.
    expect(
      run.scrape?.some(
        (s) => s.name === SERIES.lock && /^(inventory|orders)-\d$/.test(s.labels.instance ?? ''),
      ),
    ).toBe(true);
    expect(run.report.processes.redisPorts.length).toBe(3);
    for (const port of run.report.processes.redisPorts) expect(await listening(port)).toBe(false);
    for (const pid of run.report.processes.services) expect(processExists(pid)).toBe(false);
  }, 120_000);
});
