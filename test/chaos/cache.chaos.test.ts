/**
 * Cache chaos: four processes read a small key set through `getOrLoad` against a versioned
 * "database" (a version counter per key on a second Redis, never faulted), and each key's one
 * writer bumps its version and invalidates the cache (`delete`, or `set` of the new version),
 * while a seeded scheduler pauses (SIGSTOP/SIGCONT) and kills/restarts (empty) the cache's Redis,
 * drops every client connection at once (`CLIENT KILL TYPE normal`) and SIGKILLs processes while their loader runs (lease holders), restarting them. An observer
 * reads the raw L2 entries throughout. Then a calm phase (Redis healthy, no writes) measures
 * loader calls per expiry. The checker over the recorded history (cache-worker.ts) requires:
 *
 * - stale write-backs 0: no L2 entry filled by a load that read version v is seen after an
 *   invalidation of a version V > v had landed (a load that started before an invalidation never
 *   lands after it — the memcache lease rule);
 * - too old 0: no getOrLoad returns a value read from the database more than ttl + staleMs (the
 *   documented staleness bound; grace is off) before the call started, and none returns a
 *   version older than an invalidation that landed more than that bound before the call;
 * - hangs 0: no call outlasts its bound (getOrLoad: maxWaitMs + 4 per-call Redis timeouts + the
 *   loader; set/delete: one Redis timeout; each + 1.5 s of margin for a loaded machine);
 * - errors 0: every getOrLoad answers (Redis down degrades to L1 and the loader);
 * - duplicate loads 0 in the calm phase: per key, no loader call starts within half a ttl of the
 *   previous one's database read (loader ≤ 1 per key per expiry, across processes; the workers
 *   run with XFetch off, `beta: 0`, whose early refreshes would be such loads by design).
 *
 * Bounded by default (5 s of chaos); `KEEL_CHAOS_S=120 npx vitest run test/chaos/cache.chaos.test.ts`
 * runs longer and `KEEL_CHAOS_SEED=<seed>` reruns a schedule (see config.ts).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import { describeRedis, useRedis } from '../support/vitest.js';
import type { CacheWorkerConfig, FromWorker, ToWorker } from './cache-worker.js';
import { between, chaosSeconds, chaosSeed, hostNow, prng, rerunCommand, sleep } from './config.js';

const seconds = chaosSeconds(5);
const root = join(import.meta.dirname, '..', '..');
const workerScript = join(import.meta.dirname, 'cache-worker.ts');
const FILE = 'test/chaos/cache.chaos.test.ts';

const WORKERS = 4;
const KEYS = Array.from({ length: 6 }, (_, i) => `k${i}`);
const TTL_MS = 600;
const STALE_MS = 200;
const LEASE_TTL_MS = 1_000;
const MAX_WAIT_MS = 2_000;
const REDIS_TIMEOUT_MS = 300;
const LOADER_MAX_MS = 60;
/** Margin for a loaded 2-core machine (event-loop delay between a reply and a clock read). */
const SLACK_MS = 250;
const HANG_MARGIN_MS = 1_500;
const CALM_MS = 2_400;

interface Worker {
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  loading: number;
}

interface Invalidation {
  readonly version: number;
  readonly start: number;
  readonly end: number;
  readonly kind: string;
}

/** Highest version among `invs` (sorted by end) that landed before `t`; 0 if none. */
function landedBefore(invs: readonly Invalidation[], t: number): number {
  let top = 0;
  for (const inv of invs) {
    if (inv.end >= t) break;
    if (inv.version > top) top = inv.version;
  }
  return top;
}

describeRedis(
  'cache chaos (Redis paused/killed, lease holders SIGKILLed, writers invalidating)',
  () => {
    // Node 0: the cache's Redis (faulted). Node 1: the "database" and the history (never faulted).
    const redis = useRedis({ count: 2 });

    it(
      'stale write-backs 0, too old 0, hangs 0, errors 0, duplicate loads 0 while healthy',
      async () => {
        const seed = chaosSeed();
        const random = prng(seed);
        const port = redis().port(0);
        const db = redis().client(1);
        const workers = new Map<number, Worker>();
        const faults = { pauses: 0, restarts: 0, drops: 0, killedLoading: 0, killedIdle: 0 };
        // Drops every other client connection of the cache's Redis (see the schedule).
        const admin = redis().client(0);
        let generation = 0;
        let calm = false;
        const start = (slot: number): void => {
          const config: CacheWorkerConfig = {
            port,
            dbPort: redis().port(1),
            seed: (seed + 7919 * ++generation) >>> 0,
            keys: KEYS,
            owned: KEYS.filter((_, i) => i % WORKERS === slot),
            readers: 4,
            calm,
            ttlMs: TTL_MS,
            staleMs: STALE_MS,
            leaseTtlMs: LEASE_TTL_MS,
            maxWaitMs: MAX_WAIT_MS,
            redisTimeoutMs: REDIS_TIMEOUT_MS,
          };
          const child = fork(workerScript, [JSON.stringify(config)], {
            cwd: root,
            execArgv: ['--import', 'tsx'],
            stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
          });
          let ready = (): void => undefined;
          const worker: Worker = {
            child,
            loading: 0,
            ready: new Promise((resolve) => (ready = resolve)),
            exited: new Promise((resolve) => child.once('exit', () => resolve())),
          };
          child.on('message', (m: FromWorker) => {
            if (m.t === 'ready') ready();
            else if (m.t === 'loading') worker.loading++;
            else if (m.t === 'loaded') worker.loading--;
          });
          workers.set(slot, worker);
        };
        const tell = (message: ToWorker): void => {
          for (const w of workers.values())
            if (w.child.connected) w.child.send(message, () => undefined);
        };

        // The observer: raw L2 entries, read throughout (only what a load filled is kept).
        const observer = new Redis({
          host: '127.0.0.1',
          port,
          commandTimeout: 200,
          maxRetriesPerRequest: 0,
          retryStrategy: () => 100,
        });
        observer.on('error', () => undefined);
        const seen: { key: string; v: number; sentAt: number }[] = [];
        const observing = { on: true };
        const observe = (async () => {
          const raw = KEYS.map((k) => `keel:cache:{default:${k}}`);
          while (observing.on) {
            const sentAt = hostNow();
            const values = await observer.mget(...raw).catch(() => []);
            values.forEach((text, i) => {
              if (typeof text !== 'string') return;
              const value = JSON.parse(text.slice(text.indexOf('\n') + 1)) as {
                v: number;
                src: string;
              };
              if (value.src === 'load') seen.push({ key: KEYS[i] ?? '', v: value.v, sentAt });
            });
            await sleep(10);
          }
        })();

        try {
          const t0 = performance.now();
          const phases: string[] = [];
          const mark = (name: string): void => {
            phases.push(`${name} ${((performance.now() - t0) / 1000).toFixed(1)} s`);
          };
          for (let slot = 0; slot < WORKERS; slot++) start(slot);
          await Promise.all([...workers.values()].map((w) => w.ready));
          mark('started');
          const deadline = performance.now() + seconds * 1000;
          // The schedule: its choices and waits come from the seed; which process is loading at
          // the moment of a kill is the machine's timing.
          while (performance.now() < deadline - 300) {
            await sleep(between(random, 150, 600));
            const roll = random();
            if (roll < 0.3) {
              redis().pause(0);
              faults.pauses++;
              await sleep(between(random, 100, 1_200));
              redis().resume(0);
            } else if (roll < 0.5) {
              await redis().kill(0);
              faults.restarts++;
              await sleep(between(random, 0, 800));
              await redis().restart(0);
            } else if (roll < 0.65) {
              // Every connection but the admin's at once: ioredis reconnects and sends again
              // what was unanswered, so a script may run twice for one call.
              // The admin connection may itself be reconnecting after a restart: a few tries.
              for (let i = 0; i < 20; i++) {
                const ok = await admin
                  .call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes')
                  .then(
                    () => true,
                    () => false,
                  );
                if (ok) {
                  faults.drops++;
                  break;
                }
                await sleep(100);
              }
            } else {
              const slots = [...workers.keys()];
              // Aim at a lease holder: wait a little for a process to be inside its loader.
              const aimUntil = performance.now() + 300;
              const isLoading = (s: number): boolean => (workers.get(s)?.loading ?? 0) > 0;
              while (!slots.some(isLoading) && performance.now() < aimUntil) await sleep(5);
              const loading = slots.filter(isLoading);
              const pool = loading.length > 0 ? loading : slots;
              const slot = pool[between(random, 0, pool.length - 1)] ?? 0;
              const w = workers.get(slot);
              if (w === undefined) continue;
              if (loading.length > 0) faults.killedLoading++;
              else faults.killedIdle++;
              w.child.kill('SIGKILL');
              await w.exited;
              await sleep(between(random, 0, 300));
              start(slot);
            }
          }
          // Calm: Redis healthy, no writes (a process still starting after its kill starts calm);
          // let the chaos-era entries expire first.
          mark('chaos over');
          calm = true;
          tell({ t: 'calm' });
          await sleep(TTL_MS + STALE_MS + 800);
          const calmStart = hostNow();
          await sleep(CALM_MS);
          const calmEnd = hostNow();
          // A stop sent before a process listens would be lost: wait for every one to be up.
          await Promise.race([
            Promise.all([...workers.values()].map((w) => w.ready)),
            sleep(20_000),
          ]);
          tell({ t: 'stop' });
          await Promise.race([
            Promise.all([...workers.values()].map((w) => w.exited)),
            sleep(20_000),
          ]);
          mark('stopped');
          observing.on = false;
          await observe;

          // The history.
          const invs = new Map<string, Invalidation[]>();
          const loads = new Map<string, { start: number; readAt: number }[]>();
          for (const key of KEYS) {
            invs.set(
              key,
              (await db.lrange(`log:inv:${key}`, 0, -1))
                .map((line) => {
                  const [version, s, e, kind] = line.split('|');
                  return {
                    version: Number(version),
                    start: Number(s),
                    end: Number(e),
                    kind: kind ?? '',
                  };
                })
                .sort((a, b) => a.end - b.end),
            );
            loads.set(
              key,
              (await db.lrange(`log:load:${key}`, 0, -1))
                .map((line) => {
                  const [s, r] = line.split('|');
                  return { start: Number(s), readAt: Number(r) };
                })
                .sort((a, b) => a.start - b.start),
            );
          }
          const reads = (await db.lrange('log:read', 0, -1)).map((line) => {
            const [key = '', v, src, readAt, s, e] = line.split('|');
            return {
              key,
              v: Number(v),
              src,
              readAt: Number(readAt),
              start: Number(s),
              end: Number(e),
            };
          });
          const calls = (await db.lrange('log:call', 0, -1)).map((line) => {
            const [op = '', ms] = line.split('|');
            return { op, ms: Number(ms) };
          });
          const errors = await db.lrange('log:error', 0, -1);

          // 1. Stale write-backs, seen in L2 by the observer.
          const staleWriteBacks = seen.filter(
            (o) => o.v < landedBefore(invs.get(o.key) ?? [], o.sentAt),
          );
          // 2. Too old: by age, and behind an invalidation that landed more than the bound ago.
          const bound = TTL_MS + STALE_MS + SLACK_MS;
          const tooOld = reads.filter((r) => r.start - r.readAt > bound);
          const behind = reads.filter(
            (r) => r.v < landedBefore(invs.get(r.key) ?? [], r.start - bound),
          );
          // 3. Hangs.
          const getBound = MAX_WAIT_MS + 4 * REDIS_TIMEOUT_MS + LOADER_MAX_MS + HANG_MARGIN_MS;
          const writeBound = REDIS_TIMEOUT_MS + HANG_MARGIN_MS;
          const hangs = calls.filter((c) => c.ms > (c.op === 'get' ? getBound : writeBound));
          const longest = (op: string): number =>
            Math.round(Math.max(0, ...calls.filter((c) => c.op === op).map((c) => c.ms)));
          // 4. Calm phase: loader calls per key per expiry.
          let calmLoads = 0;
          const duplicates: string[] = [];
          for (const key of KEYS) {
            const list = (loads.get(key) ?? []).filter(
              (l) => l.start >= calmStart && l.start < calmEnd,
            );
            calmLoads += list.length;
            for (let i = 1; i < list.length; i++) {
              const gap = (list[i]?.start ?? 0) - (list[i - 1]?.readAt ?? 0);
              if (gap < 0.45 * TTL_MS) duplicates.push(`${key} +${Math.round(gap)} ms`);
            }
          }
          const expiries = (KEYS.length * CALM_MS) / TTL_MS;
          const allInvs = [...invs.values()].flat();
          const allLoads = [...loads.values()].flat();

          const report = [
            `cache chaos: seed ${seed}, ${seconds} s, ${WORKERS} processes × 4 readers, ${KEYS.length} keys, ttl ${TTL_MS} ms + stale ${STALE_MS} ms`,
            `  faults: Redis paused ${faults.pauses}, killed+restarted empty ${faults.restarts}, all connections dropped ${faults.drops}, processes SIGKILLed while loading ${faults.killedLoading} (idle ${faults.killedIdle})`,
            `  reads ${reads.length}, loader calls ${allLoads.length}, invalidations landed ${allInvs.length} (delete ${allInvs.filter((i) => i.kind === 'delete').length}, set ${allInvs.filter((i) => i.kind === 'set').length}), L2 fills observed ${seen.length}`,
            `  stale write-backs ${staleWriteBacks.length}${staleWriteBacks.length > 0 ? ` e.g. ${JSON.stringify(staleWriteBacks.slice(0, 3))}` : ''}`,
            `  too old ${tooOld.length} (oldest served ${Math.round(Math.max(0, ...reads.map((r) => r.start - r.readAt)))} ms, bound ${bound}), behind a landed invalidation ${behind.length}`,
            `  hangs ${hangs.length} (longest getOrLoad ${longest('get')} ms of ${getBound}, set ${longest('set')} / delete ${longest('delete')} ms of ${writeBound}), errors ${errors.length}${errors.length > 0 ? ` e.g. ${errors.slice(0, 3).join('; ')}` : ''}`,
            `  calm ${CALM_MS} ms: loader calls ${calmLoads} for ${expiries} expiries (${(calmLoads / expiries).toFixed(2)} per expiry), duplicate loads ${duplicates.length}${duplicates.length > 0 ? ` e.g. ${duplicates.slice(0, 5).join(', ')}` : ''}`,
            `  timeline: ${phases.join(', ')}`,
            `  rerun: ${rerunCommand(FILE, seed, seconds)}`,
          ].join('\n');
          console.log(report);
          expect(
            {
              staleWriteBacks: staleWriteBacks.length,
              tooOld: tooOld.length,
              behind: behind.length,
              hangs: hangs.length,
              errors: errors.length,
              duplicates: duplicates.length,
            },
            report,
          ).toEqual({
            staleWriteBacks: 0,
            tooOld: 0,
            behind: 0,
            hangs: 0,
            errors: 0,
            duplicates: 0,
          });
          // The run exercised what it claims to.
          expect(reads.length, report).toBeGreaterThan(100);
          expect(allInvs.length, report).toBeGreaterThan(0);
          expect(calmLoads, report).toBeGreaterThan(0);
        } finally {
          observing.on = false;
          if (redis().node(0).state === 'paused') redis().resume(0);
          else if (redis().node(0).state === 'killed') await redis().restart(0);
          tell({ t: 'stop' });
          await Promise.race([
            Promise.all([...workers.values()].map((w) => w.exited)),
            sleep(10_000),
          ]);
          // Only our own children, by pid, and only those still running.
          for (const w of workers.values()) if (w.child.exitCode === null) w.child.kill('SIGKILL');
          observer.disconnect();
          await redis().flushAll();
        }
      },
      seconds * 1000 + 120_000,
    );
  },
);
