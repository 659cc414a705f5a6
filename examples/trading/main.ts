/**
 * `npm run demo` — a flash sale on a trading system assembled from Keel, with faults injected
 * mid-run, and an audit that proves nothing was oversold, lost or charged twice.
 *
 * Redis mode (the default when `redis-server` is installed): every service instance is its own
 * process; locks over several Redis masters, registry and stock in Redis. Embedded mode
 * (`--memory`, or no redis-server): the same services in this process over Keel's in-memory
 * lock and registry. See README.md next to this file.
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { runCatalog } from './catalog.js';
import { parseArgs, USAGE, type DemoOptions } from './config.js';
import { memoryCluster, redisCluster, type Cluster } from './cluster.js';
import { call, closeClientSockets, sleep } from './http.js';
import { auditEvents, OrderEvents, type EventsAudit } from './events.js';
import { runEventsDrill } from './events-drill.js';
import { redisClient } from './platform.js';
import { collectTimelines, renderHtml } from './html-report.js';
import type { MetricsServer } from './metrics.js';
import { findRedisServer, startRedisServers, type RedisServers } from './redis-servers.js';
import { resilienceFigures } from './report-resilience.js';
import { audit, formatReport, type SagaReport } from './report.js';
import {
  makePlan,
  runBuyers,
  runDrill,
  statusLine,
  type DrillLog,
  type Fleet,
  type Progress,
} from './scenario.js';
import type { BreakerTransition, RingChange } from './services/orders.js';
import type { CallRecord } from './services/calls.js';
import type { ViewEvent } from './services/gateway.js';
import type { Role } from './services/service.js';

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

async function stats(fleet: Fleet, role: Role): Promise<Record<string, unknown>[]> {
  const handles = [...fleet.values()].filter((h) => h.role === role);
  return Promise.all(
    handles.map(async (h) => (await call(h.port, '/stats', undefined, { timeoutMs: 5000 })).body),
  );
}

/** The order sagas as stored (asked of one live orders instance), for the report. */
async function sagaReport(fleet: Fleet, traced: readonly string[]): Promise<SagaReport> {
  const orders = [...fleet.values()].find((h) => h.role === 'orders');
  if (orders === undefined) throw new Error('no orders instance left to ask about the sagas');
  return (await call(orders.port, '/sagas', { ids: traced }, { timeoutMs: 30_000 }))
    .body as unknown as SagaReport;
}

/** Waits until every instance sees the fleet it needs (discovery views filled). */
async function untilSettled(fleet: Fleet): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const [gateway] = await stats(fleet, 'gateway');
    const orders = await stats(fleet, 'orders');
    const ready =
      (gateway?.endpoints as unknown[] | undefined)?.length === 3 &&
      orders.every((o) => (o.ring as unknown[]).length === 2 && o.payments === 2);
    if (ready) return;
    if (Date.now() > deadline) throw new Error('the services did not find each other within 30 s');
    await sleep(50);
  }
}

async function run(o: DemoOptions): Promise<number> {
  let binary: string | undefined;
  let mode = o.mode;
  if (mode === undefined || (mode === 'redis' && o.redisUrls === undefined)) {
    binary = findRedisServer();
    if (binary === undefined && mode === 'redis')
      throw new Error('Redis mode needs redis-server on PATH, or --redis URLs');
    mode = binary === undefined ? 'memory' : 'redis';
  }
  const plan = makePlan(o);
  say(
    `Keel trading demo — flash sale: ${o.buyers} buyers, ${o.skus} SKUs, ${Object.values(plan.stock).reduce((a, b) => a + b, 0)} units in stock for a demand of ${plan.demandUnits}, seed ${o.seed}`,
  );
  if (mode === 'memory') {
    say(
      o.mode === 'memory'
        ? 'Embedded mode (--memory): every service in this process, on MemoryLock and MemoryBackend.'
        : 'Embedded mode: redis-server was not found, so every service runs in this process on MemoryLock and MemoryBackend (install Redis for the multi-process run).',
    );
  }

  let servers: RedisServers | undefined;
  let cluster: Cluster | undefined;
  // Redis mode: a client on the first server and the run's prefix, for the order events.
  let eventsAt: { client: ReturnType<typeof redisClient>; prefix: string } | undefined;
  let metrics: MetricsServer | undefined;
  const fleet: Fleet = new Map();
  const cleanup = async (): Promise<void> => {
    await metrics?.close().catch(() => undefined);
    await cluster?.close().catch(() => undefined);
    await eventsAt?.client.quit().catch(() => undefined);
    await servers?.stop();
    closeClientSockets();
  };
  const onSignal = (): void => {
    say('\nInterrupted: stopping the services and servers…');
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const settings = {
      seed: o.seed,
      payments: o.payments,
      skus: plan.skus,
      metrics: o.metricsPort !== undefined,
    };
    if (o.metricsPort !== undefined) {
      // Loaded only with --metrics-port: the OpenTelemetry SDK is not needed otherwise.
      const { startDemoMetrics } = await import('./metrics.js');
      metrics = await startDemoMetrics(mode, o.metricsPort, fleet);
      say(`Prometheus metrics (keel/otel) at ${metrics.url}`);
    }
    if (mode === 'redis') {
      let urls = o.redisUrls;
      if (urls === undefined) {
        servers = await startRedisServers(binary as string, o.redisServers);
        urls = servers.urls;
        say(
          `Redis mode: started ${urls.length} redis-server processes (${urls.join(', ')}); each service instance is a child process.`,
        );
      } else {
        say(
          `Redis mode on existing servers: ${urls.join(', ')}; each service instance is a child process.`,
        );
      }
      const prefix = `trading:${randomBytes(4).toString('hex')}:`;
      eventsAt = { client: redisClient(urls[0] as string), prefix };
      cluster = redisCluster(settings, urls, prefix, o.redisUrls !== undefined);
    } else {
      cluster = memoryCluster(settings);
    }
    await cluster.store.initStock(plan.stock);
    const fleetStarted = performance.now();
    const ids: [Role, string][] = [
      ['payments', 'payments-1'],
      ['payments', 'payments-2'],
      ['inventory', 'inventory-1'],
      ['inventory', 'inventory-2'],
      ['orders', 'orders-1'],
      ['orders', 'orders-2'],
      ['orders', 'orders-3'],
      ['gateway', 'gateway'],
      ...(mode === 'redis'
        ? ([
            ['ledger', 'ledger-1'],
            ['ledger', 'ledger-2'],
          ] as [Role, string][])
        : []),
    ];
    const c = cluster;
    for (const handle of await Promise.all(ids.map(([role, id]) => c.start(role, id))))
      fleet.set(handle.id, handle);
    await untilSettled(fleet);
    say(
      `Services up in ${((performance.now() - fleetStarted) / 1000).toFixed(1)} s: 1 gateway, 3 orders, 2 inventory shards, 2 payments${mode === 'redis' ? ', 2 ledger' : ''} — found each other through keel/discovery.`,
    );

    const gateway = fleet.get('gateway');
    if (gateway === undefined) throw new Error('no gateway');
    const progress: Progress = {
      dispatched: 0,
      finished: 0,
      requests: 0,
      outcomes: {},
      loadDone: false,
    };
    const drill: DrillLog = { lines: [] };
    const live = o.live || process.stdout.isTTY;
    const started = Date.now();
    const loadStarted = performance.now();
    let statusText = '';
    const printLine = (line: string): void => {
      if (live) process.stdout.write(`\r\x1b[2K${line}\n${statusText}`);
      else say(line);
    };
    const drillDone = runDrill(c, fleet, o, plan.buyers.length, progress, drill, printLine);
    const eventsDrill =
      eventsAt === undefined
        ? undefined
        : runEventsDrill(
            fleet,
            new OrderEvents(eventsAt.client, eventsAt.prefix),
            progress,
            plan.buyers.length,
            drill,
            printLine,
          );
    // Shoppers browse product pages (through keel/cache) while the sale runs.
    const catalogDone = runCatalog({
      skus: plan.skus,
      seed: o.seed,
      redisUrl: mode === 'redis' ? (servers?.urls[0] ?? o.redisUrls?.[0]) : undefined,
      prefix: `trading:${randomBytes(4).toString('hex')}:cache:`,
      stop: () => progress.loadDone,
    });
    let quarter = 1;
    let ticking = true;
    const ticker = setInterval(
      () => {
        if (live) {
          void statusLine(fleet, progress, plan.buyers.length, started, mode).then((text) => {
            // One terminal line, or `\r` cannot redraw it.
            if (!ticking) return;
            statusText = text.slice(0, Math.max(20, (process.stdout.columns || 120) - 1));
            process.stdout.write(`\r\x1b[2K${statusText}`);
          });
        } else if (progress.finished >= (quarter * plan.buyers.length) / 4 && quarter < 4) {
          quarter++;
          void statusLine(fleet, progress, plan.buyers.length, started, mode).then((text) => {
            if (ticking) say(text);
          });
        }
      },
      live ? 250 : 100,
    );
    const results = await runBuyers(plan, o, gateway.port, progress);
    await drillDone;
    await eventsDrill;
    const catalog = await catalogDone;
    // Orders whose buyers gave up, or whose instance died, are finished by the sagas' recovery.
    const deadline = Date.now() + 30_000;
    while ((await c.store.pendingCount()) > 0 && Date.now() < deadline) await sleep(100);
    const durationMs = performance.now() - loadStarted;
    const ended = Date.now();
    clearInterval(ticker);
    ticking = false;
    if (live)
      process.stdout.write(
        `\r\x1b[2K${await statusLine(fleet, progress, plan.buyers.length, started, mode)}\n`,
      );

    const [gatewayStats] = await stats(fleet, 'gateway');
    const ordersStats = await stats(fleet, 'orders');
    const inventoryStats = await stats(fleet, 'inventory');
    const snapshot = await c.store.snapshot();
    let events: EventsAudit | undefined;
    if (eventsAt !== undefined) {
      const confirmed = snapshot.orders.filter((x) => x.state === 'confirmed').map((x) => x.id);
      events = await auditEvents(eventsAt.client, eventsAt.prefix, confirmed);
    }
    const sagas = await sagaReport(fleet, drill.midPayment ?? []);
    const report = audit({
      options: o,
      mode,
      plan,
      results,
      snapshot,
      durationMs,
      drill,
      gatewayEvents: (gatewayStats?.events ?? []) as ViewEvent[],
      transitions: ordersStats.flatMap((s) => s.transitions as BreakerTransition[]),
      resilience: resilienceFigures(
        ordersStats.flatMap((s) => s.chargeLog as CallRecord[]),
        drill.outage,
        gatewayStats?.calls as Parameters<typeof resilienceFigures>[2],
      ),
      ringChanges: ordersStats.flatMap((s) => s.ringChanges as RingChange[]),
      fencedOff: inventoryStats.reduce((a, s) => a + Number(s.fencedOff), 0),
      processes: {
        services: c.pids,
        redisPorts: servers?.urls.map((u) => Number(new URL(u).port)) ?? [],
      },
      stalls: inventoryStats.reduce((a, s) => a + Number(s.stalls), 0),
      events,
      catalog,
      sagas,
    });
    say(formatReport(report));
    writeFileSync(
      o.html,
      renderHtml({
        report,
        results,
        drill,
        gatewayEvents: (gatewayStats?.events ?? []) as ViewEvent[],
        ringChanges: ordersStats.flatMap((s) => s.ringChanges as RingChange[]),
        timelines: await collectTimelines(fleet),
        orders: ids.filter(([role]) => role === 'orders').map(([, id]) => id),
        startedAt: started,
        endedAt: ended,
      }),
    );
    say(`HTML report written to ${resolve(o.html)}`);
    if (o.json !== undefined) {
      writeFileSync(o.json, `${JSON.stringify(report, null, 2)}\n`);
      say(`JSON report written to ${o.json}`);
    }
    return report.ok ? 0 : 1;
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await cleanup();
  }
}

let options: DemoOptions | 'help';
try {
  options = parseArgs(process.argv.slice(2));
} catch (error) {
  console.error((error as Error).message);
  process.exit(2);
}
if (options === 'help') {
  say(USAGE);
} else {
  run(options).then(
    (code) => {
      process.exitCode = code;
      // Everything is closed by now; if a stray handle still held the process, do not hang.
      setTimeout(() => {
        console.error('demo: a handle kept the process alive after cleanup; exiting');
        process.exit(code);
      }, 3000).unref();
    },
    (error: unknown) => {
      console.error('demo failed:', error);
      process.exitCode = 1;
    },
  );
}
