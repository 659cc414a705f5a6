/**
 * queue: Keel's queue against BullMQ (a Worker at the same concurrency) and the floor, a raw
 * Redis Streams loop (pipelined XADD, then XREADGROUP + pipelined XACK/XDEL), on one local
 * redis-server, in one run.
 *
 * Timed rows (100 messages per iteration, send → handled): default features (ack after the
 * handler, visibility + reclaim sweep, retry, DLQ) at concurrency 50; the same with dedup (a
 * message id per send) and the idempotent consumer; per-key ordered mode (8 partitions, 8
 * owned at a time, 16 keys); concurrency 1 (Keel acks and reads the next in one round trip,
 * BullMQ completes and fetches the next in one script).
 *
 * Reports, each system fresh on a second redis-server: Redis commands per message (inside
 * scripts included), script calls per message and Redis CPU per message (`INFO commandstats`,
 * `INFO cpu` deltas: counts are deterministic, CPU is the server's own getrusage time); send →
 * handler-start latency at 200 msg/s, with the raw Streams floor (XADD, blocking XREADGROUP)
 * measured beside it; memory per waiting message with a 104-byte payload (`MEMORY USAGE`);
 * and a consumer SIGKILLed with 10 messages in flight (5 s visibility): how long until all 10
 * ran again elsewhere, and with which delivery count.
 *
 * Figures on a loaded 2-core machine are indicative: compare the ratios of one run.
 *
 * @packageDocumentation
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Queue as BullQueue, Worker as BullWorker } from 'bullmq';
import type { Redis } from 'ioredis';
import { Queue, idempotent, type Consumer, type ConsumerOptions } from '../src/queue/index.js';
import { RedisHarness } from '../test/support/redis.js';
import { redisCost, redisCounters, type RedisCost } from '../test/support/redis-cost.js';
import type { BenchReport, SuiteContext } from './suite.js';
import { defineSuite } from './suite.js';

const N = 100;
const CONCURRENCY = 50;
const payload = { orderId: 12345, sku: 'ABC-123', qty: 2, price: 19.99, note: 'x'.repeat(40) };
/** A payload whose JSON is exactly 104 bytes (the memory row). */
const payload104 = { orderId: 12345, sku: 'ABC-123', qty: 2, note: 'x'.repeat(104 - 51) };
const ORDERED = { partitions: 8, concurrency: 8, keys: 16 };

let harness: RedisHarness | undefined;
const clients: Redis[] = [];
const closers: (() => Promise<unknown>)[] = [];

/** Counts handled messages of one system and wakes a round when it reaches a target. */
class Counter {
  n = 0;
  #target = Infinity;
  #wake: (() => void) | undefined;
  hit = (): void => {
    if (++this.n >= this.#target) this.#wake?.();
  };
  /** Resolves once `more` further messages were handled. */
  next(more: number): Promise<void> {
    this.#target = this.n + more;
    return new Promise<void>((resolve) => {
      this.#wake = resolve;
      if (this.n >= this.#target) resolve();
    });
  }
}

function client(node: number): Redis {
  const c = (harness as RedisHarness).client(node);
  clients.push(c);
  return c;
}

/** One system under test: how to send `n` messages, and its handled counter. */
interface System {
  readonly send: (n: number) => Promise<unknown>;
  readonly counter: Counter;
  readonly close: () => Promise<unknown>;
}

let seq = 0;

function keelSystem(
  node: number,
  topic: string,
  options: ConsumerOptions & { dedup?: boolean; partitions?: number },
): System {
  const c = client(node);
  const { dedup, partitions, ...consumerOptions } = options;
  const queue = new Queue({ client: c, partitions: partitions ?? 1 });
  const counter = new Counter();
  let consumer: { close(): Promise<void> };
  if (dedup === true) {
    const apply = idempotent<typeof payload>({ client: c }, (_m, fx) => {
      fx.call('INCR', [`{${topic}}:effects`]);
    });
    consumer = queue.consume<typeof payload>(
      topic,
      'g',
      async (m) => {
        await apply(m);
        counter.hit();
      },
      consumerOptions,
    );
  } else {
    consumer = queue.consume(topic, 'g', counter.hit, consumerOptions);
  }
  const ordered = options.ordered === true;
  return {
    counter,
    send: (n) =>
      queue.sendMany(
        topic,
        Array.from({ length: n }, (_, i) => ({
          payload,
          ...(dedup === true ? { id: `m-${++seq}` } : {}),
          ...(ordered ? { key: `k${i % ORDERED.keys}` } : {}),
        })),
      ),
    close: async () => {
      await consumer.close();
      await queue.close();
    },
  };
}

function bullSystem(node: number, name: string, concurrency: number): System {
  const port = (harness as RedisHarness).port(node);
  const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
  const queue = new BullQueue(name, { connection });
  const counter = new Counter();
  const worker = new BullWorker(
    name,
    async () => {
      counter.hit();
      return Promise.resolve();
    },
    { connection, concurrency, removeOnComplete: { count: 0 }, removeOnFail: { count: 0 } },
  );
  return {
    counter,
    send: (n) => queue.addBulk(Array.from({ length: n }, () => ({ name: 'job', data: payload }))),
    close: async () => {
      await worker.close();
      await queue.close();
    },
  };
}

/** The floor: pipelined XADD, XREADGROUP COUNT 50, pipelined XACK + XDEL. */
function rawSystem(node: number, stream: string): System & { ready: Promise<unknown> } {
  const w = client(node);
  const r = client(node);
  const counter = new Counter();
  const body = JSON.stringify(payload);
  let pending = 0;
  const drain = async (): Promise<void> => {
    while (pending > 0) {
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
        stream,
        '>',
      );
      const ids = entryIds(reply);
      if (ids.length === 0) continue;
      const ack = w.pipeline();
      for (const id of ids) {
        JSON.parse(body);
        ack.xack(stream, 'g', id);
        ack.xdel(stream, id);
      }
      await ack.exec();
      pending -= ids.length;
      for (let i = 0; i < ids.length; i++) counter.hit();
    }
  };
  return {
    counter,
    ready: w.xgroup('CREATE', stream, 'g', '0', 'MKSTREAM'),
    send: async (n) => {
      const p = w.pipeline();
      for (let i = 0; i < n; i++) p.xadd(stream, '*', 'p', body);
      await p.exec();
      pending += n;
      await drain();
    },
    close: () => Promise.resolve(),
  };
}

function rawEntries(reply: unknown): [string, string[]][] {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  const first: unknown = reply[0];
  return (typeof first === 'string' ? reply[1] : (first as unknown[])[1]) as [string, string[]][];
}

function entryIds(reply: unknown): string[] {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  const first: unknown = reply[0];
  const list = (typeof first === 'string' ? reply[1] : (first as unknown[])[1]) as [string][];
  return list.map(([id]) => id);
}

/** One timed iteration: send N, resolve when all N were handled. */
async function round(system: System | undefined, n = N): Promise<number> {
  const s = system as System;
  const done = s.counter.next(n);
  await s.send(n);
  await done;
  return n;
}

let raw: ReturnType<typeof rawSystem> | undefined;
let keel: System | undefined;
let keelDedup: System | undefined;
let keelOrdered: System | undefined;
let keel1: System | undefined;
let bull: System | undefined;
let bull1: System | undefined;

async function setup(): Promise<void> {
  harness = await RedisHarness.start({ count: 2 });
  raw = rawSystem(0, 'raw:s');
  await raw.ready;
  keel = keelSystem(0, 'bench', { concurrency: CONCURRENCY });
  keelDedup = keelSystem(0, 'bench-dedup', { concurrency: CONCURRENCY, dedup: true });
  keelOrdered = keelSystem(0, 'bench-ordered', {
    ordered: true,
    partitions: ORDERED.partitions,
    concurrency: ORDERED.concurrency,
  });
  keel1 = keelSystem(0, 'bench-c1', { concurrency: 1 });
  bull = bullSystem(0, 'bench', CONCURRENCY);
  bull1 = bullSystem(0, 'bench1', 1);
  closers.push(...[keel, keelDedup, keelOrdered, keel1, bull, bull1].map((s) => s.close));
  // Every consumer has joined its group before the first timed send.
  for (const s of [keel, keelDedup, keelOrdered, keel1, bull, bull1]) await round(s, 1);
}

async function teardown(): Promise<void> {
  for (const close of closers.splice(0)) await close().catch(() => undefined);
  for (const c of clients.splice(0)) c.disconnect();
  await harness?.stop();
}

// ————— reports (node 1, each system fresh) —————

/** Cost of moving `m` messages through a fresh system, in chunks of 100 like the rounds. */
async function costOf(make: () => System, m: number): Promise<RedisCost> {
  const h = harness as RedisHarness;
  await h.flush(1);
  const admin = client(1);
  const system = make();
  try {
    if ('ready' in system) await (system as { ready: Promise<unknown> }).ready;
    await round(system, 10); // warm: groups exist, scripts loaded
    const before = await redisCounters(admin);
    for (let sent = 0; sent < m; sent += 100) await round(system, Math.min(100, m - sent));
    return redisCost(before, await redisCounters(admin));
  } finally {
    await system.close();
  }
}

function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}

/** Send → handler start at `rate` msg/s, `m` messages, one at a time. */
async function latencyOf(
  kind: 'raw' | 'keel' | 'bull',
  m: number,
  rate = 200,
): Promise<{ p50: number; p99: number }> {
  const h = harness as RedisHarness;
  await h.flush(1);
  const seen: number[] = [];
  let close: () => Promise<unknown>;
  let send: (t: number) => Promise<unknown>;
  if (kind === 'raw') {
    // The floor: XADD on one connection, a blocking XREADGROUP loop on another (acks pipelined
    // after each read), the same Redis and process — what any Streams consumer waits for.
    const w = client(1);
    const r = client(1);
    await w.xgroup('CREATE', 'raw:lat', 'g', '0', 'MKSTREAM');
    const stop = { on: true };
    const loop = (async () => {
      while (stop.on) {
        const reply = await r.call(
          'XREADGROUP',
          'GROUP',
          'g',
          'c',
          'COUNT',
          10,
          'BLOCK',
          100,
          'STREAMS',
          'raw:lat',
          '>',
        );
        const entries = rawEntries(reply);
        if (entries.length === 0) continue;
        const ack = w.pipeline();
        for (const [id, fields] of entries) {
          seen.push(performance.now() - (JSON.parse(fields[1] ?? '{}') as { t: number }).t);
          ack.xack('raw:lat', 'g', id);
          ack.xdel('raw:lat', id);
        }
        await ack.exec();
      }
    })();
    send = (t) => w.xadd('raw:lat', '*', 'p', JSON.stringify({ t, ...payload }));
    close = async () => {
      stop.on = false;
      await loop;
    };
  } else if (kind === 'keel') {
    const queue = new Queue({ client: client(1) });
    const consumer = queue.consume<{ t: number }>('lat', 'g', (msg) => {
      seen.push(performance.now() - msg.payload.t);
    });
    send = (t) => queue.send('lat', { t, ...payload });
    close = async () => {
      await consumer.close();
      await queue.close();
    };
  } else {
    const connection = { host: '127.0.0.1', port: h.port(1), maxRetriesPerRequest: null };
    const queue = new BullQueue('lat', { connection });
    const worker = new BullWorker(
      'lat',
      async (job) => {
        seen.push(performance.now() - (job.data as { t: number }).t);
        return Promise.resolve();
      },
      { connection, concurrency: CONCURRENCY, removeOnComplete: { count: 0 } },
    );
    await worker.waitUntilReady();
    send = (t) => queue.add('job', { t, ...payload });
    close = async () => {
      await worker.close();
      await queue.close();
    };
  }
  try {
    await send(performance.now());
    while (seen.length < 1) await new Promise((r) => setTimeout(r, 5));
    seen.length = 0;
    const start = performance.now();
    for (let i = 0; i < m; i++) {
      const due = start + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      void send(performance.now());
    }
    const deadline = performance.now() + 10_000;
    while (seen.length < m && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const sorted = [...seen].sort((a, b) => a - b);
    return { p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99) };
  } finally {
    await close();
  }
}

/** Bytes per waiting (sent, not yet read) message with a 104-byte JSON payload. */
async function memoryOf(kind: 'raw' | 'keel' | 'bull', m: number): Promise<number> {
  const h = harness as RedisHarness;
  await h.flush(1);
  const c = client(1);
  const body = JSON.stringify(payload104);
  if (body.length !== 104) throw new Error(`payload is ${body.length} bytes, not 104`);
  if (kind === 'raw') {
    const p = c.pipeline();
    for (let i = 0; i < m; i++) p.xadd('raw:mem', '*', 'p', body);
    await p.exec();
  } else if (kind === 'keel') {
    const queue = new Queue({ client: c });
    await c.xgroup('CREATE', queue.keys('mem', 0).stream, 'g', '0', 'MKSTREAM');
    for (let i = 0; i < m; i += 100) {
      await queue.sendMany(
        'mem',
        Array.from({ length: Math.min(100, m - i) }, () => ({ payload: payload104 })),
      );
    }
    await queue.close();
  } else {
    const connection = { host: '127.0.0.1', port: h.port(1), maxRetriesPerRequest: null };
    const queue = new BullQueue('mem', { connection });
    for (let i = 0; i < m; i += 100) {
      await queue.addBulk(
        Array.from({ length: Math.min(100, m - i) }, () => ({ name: 'job', data: payload104 })),
      );
    }
    await queue.close();
  }
  let bytes = 0;
  for (const key of await c.keys('*')) {
    bytes += Number(await c.call('MEMORY', 'USAGE', key, 'SAMPLES', '0'));
  }
  return bytes / m;
}

/**
 * A consumer process holding 10 messages (5 s visibility) is SIGKILLed; a consumer here picks
 * them up. Returns seconds from the kill until all 10 ran again, and their attempt numbers.
 */
async function crash(): Promise<{ seconds: number; reruns: number; attempts: string }> {
  const h = harness as RedisHarness;
  await h.flush(1);
  const visibilityMs = 5000;
  const holder = fork(
    fileURLToPath(new URL('./queue-holder.ts', import.meta.url)),
    [`${h.port(1)},${visibilityMs},10`],
    { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] },
  );
  let held = 0;
  let ready = false;
  holder.on('message', (m: { held?: number; ready?: boolean }) => {
    if (m.held !== undefined) held = m.held;
    if (m.ready === true) ready = true;
  });
  const queue = new Queue({ client: client(1) });
  const attempts: number[] = [];
  let consumer: Consumer | undefined;
  try {
    const wait = async (ok: () => boolean, what: string, limitMs = 120_000): Promise<void> => {
      const end = performance.now() + limitMs;
      while (!ok()) {
        if (performance.now() > end) throw new Error(`crash row: timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    await wait(() => ready, 'the holder process to start');
    await queue.sendMany(
      'crash',
      Array.from({ length: 10 }, (_, i) => ({ payload: { i } })),
    );
    await wait(() => held === 10, 'the holder to hold 10 messages');
    holder.kill('SIGKILL');
    const killedAt = performance.now();
    consumer = queue.consume(
      'crash',
      'g',
      (m) => {
        attempts.push(m.attempt);
      },
      { visibilityMs, consumer: 'survivor' },
    );
    await wait(() => attempts.length >= 10, 'the 10 messages to run again', 60_000);
    const seconds = (performance.now() - killedAt) / 1000;
    const counts = new Map<number, number>();
    for (const a of attempts) counts.set(a, (counts.get(a) ?? 0) + 1);
    return {
      seconds,
      reruns: attempts.length,
      attempts: [...counts].map(([a, n]) => `${n}× attempt ${a}`).join(', '),
    };
  } finally {
    if (holder.exitCode === null && holder.signalCode === null) holder.kill('SIGKILL');
    await consumer?.close();
    await queue.close();
  }
}

const us = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const ms = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');

async function reports(_measured: unknown, context: SuiteContext): Promise<readonly BenchReport[]> {
  const m = context.quick ? 200 : 2000;
  const verdict = (ok: boolean): string => (ok ? 'met' : 'MISSED');
  const systems: [string, () => System, string, (c: RedisCost) => boolean][] = [
    [
      'raw Streams (pipelined XADD, XREADGROUP, XACK + XDEL)',
      () => rawSystem(1, 'raw:c'),
      '—',
      () => true,
    ],
    [
      `Keel default, concurrency ${CONCURRENCY}`,
      () => keelSystem(1, 'c', { concurrency: CONCURRENCY }),
      '≤ 6 cmds, ≤ 1 script, ≤ 20 µs',
      (c) => c.commands <= 6 * m && c.scripts <= m && c.cpuMicros <= 20 * m,
    ],
    [
      `Keel dedup + idempotent, concurrency ${CONCURRENCY}`,
      () => keelSystem(1, 'c', { concurrency: CONCURRENCY, dedup: true }),
      '≤ 10 cmds, ≤ 30 µs',
      (c) => c.commands <= 10 * m && c.cpuMicros <= 30 * m,
    ],
    [
      `Keel ordered (${ORDERED.partitions} partitions, ${ORDERED.keys} keys)`,
      () =>
        keelSystem(1, 'c', {
          ordered: true,
          partitions: ORDERED.partitions,
          concurrency: ORDERED.concurrency,
        }),
      '—',
      () => true,
    ],
    [
      'Keel concurrency 1',
      () => keelSystem(1, 'c', { concurrency: 1 }),
      '≤ 1 script',
      (c) => c.scripts <= m,
    ],
    [`BullMQ concurrency ${CONCURRENCY}`, () => bullSystem(1, 'c', CONCURRENCY), '—', () => true],
    ['BullMQ concurrency 1', () => bullSystem(1, 'c', 1), '—', () => true],
  ];
  const costRows: Record<string, string | number>[] = [];
  for (const [name, make, target, ok] of systems) {
    const c = await costOf(make, m);
    costRows.push({
      system: name,
      'commands/msg': (c.commands / m).toFixed(2),
      'scripts/msg': (c.scripts / m).toFixed(3),
      'Redis CPU µs/msg': us(c.cpuMicros / m),
      target: target === '—' ? '—' : `${target}: ${verdict(ok(c))}`,
    });
  }
  const latN = context.quick ? 100 : 1000;
  const latRows: Record<string, string | number>[] = [];
  for (const kind of ['raw', 'keel', 'bull'] as const) {
    const l = await latencyOf(kind, latN);
    latRows.push({
      system:
        kind === 'raw'
          ? 'raw Streams (XADD, blocking XREADGROUP): the floor'
          : kind === 'keel'
            ? 'Keel (default)'
            : `BullMQ (concurrency ${CONCURRENCY})`,
      'p50 ms': ms(l.p50),
      'p99 ms': ms(l.p99),
      target: kind === 'keel' ? `p50 ≤ 0.5, p99 ≤ 3: ${verdict(l.p50 <= 0.5 && l.p99 <= 3)}` : '—',
    });
  }
  const memN = context.quick ? 200 : 2000;
  const memRows: Record<string, string | number>[] = [];
  for (const kind of ['raw', 'keel', 'bull'] as const) {
    const b = await memoryOf(kind, memN);
    memRows.push({
      system: kind === 'raw' ? 'raw XADD (one field)' : kind === 'keel' ? 'Keel' : 'BullMQ',
      'bytes/msg': Math.round(b),
      target: kind === 'keel' ? `≤ 250 B: ${verdict(b <= 250)}` : '—',
    });
  }
  const k = await crash();
  return [
    {
      title: `Redis cost per message (${m} messages, INFO commandstats / INFO cpu; commands inside scripts included)`,
      rows: costRows,
    },
    { title: `send → handler start at 200 msg/s (${latN} messages)`, rows: latRows },
    {
      title: `memory per waiting message, 104-byte payload (${memN} messages, MEMORY USAGE)`,
      rows: memRows,
    },
    {
      title: 'consumer SIGKILLed with 10 in flight (visibility 5 s; sweep 1 s)',
      rows: [
        {
          'redelivered after s': k.seconds.toFixed(2),
          're-runs': k.reruns,
          'delivery counts': k.attempts,
          target: `≤ 7 s, re-runs ≤ 10, attempt 2: ${verdict(k.seconds <= 7 && k.reruns <= 10 && k.attempts === '10× attempt 2')}`,
        },
      ],
    },
  ];
}

const RAW = `raw Streams loop (pipelined XADD, XREADGROUP + XACK/XDEL), ${N} msgs`;
const KEEL = `Keel send → handled → acked, concurrency ${CONCURRENCY}, ${N} msgs`;
const KEEL_DEDUP = `Keel with dedup + idempotent consumer, concurrency ${CONCURRENCY}, ${N} msgs`;
const KEEL_ORDERED = `Keel per-key ordered (${ORDERED.partitions} partitions, ${ORDERED.keys} keys), ${N} msgs`;
const KEEL_1 = `Keel concurrency 1, ${N} msgs`;
const BULL = `BullMQ addBulk → Worker completed, concurrency ${CONCURRENCY}, ${N} msgs`;
const BULL_1 = `BullMQ concurrency 1, ${N} msgs`;

export const suite = defineSuite({
  name: 'queue',
  description: `send → handled, ${N} messages per iteration, one local redis-server: Keel (default, dedup + idempotent, ordered, concurrency 1) vs BullMQ vs a raw Streams loop; then cost, latency, memory and crash reports (indicative on a loaded machine)`,
  tasks: [
    { name: RAW, kind: 'baseline', fn: () => round(raw) },
    { name: KEEL, kind: 'keel', fn: () => round(keel), compareTo: [RAW, BULL] },
    { name: KEEL_DEDUP, kind: 'keel', fn: () => round(keelDedup), compareTo: [RAW, BULL] },
    { name: KEEL_ORDERED, kind: 'keel', fn: () => round(keelOrdered), compareTo: [BULL] },
    { name: KEEL_1, kind: 'keel', fn: () => round(keel1), compareTo: [BULL_1] },
    { name: BULL, kind: 'peer', fn: () => round(bull) },
    { name: BULL_1, kind: 'peer', fn: () => round(bull1) },
  ],
  setup,
  teardown,
  reports,
});
