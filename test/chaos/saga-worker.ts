/**
 * One coordinator process for the saga recovery and chaos tests (forked, run by tsx).
 *
 * - `kill-after`: runs saga `id` and SIGKILLs itself right after its `killAfter`-th accepted
 *   transition (a coordinator dying after each state change in turn).
 * - `chaos`: on `go`, keeps `inFlight` sagas running with fresh ids until `stop-new`, recovering
 *   others' sagas all along; reports every accepted transition over IPC; answers `stop-new` with
 *   `stopped` once none of its own sagas is still being started or run; exits on `exit`.
 *
 * @packageDocumentation
 */
import { Redis } from 'ioredis';
import { SagaCoordinator } from '../../src/saga/index.js';
import { prng } from './config.js';
import { chaosSaga, NO_FAULTS, type Faults } from './saga-services.js';

export interface SagaWorkerConfig {
  readonly mode: 'kill-after' | 'chaos';
  readonly port: number;
  readonly worker: number;
  readonly seed: number;
  readonly leaseMs: number;
  readonly faults?: Faults;
  readonly failStep?: string;
  readonly id?: string;
  readonly killAfter?: number;
  readonly inFlight?: number;
  /** Key prefix of the coordinator. @defaultValue 'keel:saga:' */
  readonly prefix?: string;
}

export type SagaWorkerMessage =
  | { readonly t: 'ready' }
  /** After `stop-new`: this worker starts no saga and runs none of its own any more. */
  | { readonly t: 'stopped' }
  | {
      readonly t: 'transition';
      readonly id: string;
      readonly event: string;
      readonly version: number;
      readonly fence: number;
      readonly owner: string;
    }
  | {
      readonly t: 'done';
      readonly started: number;
      readonly errors: number;
      readonly sample: string;
    };

const config = JSON.parse(process.argv[2] ?? '{}') as SagaWorkerConfig;
const send = (m: SagaWorkerMessage): void => {
  if (process.connected) process.send?.(m);
};

const redis = new Redis({ host: '127.0.0.1', port: config.port, maxRetriesPerRequest: null });
const random = prng(config.seed * 31 + config.worker);
const saga = chaosSaga(redis, random, config.faults ?? NO_FAULTS, {
  ...(config.failStep === undefined ? {} : { failStep: config.failStep }),
  ...(config.mode === 'kill-after' ? { attempts: 2, timeoutMs: 10_000 } : {}),
});
const coordinator = new SagaCoordinator({
  redis,
  sagas: [saga],
  leaseMs: config.leaseMs,
  recovery: config.mode === 'chaos',
  recoveryIntervalMs: 100,
  shards: 4,
  ...(config.prefix === undefined ? {} : { prefix: config.prefix }),
  owner: `w${config.worker}-${process.pid}`,
});

let accepted = 0;
coordinator.onTransition((e) => {
  accepted++;
  send({
    t: 'transition',
    id: e.id,
    event: e.event,
    version: e.version,
    fence: e.fence,
    owner: e.owner,
  });
  if (config.mode === 'kill-after' && accepted === config.killAfter)
    process.kill(process.pid, 'SIGKILL');
});

if (config.mode === 'kill-after') {
  await coordinator.run(saga, config.id ?? 'x', { n: 1 });
  await coordinator.close();
  redis.disconnect();
  process.exit(0);
}

let stopNew = false;
let started = 0;
let errors = 0;
let sample = '';
const loops: Promise<void>[] = [];
process.on('message', (m: { t: string }) => {
  if (m.t === 'go') {
    for (let lane = 0; lane < (config.inFlight ?? 4); lane++) {
      loops.push(
        (async () => {
          while (!stopNew) {
            const id = `w${config.worker}-p${process.pid}-l${lane}-${started++}`;
            await coordinator.run(saga, id, { n: started }).catch((error: unknown) => {
              errors++;
              sample = String(error);
            });
          }
        })(),
      );
    }
  } else if (m.t === 'stop-new') {
    stopNew = true;
    // The test's quiescence waits for this: a saga whose start was still on its way to Redis
    // when the test last looked would otherwise begin after it decided all was quiet.
    void Promise.all(loops).then(() => send({ t: 'stopped' }));
  } else if (m.t === 'exit') {
    void (async () => {
      stopNew = true;
      await coordinator.close();
      await Promise.all(loops);
      send({ t: 'done', started, errors, sample });
      redis.disconnect();
      process.exit(0);
    })();
  }
});
send({ t: 'ready' });
