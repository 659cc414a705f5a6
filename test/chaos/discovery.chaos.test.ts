/**
 * Discovery chaos: registrations churn on two services — register, deregister, heartbeat (by
 * themselves), updates, abandon (left to expire) — through several registries, each with its
 * own Redis connection, while a seeded scheduler restarts Redis (with its data, or empty),
 * trims a change log to nothing (XTRIM MAXLEN 0), deletes a log key, deletes a service's
 * records and leases keys (as an operator's DEL or eviction under `allkeys-*` would: no log
 * entry, nothing left for the reaper), writes a foreign entry
 * into a log (XADD <log> * …), pauses Redis and drops every client connection at once (`CLIENT
 * KILL TYPE normal`: ioredis reconnects and sends again what was unanswered, so a script may run
 * twice for one call), flushes its script cache (`SCRIPT FLUSH`: every call falls back from
 * EVALSHA to EVAL), keeps it busy (`DEBUG SLEEP`), pauses its writers (`CLIENT PAUSE … WRITE`:
 * every script waits, reads go on) and fills its memory (`maxmemory` 1 byte under `noeviction`:
 * every write fails with OOM, reads go on). Several watching registries follow both
 * services, their histories checked as they go (test/discovery/history.ts).
 *
 * Then quiescence — churn and faults stop, Redis is up — and the checks:
 * - `discovery-convergence`: every watcher's view equals the store's truth (the records hash),
 *   and the truth equals the registrations still alive, within CONVERGE_LIMIT_MS (the time it
 *   took is reported);
 * - `discovery-eviction`: no watcher ever removed an instance whose registration was alive and
 *   had a heartbeat acknowledged within its ttl (removals of one whose heartbeats could not get
 *   through for longer — the store expires it by right — are counted and reported apart);
 * - `discovery-history`: every watcher's change history stayed coherent;
 * - `discovery-registrations`: no live registration ended up closed or replaced.
 * Names for `KEEL_CHAOS_KNOWN_BUGS` are these check names. With a fault mix outside the
 * default kinds nothing changes: every kind here is one discovery promises to survive.
 *
 * Bounded by default (8 s of churn); `KEEL_CHAOS_S` and `KEEL_CHAOS_SEED` as in config.ts;
 * `KEEL_CHAOS_DISCOVERY_FAULTS` sets the fault mix (`kind[:weight],…` of DISCOVERY_FAULTS).
 */
import type { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import {
  RedisBackend,
  Registry,
  type DiscoveryRedisClient,
  type ServiceKeys,
  type Registration,
  type ServiceWatch,
} from '../../src/discovery/index.js';
import { WatchHistory } from '../discovery/history.js';
import type { RedisHarness } from '../support/redis.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import {
  between,
  chaosSeconds,
  chaosSeed,
  faultMix,
  knownBugs,
  pickWeighted,
  prng,
  rerunCommand,
  sleep,
} from './config.js';
import { dataDirOf, wipeDir } from './faults.js';

const seconds = chaosSeconds(8);
const SERVICES = ['chaos-a', 'chaos-b'] as const;
const WRITERS = 3;
const WATCHERS = 3;
const MAX_LIVE = 10;
/** How long after quiescence every view must equal the truth (generous: ttl + graces + resyncs). */
const CONVERGE_LIMIT_MS = 25_000;

export const DISCOVERY_FAULTS = [
  'pause',
  'restart',
  'restart-empty',
  'trim',
  'delete-log',
  'delete-records',
  'foreign',
  'drop',
  'flush-scripts',
  'busy',
  'pause-writes',
  'oom',
] as const;
type DiscoveryFault = (typeof DISCOVERY_FAULTS)[number];
const DEFAULT_MIX: Partial<Record<DiscoveryFault, number>> = {
  pause: 2,
  restart: 2,
  'restart-empty': 2,
  trim: 1,
  'delete-log': 1,
  'delete-records': 1,
  foreign: 1,
  drop: 2,
  'flush-scripts': 1,
  busy: 1,
  'pause-writes': 1,
  oom: 1,
};

interface Fault {
  readonly kind: DiscoveryFault;
  readonly service: string;
  /** Ms after the previous fault ended. */
  readonly gap: number;
  readonly holdMs: number;
}

/** The fault plan of a run, from its seed alone. */
function planFaults(seed: number, durationMs: number, mix: ReadonlyMap<DiscoveryFault, number>) {
  const random = prng(seed ^ 0xd15c);
  const plan: Fault[] = [];
  // Planned durations only: the run stops starting faults at the deadline anyway.
  for (let t = 0; t < durationMs;) {
    const kind = pickWeighted(random, mix);
    const fault: Fault = {
      kind,
      service: SERVICES[between(random, 0, SERVICES.length - 1)] as string,
      gap: between(random, 300, 1500),
      holdMs: kind === 'pause' ? between(random, 300, 2500) : between(random, 100, 800),
    };
    plan.push(fault);
    t += fault.gap + fault.holdMs;
  }
  return plan;
}

/** Faults go on this long after the churn stopped (so a lost change may be the last one). */
const TAIL_MS = 2500;

const backendOptions = {
  blockMs: 500,
  // Above the longest a trim fault holds the watchers' reads back (blockMs + ~300 ms).
  readTimeoutMs: 3000,
  outageThresholdMs: 1000,
  outageGraceMs: 4000,
  retryBaseMs: 50,
  retryMaxMs: 500,
};
const registryOptions = {
  ttlMs: 3000,
  reapIntervalMs: 300,
  resyncJitterMs: 100,
  retryBaseMs: 50,
  retryMaxMs: 500,
  operationTimeoutMs: 500,
  dataLossGraceMs: 4000,
};

interface Live {
  readonly registration: Registration;
  readonly service: string;
}

describeRedis(
  'discovery chaos (one Redis, restarts, log trims and deletes, foreign entries)',
  () => {
    const redis = useRedis({
      count: 1,
      // DEBUG SLEEP (the `busy` fault) needs the debug command, off by default since Redis 7.
      args: ['--appendonly', 'yes', '--appendfsync', 'always', '--enable-debug-command', 'local'],
    });

    it(
      'at quiescence every view equals the store within a bounded time, with no eviction on the way',
      async () => {
        const seed = chaosSeed();
        const mix = faultMix('KEEL_CHAOS_DISCOVERY_FAULTS', DISCOVERY_FAULTS, DEFAULT_MIX);
        const harness = redis();
        const dir = await dataDirOf(harness, 0);
        const admin = harness.client(0, { maxRetriesPerRequest: 1 });
        const keysOf = (service: string) => new RedisBackend({ client: admin }).keys(service);
        const closers: (() => Promise<void> | void)[] = [];
        const gate = new Gate();
        const makeRegistry = (gated = false): Registry => {
          const client = harness.client(0, { maxRetriesPerRequest: 1 });
          const backend = new RedisBackend({
            client: gated ? gatedClient(client, gate, closers) : client,
            ...backendOptions,
          });
          const registry = new Registry({ backend, ...registryOptions });
          closers.push(
            () => registry.close(),
            () => backend.close(),
          );
          return registry;
        };

        const t0 = performance.now();
        const writers = Array.from({ length: WRITERS }, () => makeRegistry());
        const live = new Map<string, Live>();
        const evictions: string[] = [];
        const unacknowledged: string[] = [];
        const histories: { watcher: number; watch: ServiceWatch; history: WatchHistory }[] = [];
        for (let w = 0; w < WATCHERS; w++) {
          const registry = makeRegistry(true);
          for (const service of SERVICES) {
            const watch = registry.watch(service);
            await watch.ready;
            const history = new WatchHistory(watch);
            histories.push({ watcher: w, watch, history });
            watch.onRemoved((change) => {
              const alive = live.get(change.instance.id);
              if (alive === undefined) return;
              // The store drops a registration `ttlMs` after the last heartbeat it acknowledged
              // (the ack comes after the script ran, so the record's expiry is at most
              // lastHeartbeat + ttl). One whose heartbeats have not got through for longer than
              // that (a heavily loaded machine: every call timing out) is expired by right.
              const ageMs = performance.now() - alive.registration.lastHeartbeat;
              const what = `watcher ${w} removed live ${change.instance.id} (${change.reason}, ${change.source}) @${Math.round(performance.now() - t0)}, last acknowledged heartbeat ${Math.round(ageMs)} ms before`;
              if (ageMs > registryOptions.ttlMs) unacknowledged.push(what);
              else evictions.push(what);
            });
          }
        }

        const ops: Record<string, number> = {};
        const opErrors: Record<string, number> = {};
        const count = (table: Record<string, number>, key: string): void => {
          table[key] = (table[key] ?? 0) + 1;
        };
        const churnRandom = prng(seed);
        let serial = 0;
        let stopping = false;
        const deadline = t0 + seconds * 1000;

        const churn = async (): Promise<void> => {
          const pending: Promise<void>[] = [];
          while (!stopping && performance.now() < deadline) {
            const service = SERVICES[between(churnRandom, 0, SERVICES.length - 1)] as string;
            const mine = [...live.values()].filter((l) => l.service === service);
            const roll = churnRandom();
            const target = mine[between(churnRandom, 0, Math.max(0, mine.length - 1))];
            if (mine.length < 3 || (roll < 0.4 && mine.length < MAX_LIVE)) {
              const writer = writers[between(churnRandom, 0, WRITERS - 1)] as Registry;
              const id = `${service}-${++serial}`;
              count(ops, 'register');
              pending.push(
                writer.register({ service, id, host: '127.0.0.1', port: 1000 + serial }).then(
                  (registration) => {
                    live.set(id, { registration, service });
                  },
                  (error: unknown) => {
                    count(opErrors, `register: ${errorKind(error)}`);
                  },
                ),
              );
            } else if (target !== undefined && roll < 0.6) {
              count(ops, 'deregister');
              live.delete(target.registration.id);
              pending.push(
                target.registration.deregister().then(
                  (removed) => {
                    // Reported, not judged: after an empty restart the record is gone by right.
                    if (!removed) count(ops, 'deregister found nothing');
                  },
                  (error: unknown) => {
                    count(opErrors, `deregister: ${errorKind(error)}`);
                  },
                ),
              );
            } else if (target !== undefined && roll < 0.7) {
              count(ops, 'abandon');
              live.delete(target.registration.id);
              target.registration.abandon();
            } else if (target !== undefined) {
              count(ops, 'update');
              const r = target.registration;
              const update =
                churnRandom() < 0.5
                  ? r.setStatus(churnRandom() < 0.5 ? 'draining' : 'up')
                  : r.setMetadata({ v: String(between(churnRandom, 0, 99)) });
              pending.push(
                update.then(
                  () => undefined,
                  (error: unknown) => {
                    count(opErrors, `update: ${errorKind(error)}`);
                  },
                ),
              );
            }
            await sleep(between(churnRandom, 30, 200));
          }
          await Promise.all(pending);
        };

        const plan = planFaults(seed, seconds * 1000, mix);
        const done: string[] = [];
        const faultErrors: string[] = [];
        const faults = async (): Promise<void> => {
          for (const fault of plan) {
            await sleep(fault.gap);
            if (stopping || performance.now() >= deadline + TAIL_MS) return;
            const at = Math.round(performance.now() - t0);
            try {
              if (fault.kind === 'trim' || fault.kind === 'delete-log') {
                // A change whose log entry is gone before the watchers read it: hold their reads
                // back (until every read in flight has returned), change a live instance, then
                // trim or delete the log, then let them read.
                gate.close();
                await sleep(backendOptions.blockMs + 100);
                const target = [...live.values()].find((l) => l.service === fault.service);
                count(ops, 'fault-write');
                await target?.registration
                  .setMetadata({ fault: String(at) })
                  .catch((error: unknown) => {
                    count(opErrors, `fault-write: ${errorKind(error)}`);
                  });
              }
              await inject(harness, admin, dir, keysOf(fault.service), fault).finally(() => {
                gate.open();
              });
              done.push(`${fault.kind}${describeFault(fault)}@${at}`);
            } catch (error) {
              faultErrors.push(`${fault.kind}@${at}: ${String(error)}`);
            }
          }
        };

        try {
          await Promise.all([churn(), faults()]);
          stopping = true;
          // Quiescence: Redis up, no more churn or faults. Live registrations keep heartbeating;
          // abandoned ones expire and are reaped.
          if (harness.node(0).state === 'paused') harness.resume(0);
          if (harness.node(0).state === 'killed') await harness.restart(0);
          await settle(admin);
          const quiet = performance.now();
          // The store's truth, one fingerprint (id, status, weight, metadata) per record.
          const truth = async (service: string): Promise<string[]> => {
            try {
              const records = await admin.hgetall(keysOf(service).records);
              return Object.entries(records)
                .map(([id, json]) => fingerprint(id, parse(json)))
                .sort();
            } catch {
              return ['<redis unreachable>'];
            }
          };
          const expected = (service: string): string[] =>
            [...live.entries()]
              .filter(([, l]) => l.service === service)
              .map(([id]) => id)
              .sort();
          let converged: number | undefined;
          let streak = 0;
          let last = '';
          while (performance.now() - quiet < CONVERGE_LIMIT_MS) {
            const mismatches: string[] = [];
            for (const service of SERVICES) {
              const store = await truth(service);
              const ids = store.map((f) => f.slice(0, f.indexOf(' ')));
              const want = expected(service);
              if (ids.join() !== want.join())
                mismatches.push(`${service}: store [${ids.join()}] ≠ live [${want.join()}]`);
              for (const h of histories) {
                if (h.watch.service !== service) continue;
                const view = h.watch
                  .instances()
                  .map((i) => fingerprint(i.id, i))
                  .sort();
                if (view.join() !== store.join()) {
                  const missing = store.filter((f) => !view.includes(f));
                  const extra = view.filter((f) => !store.includes(f));
                  mismatches.push(
                    `watcher ${h.watcher} ${service}: view lacks [${missing.join(', ')}], has extra [${extra.join(', ')}]`,
                  );
                }
              }
            }
            last = mismatches.join('; ');
            streak = mismatches.length === 0 ? streak + 1 : 0;
            if (streak === 3) {
              converged = performance.now() - quiet;
              break;
            }
            await sleep(50);
          }
          const lostRegistrations = [...live.values()]
            .filter((l) => l.registration.state === 'closed' || l.registration.state === 'replaced')
            .map((l) => `${l.registration.id} (${l.registration.state})`);
          const problems = histories.flatMap((h) =>
            h.history.problems.map((p) => `watcher ${h.watcher} ${h.watch.service}: ${p}`),
          );
          const failed: string[] = [];
          if (converged === undefined) failed.push('discovery-convergence');
          if (evictions.length > 0) failed.push('discovery-eviction');
          if (problems.length > 0) failed.push('discovery-history');
          if (lostRegistrations.length > 0) failed.push('discovery-registrations');
          const known = knownBugs();
          const failing = failed.filter((c) => !known.has(c));
          const tolerated = failed.filter((c) => known.has(c));
          if ((ops.register ?? 0) === 0) failing.push('progress');
          if (faultErrors.length > 0) failing.push('fault-runner');
          const rerun = rerunCommand('test/chaos/discovery.chaos.test.ts', seed, seconds);
          const resyncs = histories.reduce((n, h) => n + h.watch.resyncs, 0);
          const text = [
            `discovery chaos: seed ${seed}, ${seconds} s, ${WRITERS} writers, ${WATCHERS} watchers × ${SERVICES.length} services`,
            `  churn: ${JSON.stringify(ops)}, errors: ${JSON.stringify(opErrors)}; live at quiescence ${live.size}; watcher resyncs ${resyncs}`,
            `  faults: ${JSON.stringify(countKinds(done))} — ${done.join(' ')}`,
            `  convergence after quiescence: ${converged === undefined ? `NOT within ${CONVERGE_LIMIT_MS} ms (${last})` : `${Math.round(converged)} ms`}`,
            `  evictions of live instances: ${evictions.length}${evictions.length > 0 ? ' ' + evictions.slice(0, 5).join('; ') : ''}`,
            `  removals of live instances with no heartbeat acknowledged within their ttl (expired by right): ${unacknowledged.length}${unacknowledged.length > 0 ? ' ' + unacknowledged.slice(0, 5).join('; ') : ''}`,
            `  history problems: ${problems.length}${problems.length > 0 ? ' ' + problems.slice(0, 5).join('; ') : ''}`,
            `  live registrations closed or replaced: ${lostRegistrations.length}${lostRegistrations.length > 0 ? ' ' + lostRegistrations.join(', ') : ''}`,
            ...(faultErrors.length > 0 ? [`  fault errors: ${faultErrors.join('; ')}`] : []),
            ...(tolerated.length > 0
              ? [`  tolerated (KEEL_CHAOS_KNOWN_BUGS): ${tolerated.join(', ')}`]
              : []),
            `  rerun: ${rerun}`,
          ].join('\n');
          console.log(text);
          expect(failing, text).toEqual([]);
        } finally {
          stopping = true;
          for (const h of histories) h.history.dispose();
          if (harness.node(0).state === 'paused') harness.resume(0);
          for (const close of closers.reverse()) await close();
          admin.disconnect();
          // The next run in this worker starts from an empty store.
          if (harness.node(0).state === 'killed') await harness.restart(0);
          await harness.flushAll();
        }
      },
      seconds * 1000 + CONVERGE_LIMIT_MS + 120_000,
    );
  },
);

/** Holds back the watchers' change-log reads while closed. */
class Gate {
  #passed: Promise<void> = Promise.resolve();
  #open: (() => void) | undefined;
  close(): void {
    if (this.#open !== undefined) return;
    this.#passed = new Promise((resolve) => (this.#open = resolve));
  }
  open(): void {
    this.#open?.();
    this.#open = undefined;
    this.#passed = Promise.resolve();
  }
  get passed(): Promise<void> {
    return this.#passed;
  }
}

/**
 * A discovery client whose blocking reader (its `duplicate()`) waits at `gate` before each
 * XREAD: a watcher that is slow to read, as in test/discovery/redis-faults.test.ts.
 */
function gatedClient(
  real: Redis,
  gate: Gate,
  closers: (() => Promise<void> | void)[],
): DiscoveryRedisClient {
  return {
    evalsha: (...args) => real.evalsha(...args),
    eval: (...args) => real.eval(...args),
    call: (command, ...args) => real.call(command, ...args),
    disconnect: () => {
      real.disconnect();
    },
    on: (event, listener) => real.on(event, listener),
    duplicate: () => {
      const copy = real.duplicate();
      copy.on('error', () => undefined);
      closers.push(() => {
        copy.disconnect();
      });
      return {
        evalsha: (...args) => copy.evalsha(...args),
        eval: (...args) => copy.eval(...args),
        call: async (command, ...args) => {
          if (command === 'XREAD') await gate.passed;
          return copy.call(command, ...args);
        },
        disconnect: () => {
          copy.disconnect();
        },
        on: (event, listener) => copy.on(event, listener),
        duplicate: () => {
          throw new Error('the gated reader is not duplicated');
        },
      };
    },
  };
}

/** What a view must agree with the store on, for one instance. */
function fingerprint(id: string, record: unknown): string {
  const r = (typeof record === 'object' && record !== null ? record : {}) as Record<
    string,
    unknown
  >;
  const metadata = Object.entries((r.metadata ?? {}) as Record<string, unknown>).sort(([a], [b]) =>
    a < b ? -1 : a > b ? 1 : 0,
  );
  return `${id} ${String(r.status)} ${String(r.weight)} ${JSON.stringify(metadata)}`;
}

function parse(json: string): unknown {
  try {
    return JSON.parse(json) as unknown;
  } catch {
    return undefined;
  }
}

/** An error's stable code (Keel errors), else its name marked untyped. */
function errorKind(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'code' in error) {
    const code = error.code;
    if (typeof code === 'string') return code;
  }
  return error instanceof Error ? `untyped ${error.name}` : `thrown ${typeof error}`;
}

function countKinds(done: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const d of done) {
    const kind = /^[a-z-]+/.exec(d)?.[0] ?? d;
    out[kind] = (out[kind] ?? 0) + 1;
  }
  return out;
}

/** How a fault is shown in the report: its hold, or the service it hit, or nothing. */
function describeFault(fault: Fault): string {
  if (HELD.has(fault.kind)) return `+${fault.holdMs}`;
  if (SERVER_WIDE.has(fault.kind)) return '';
  return `:${fault.service}`;
}

/** Faults that last `holdMs`. */
const HELD = new Set<DiscoveryFault>([
  'pause',
  'restart',
  'restart-empty',
  'busy',
  'pause-writes',
  'oom',
]);
/** Faults of the whole server that hold for no time. */
const SERVER_WIDE = new Set<DiscoveryFault>(['drop', 'flush-scripts']);

/** Undoes what a fault cut short may have left on the server (memory limit, client pause). */
async function settle(admin: Redis): Promise<void> {
  await retried(() => admin.call('CONFIG', 'SET', 'maxmemory', '0'));
  await retried(() => admin.call('CLIENT', 'UNPAUSE'));
}

/** Carries out one fault on the single Redis node. */
async function inject(
  harness: RedisHarness,
  admin: Redis,
  dir: string,
  keys: ServiceKeys,
  fault: Fault,
): Promise<void> {
  const log = keys.log;
  switch (fault.kind) {
    case 'pause':
      harness.pause(0);
      await sleep(fault.holdMs);
      harness.resume(0);
      return;
    case 'restart':
      await harness.kill(0);
      await sleep(fault.holdMs);
      await harness.restart(0);
      return;
    case 'restart-empty':
      await harness.kill(0);
      wipeDir(dir);
      await sleep(fault.holdMs);
      await harness.restart(0);
      return;
    case 'trim':
      await retried(() => admin.xtrim(log, 'MAXLEN', 0));
      return;
    case 'delete-log':
      await retried(() => admin.del(log));
      return;
    case 'delete-records':
      // Live instances re-register at their next heartbeat; the abandoned ones have no record,
      // no lease and no log entry left: only the readers' record count tells the views.
      await retried(() => admin.del(keys.records, keys.leases));
      return;
    case 'foreign':
      await retried(() => admin.xadd(log, '*', 'foreign', 'entry'));
      return;
    case 'drop':
      // Every connection but this one: the registries' writes and heartbeats, the watchers'
      // blocking reads.
      await retried(() => admin.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes'));
      return;
    case 'flush-scripts':
      await retried(() => admin.call('SCRIPT', 'FLUSH'));
      return;
    case 'busy':
      // The server answers nobody for holdMs, connections stay open.
      await retried(() => admin.call('DEBUG', 'SLEEP', String(fault.holdMs / 1000)));
      return;
    case 'pause-writes':
      // Every writing script waits (a script without flags counts as a write); XREAD and the
      // readers' probe (a no-writes script) go on.
      await retried(() => admin.call('CLIENT', 'PAUSE', String(fault.holdMs), 'WRITE'));
      await sleep(fault.holdMs);
      return;
    case 'oom':
      await retried(() => admin.call('CONFIG', 'SET', 'maxmemory-policy', 'noeviction'));
      await retried(() => admin.call('CONFIG', 'SET', 'maxmemory', '1'));
      try {
        await sleep(fault.holdMs);
      } finally {
        await retried(() => admin.call('CONFIG', 'SET', 'maxmemory', '0'));
      }
      return;
  }
}

/** Retries a command for a few seconds (the admin connection may be reconnecting). */
async function retried(command: () => Promise<unknown>): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await command();
      return;
    } catch (error) {
      if (attempt >= 40) throw error;
      await sleep(100);
    }
  }
}
