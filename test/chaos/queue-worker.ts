/**
 * One consumer process of the queue chaos suite (forked by queue.chaos.test.ts, run by tsx):
 * consumes the chaos topic through the idempotent helper, failing at random before and after
 * the effect, until told to stop (then closes gracefully) or SIGKILLed.
 *
 * @packageDocumentation
 */
import { Redis } from 'ioredis';
import { Queue, idempotent } from '../../src/queue/index.js';
import { prng } from './config.js';

/** The worker's settings (JSON in argv[2]). */
export interface QueueWorkerConfig {
  readonly port: number;
  readonly name: string;
  readonly seed: number;
  readonly ordered: boolean;
  readonly partitions: number;
}

/** The payload the orchestrator sends. */
export interface ChaosPayload {
  readonly key: string;
  readonly seq: number;
  readonly poison: boolean;
}

const config = JSON.parse(process.argv[2] ?? '{}') as QueueWorkerConfig;
const random = prng(config.seed);
const client = new Redis({ host: '127.0.0.1', port: config.port });
client.on('error', () => undefined);
const queue = new Queue({ client, partitions: config.partitions });
const effect = idempotent<ChaosPayload>({ client }, (m, fx) => {
  fx.call('HINCRBY', ['{fx}:count'], m.id, 1);
  fx.call('RPUSH', [`{fx}:log:${m.payload.key}`], m.payload.seq);
});
const consumer = queue.consume<ChaosPayload>(
  'chaos',
  'g',
  async (m) => {
    if (m.payload.poison) throw new Error(`poison ${m.id}`);
    await new Promise((r) => setTimeout(r, Math.floor(random() * 20)));
    if (random() < 0.15) throw new Error('random failure before the effect');
    await effect(m);
    if (random() < 0.1) throw new Error('random failure after the effect');
  },
  {
    ordered: config.ordered,
    consumer: config.name,
    concurrency: 8,
    visibilityMs: 1000,
    maxAttempts: 4,
    backoff: { initialMs: 10, maxMs: 100 },
    closeTimeoutMs: 2000,
  },
);
consumer.onError(() => undefined);
// Each report is its own member (a SADD sent again after a dropped connection adds nothing), so
// the orchestrator counts how many times each dead letter was reported.
let reports = 0;
consumer.onDeadLetter((e) => {
  if (e.id === undefined) return;
  client.sadd('{fx}:dead-reported', `${e.id} ${config.name} ${++reports}`).catch(() => undefined);
});

process.on('message', (m: { t: string }) => {
  if (m.t !== 'stop') return;
  void consumer.close().then(async () => {
    await client.quit().catch(() => undefined);
    process.exit(0);
  });
});
process.on('disconnect', () => process.exit(0));
process.send?.({ t: 'ready' });
