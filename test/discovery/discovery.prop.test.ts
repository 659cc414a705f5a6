/**
 * The invariant discovery exists for: whatever happens — registrations, heartbeats, crashes,
 * deregistrations, status changes, time passing (expiries), watchers reconnecting or falling
 * behind, the store losing its data — once things settle every watcher's view equals the store,
 * and its history on the way had no duplicate or missing step.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock, systemClock, type Clock } from '../../src/core/index.js';
import {
  MemoryBackend,
  RedisBackend,
  Registry,
  type DiscoveryBackend,
  type Instance,
  type InstanceStatus,
  type Registration,
  type ServiceWatch,
} from '../../src/discovery/index.js';
import { encodeInstance } from '../../src/discovery/instance.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { WatchHistory } from './history.js';

type Action =
  | { readonly t: 'register'; readonly n: number }
  | { readonly t: 'heartbeat'; readonly n: number }
  | { readonly t: 'deregister'; readonly n: number }
  | { readonly t: 'status'; readonly n: number; readonly status: InstanceStatus }
  | { readonly t: 'crash'; readonly n: number }
  | { readonly t: 'advance'; readonly ms: number }
  | { readonly t: 'reconnect'; readonly w: number }
  | { readonly t: 'rewatch'; readonly w: number }
  | { readonly t: 'slow' }
  | { readonly t: 'loss' };

const INSTANCES = 5;
const WATCHERS = 3;

const action = (memory: boolean): fc.Arbitrary<Action> =>
  fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({ t: fc.constant('register' as const), n: fc.nat(INSTANCES - 1) }),
    },
    {
      weight: 2,
      arbitrary: fc.record({ t: fc.constant('heartbeat' as const), n: fc.nat(INSTANCES - 1) }),
    },
    {
      weight: 2,
      arbitrary: fc.record({ t: fc.constant('deregister' as const), n: fc.nat(INSTANCES - 1) }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        t: fc.constant('status' as const),
        n: fc.nat(INSTANCES - 1),
        status: fc.constantFrom<InstanceStatus>('up', 'draining', 'down'),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ t: fc.constant('crash' as const), n: fc.nat(INSTANCES - 1) }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        t: fc.constant('advance' as const),
        ms: fc.integer({ min: 1, max: 1500 }),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ t: fc.constant('reconnect' as const), w: fc.nat(WATCHERS - 1) }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ t: fc.constant('rewatch' as const), w: fc.nat(WATCHERS - 1) }),
    },
    // Memory only: a slow reader (paused feeds) and data loss. Redis gets those in its fault tests.
    ...(memory
      ? [
          { weight: 1, arbitrary: fc.constant({ t: 'slow' as const }) },
          { weight: 1, arbitrary: fc.constant({ t: 'loss' as const }) },
        ]
      : []),
  );

interface World {
  readonly clock: Clock;
  backend(): DiscoveryBackend;
  advance(ms: number): Promise<void>;
  /** Interrupts watcher w's feed (as a reconnect would). */
  reconnect(w: number, registry: Registry): Promise<void>;
  slow(): void;
  loss(): void;
  settle(): Promise<void>;
  /** Extra comparison attempts (100 ms apart) after settling. */
  readonly retries: number;
  close(): Promise<void>;
}

async function storeView(backend: DiscoveryBackend, service: string): Promise<string[]> {
  const snapshot = await backend.snapshot(service);
  return snapshot.records
    .map((r) => (typeof r.data === 'string' ? r.data : JSON.stringify(r.data)))
    .sort();
}

const encoded = (watch: ServiceWatch): string[] =>
  watch
    .instances()
    .map((i: Instance) => encodeInstance(i))
    .sort();

async function run(world: World, actions: readonly Action[], service: string): Promise<void> {
  const writer = new Registry({
    backend: world.backend(),
    clock: world.clock,
    ttlMs: 1000,
    reapIntervalMs: 200,
    resyncJitterMs: 30,
    dataLossGraceMs: 400,
    retryBaseMs: 20,
    retryMaxMs: 100,
  });
  const watcherRegistries = Array.from(
    { length: WATCHERS },
    () =>
      new Registry({
        backend: world.backend(),
        clock: world.clock,
        reapIntervalMs: 300,
        resyncJitterMs: 30,
        dataLossGraceMs: 400,
        retryBaseMs: 20,
        retryMaxMs: 100,
      }),
  );
  const histories: WatchHistory[] = [];
  const problems: string[] = [];
  const open = async (w: number): Promise<void> => {
    const registry = watcherRegistries[w] as Registry;
    const watch = registry.watch(service);
    const history = new WatchHistory(watch);
    const previous = histories[w];
    if (previous !== undefined) {
      problems.push(...previous.problems);
      previous.dispose();
      previous.watch.close();
    }
    histories[w] = history;
    await Promise.resolve();
  };
  const registrations = new Map<number, Registration>();
  try {
    for (let w = 0; w < WATCHERS; w++) await open(w);
    for (const a of actions) {
      switch (a.t) {
        case 'register':
          if (!registrations.has(a.n))
            registrations.set(
              a.n,
              await writer.register({ service, id: `i${a.n}`, host: 'h', port: a.n }),
            );
          break;
        case 'heartbeat': {
          // An explicit heartbeat on top of the timed ones (it re-registers if the store lost it).
          const r = registrations.get(a.n);
          if (r !== undefined && r.state !== 'closed') await r.heartbeat();
          break;
        }
        case 'deregister':
          await registrations.get(a.n)?.deregister();
          registrations.delete(a.n);
          break;
        case 'status': {
          const r = registrations.get(a.n);
          if (r !== undefined && r.state !== 'closed') await r.setStatus(a.status);
          break;
        }
        case 'crash':
          registrations.get(a.n)?.abandon();
          registrations.delete(a.n);
          break;
        case 'advance':
          await world.advance(a.ms);
          break;
        case 'reconnect':
          await world.reconnect(a.w, watcherRegistries[a.w] as Registry);
          break;
        case 'rewatch':
          await open(a.w);
          break;
        case 'slow':
          world.slow();
          break;
        case 'loss':
          world.loss();
          break;
      }
    }
    await world.settle();
    // Fake time is exact: compare once. Real time may reap something between reading the store
    // and comparing, so there the views must match the store at some point within a bound.
    for (let attempt = 0; ; attempt++) {
      try {
        const truth = await storeView(writer.backend, service);
        for (const history of histories) {
          expect(history.problems).toEqual([]);
          expect(encoded(history.watch)).toEqual(truth);
        }
        break;
      } catch (error) {
        if (attempt >= world.retries) throw error;
        await world.advance(100);
      }
    }
    expect(problems).toEqual([]);
  } finally {
    for (const h of histories) h.dispose();
    await writer.close();
    await Promise.all(watcherRegistries.map((r) => r.close()));
    await world.close();
  }
}

describe('discovery property: every watcher converges to the store (memory backend)', () => {
  it('for random interleavings of register / heartbeat / deregister / status / crash / time / reconnect / slow readers / data loss', async () => {
    let counter = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(action(true), { minLength: 1, maxLength: 40 }), async (actions) => {
        const clock = new ManualClock(0);
        const backend = new MemoryBackend({ clock, maxLogLength: 4 });
        await run(
          {
            clock,
            backend: () => backend,
            advance: (ms) => clock.advanceAsync(ms),
            reconnect: () => {
              backend.interruptFeeds();
              return clock.advanceAsync(0);
            },
            slow: () => {
              backend.pauseFeeds();
            },
            loss: () => {
              backend.simulateDataLoss();
            },
            settle: async () => {
              backend.resumeFeeds();
              // Past resync jitter, re-registration (a heartbeat interval) and the data-loss grace.
              for (let i = 0; i < 10; i++) await clock.advanceAsync(100);
              await clock.advanceAsync(600);
            },
            retries: 0,
            close: () => backend.close(),
          },
          actions,
          `svc${++counter}`,
        );
      }),
      { numRuns: 1000 },
    );
  });
});

describeRedis('discovery property: every watcher converges to the store (Redis backend)', () => {
  const redis = useRedis({ count: 1 });
  const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

  it('for random interleavings of register / heartbeat / deregister / status / crash / time / reconnect', async () => {
    let counter = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          action(false).map((a) => (a.t === 'advance' ? { ...a, ms: Math.ceil(a.ms / 10) } : a)),
          { minLength: 1, maxLength: 25 },
        ),
        async (actions) => {
          const backends: RedisBackend[] = [];
          await run(
            {
              clock: systemClock,
              backend: () => {
                const b = new RedisBackend({
                  client: redis().client(0, { maxRetriesPerRequest: 1 }),
                  blockMs: 200,
                  readTimeoutMs: 1000,
                });
                backends.push(b);
                return b;
              },
              advance: sleep,
              // A real reconnect: drop the watcher's blocking connection with CLIENT KILL.
              reconnect: async (w) => {
                const admin = redis().client(0);
                const list = String(await admin.call('CLIENT', 'LIST', 'TYPE', 'normal'));
                const blocked = list
                  .split('\n')
                  .filter((line) => line.includes('cmd=xread'))
                  .map((line) => /id=(\d+)/.exec(line)?.[1])
                  .filter((id): id is string => id !== undefined);
                const id = blocked[w % Math.max(1, blocked.length)];
                if (id !== undefined) await admin.call('CLIENT', 'KILL', 'ID', id).catch(() => 0);
              },
              slow: () => undefined,
              loss: () => undefined,
              settle: () => sleep(1200),
              retries: 30,
              close: async () => {
                await Promise.all(backends.map((b) => b.close()));
              },
            },
            actions,
            `prop-${process.pid}-${++counter}`,
          );
        },
      ),
      { numRuns: 8 },
    );
  }, 120_000);
});
