/**
 * discovery: Keel's registry client on a local redis-server it starts itself (test/support's
 * `RedisHarness`, in `setup`; stopped in `teardown`, which the runner calls even on failure).
 *
 * - tinybench tasks: `discover()` from the local cache (and `watch.instances()`, a balancer
 *   pick over the same view) against the baseline a cache-less client pays per lookup — one
 *   `HGETALL` round trip plus parsing.
 * - reports (the targets):
 *   (a) time from `register()` being called (and from `deregister()`) to the added (removed)
 *       event at 1, 50 and 200 watchers — each watcher its own backend, connections and view,
 *       as separate processes would have, all in this one process — p50/p99 over every
 *       (watcher, round) sample; target p99 ≤ 25 ms at 200 watchers;
 *   (b) time from an instance's death (its process stops heartbeating) to its removal from
 *       every view, against its ttl; target ≤ ttl + 1.5 s p99 at ttl 10 s (default reap
 *       interval 1 s);
 *   (c) snapshot and resync time at 10 000 instances in one service: the snapshot script alone,
 *       a new watch becoming ready (snapshot + decode + view), and a resync of a live view after
 *       its reader connection is killed.
 *
 * `--quick` keeps every part short (fewer rounds, ttl 1 s, 1 000 instances): smoke only.
 */
import type { Redis } from 'ioredis';
import { LoadBalancer, roundRobin, type FollowingBalancer } from '../src/balancer/index.js';
import {
  RedisBackend,
  Registry,
  type Registration,
  type ServiceWatch,
} from '../src/discovery/index.js';
import { RedisHarness } from '../test/support/redis.js';
import { defineSuite, type BenchReport, type BenchTask, type SuiteContext } from './suite.js';

const CACHE_SERVICE = 'bench-cache';
const CACHE_INSTANCES = 50;

interface Rig {
  readonly harness: RedisHarness;
  readonly admin: Redis;
  readonly writer: Registry;
  readonly reader: Registry;
  readonly watch: ServiceWatch;
  readonly balancer: FollowingBalancer<ServiceWatch>;
  readonly recordsKey: string;
}

let harness: RedisHarness | undefined;
let rig: Rig | undefined;
/** Everything opened during the run, closed in teardown (newest first). */
const closers: (() => Promise<void> | void)[] = [];

function need(): Rig {
  if (rig === undefined) throw new Error('discovery bench: setup has not run (or failed)');
  return rig;
}

/** A backend with its own client, as one process would have; closed in teardown. */
function backend(extra: Partial<ConstructorParameters<typeof RedisBackend>[0]> = {}): RedisBackend {
  if (harness === undefined) throw new Error('discovery bench: no harness');
  const b = new RedisBackend({ client: harness.client(0), ...extra });
  closers.push(() => b.close());
  return b;
}

function registry(options: ConstructorParameters<typeof Registry>[0] = {}): Registry {
  const r = new Registry({ backend: backend(), ...options });
  closers.push(() => r.close());
  return r;
}

async function setup(): Promise<void> {
  harness = await RedisHarness.start({ count: 1 });
  const admin = harness.client(0);
  await admin.ping();
  const writer = registry();
  for (let i = 0; i < CACHE_INSTANCES; i++) {
    await writer.register({
      service: CACHE_SERVICE,
      id: `cache-${i}`,
      host: '10.0.0.1',
      port: 8000 + i,
      zone: i % 2 === 0 ? 'a' : 'b',
      status: i % 10 === 0 ? 'draining' : 'up',
    });
  }
  const reader = registry();
  const watch = reader.watch(CACHE_SERVICE);
  await watch.ready;
  await reader.ready(CACHE_SERVICE);
  const balancer = LoadBalancer.following(reader.watch(CACHE_SERVICE), { strategy: roundRobin() });
  const recordsKey = new RedisBackend({ client: admin }).keys(CACHE_SERVICE).records;
  rig = { harness, admin, writer, reader, watch, balancer, recordsKey };
}

async function teardown(): Promise<void> {
  const servers = harness;
  rig = undefined;
  try {
    for (const close of closers.reverse()) {
      try {
        await close();
      } catch {
        // best effort: the servers go next anyway
      }
    }
    closers.length = 0;
  } finally {
    harness = undefined;
    await servers?.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// Tasks: lookups from the cache vs a round trip per lookup.

const DISCOVER = 'discover(service) from cache (50 instances, status up)';
const DISCOVER_ZONE = 'discover(service, { zone }) from cache';
const INSTANCES = 'watch.instances() (no filter)';
const PICK = 'balancer.pick() over the watched view';
const ROUND_TRIP = 'baseline: HGETALL + JSON.parse per lookup (no cache)';

const tasks: BenchTask[] = [
  {
    name: DISCOVER,
    kind: 'keel',
    compareTo: ROUND_TRIP,
    batch: 100,
    fn: () => need().reader.discover(CACHE_SERVICE),
  },
  {
    name: DISCOVER_ZONE,
    kind: 'keel',
    compareTo: ROUND_TRIP,
    batch: 100,
    fn: () => need().reader.discover(CACHE_SERVICE, { zone: 'a' }),
  },
  { name: INSTANCES, kind: 'keel', batch: 1000, fn: () => need().watch.instances() },
  { name: PICK, kind: 'keel', batch: 1000, fn: () => need().balancer.pick() },
  {
    name: ROUND_TRIP,
    kind: 'baseline',
    fn: async () => {
      const r = need();
      const all = await r.admin.hgetall(r.recordsKey);
      return Object.values(all)
        .map((json) => JSON.parse(json) as { status: string })
        .filter((i) => i.status === 'up');
    },
  },
];

// ---------------------------------------------------------------------------------------------
// (a) register / deregister → event latency at 1, 50, 200 watchers.

async function latencyReport(context: SuiteContext): Promise<BenchReport> {
  const rows: Record<string, string | number>[] = [];
  const rounds = context.quick ? 3 : 60;
  for (const watchers of [1, 50, 200]) {
    progress(`register/deregister → event, ${watchers} watcher(s)`);
    const service = `bench-latency-${watchers}`;
    const writer = registry({ reapIntervalMs: 0 });
    const views: ServiceWatch[] = [];
    const opened: Registry[] = [];
    for (let i = 0; i < watchers; i++) {
      const r = new Registry({ backend: backend(), reapIntervalMs: 0 });
      opened.push(r);
      views.push(r.watch(service));
    }
    await Promise.all(views.map((v) => v.ready));
    const added: number[] = [];
    const removed: number[] = [];
    let t0 = 0;
    let pending = 0;
    let recording = false;
    let done: () => void = () => undefined;
    for (const view of views) {
      view.onAdded(() => {
        if (recording) added.push(performance.now() - t0);
        if (--pending === 0) done();
      });
      view.onRemoved(() => {
        if (recording) removed.push(performance.now() - t0);
        if (--pending === 0) done();
      });
    }
    const all = (): Promise<void> =>
      new Promise((resolve) => {
        done = resolve;
      });
    // Round -1 warms up and is not recorded: `ready` resolves on the snapshot, while each
    // watcher's reader connection may still be connecting (200 of them at once here) — a
    // start-up cost, not the steady-state latency the target is about.
    for (let round = -1; round < rounds; round++) {
      recording = round >= 0;
      pending = watchers;
      let arrived = all();
      t0 = performance.now();
      const registration = await writer.register({
        service,
        id: `r${round + 1}`,
        host: '10.0.0.2',
        port: 9000,
      });
      await withTimeout(arrived, 10_000, 'added events');
      await sleep(5);
      pending = watchers;
      arrived = all();
      t0 = performance.now();
      await registration.deregister();
      await withTimeout(arrived, 10_000, 'removed events');
      await sleep(5);
    }
    rows.push({
      watchers,
      rounds,
      'register→added p50 (ms)': ms(percentile(added, 0.5)),
      'register→added p99 (ms)': ms(percentile(added, 0.99)),
      'deregister→removed p50 (ms)': ms(percentile(removed, 0.5)),
      'deregister→removed p99 (ms)': ms(percentile(removed, 0.99)),
      'target (p99 ≤ 25 ms at 200)':
        watchers === 200
          ? met(Math.max(percentile(added, 0.99), percentile(removed, 0.99)) <= 25, context)
          : '—',
    });
    for (const view of views) view.close();
    await Promise.all(opened.map((r) => r.close()));
  }
  return {
    title:
      'time from register() / deregister() being called to the event in every watcher (each watcher its own backend + connections, all in this process)',
    rows,
  };
}

// ---------------------------------------------------------------------------------------------
// (b) death → removal from every view, against the ttl.

async function deathReport(context: SuiteContext): Promise<BenchReport> {
  const ttlMs = context.quick ? 1000 : 10_000;
  const instances = context.quick ? 3 : 20;
  const watchers = context.quick ? 3 : 10;
  progress(`death → removal, ttl ${ttlMs} ms, ${instances} instances, ${watchers} watchers`);
  const service = `bench-death-${ttlMs}`;
  const writer = registry({ ttlMs }); // default reap interval (1 s) in every client
  const views = Array.from({ length: watchers }, () => registry().watch(service));
  await Promise.all(views.map((v) => v.ready));
  const registrations: Registration[] = [];
  for (let i = 0; i < instances; i++)
    registrations.push(await writer.register({ service, id: `d${i}`, host: 'h', port: i }));
  // Let heartbeats spread out (they are jittered), so deaths land at different points of the cycle.
  await sleep(ttlMs / 2);
  const lastBeat = new Map<string, number>();
  const died = new Map<string, number>();
  const seen = new Map<string, number>();
  const gone = new Promise<void>((resolve) => {
    for (const view of views) {
      view.onRemoved(({ instance }) => {
        const count = (seen.get(instance.id) ?? 0) + 1;
        seen.set(instance.id, count);
        if (count === watchers) {
          died.set(instance.id, performance.now() - (died.get(instance.id) ?? 0));
          lastBeat.set(instance.id, performance.now() - (lastBeat.get(instance.id) ?? 0));
          if ([...seen.values()].filter((c) => c === watchers).length === instances) resolve();
        }
      });
    }
  });
  for (const [i, r] of registrations.entries()) {
    lastBeat.set(r.id, r.lastHeartbeat);
    died.set(r.id, performance.now());
    r.abandon();
    if (i < registrations.length - 1) await sleep(ttlMs / instances / 3);
  }
  await withTimeout(gone, ttlMs * 3 + 10_000, 'removals');
  const fromBeat = [...lastBeat.values()];
  const fromDeath = [...died.values()];
  for (const view of views) view.close();
  return {
    title: `time from an instance's death to its removal from every view (${watchers} watchers, reap interval 1 s)`,
    rows: [
      {
        'ttl (ms)': ttlMs,
        instances,
        'last heartbeat→removed p50 (ms)': ms(percentile(fromBeat, 0.5)),
        'last heartbeat→removed p99 (ms)': ms(percentile(fromBeat, 0.99)),
        'death→removed p50 (ms)': ms(percentile(fromDeath, 0.5)),
        'death→removed p99 (ms)': ms(percentile(fromDeath, 0.99)),
        'target (≤ ttl + 1.5 s p99)': met(percentile(fromBeat, 0.99) <= ttlMs + 1500, context),
      },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// (c) snapshot and resync at 10 000 instances.

async function snapshotReport(context: SuiteContext): Promise<BenchReport> {
  const count = context.quick ? 1000 : 10_000;
  const reps = context.quick ? 3 : 10;
  progress(`snapshot and resync at ${count} instances`);
  const service = `bench-snapshot-${count}`;
  const store = backend();
  // Written straight through the backend (the registry's per-registration timers are not the
  // point here), 200 at a time.
  for (let i = 0; i < count; i += 200) {
    await Promise.all(
      Array.from({ length: Math.min(200, count - i) }, (_, j) =>
        store.register(
          service,
          `s${i + j}`,
          JSON.stringify({
            service,
            id: `s${i + j}`,
            host: `10.1.${(i + j) >> 8}.${(i + j) & 255}`,
            port: 8080,
            weight: 1,
            zone: 'a',
            status: 'up',
            metadata: { build: '2026.11.22' },
          }),
          'bench',
          600_000,
        ),
      ),
    );
  }
  const snapshot: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    const s = await store.snapshot(service);
    snapshot.push(performance.now() - t0);
    if (s.records.length !== count) throw new Error(`snapshot had ${s.records.length} records`);
  }
  const ready: number[] = [];
  for (let i = 0; i < reps; i++) {
    const r = new Registry({ backend: store, reapIntervalMs: 0 });
    const t0 = performance.now();
    const watch = r.watch(service);
    await watch.ready;
    ready.push(performance.now() - t0);
    if (watch.size !== count) throw new Error(`view had ${watch.size} instances`);
    watch.close();
    await r.close();
  }
  // A live view resyncing after its reader connection dropped (no jitter, to time the work).
  const resync: number[] = [];
  // Its own connection name, so the kill below finds this view's blocked reader and no other.
  if (harness === undefined) throw new Error('discovery bench: no harness');
  const name = 'bench-resync';
  const liveBackend = backend({
    blockMs: 1000,
    client: harness.client(0, { connectionName: name }),
  });
  const live = new Registry({ backend: liveBackend, reapIntervalMs: 0, resyncJitterMs: 0 });
  closers.push(() => live.close());
  const watch = live.watch(service);
  await watch.ready;
  const admin = need().admin;
  const blockedReaders = async (): Promise<string[]> =>
    String(await admin.call('CLIENT', 'LIST', 'TYPE', 'normal'))
      .split('\n')
      .filter((line) => line.includes(` name=${name} `) && / flags=\S*b/.test(line))
      .map((line) => /id=(\d+)/.exec(line)?.[1])
      .filter((id): id is string => id !== undefined);
  for (let i = 0; i < reps; i++) {
    // Wait until the (replaced) reader is blocked in XREAD again: after a kill it reconnects
    // after a jittered retry delay, so a fixed pause is sometimes too short.
    const deadline = performance.now() + 10_000;
    let blocked = await blockedReaders();
    while (blocked.length === 0) {
      if (performance.now() > deadline) throw new Error('discovery bench: reader never blocked');
      await sleep(10);
      blocked = await blockedReaders();
    }
    const before = watch.resyncs;
    const t0 = performance.now();
    await Promise.all(blocked.map((id) => admin.call('CLIENT', 'KILL', 'ID', id)));
    await until(() => watch.resyncs > before && !watch.stale, 10_000);
    resync.push(performance.now() - t0);
  }
  watch.close();
  return {
    title: `snapshot and resync of one service with ${count} instances`,
    rows: [
      { step: 'snapshot script (HGETALL + meta, atomic)', ...stats(snapshot) },
      { step: 'new watch ready (snapshot + decode + view)', ...stats(ready) },
      { step: 'live view resync after its reader was killed', ...stats(resync) },
    ],
  };
}

// ---------------------------------------------------------------------------------------------

const sleep = (msDelay: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, msDelay));

async function until(check: () => boolean, limitMs: number): Promise<void> {
  const deadline = performance.now() + limitMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error('discovery bench: timed out waiting');
    await sleep(1);
  }
}

async function withTimeout<T>(promise: Promise<T>, limitMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          reject(new Error(`discovery bench: no ${what} within ${limitMs} ms`));
        }, limitMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function percentile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number;
}

function stats(values: readonly number[]): Record<string, string | number> {
  return {
    reps: values.length,
    'p50 (ms)': ms(percentile(values, 0.5)),
    'max (ms)': ms(Math.max(...values)),
  };
}

const ms = (value: number): string =>
  Number.isFinite(value) ? value.toFixed(value < 10 ? 2 : 1) : '—';
/** A target verdict; a --quick run (a few rounds, ttl 1 s) is too short to judge one. */
const met = (ok: boolean, context: SuiteContext): string =>
  context.quick ? '(quick run)' : ok ? 'met' : 'MISSED';

function progress(line: string): void {
  process.stderr.write(`  discovery: ${line}…\n`);
}

export const suite = defineSuite({
  name: 'discovery',
  description:
    'registry client on a local redis-server: discover() from cache vs a round trip per lookup; event latency, death→removal, snapshot/resync (reports)',
  tasks,
  setup,
  teardown,
  reports: async (_measured, context) => [
    await latencyReport(context),
    await deathReport(context),
    await snapshotReport(context),
  ],
});
