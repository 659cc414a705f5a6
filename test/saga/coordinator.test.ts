import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { ManualClock, type ScriptClient } from '../../src/core/index.js';
import {
  MemorySagaBackend,
  SagaCoordinator,
  defineSaga,
  isSagaConflictError,
  isSagaUnknownError,
  type SagaCoordinatorOptions,
  type SagaTransitionEvent,
  type StepContext,
} from '../../src/saga/index.js';
import { START, TRANSITION, TRANSITIONS } from '../../src/saga/scripts.js';
import { SagaStore } from '../../src/saga/store.js';
import { invalidOption, until } from '../support/helpers.js';
import { losingOneReply } from '../support/resend.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const later = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

interface Order {
  readonly sku: string;
  readonly cents: number;
}

/** A saga over a log of effects, with knobs to fail steps. */
function orderSaga(
  log: string[],
  fail: { step?: string; times?: number; compensation?: string } = {},
) {
  let failures = 0;
  const maybeFail = (name: string): void => {
    if (fail.step === name && failures < (fail.times ?? Infinity)) {
      failures++;
      throw new Error(`${name} refused`);
    }
  };
  return defineSaga(
    'order',
    [
      {
        name: 'reserve',
        run: (ctx: StepContext<Order>) => {
          log.push(`do reserve ${ctx.idempotencyKey}`);
          maybeFail('reserve');
          return { reservation: `r-${ctx.input.sku}` };
        },
        compensate: (ctx) => {
          log.push(`undo reserve ${String(ctx.output?.reservation)}`);
        },
        retry: { attempts: 2, initialDelayMs: 1 },
      },
      {
        name: 'charge',
        run: (ctx) => {
          log.push(`do charge ${ctx.outputs.reserve.reservation}`);
          maybeFail('charge');
          return { payment: `p-${ctx.input.cents}` };
        },
        compensate: (ctx) => {
          log.push(`undo charge ${ctx.completed ? String(ctx.output?.payment) : 'unknown'}`);
          if (fail.compensation === 'charge') throw new Error('refund refused');
        },
        retry: { attempts: 2, initialDelayMs: 1 },
      },
      {
        name: 'ship',
        run: (ctx) => {
          log.push(`do ship ${ctx.outputs.charge.payment}`);
          maybeFail('ship');
          return ctx.outputs.reserve.reservation.length;
        },
        retry: { attempts: 2, initialDelayMs: 1 },
      },
    ],
    { compensationRetry: { attempts: 3, initialDelayMs: 1 } },
  );
}

/** A store of one shard on `client`, for tests that count what its scripts do. */
const oneShardStore = (client: Redis, prefix: string, leaseMs: number): SagaStore =>
  new SagaStore({
    client,
    prefix,
    shards: 1,
    leaseMs,
    historyLimit: 64,
    finishedHistory: 6,
    retentionMs: 60_000,
  });

describeRedis('SagaCoordinator on a real redis-server', () => {
  const redis = useRedis();
  let client: Redis;
  const coordinators: SagaCoordinator[] = [];
  beforeAll(() => {
    client = redis().client(0);
  });
  afterAll(() => {
    client.disconnect();
  });
  afterEach(async () => {
    await Promise.all(coordinators.map((c) => c.close()));
    coordinators.length = 0;
    await redis().flushAll();
  });
  const coordinator = (
    options: Partial<SagaCoordinatorOptions> & Pick<SagaCoordinatorOptions, 'sagas'>,
  ) => {
    const c = new SagaCoordinator({ redis: client, recovery: false, ...options });
    coordinators.push(c);
    return c;
  };

  it('runs every step once, in order, two transitions per step, and answers the outputs', async () => {
    const log: string[] = [];
    const saga = orderSaga(log);
    const sagas = coordinator({ sagas: [saga] });
    const events: SagaTransitionEvent[] = [];
    sagas.onTransition((e) => events.push(e));
    const outcome = await sagas.run(saga, 'o-1', { sku: 'a', cents: 5 });
    expect(outcome).toEqual({
      status: 'completed',
      id: 'o-1',
      outputs: { reserve: { reservation: 'r-a' }, charge: { payment: 'p-5' }, ship: 3 },
    });
    if (outcome.status === 'completed') {
      const n: number = outcome.outputs.ship; // typed end to end
      expect(n).toBe(3);
    }
    expect(log).toEqual(['do reserve order:o-1:reserve', 'do charge r-a', 'do ship p-5']);
    expect(events.map((e) => `${e.event}:${e.step ?? ''}`)).toEqual([
      'start:',
      'begin:reserve',
      'done:reserve',
      'begin:charge',
      'done:charge',
      'begin:ship',
      'done:ship',
    ]);
    const snap = await sagas.get(saga, 'o-1');
    expect(snap?.status).toBe('completed');
    expect(snap?.input).toEqual({ sku: 'a', cents: 5 });
    expect(snap?.history.at(-1)?.event).toBe('done');
    // Running it again answers the stored outcome and runs nothing.
    const again = await sagas.run(saga, 'o-1', { sku: 'a', cents: 5 });
    expect(again).toEqual(outcome);
    expect(log).toHaveLength(3);
    const conflict = await sagas.run(saga, 'o-1', { sku: 'b', cents: 5 }).catch((e: unknown) => e);
    expect(isSagaConflictError(conflict)).toBe(true);
  });

  it('a start whose reply was lost (the connection dropped; ioredis sent it again) drives the saga at once, not after its own lease', async () => {
    const own = redis().client(0);
    const { client: lossy, arm } = losingOneReply(own, START.sha);
    const log: string[] = [];
    const saga = orderSaga(log);
    const sagas = new SagaCoordinator({ redis: lossy, sagas: [saga], leaseMs: 60_000 });
    coordinators.push(sagas);
    await sagas.run(saga, 'o-warm', { sku: 'w', cents: 1 }); // START is cached: sent by hash
    log.length = 0;
    arm();
    const run = sagas.run(saga, 'o-lost', { sku: 'a', cents: 5 });
    // The sent-again START finds the instance this coordinator created and never advanced.
    // Waiting for its own lease would take 60 s.
    const outcome = await Promise.race([run, later(10_000).then(() => 'still waiting')]);
    expect(outcome).toMatchObject({ status: 'completed' });
    expect(log.filter((line) => line.startsWith('do '))).toHaveLength(3); // each step once
    own.disconnect();
  });

  it('concurrent runs of one id in one process drive it once and all answer its outcome', async () => {
    const log: string[] = [];
    const saga = orderSaga(log);
    const sagas = coordinator({ sagas: [saga] });
    const input = { sku: 'a', cents: 5 };
    const outcomes = await Promise.all([1, 2, 3, 4].map(() => sagas.run(saga, 'o-same', input)));
    for (const outcome of outcomes) expect(outcome).toMatchObject({ status: 'completed' });
    expect(log.filter((line) => line.startsWith('do '))).toHaveLength(3); // each step once
  });

  it('a step failing after its retries compensates every step that began, in reverse', async () => {
    const log: string[] = [];
    const saga = orderSaga(log, { step: 'ship' });
    const sagas = coordinator({ sagas: [saga] });
    const outcome = await sagas.run(saga, 'o-2', { sku: 'a', cents: 5 });
    expect(outcome.status).toBe('compensated');
    if (outcome.status === 'compensated')
      expect(outcome.reason).toMatch(/ship failed.*ship refused/);
    expect(log).toEqual([
      'do reserve order:o-2:reserve',
      'do charge r-a',
      'do ship p-5',
      'do ship p-5',
      'undo charge p-5',
      'undo reserve r-a',
    ]);
    const snap = await sagas.get(saga, 'o-2');
    expect(snap?.attempts).toEqual({ reserve: 1, charge: 1, ship: 2 });
  });

  it('the failing step itself is compensated with output undefined (its effect is unknown)', async () => {
    const log: string[] = [];
    const saga = orderSaga(log, { step: 'charge' });
    const sagas = coordinator({ sagas: [saga] });
    const outcome = await sagas.run(saga, 'o-3', { sku: 'a', cents: 5 });
    expect(outcome.status).toBe('compensated');
    expect(log.slice(-2)).toEqual(['undo charge unknown', 'undo reserve r-a']);
  });

  it('a step that recovers within its retries completes', async () => {
    const log: string[] = [];
    const saga = orderSaga(log, { step: 'charge', times: 1 });
    const sagas = coordinator({ sagas: [saga] });
    expect((await sagas.run(saga, 'o-4', { sku: 'a', cents: 5 })).status).toBe('completed');
    expect(log.filter((l) => l.startsWith('do charge'))).toHaveLength(2);
  });

  it('a compensation failing past its retries parks the saga needs-attention with its history', async () => {
    const log: string[] = [];
    const saga = orderSaga(log, { step: 'ship', compensation: 'charge' });
    const sagas = coordinator({ sagas: [saga] });
    const outcome = await sagas.run(saga, 'o-5', { sku: 'a', cents: 5 });
    expect(outcome.status).toBe('needs-attention');
    if (outcome.status === 'needs-attention') {
      expect(outcome.reason).toMatch(
        /compensation of charge failed 3 times: Error: refund refused/,
      );
    }
    expect(log.filter((l) => l.startsWith('undo charge'))).toHaveLength(3);
    expect(log.some((l) => l.startsWith('undo reserve'))).toBe(false);
    const snap = await sagas.get(saga, 'o-5');
    expect(snap?.status).toBe('needs-attention');
    expect(snap?.history.map((h) => h.event)).toEqual([
      'start',
      'begin',
      'done',
      'begin',
      'done',
      'begin',
      'begin',
      'fail',
      'skip', // ship has no compensation
      'cbegin',
      'cbegin',
      'cbegin',
      'park',
    ]);
    expect((await sagas.list(saga, { status: 'needs-attention' })).map((s) => s.id)).toEqual([
      'o-5',
    ]);
    expect(await client.pttl('keel:saga:{order:0}:x')).toBe(-2);
  });

  it('a step timeout aborts the attempt; the saga timeout compensates', async () => {
    const seen: string[] = [];
    const saga = defineSaga('slow', [
      { name: 'a', run: () => 1, compensate: () => void seen.push('undo a') },
      {
        name: 'b',
        run: (_ctx, signal) =>
          new Promise<number>((_, reject) => {
            signal.addEventListener('abort', () => {
              seen.push(`aborted ${(signal.reason as Error).name}`);
              reject(signal.reason as Error);
            });
          }),
        timeoutMs: 30,
        retry: { attempts: 2, initialDelayMs: 1 },
      },
    ]);
    const sagas = coordinator({ sagas: [saga] });
    const outcome = await sagas.run(saga, 's-1', null);
    expect(outcome.status).toBe('compensated');
    expect(seen).toEqual([
      'aborted SagaStepTimeoutError',
      'aborted SagaStepTimeoutError',
      'undo a',
    ]);

    const whole = defineSaga(
      'whole',
      [
        { name: 'a', run: () => 1, compensate: () => void seen.push('undo whole a') },
        {
          name: 'b',
          run: (_c, signal) =>
            new Promise((_, reject) =>
              signal.addEventListener('abort', () => reject(signal.reason as Error)),
            ),
        },
      ],
      { timeoutMs: 60 },
    );
    const other = coordinator({ sagas: [whole] });
    const ended = await other.run(whole, 'w-1', null);
    expect(ended.status).toBe('compensated');
    if (ended.status === 'compensated') expect(ended.reason).toMatch(/saga-timeout/);
    expect(seen.at(-1)).toBe('undo whole a');
  });

  it('close() aborts the step and the compensation in flight with a SagaClosedError and records nothing more', async () => {
    const seen: string[] = [];
    const waitAbort = (label: string, signal: AbortSignal) =>
      new Promise<never>((_, reject) => {
        signal.addEventListener('abort', () => {
          seen.push(`${label} ${(signal.reason as Error).name}`);
          reject(signal.reason as Error);
        });
      });
    const saga = defineSaga('closing', [
      { name: 'a', run: () => 1 },
      { name: 'b', run: (_c, signal) => waitAbort('do b', signal) },
    ]);
    const back = defineSaga('closing-back', [
      { name: 'a', run: () => 1, compensate: (_c, signal) => waitAbort('undo a', signal) },
      {
        name: 'b',
        run: () => {
          throw new Error('no');
        },
        retry: { attempts: 1 },
      },
    ]);
    const forward = coordinator({ sagas: [saga] });
    const backward = coordinator({ sagas: [back] });
    const ran = forward.run(saga, 'fwd', null);
    const undone = backward.run(back, 'back', null);
    await until(async () => expect((await forward.get(saga, 'fwd'))?.step).toBe('b'), 5000);
    await until(async () => {
      const snap = await backward.get(back, 'back');
      expect(snap?.compensationAttempts).toEqual({ a: 1 });
    }, 5000);
    await Promise.all([forward.close(), backward.close()]);
    await expect(ran).rejects.toMatchObject({ code: 'KEEL_SAGA_CLOSED' });
    await expect(undone).rejects.toMatchObject({ code: 'KEEL_SAGA_CLOSED' });
    expect(seen.sort()).toEqual(['do b SagaClosedError', 'undo a SagaClosedError']);
    // Still live, still owned, as it was when the calls began: another process re-runs them.
    const fwd = await forward.get(saga, 'fwd');
    expect(fwd).toMatchObject({ status: 'running', step: 'b', attempts: { a: 1, b: 1 } });
    expect(await backward.get(back, 'back')).toMatchObject({
      status: 'compensating',
      compensating: 'a',
    });
  });

  it("a step whose result's then getter throws fails the attempt and ends it: its timer is cleared, its signal never aborts", async () => {
    const signals: AbortSignal[] = [];
    const saga = defineSaga('bad-thenable', [
      { name: 'a', run: () => 1, compensate: () => undefined },
      {
        name: 'b',
        run: (_c, signal) => {
          signals.push(signal);
          return {
            get then(): never {
              throw new Error('then getter');
            },
          };
        },
        timeoutMs: 40,
        retry: { attempts: 1 },
      },
    ]);
    const sagas = coordinator({ sagas: [saga] });
    const outcome = await sagas.run(saga, 'bt-1', null);
    expect(outcome.status).toBe('compensated');
    if (outcome.status === 'compensated') expect(outcome.reason).toMatch(/then getter/);
    // Past the step's timeout: an attempt left unsettled would have its timer fire and abort it.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(signals).toHaveLength(1);
    expect(signals[0]?.aborted).toBe(false);
  });

  it('cancellation by signal compensates, and run rejects with the reason', async () => {
    const log: string[] = [];
    let started: () => void = () => undefined;
    const inStep = new Promise<void>((resolve) => (started = resolve));
    const saga = defineSaga('cancel', [
      { name: 'a', run: () => 'x', compensate: () => void log.push('undo a') },
      {
        name: 'b',
        run: (_c, signal) =>
          new Promise((_, reject) => {
            started();
            signal.addEventListener('abort', () => reject(signal.reason as Error));
          }),
        compensate: (ctx) => void log.push(`undo b ${String(ctx.completed)}`),
      },
    ]);
    const sagas = coordinator({ sagas: [saga] });
    const controller = new AbortController();
    const running = sagas.run(saga, 'c-1', null, { signal: controller.signal });
    await inStep;
    const reason = new Error('user cancelled');
    controller.abort(reason);
    await expect(running).rejects.toBe(reason);
    await until(async () => {
      expect((await sagas.get(saga, 'c-1'))?.status).toBe('compensated');
    }, 5000);
    expect(log).toEqual(['undo b false', 'undo a']);
    expect((await sagas.get(saga, 'c-1'))?.reason).toBe('cancelled');
  });

  it('cancel(id) from anywhere makes the owner compensate at its next step boundary', async () => {
    const log: string[] = [];
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const saga = defineSaga('remote', [
      {
        name: 'a',
        run: async () => {
          await gate;
          return 1;
        },
        compensate: () => void log.push('undo a'),
      },
      { name: 'b', run: () => void log.push('do b') },
    ]);
    const sagas = coordinator({ sagas: [saga] });
    const running = sagas.run(saga, 'r-1', null);
    await until(async () => {
      expect((await sagas.get(saga, 'r-1'))?.step).toBe('a');
    }, 5000);
    expect(await sagas.cancel(saga, 'r-1')).toBe(true);
    release();
    expect((await running).status).toBe('compensated');
    expect(log).toEqual(['undo a']);
  });

  it("a done with the next step's begin turns into compensation from the done step for a cancel or the deadline, on Redis and in memory", async () => {
    for (const backend of [client, new MemorySagaBackend()]) {
      const store = new SagaStore({
        client: backend,
        prefix: `next:${backend === client ? 'redis' : 'memory'}:`,
        shards: 1,
        leaseMs: 60_000,
        historyLimit: 16,
        finishedHistory: 16,
        retentionMs: 60_000,
      });
      const me = { owner: 'me', fence: 1, version: 1 };
      // 'c': cancel requested while step 0 ran; 'd': the saga's deadline passed meanwhile.
      for (const [id, timeoutMs] of [
        ['c', 0],
        ['d', 300],
      ] as const) {
        expect((await store.start('n', id, 'me', '{}', timeoutMs, 3)).kind).toBe('created');
        const begun = await store.transition('n', id, me, 'begin', 0, 'attempt 1', '1');
        expect(begun).toMatchObject({ ok: true, version: 2, status: 'running' });
        if (id === 'c') expect(await store.cancel('n', id)).toBe(true);
        else await new Promise((resolve) => setTimeout(resolve, 350));
        const reply = await store.transition(
          'n',
          id,
          { ...me, version: 2 },
          'next',
          0,
          'attempt 1',
          '"out"',
        );
        const why = id === 'c' ? 'cancelled' : 'saga-timeout';
        expect(reply).toMatchObject({ ok: true, version: 4, status: 'compensating', cj: 0, why });
        const read = await store.read('n', id);
        expect(read?.row).toMatchObject({
          status: 'compensating',
          cur: 1,
          cj: 0,
          phase: 'idle',
          version: 4,
        });
        expect(read?.row.outputs.get(0)).toBe('"out"');
        expect(read?.row.attempts.has(1)).toBe(false);
        // time|version|fence|event|step|detail
        expect(read?.history.map((h) => h.split('|').slice(1))).toEqual([
          ['1', '1', 'start', '-1', 'me'],
          ['2', '1', 'begin', '0', 'attempt 1'],
          ['3', '1', 'done', '0', ''],
          ['4', '1', 'fail', '1', 'attempt 1'],
        ]);
      }
      // On the stored last step (a definition that gained steps since), a plain done.
      expect((await store.start('n', 'last', 'me', '{}', 0, 1)).kind).toBe('created');
      await store.transition('n', 'last', me, 'begin', 0, 'attempt 1', '1');
      const last = { ...me, version: 2 };
      expect(
        await store.transition('n', 'last', last, 'next', 0, 'attempt 1', '"out"'),
      ).toMatchObject({ ok: true, version: 3, status: 'completed' });
      const read = await store.read('n', 'last');
      expect(read?.history.at(-1)?.split('|').slice(1)).toEqual(['3', '1', 'done', '0', '']);
    }
  });

  it('a finished saga costs at most 1 KB of Redis', async () => {
    const saga = orderSaga([]);
    const sagas = coordinator({ sagas: [saga] });
    await sagas.run(saga, 'order-000123', { sku: 'sku-42', cents: 1999 });
    const keys = await client.keys('keel:saga:*');
    let bytes = 0;
    for (const key of keys) {
      if (key.endsWith('live') || key.includes(':fin:')) continue;
      bytes += Number(await client.memory('USAGE', key));
    }
    // plus the index entry in fin:completed (a few tens of bytes)
    expect(bytes).toBeLessThanOrEqual(1024 - 64);
    expect(await client.pttl(keys.find((k) => k.includes(':s:')) ?? '')).toBeGreaterThan(0);
  });

  it('a transition that neither finishes nor trims runs four commands in its script', async () => {
    // Deterministic cost (INFO commandstats counts the commands a script runs): TIME, HMGET,
    // one HSET, RPUSH to the history — no ZADD to the recovery index while the lease moved by
    // less than half its length from the indexed score.
    const store = oneShardStore(client, 'count:', 15_000);
    const started = await store.start('c', 'i', 'me', '{}', 0, 3);
    const row = { owner: 'me', fence: 1, version: started.row?.version ?? 0 };
    await client.config('RESETSTAT');
    const ops = [
      ['begin', 0, '1'],
      ['done', 0, '{"ok":1}'],
      ['begin', 1, '1'],
      ['done', 1, '{"ok":2}'],
    ] as const;
    for (const [op, step, argument] of ops) {
      const reply = await store.transition('c', 'i', row, op, step, '', argument);
      expect(reply.ok).toBe(true);
      row.version = reply.ok ? reply.version : row.version;
    }
    const stats = await client.info('commandstats');
    let inner = 0;
    for (const m of stats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
      // Redis 7 names subcommands `config|resetstat`: count only what the scripts ran.
      const name = (m[1] ?? '').split('|')[0] ?? '';
      if (!['evalsha', 'eval', 'config', 'info'].includes(name)) inner += Number(m[2]);
    }
    expect(inner / ops.length).toBeLessThanOrEqual(4);
    expect(stats).not.toMatch(/^cmdstat_zadd:/m);
    // The index never runs ahead of the lease: an instance whose lease ran out is found.
    const score = Number(await client.zscore('count:{c:0}:live', 'i'));
    const [ls, ix] = await client.hmget('count:{c:0}:s:i', 'ls', 'ix');
    expect(score).toBe(Number(ix));
    expect(score).toBeLessThanOrEqual(Number(ls));
    expect(Number(ls) - score).toBeLessThanOrEqual(15_000 / 2);
  });

  it('the recovery index moves when the lease moved by more than half its length, and after data without an indexed score', async () => {
    const store = oneShardStore(client, 'ix:', 200);
    const hash = 'ix:{c:0}:s:i';
    const started = await store.start('c', 'i', 'me', '{}', 0, 5);
    const row = { owner: 'me', fence: 1, version: started.row?.version ?? 0 };
    const step = async (op: 'begin' | 'done', n: number, argument: string) => {
      const reply = await store.transition('c', 'i', row, op, n, '', argument);
      expect(reply.ok).toBe(true);
      if (reply.ok) row.version = reply.version;
      return reply.ok ? reply.lease : 0;
    };
    const index = async () => Number(await client.zscore('ix:{c:0}:live', 'i'));
    const first = await index();
    await new Promise((r) => setTimeout(r, 150)); // more than half of the 200 ms lease
    const lease = await step('begin', 0, '1');
    expect(await index()).toBe(lease); // moved: it was more than 100 ms behind
    expect(Number(await client.hget(hash, 'ix'))).toBe(lease);
    expect(lease - first).toBeGreaterThan(100);
    // Data written before the indexed score was kept (no `ix`): the next transition indexes.
    await client.hdel(hash, 'ix');
    await client.zadd('ix:{c:0}:live', 1, 'i');
    const next = await step('done', 0, '{}');
    expect(await index()).toBe(next);
    expect(Number(await client.hget(hash, 'ix'))).toBe(next);
    // A foreign `ix` that is not a number (here the same length as the lease and ordered inside
    // the window as text) is not trusted: the next transition indexes again.
    await client.hset(hash, 'ix', `${String(next).slice(0, -1)}/`);
    await client.zadd('ix:{c:0}:live', 1, 'i');
    const after = await step('begin', 1, '1');
    expect(await index()).toBe(after);
    expect(Number(await client.hget(hash, 'ix'))).toBe(after);
  });

  it("a step's input and outputs are its own: what one step changes, the next does not see", async () => {
    const seen: unknown[] = [];
    const saga = defineSaga('own', [
      {
        name: 'a',
        run: (ctx: StepContext<{ n: number[] }>) => {
          ctx.input.n.push(99);
          return { list: [1] };
        },
      },
      {
        name: 'b',
        run: (ctx) => {
          seen.push(structuredClone(ctx.input), structuredClone(ctx.outputs));
          ctx.outputs.a.list.push(2);
          ctx.input.n.push(98);
          return 0;
        },
      },
      {
        name: 'c',
        run: (ctx) => {
          seen.push(ctx.input, ctx.outputs);
          return 0;
        },
      },
    ]);
    const sagas = coordinator({ sagas: [saga] });
    expect((await sagas.run(saga, 'own-1', { n: [1] })).status).toBe('completed');
    expect(seen).toEqual([
      { n: [1] },
      { a: { list: [1] } },
      { n: [1] },
      { a: { list: [1] }, b: 0 },
    ]);
  });

  it("a step's context holds input and outputs as plain own values: the same on every read, kept by a spread", async () => {
    const seen: unknown[] = [];
    const saga = defineSaga('plain', [
      { name: 'a', run: () => ({ x: 1 }) },
      {
        name: 'b',
        run: (ctx: StepContext<{ n: number }>) => {
          const input = Object.getOwnPropertyDescriptor(ctx, 'input');
          const outputs = Object.getOwnPropertyDescriptor(ctx, 'outputs');
          const copy = { ...ctx };
          seen.push(
            input?.value,
            input?.enumerable,
            'get' in (input ?? {}),
            outputs?.value,
            Object.isFrozen(outputs?.value),
            ctx.input === ctx.input && ctx.outputs === ctx.outputs,
            copy.input === ctx.input && copy.outputs === ctx.outputs,
            Object.keys(ctx),
          );
          return 0;
        },
      },
    ]);
    const sagas = coordinator({ sagas: [saga] });
    expect((await sagas.run(saga, 'plain-1', { n: 7 })).status).toBe('completed');
    expect(seen).toEqual([
      { n: 7 },
      true,
      false,
      { a: { x: 1 } },
      true,
      true,
      true,
      ['saga', 'sagaId', 'step', 'input', 'outputs', 'idempotencyKey', 'attempt', 'fence'],
    ]);
  });

  /**
   * Saga `name`'s instance `i` (prefix `<name>:`, one shard, lease 500 ms) as a coordinator that
   * died after step 0 left it, its input then overwritten by a foreign write (not JSON) and its
   * lease ended: the next owner decodes what it claims. Returns the store.
   */
  async function leftWithForeignInput(name: string): Promise<SagaStore> {
    const store = oneShardStore(client, `${name}:`, 500);
    const started = await store.start(name, 'i', 'gone', '{}', 0, 2);
    const row = { owner: 'gone', fence: 1, version: started.row?.version ?? 0 };
    for (const [op, argument] of [
      ['begin', '1'],
      ['done', '1'],
    ] as const) {
      const reply = await store.transition(name, 'i', row, op, 0, '', argument);
      if (reply.ok) row.version = reply.version;
    }
    await client.hset(`${name}:{${name}:0}:s:i`, 'in', '{not json', 'ls', 1);
    return store;
  }

  it('an input in Redis that is not JSON fails the step that reads it (the saga compensates), as a read inside the step', async () => {
    const errors: unknown[] = [];
    const saga = defineSaga('bad', [
      { name: 'a', run: () => 1 },
      {
        name: 'b',
        run: (ctx) => {
          try {
            return ctx.input;
          } catch (error) {
            errors.push(error);
            throw error;
          }
        },
        retry: { attempts: 1 },
      },
    ]);
    // An instance left by a coordinator that died after step a, its input overwritten by a
    // foreign write: the next owner decodes what it claims.
    const store = await leftWithForeignInput('bad');
    const sagas = coordinator({
      sagas: [saga],
      prefix: 'bad:',
      shards: 1,
      leaseMs: 500,
      recovery: true,
      recoveryIntervalMs: 20,
    });
    expect(sagas).toBeDefined();
    // Read from the store: the coordinator's get() decodes the input too.
    let snap = (await store.read('bad', 'i'))?.row;
    for (let i = 0; i < 200 && snap?.status !== 'compensated'; i++) {
      await new Promise((r) => setTimeout(r, 10));
      snap = (await store.read('bad', 'i'))?.row;
    }
    expect(snap?.status).toBe('compensated');
    expect(snap?.owner).not.toBe('gone');
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(SyntaxError);
  });

  it('a compensation whose stored input is not JSON fails its attempts and parks the saga needs-attention (the run does not throw)', async () => {
    let compensations = 0;
    const saga = defineSaga(
      'badc',
      [
        {
          name: 'a',
          run: () => 1,
          compensate: () => {
            compensations++;
          },
        },
        {
          name: 'b',
          run: () => {
            throw new Error('no stock');
          },
          retry: { attempts: 1 },
        },
      ],
      { compensationRetry: { attempts: 2, initialDelayMs: 1, jitter: 0 } },
    );
    // As above: an instance left after step a, its input overwritten by a foreign write. Step b
    // fails; compensating a needs a context, and building it reads the input.
    const store = await leftWithForeignInput('badc');
    const unhandled: unknown[] = [];
    const onUnhandled = (error: unknown): void => void unhandled.push(error);
    process.on('unhandledRejection', onUnhandled);
    try {
      coordinator({
        sagas: [saga],
        prefix: 'badc:',
        shards: 1,
        leaseMs: 500,
        recovery: true,
        recoveryIntervalMs: 20,
      });
      let snap = (await store.read('badc', 'i'))?.row;
      for (let i = 0; i < 300 && snap?.status !== 'needs-attention'; i++) {
        await new Promise((r) => setTimeout(r, 10));
        snap = (await store.read('badc', 'i'))?.row;
      }
      expect(snap?.status).toBe('needs-attention');
      // Retried in place by the one owner that claimed it, and parked naming the error. (Before:
      // each attempt threw out of the run, the instance waited out its lease to be claimed
      // again, and it was parked with no reason.)
      const history = (await store.read('badc', 'i'))?.history ?? [];
      const ops = history.map((h) => h.split('|')[3]);
      expect(ops.filter((op) => op === 'claim')).toHaveLength(1);
      expect(history.at(-1)).toMatch(/\|park\|0\|SyntaxError/);
      expect(snap?.compensations.get(0)).toBe(2);
      expect(compensations).toBe(0);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('a context over 64 KiB of stored text decodes input and outputs when read: the same values, read once each', async () => {
    const seen: unknown[] = [];
    const big = 'x'.repeat(70 * 1024);
    const saga = defineSaga('lazy', [
      { name: 'a', run: () => ({ x: 1 }) },
      {
        name: 'b',
        run: (ctx: StepContext<{ s: string }>) => {
          seen.push(
            'get' in (Object.getOwnPropertyDescriptor(ctx, 'input') ?? {}),
            ctx.input.s === big,
            ctx.input === ctx.input,
            ctx.outputs,
          );
          return 0;
        },
      },
    ]);
    const sagas = coordinator({ sagas: [saga] });
    expect((await sagas.run(saga, 'lazy-1', { s: big })).status).toBe('completed');
    expect(seen).toEqual([true, true, true, { a: { x: 1 } }]);
  });

  it('a write whose reply is lost is retried; the refusal that follows re-reads, and every step runs once', async () => {
    const own = redis().client(0, { commandTimeout: 100 });
    let runs = 0;
    const saga = defineSaga('lost', [
      {
        name: 'a',
        run: () => {
          runs++;
          // The step's `done` is sent to a stopped server: its reply times out (a store error,
          // retried) though the write lands once the server runs again.
          redis().pause(0);
          setTimeout(() => redis().resume(0), 400);
          return 1;
        },
      },
      { name: 'b', run: () => 2 },
    ]);
    const sagas = coordinator({ sagas: [saga], redis: own });
    const outcome = await sagas.run(saga, 'lost-1', null);
    expect(outcome).toMatchObject({ status: 'completed', outputs: { a: 1, b: 2 } });
    expect(runs).toBe(1);
    const history = (await sagas.get(saga, 'lost-1'))?.history.map((h) => h.event);
    expect(history).toEqual(['start', 'begin', 'done', 'begin', 'done']);
    own.disconnect();
  });

  it("a step's begin whose reply is lost does not use up an attempt: the step runs, not begins again", async () => {
    const own = redis().client(0, { commandTimeout: 100 });
    let runs = 0;
    const saga = defineSaga('lost-begin', [
      {
        name: 'a',
        retry: { attempts: 2, initialDelayMs: 1, jitter: 0 },
        run: () => {
          runs++;
          if (runs > 1) return 'ok';
          // The second attempt's `begin` is sent to a stopped server: its reply times out
          // though the write lands once the server runs again.
          redis().pause(0);
          setTimeout(() => redis().resume(0), 400);
          throw new Error('first attempt fails');
        },
      },
    ]);
    const sagas = coordinator({ sagas: [saga], redis: own });
    const outcome = await sagas.run(saga, 'lost-begin-1', null);
    expect(outcome).toMatchObject({ status: 'completed', outputs: { a: 'ok' } });
    expect(runs).toBe(2);
    const history = (await sagas.get(saga, 'lost-begin-1'))?.history.map((h) => h.event);
    expect(history).toEqual(['start', 'begin', 'begin', 'done']);
    own.disconnect();
  });

  it('a transition that landed while its reply was lost is renewed before the next step runs: nobody claims it, the step runs once', async () => {
    const real = redis().client(0);
    let armed = false;
    let blockedUntil = 0;
    const writes = new Set([TRANSITION.sha, TRANSITIONS.sha]);
    // The step's done + next begin lands, its reply is lost, and the retries fail for longer
    // than the lease (a partition): the lease has run out when the write is found to have landed.
    const flaky: ScriptClient = {
      async evalsha(sha, n, ...args) {
        if (writes.has(sha)) {
          if (armed) {
            armed = false;
            await real.evalsha(sha, n, ...args);
            blockedUntil = Date.now() + 1000;
            throw new Error('connection reset (reply lost)');
          }
          if (Date.now() < blockedUntil) throw new Error('connection refused (partition)');
        }
        return real.evalsha(sha, n, ...args);
      },
      eval: (source, n, ...args) => real.eval(source, n, ...args),
    };
    const runs: string[] = [];
    const peer: { other?: SagaCoordinator } = {};
    const saga = defineSaga('renewed', [
      {
        name: 'a',
        run: () => {
          armed = true;
          return 'A';
        },
      },
      {
        name: 'b',
        retry: { attempts: 2, initialDelayMs: 1 },
        run: async (ctx: StepContext) => {
          runs.push(`b fence ${ctx.fence} attempt ${ctx.attempt}`);
          // Another process looks for expired leases while b runs.
          if (ctx.fence === 1)
            runs.push(`claimed ${await (peer.other as SagaCoordinator).recoverNow()}`);
          return 'B';
        },
      },
    ]);
    const sagas = coordinator({ sagas: [saga], redis: flaky, leaseMs: 600, shards: 1 });
    peer.other = coordinator({ sagas: [saga], leaseMs: 600, shards: 1 });
    const outcome = await sagas.run(saga, 'renewed-1', null);
    expect(outcome).toMatchObject({ status: 'completed', outputs: { a: 'A', b: 'B' } });
    expect(runs).toEqual(['b fence 1 attempt 1', 'claimed 0']);
    real.disconnect();
  }, 20_000);

  it("a step's done + begin whose reply is lost: every state change is heard once, in order, and the next step runs as attempt 1", async () => {
    const own = redis().client(0, { commandTimeout: 100 });
    const runs: string[] = [];
    const saga = defineSaga('lost-next', [
      {
        name: 'a',
        run: () => {
          runs.push('a');
          redis().pause(0);
          setTimeout(() => redis().resume(0), 400);
          return 'A';
        },
      },
      {
        name: 'b',
        retry: { attempts: 1 },
        run: (ctx: StepContext) => void runs.push(`b#${ctx.attempt}`),
      },
      { name: 'c', retry: { attempts: 1 }, run: () => void runs.push('c') },
    ]);
    const sagas = coordinator({ sagas: [saga], redis: own, finishedHistory: 16 });
    const events: string[] = [];
    sagas.onTransition((e) => events.push(`${e.event}:${e.step ?? ''}:${e.version}`));
    expect((await sagas.run(saga, 'ln-1', null)).status).toBe('completed');
    expect(runs).toEqual(['a', 'b#1', 'c']);
    const history = (await sagas.get(saga, 'ln-1'))?.history ?? [];
    expect(events).toEqual(history.map((h) => `${h.event}:${h.step ?? ''}:${h.version}`));
    expect(events).toEqual([
      'start::1',
      'begin:a:2',
      'done:a:3',
      'begin:b:4',
      'done:b:5',
      'begin:c:6',
      'done:c:7',
    ]);
    own.disconnect();
  });

  it('a last transition whose reply is lost completes the saga with no fenced report', async () => {
    const own = redis().client(0, { commandTimeout: 100 });
    const fenced: unknown[] = [];
    const onFenced = (m: unknown): void => void fenced.push(m);
    subscribe('keel:saga:fenced', onFenced);
    try {
      const saga = defineSaga('lost-final', [
        {
          name: 'a',
          run: () => {
            redis().pause(0);
            setTimeout(() => redis().resume(0), 400);
            return 'A';
          },
        },
      ]);
      const sagas = coordinator({ sagas: [saga], redis: own });
      expect(await sagas.run(saga, 'lf-1', null)).toMatchObject({ status: 'completed' });
      expect(fenced).toEqual([]);
    } finally {
      unsubscribe('keel:saga:fenced', onFenced);
      own.disconnect();
    }
  });

  it("a step's done and the next step's begin go in one call: two state changes, each versioned and in the history", async () => {
    const own = redis().client(0);
    const calls: string[] = [];
    const evalsha = own.evalsha.bind(own);
    const writes = new Set([START.sha, TRANSITION.sha, TRANSITIONS.sha]);
    own.evalsha = ((...args: Parameters<typeof evalsha>) => {
      // The saga's writes only (not the recovery loop's claims on the same client).
      if (writes.has(String(args[0]))) calls.push(String(args[0]));
      return evalsha(...args);
    }) as typeof own.evalsha;
    const saga = defineSaga('merged', [
      { name: 'a', run: () => 1 },
      { name: 'b', run: () => 2 },
      { name: 'c', run: () => 3 },
    ]);
    const sagas = coordinator({ sagas: [saga], redis: own, finishedHistory: 16 });
    expect(await sagas.run(saga, 'merged-1', null)).toMatchObject({
      status: 'completed',
      outputs: { a: 1, b: 2, c: 3 },
    });
    // start, begin a, done a + begin b, done b + begin c, done c
    expect(calls.length).toBe(5);
    const history = (await sagas.get(saga, 'merged-1'))?.history ?? [];
    expect(history.map((h) => [h.event, h.step ?? null, h.version])).toEqual([
      ['start', null, 1],
      ['begin', 'a', 2],
      ['done', 'a', 3],
      ['begin', 'b', 4],
      ['done', 'b', 5],
      ['begin', 'c', 6],
      ['done', 'c', 7],
    ]);
    own.disconnect();
  });

  it('a step running for several leases keeps its saga: the heartbeat renews it, nobody claims it', async () => {
    let runs = 0;
    const saga = defineSaga('long', [
      {
        name: 'slow',
        run: async () => {
          runs++;
          await new Promise((resolve) => setTimeout(resolve, 1600)); // over three leases
          return runs;
        },
      },
      { name: 'next', run: () => 0 },
    ]);
    const owner = coordinator({ sagas: [saga], leaseMs: 500, owner: 'owner' });
    const rival = coordinator({
      sagas: [saga],
      leaseMs: 500,
      owner: 'rival',
      recovery: true,
      recoveryIntervalMs: 20,
    });
    const outcome = await owner.run(saga, 'long-1', null);
    expect(outcome).toMatchObject({ status: 'completed', outputs: { slow: 1 } });
    expect(runs).toBe(1);
    const snap = await rival.get(saga, 'long-1');
    expect(snap?.owner).toBe('owner');
    expect(snap?.fence).toBe(1);
  });

  it('rejects bad options and unknown sagas with typed errors', async () => {
    const saga = orderSaga([]);
    invalidOption(() => new SagaCoordinator({ redis: client, sagas: [] }));
    invalidOption(() => new SagaCoordinator({ redis: client, sagas: [saga], leaseMs: 5 }));
    invalidOption(() => new SagaCoordinator({ redis: {} as never, sagas: [saga] }));
    const sagas = coordinator({ sagas: [saga] });
    const unknown = defineSaga('other', [{ name: 'x', run: () => 1 }]);
    expect(isSagaUnknownError(await sagas.run(unknown, 'x', null).catch((e: unknown) => e))).toBe(
      true,
    );
    await expect(sagas.run(saga, '', { sku: 'a', cents: 1 })).rejects.toMatchObject({
      code: 'KEEL_INVALID_OPTION',
    });
  });

  describe('ownership', () => {
    it("an old owner's late write is refused after another coordinator took over; no step runs twice", async () => {
      const effects: string[] = [];
      let releaseA: () => void = () => undefined;
      const gateA = new Promise<void>((resolve) => (releaseA = resolve));
      let calls = 0;
      const saga = defineSaga('handover', [
        {
          name: 'a',
          run: async (ctx) => {
            calls++;
            if (calls === 1) await gateA; // A's call hangs past its lease
            effects.push(`a by attempt ${ctx.attempt}`);
            return calls;
          },
          compensate: () => void effects.push('undo a'),
        },
        { name: 'b', run: () => void effects.push('b') },
      ]);
      // A's clock never moves: its heartbeat never renews, as in a paused process.
      const a = coordinator({ sagas: [saga], leaseMs: 200, clock: new ManualClock(), owner: 'A' });
      const b = coordinator({ sagas: [saga], leaseMs: 200, owner: 'B' });
      const runA = a.run(saga, 'h-1', null);
      await until(async () => {
        expect((await a.get(saga, 'h-1'))?.step).toBe('a');
      }, 5000);
      await until(async () => {
        expect(await b.recoverNow()).toBe(1);
      }, 5000);
      await until(async () => {
        expect((await b.get(saga, 'h-1'))?.status).toBe('completed');
      }, 5000);
      releaseA(); // A's step returns now; its 'done' must be refused
      const fenced: unknown[] = [];
      a.onTransition((e) => fenced.push(e));
      const snapBefore = await b.get(saga, 'h-1');
      await new Promise((resolve) => setTimeout(resolve, 50));
      const snapAfter = await b.get(saga, 'h-1');
      expect(snapAfter?.version).toBe(snapBefore?.version);
      expect(snapAfter?.owner).toBe('B');
      expect(snapAfter?.fence).toBe(2);
      expect(snapAfter?.outputs).toEqual({ a: 2 });
      expect(effects).toEqual(['a by attempt 2', 'b', 'a by attempt 1']);
      expect(fenced).toEqual([]);
      // A stopped driving at the refusal; its caller still learns how the saga ended.
      await a.close();
      expect(await runA).toMatchObject({ status: 'completed', outputs: { a: 2 } });
    });
  });
});
