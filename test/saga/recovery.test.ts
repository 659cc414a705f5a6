/**
 * A coordinator process is SIGKILLed right after each state change of a saga in turn (the
 * 1st, 2nd, … accepted transition); another process with the same definitions takes the saga
 * over after its lease and finishes it. For every kill point: the saga ends as it would have
 * without the crash, no step's effect is applied twice, compensations run in reverse, and
 * nothing is written under the dead owner's fence after the takeover.
 */
import { fork } from 'node:child_process';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SagaCoordinator } from '../../src/saga/index.js';
import { prng } from '../chaos/config.js';
import { NO_FAULTS, chaosSaga, effectProblems, effectsOf } from '../chaos/saga-services.js';
import type { SagaWorkerConfig } from '../chaos/saga-worker.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const root = join(import.meta.dirname, '..', '..');
const workerScript = join(root, 'test', 'chaos', 'saga-worker.ts');
const LEASE_MS = 300;

/** Runs a kill-after worker to its death; resolves with the transitions it saw accepted. */
function killedAfter(
  port: number,
  id: string,
  killAfter: number,
  failStep?: string,
): Promise<number> {
  const config: SagaWorkerConfig = {
    mode: 'kill-after',
    port,
    worker: 0,
    seed: 1,
    leaseMs: LEASE_MS,
    id,
    killAfter,
    prefix: `keel:saga:${id.split('-')[0] ?? ''}:`,
    ...(failStep === undefined ? {} : { failStep }),
  };
  const child = fork(workerScript, [JSON.stringify(config)], {
    cwd: root,
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  let seen = 0;
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.on('message', (m: { t: string }) => {
    if (m.t === 'transition') seen++;
  });
  return new Promise((resolve, reject) => {
    child.once('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve(seen);
      else reject(new Error(`worker exited ${String(code)} without being killed: ${stderr}`));
    });
  });
}

describeRedis('recovery after a coordinator dies after each state change', () => {
  const redis = useRedis();
  let client: Redis;
  beforeAll(() => {
    client = redis().client(0);
  });
  afterAll(() => {
    client.disconnect();
  });

  const scenarios = [
    // start + begin/done × 4 steps = 9 transitions; the 9th finishes it. (A step's done and the
    // next step's begin land in one call, so dying after such a done is dying after that begin
    // too: both kill points are still run, and must agree.)
    { name: 'completing', failStep: undefined, transitions: 9, status: 'completed' },
    // start, a and b done, c begins twice (2 attempts; a crash during one counts as one),
    // fail, then cbegin/cdone for c, b, a = 14.
    { name: 'compensating', failStep: 'c', transitions: 14, status: 'compensated' },
  ] as const;

  it('another process finishes the saga correctly, with no duplicate effect, whichever transition the owner died after', async () => {
    const port = redis().node(0).port;
    const results: string[] = [];
    await Promise.all(
      scenarios.map(async (s) => {
        const saga = chaosSaga(client, prng(7), NO_FAULTS, {
          attempts: 2,
          timeoutMs: 10_000, // no hangs here; a loaded machine must not fail an attempt
          ...(s.failStep === undefined ? {} : { failStep: s.failStep }),
        });
        const survivor = new SagaCoordinator({
          redis: client,
          sagas: [saga],
          leaseMs: LEASE_MS,
          recovery: false,
          shards: 4,
          prefix: `keel:saga:${s.name}:`,
          owner: `survivor-${s.name}`,
        });
        try {
          for (let k = 1; k < s.transitions; k++) {
            const id = `${s.name}-${k}`;
            const seen = await killedAfter(port, id, k, s.failStep);
            expect(seen, `${id}: the worker died after its ${k}th transition`).toBe(k);
            await until(async () => {
              expect(await survivor.recoverNow()).toBe(1);
            }, 10_000);
            await until(async () => {
              expect(['completed', 'compensated', 'needs-attention']).toContain(
                (await survivor.get(saga, id))?.status,
              );
            }, 10_000);
            const snap = await survivor.get(saga, id);
            const story = (snap?.history ?? [])
              .map(
                (h) =>
                  `${h.event}${h.step === undefined ? '' : ` ${h.step}`} f${h.fence} ${h.detail}`,
              )
              .join('; ');
            expect(snap?.status, `${id}: ${snap?.reason ?? ''}: ${story}`).toBe(s.status);
            const fx = await effectsOf(client, id);
            expect(effectProblems(s.status, fx), `${id}: ${fx.log.join(' ')}`).toEqual([]);
            // The survivor claimed it with fence 2; nothing was written under fence 1 afterwards.
            const history = snap?.history ?? [];
            const claim = history.findIndex((h) => h.event === 'claim');
            if (claim >= 0) {
              expect(history.slice(claim).every((h) => h.fence === 2)).toBe(true);
            }
            expect(snap?.fence).toBe(2);
            results.push(`${id}: ${fx.log.join(' ')}`);
          }
        } finally {
          await survivor.close();
        }
      }),
    );
    console.log(`kill after each transition:\n  ${results.sort().join('\n  ')}`);
    expect(results).toHaveLength(8 + 13);
  }, 300_000);
});
