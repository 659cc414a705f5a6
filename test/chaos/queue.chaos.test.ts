/**
 * Queue chaos: consumer processes handle a stream of keyed messages through the idempotent
 * helper while a seeded scheduler SIGKILLs consumers mid-handler (and restarts them), pauses
 * Redis (SIGSTOP/SIGCONT), drops every client connection at once (`CLIENT KILL TYPE normal`:
 * replies in flight are lost, and ioredis sends those commands again), and the handlers fail at
 * random (before and after their effect); some messages are poison and always fail. At
 * quiescence the checker counts:
 *
 * - lost: sent messages neither handled (effect recorded) nor in the dead-letter stream when the
 *   drain stalled (no message finished for 20 s) — must be 0;
 * - undrained: the same, when the drain's time ran out while messages were still finishing — must
 *   be 0 too, but it is no loss: ordered mode handles a partition one message at a time, and a
 *   long run on a loaded machine leaves a backlog that drains slowly (the report then shows how
 *   many finished in the drain's last 20 s, and per partition who holds it and what is pending);
 * - duplicate effects: messages whose effect was applied more than once — must be 0;
 * - out-of-order (ordered mode): per key, effects not in send order — must be 0;
 * - poison handled: a poison message with an effect — must be 0;
 * - dead letters reported twice: `onDeadLetter` events for one message beyond the first — must be
 *   0. Dead letters never reported are counted, not judged: a consumer SIGKILLed between its
 *   dead-letter step and the event (or its record) loses the report.
 *
 * Bounded by default (6 s of chaos per mode); `KEEL_CHAOS_S=120` runs longer and
 * `KEEL_CHAOS_SEED=<seed>` reruns a schedule (see config.ts).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { Queue } from '../../src/queue/index.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { between, chaosSeconds, chaosSeed, prng, rerunCommand, sleep } from './config.js';
import { DrainWatch, drainVerdict, type DrainEnd } from './drain.js';
import type { ChaosPayload, QueueWorkerConfig } from './queue-worker.js';

const seconds = chaosSeconds(6);
/**
 * The whole test's time: the chaos, then the drain, then the report and cleanup. Generous, since
 * ordered mode handles a partition one message at a time, slower than the producers send: a
 * 120 s run on a loaded 2-core machine left a backlog of 35 000 messages that took over 10
 * minutes to drain (the drain stops much earlier on a stall, see below).
 */
const timeoutMs = seconds * 10_000 + 150_000;
/** Time kept after the drain for the report and the cleanup. */
const afterDrainMs = 60_000;
const root = join(import.meta.dirname, '..', '..');
const workerScript = join(import.meta.dirname, 'queue-worker.ts');
const FILE = 'test/chaos/queue.chaos.test.ts';

interface Worker {
  name: string;
  child: ChildProcess;
  ready: Promise<void>;
  exited: Promise<number | null>;
}

describeRedis('queue chaos (consumers killed, Redis paused, connections dropped)', () => {
  const redis = useRedis({ count: 1 });

  for (const ordered of [true, false]) {
    it(
      `${ordered ? 'ordered' : 'unordered'}: lost 0, duplicate effects 0${ordered ? ', out-of-order 0' : ''}`,
      async () => {
        const testStart = performance.now();
        const seed = chaosSeed();
        const random = prng(seed);
        const port = redis().port(0);
        const client = redis().client(0);
        const partitions = 4;
        const queue = new Queue({ client, partitions });
        const workers = new Map<number, Worker>();
        const counts = { kills: 0, pauses: 0, drops: 0, sent: 0, restarts: 0 };
        const admin = redis().client(0);
        let generation = 0;
        /** Names of the workers SIGKILLed (to explain a dead letter never reported). */
        const killed = new Set<string>();
        const start = (slot: number): void => {
          const config: QueueWorkerConfig = {
            port,
            name: `w${slot}-${generation++}`,
            seed: seed + generation,
            ordered,
            partitions,
          };
          const child = fork(workerScript, [JSON.stringify(config)], {
            cwd: root,
            execArgv: ['--import', 'tsx'],
            stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
          });
          workers.set(slot, {
            name: config.name,
            child,
            ready: new Promise((resolve) =>
              child.on('message', (m: { t: string }) => {
                if (m.t === 'ready') resolve();
              }),
            ),
            exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))),
          });
        };
        const sent: { id: string; key: string; seq: number; poison: boolean }[] = [];
        try {
          for (let w = 0; w < 3; w++) start(w);
          await Promise.all([...workers.values()].map((w) => w.ready));
          const deadline = performance.now() + seconds * 1000;
          const keys = Array.from({ length: 8 }, (_, i) => `k${i}`);
          const nextSeq = new Map<string, number>();
          // Producers: one sequential sender per key (send order is the order to keep).
          const producers = keys.map(async (key) => {
            while (performance.now() < deadline) {
              const seq = nextSeq.get(key) ?? 0;
              nextSeq.set(key, seq + 1);
              const poison = random() < 0.03;
              const id = `${key}-${seq}`;
              const payload: ChaosPayload = { key, seq, poison };
              await queue.send('chaos', payload, { key, id });
              sent.push({ id, key, seq, poison });
              await sleep(between(random, 2, 25));
            }
          });
          // Faults.
          const faults = (async () => {
            while (performance.now() < deadline - 500) {
              await sleep(between(random, 200, 700));
              if (random() < 0.65) {
                const slot = between(random, 0, 2);
                const w = workers.get(slot);
                if (w !== undefined && w.child.exitCode === null) {
                  w.child.kill('SIGKILL');
                  killed.add(w.name);
                  counts.kills++;
                  await w.exited;
                  await sleep(between(random, 0, 400));
                  start(slot);
                  counts.restarts++;
                }
              } else if (random() < 0.6) {
                redis().pause(0);
                counts.pauses++;
                await sleep(between(random, 100, 1500));
                redis().resume(0);
              } else {
                // Every connection dropped at once (the producer's, each consumer's and each
                // reader's): replies in flight are lost, and ioredis reconnects and sends the
                // unanswered commands again — blocking reads included.
                await admin.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
                counts.drops++;
              }
            }
          })();
          await Promise.all([...producers, faults]);
          counts.sent = sent.length;
          // Quiescence: every sent message handled or dead-lettered. The drain stops at a stall —
          // no message finished for 20 s: what is left is lost (or stuck, which is as bad) — or
          // when its time runs out while messages still finish: what is left then is undrained,
          // not lost (a slow drain; ordered mode handles a partition one message at a time, slower
          // than the producers send, so a long run on a loaded machine leaves a long backlog).
          const drainStart = performance.now();
          const watch = new DrainWatch({
            startedAt: drainStart,
            stallMs: 20_000,
            budgetMs: Math.max(90_000, timeoutMs - (drainStart - testStart) - afterDrainMs),
          });
          let openAtEnd: number | undefined;
          let handled = new Map<string, number>();
          let dead = new Set<string>();
          let end: DrainEnd | undefined;
          /** Open counts of the last 20 s of the drain, to tell a slow drain from a stuck one. */
          const recent: { at: number; open: number }[] = [];
          for (;;) {
            handled = new Map(
              Object.entries(await client.hgetall('{fx}:count')).map(([k, v]) => [k, Number(v)]),
            );
            dead = new Set(
              (await queue.deadLetters('chaos', { limit: 1_000_000 })).flatMap((l) =>
                l.id === undefined ? [] : [l.id],
              ),
            );
            const open = sent.filter((m) => !handled.has(m.id) && !dead.has(m.id));
            openAtEnd ??= open.length;
            const now = performance.now();
            recent.push({ at: now, open: open.length });
            while ((recent[0]?.at ?? now) < now - 20_000) recent.shift();
            end = watch.observe(open.length, now);
            if (end !== undefined) break;
            await sleep(200);
          }
          const open = sent.filter((m) => !handled.has(m.id) && !dead.has(m.id));
          const verdict = drainVerdict(end, open.length);
          const finishedLately = (recent[0]?.open ?? 0) - open.length;
          const lost = verdict.lost > 0 ? open : [];
          const duplicates = [...handled].filter(([, n]) => n > 1);
          const poisonHandled = sent.filter((m) => m.poison && handled.has(m.id));
          const bothWays = sent.filter((m) => handled.has(m.id) && dead.has(m.id));
          const reportsOf = new Map<string, number>();
          for (const member of await client.smembers('{fx}:dead-reported')) {
            const id = member.split(' ')[0] ?? '';
            reportsOf.set(id, (reportsOf.get(id) ?? 0) + 1);
          }
          const reportedTwice = [...reportsOf].filter(([, n]) => n > 1);
          const unreported = [...dead].filter((id) => !reportsOf.has(id));
          const letters =
            unreported.length > 0 ? await queue.deadLetters('chaos', { limit: 1_000_000 }) : [];
          let outOfOrder = 0;
          const samples: string[] = [];
          if (ordered) {
            for (const key of keys) {
              const log = (await client.lrange(`{fx}:log:${key}`, 0, -1)).map(Number);
              for (let i = 1; i < log.length; i++) {
                if ((log[i] ?? 0) <= (log[i - 1] ?? 0)) {
                  outOfOrder++;
                  if (samples.length < 5) samples.push(`${key}: ${log[i - 1]} then ${log[i]}`);
                }
              }
            }
          }
          // Where the unfinished messages are, per partition: waiting to be read (lag), read and
          // not acked (pending), waiting for a retry (delayed), so a failure says whether
          // messages are gone or stuck, and where.
          const where: string[] = [];
          if (open.length > 0) {
            for (let p = 0; p < partitions; p++) {
              const tag = `{chaos:${p}}`;
              const groups = (await client
                .xinfo('GROUPS', `keel:q:${tag}:s`)
                .catch((e: unknown) => [String(e)])) as unknown[];
              // Who holds the partition (lease) and who has its pending entries, how idle: a
              // partition stuck behind a pending entry shows the same entry with a growing idle
              // time, a slow one a fresh entry with little idle.
              const pending = await client
                .call('XPENDING', `keel:q:${tag}:s`, 'g', '-', '+', 3)
                .catch((e: unknown) => String(e));
              const lease = `keel:q:${tag}:lease:g`;
              where.push(
                `  partition ${p}: XLEN ${await client.xlen(`keel:q:${tag}:s`)}, delayed ` +
                  `${await client.zcard(`keel:q:${tag}:d`)}, lease ${await client.get(lease)} ` +
                  `(ttl ${await client.pttl(lease)} ms), pending [entry, consumer, idle ms, ` +
                  `deliveries] ${JSON.stringify(pending)}, groups ${JSON.stringify(groups)}`,
              );
            }
          }
          const report = [
            `queue chaos (${ordered ? 'ordered' : 'unordered'}): seed ${seed}, ${seconds} s, 3 consumer processes, ${partitions} partitions`,
            `  sent ${sent.length} (poison ${sent.filter((m) => m.poison).length}), handled ${handled.size}, dead-lettered ${dead.size} (handled and dead-lettered: ${bothWays.length})`,
            `  dead letters reported by onDeadLetter ${reportsOf.size}, reported twice ${reportedTwice.length}${
              reportedTwice.length > 0
                ? ' e.g. ' +
                  reportedTwice
                    .slice(0, 5)
                    .map(([id]) => id)
                    .join(',')
                : ''
            }, never reported ${unreported.length}${
              unreported.length > 0
                ? ` (handled by a consumer SIGKILLed since: ${
                    letters.filter(
                      (l) =>
                        l.id !== undefined &&
                        unreported.includes(l.id) &&
                        l.consumers.some((c) => killed.has(c)),
                    ).length
                  })`
                : ''
            }`,
            `  faults: SIGKILL ${counts.kills} (restarted ${counts.restarts}), Redis paused ${counts.pauses}, all connections dropped ${counts.drops}`,
            `  open when the chaos ended ${openAtEnd}, drain ${end === 'done' ? 'done' : end === 'stalled' ? `stalled (nothing finished for 20 s)` : `out of time (still finishing: ${finishedLately} in its last 20 s)`} after ${Math.round((performance.now() - drainStart) / 1000)} s, undrained ${verdict.undrained}`,
            `  lost ${lost.length}${
              lost.length > 0
                ? ' e.g. ' +
                  lost
                    .slice(0, 5)
                    .map((m) => m.id)
                    .join(',')
                : ''
            }, duplicate effects ${duplicates.length}, ` +
              `out-of-order ${ordered ? outOfOrder : 'n/a'}${samples.length > 0 ? ' e.g. ' + samples.join('; ') : ''}, poison handled ${poisonHandled.length}`,
            ...where,
            `  rerun: ${rerunCommand(FILE, seed, seconds)}`,
          ].join('\n');
          console.log(report);
          expect(
            {
              lost: lost.length,
              undrained: verdict.undrained,
              duplicates: duplicates.length,
              outOfOrder,
              poisonHandled: poisonHandled.length,
              reportedTwice: reportedTwice.length,
            },
            report,
          ).toEqual({
            lost: 0,
            undrained: 0,
            duplicates: 0,
            outOfOrder: 0,
            poisonHandled: 0,
            reportedTwice: 0,
          });
          expect(sent.length, report).toBeGreaterThan(0);
        } finally {
          if (redis().node(0).state === 'paused') redis().resume(0);
          for (const w of workers.values())
            if (w.child.connected) w.child.send({ t: 'stop' }, () => undefined);
          await Promise.race([
            Promise.all([...workers.values()].map((w) => w.exited)),
            sleep(15_000),
          ]);
          // Only our own children, by pid, and only those still running.
          for (const w of workers.values()) if (w.child.exitCode === null) w.child.kill('SIGKILL');
          await queue.close();
          await redis().flushAll();
        }
      },
      timeoutMs,
    );
  }
});
