/**
 * queue: end-to-end throughput of Keel's queue (send → handled → acked, default features: ack
 * after the handler, visibility + reclaim sweep, retry, DLQ) against BullMQ (a Worker at the
 * same concurrency) and the floor, a raw Redis Streams loop (pipelined XADD, then XREADGROUP +
 * pipelined XACK). One iteration moves 100 messages through one local redis-server; each
 * library has its own connections. Figures on a loaded 2-core machine are indicative: compare
 * the ratios of one run.
 *
 * @packageDocumentation
 */
import { Queue as BullQueue, Worker as BullWorker } from 'bullmq';
import type { Redis } from 'ioredis';
import { Queue, type Consumer } from '../src/queue/index.js';
import { RedisHarness } from '../test/support/redis.js';
import { defineSuite } from './suite.js';

const N = 100;
const CONCURRENCY = 50;
const payload = { orderId: 12345, sku: 'ABC-123', qty: 2, price: 19.99, note: 'x'.repeat(40) };

let harness: RedisHarness | undefined;
let raw: Redis | undefined;
let rawReader: Redis | undefined;
let keelClient: Redis | undefined;
let keel: Queue | undefined;
let consumer: Consumer | undefined;
let bullQueue: BullQueue | undefined;
let bullWorker: BullWorker | undefined;
let keelDone = 0;
let keelWake: (() => void) | undefined;
let bullDone = 0;
let bullWake: (() => void) | undefined;

async function setup(): Promise<void> {
  harness = await RedisHarness.start({ count: 1 });
  const port = harness.port(0);
  raw = harness.client(0);
  rawReader = harness.client(0);
  await raw.xgroup('CREATE', 'raw:s', 'g', '0', 'MKSTREAM');
  keelClient = harness.client(0);
  keel = new Queue({ client: keelClient });
  consumer = keel.consume(
    'bench',
    'g',
    () => {
      if (++keelDone >= N) keelWake?.();
    },
    { concurrency: CONCURRENCY, blockMs: 50 },
  );
  const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
  bullQueue = new BullQueue('bench', { connection });
  bullWorker = new BullWorker(
    'bench',
    async () => {
      if (++bullDone >= N) bullWake?.();
      return Promise.resolve();
    },
    {
      connection,
      concurrency: CONCURRENCY,
      removeOnComplete: { count: 0 },
      removeOnFail: { count: 0 },
    },
  );
  await bullWorker.waitUntilReady();
}

async function teardown(): Promise<void> {
  await consumer?.close();
  await keel?.close();
  await bullWorker?.close();
  await bullQueue?.close();
  await harness?.stop();
}

async function rawRound(): Promise<number> {
  const w = raw as Redis;
  const r = rawReader as Redis;
  const body = JSON.stringify(payload);
  const p = w.pipeline();
  for (let i = 0; i < N; i++) p.xadd('raw:s', '*', 'p', body);
  await p.exec();
  let acked = 0;
  while (acked < N) {
    const reply = await r.call(
      'XREADGROUP',
      'GROUP',
      'g',
      'c',
      'COUNT',
      CONCURRENCY,
      'BLOCK',
      50,
      'STREAMS',
      'raw:s',
      '>',
    );
    const entries = entriesOf(reply);
    if (entries.length === 0) continue;
    const ack = w.pipeline();
    for (const id of entries) {
      JSON.parse(body);
      ack.xack('raw:s', 'g', id);
      ack.xdel('raw:s', id);
    }
    await ack.exec();
    acked += entries.length;
  }
  return acked;
}

function entriesOf(reply: unknown): string[] {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  const first: unknown = reply[0];
  const list = (typeof first === 'string' ? reply[1] : (first as unknown[])[1]) as [string][];
  return list.map(([id]) => id);
}

async function keelRound(): Promise<number> {
  keelDone = 0;
  const done = new Promise<void>((resolve) => (keelWake = resolve));
  await (keel as Queue).sendMany(
    'bench',
    Array.from({ length: N }, () => ({ payload })),
  );
  await done;
  return keelDone;
}

async function bullRound(): Promise<number> {
  bullDone = 0;
  const done = new Promise<void>((resolve) => (bullWake = resolve));
  await (bullQueue as BullQueue).addBulk(
    Array.from({ length: N }, () => ({ name: 'job', data: payload })),
  );
  await done;
  return bullDone;
}

const RAW = `raw Streams loop (pipelined XADD, XREADGROUP + XACK/XDEL), ${N} msgs`;
const KEEL = `Keel Queue send → handled → acked, concurrency ${CONCURRENCY}, ${N} msgs`;
const BULL = `BullMQ addBulk → Worker completed, concurrency ${CONCURRENCY}, ${N} msgs`;

export const suite = defineSuite({
  name: 'queue',
  description: `send → handled → acked, ${N} messages per iteration, one local redis-server: Keel vs BullMQ vs a raw Streams loop (indicative on a loaded machine)`,
  tasks: [
    { name: RAW, kind: 'baseline', fn: rawRound },
    { name: KEEL, kind: 'keel', fn: keelRound, compareTo: [RAW, BULL] },
    { name: BULL, kind: 'peer', fn: bullRound },
  ],
  setup,
  teardown,
});
