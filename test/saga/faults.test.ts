/**
 * Redis out of memory under `noeviction` (`maxmemory` set below what it uses: every write that
 * may grow memory is refused with `OOM`) while sagas run and idempotency keys are held — a fault
 * the chaos suite does not script. An effect that already happened must not be forgotten because
 * its record could not be written, and nothing may be half-applied.
 *
 * Redis 7.0 refuses a script without flags for memory only at its first write that may grow
 * memory (`denyoom`), and only while the script has written nothing yet.
 */
import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { IdempotencyKeys, SagaCoordinator, defineSaga } from '../../src/saga/index.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

async function outOfMemory(admin: Redis): Promise<void> {
  await admin.config('SET', 'maxmemory-policy', 'noeviction');
  await admin.config('SET', 'maxmemory', '1');
}

async function memoryBack(admin: Redis): Promise<void> {
  await admin.config('SET', 'maxmemory', '0');
}

describeRedis('keel/saga under server faults (out of memory, SCRIPT FLUSH)', () => {
  const redis = useRedis({ count: 1 });

  afterEach(async () => {
    await memoryBack(redis().client(0));
    await redis().flushAll();
  });

  it('IdempotencyKeys: the result of a function that ran is stored although memory ran out meanwhile', async () => {
    const admin = redis().client(0);
    const { idempotent } = new IdempotencyKeys({ redis: redis().client(0), leaseMs: 1000 });
    let runs = 0;
    const charge = async (): Promise<string> => {
      runs++;
      await outOfMemory(admin);
      return `ch_${runs}`;
    };
    // The charge happened: its result must be kept, or the next call charges again.
    expect(await idempotent('charge:1', charge)).toBe('ch_1');
    await memoryBack(admin);
    expect(await idempotent('charge:1', charge)).toBe('ch_1');
    expect(runs).toBe(1);
  });

  it('IdempotencyKeys: a holder keeps its lease while Redis is out of memory (no second run meanwhile)', async () => {
    const admin = redis().client(0);
    const { idempotent } = new IdempotencyKeys({ redis: redis().client(0), leaseMs: 1000 });
    const serverMs = async (): Promise<number> => {
      const [sec, us] = await admin.time();
      return Number(sec) * 1000 + Math.floor(Number(us) / 1000);
    };
    let runs = 0;
    let second: Promise<string> | undefined;
    const charge = async (signal: AbortSignal): Promise<string> => {
      runs++;
      if (runs > 1) return 'ch_again';
      // Memory runs out for two and a half leases (on Redis's clock) while the charge runs.
      await outOfMemory(admin);
      const began = await serverMs();
      await until(
        async () => expect((await serverMs()) - began).toBeGreaterThanOrEqual(2500),
        10_000,
      );
      await memoryBack(admin);
      // Another call with the key now: the charge is still running, and still holds it.
      second = idempotent('charge:3', charge);
      await until(
        async () => expect(await admin.hget('keel:idem:{charge:3}', 's')).toBe('run'),
        10_000,
      );
      expect(signal.aborted).toBe(false);
      return 'ch_1';
    };
    expect(await idempotent('charge:3', charge)).toBe('ch_1');
    expect(await second).toBe('ch_1');
    expect(runs).toBe(1);
  });

  it('IdempotencyKeys: a compensation that ran is recorded although memory ran out meanwhile', async () => {
    const admin = redis().client(0);
    const { idempotent, compensate } = new IdempotencyKeys({
      redis: redis().client(0),
      leaseMs: 1000,
    });
    await idempotent('charge:2', () => 'ch_2');
    let undone = 0;
    const refund = async (): Promise<void> => {
      undone++;
      await outOfMemory(admin);
    };
    expect(await compensate('charge:2', refund)).toBe('undone');
    await memoryBack(admin);
    expect(await compensate('charge:2', refund)).toBe('already');
    expect(undone).toBe(1);
  });

  it('SagaCoordinator: steps and compensations whose records meet an out-of-memory Redis run once each, and the saga ends', async () => {
    const admin = redis().client(0);
    const log: string[] = [];
    /** Memory runs out inside a call, and comes back a little later. */
    const squeeze = async (what: string): Promise<void> => {
      log.push(what);
      await outOfMemory(admin);
      setTimeout(() => void memoryBack(admin), 300);
    };
    const saga = defineSaga('oom', [
      { name: 'a', run: () => squeeze('run a'), compensate: () => squeeze('undo a') },
      { name: 'b', run: () => squeeze('run b'), compensate: () => squeeze('undo b') },
      {
        name: 'c',
        run: async () => {
          await squeeze('run c');
          throw new Error('declined');
        },
        retry: { attempts: 1 },
      },
    ]);
    const sagas = new SagaCoordinator({ redis: redis().client(0), sagas: [saga], leaseMs: 2000 });
    try {
      const outcome = await sagas.run(saga, 'o-1', {});
      expect(outcome.status).toBe('compensated');
      expect(log).toEqual(['run a', 'run b', 'run c', 'undo b', 'undo a']);
    } finally {
      await sagas.close();
    }
  });
  it('SagaCoordinator: an owner keeps its lease while Redis is out of memory (its step is not run again by another coordinator)', async () => {
    const admin = redis().client(0);
    const serverMs = async (): Promise<number> => {
      const [sec, us] = await admin.time();
      return Number(sec) * 1000 + Math.floor(Number(us) / 1000);
    };
    const hash = 'keel:saga:{held:0}:s:h-1';
    let runs = 0;
    const saga = defineSaga('held', [
      {
        name: 'a',
        run: async (_ctx: unknown, signal: AbortSignal) => {
          runs++;
          if (runs > 1) return 'again';
          // Memory runs out for two and a half leases (on Redis's clock) while the step runs.
          await outOfMemory(admin);
          const began = await serverMs();
          await until(
            async () => expect((await serverMs()) - began).toBeGreaterThanOrEqual(2500),
            10_000,
          );
          await memoryBack(admin);
          // Memory is back: either the owner's lease is renewed, or another coordinator claims
          // the saga (its lease ran out) — whichever comes first.
          await until(async () => {
            const [fence, lease] = await admin.hmget(hash, 'f', 'ls');
            expect(fence !== '1' || Number(lease) > (await serverMs())).toBe(true);
          }, 10_000);
          expect(signal.aborted).toBe(false);
          return 'once';
        },
      },
    ]);
    const owner = new SagaCoordinator({
      redis: redis().client(0),
      sagas: [saga],
      shards: 1,
      leaseMs: 1000,
      recovery: false,
    });
    const other = new SagaCoordinator({
      redis: redis().client(0),
      sagas: [saga],
      shards: 1,
      leaseMs: 1000,
      recoveryIntervalMs: 20,
    });
    try {
      const outcome = await owner.run(saga, 'h-1', {});
      expect(outcome).toEqual({ status: 'completed', id: 'h-1', outputs: { a: 'once' } });
      expect(runs).toBe(1);
    } finally {
      await owner.close();
      await other.close();
    }
  });
  it('SCRIPT FLUSH several times while sagas run and keys are held: every saga completes, each step once', async () => {
    const admin = redis().client(0);
    const client = redis().client(0);
    const { idempotent } = new IdempotencyKeys({ redis: client });
    const runs = new Map<string, number>();
    let flushes = 0;
    const step = (name: string) => async (ctx: { sagaId: string }) => {
      const key = `${ctx.sagaId}:${name}`;
      runs.set(key, (runs.get(key) ?? 0) + 1);
      if (flushes < 5 && runs.size % 7 === 0) {
        flushes++;
        await admin.script('FLUSH');
      }
      return idempotent(key, () => key);
    };
    const saga = defineSaga('flush', [
      { name: 'a', run: step('a') },
      { name: 'b', run: step('b') },
      { name: 'c', run: step('c') },
    ]);
    const sagas = new SagaCoordinator({ redis: client, sagas: [saga] });
    try {
      const ids = Array.from({ length: 20 }, (_, i) => `s-${i}`);
      const outcomes = await Promise.all(ids.map((id) => sagas.run(saga, id, {})));
      expect(outcomes.map((o) => o.status)).toEqual(ids.map(() => 'completed'));
      expect(flushes).toBeGreaterThan(0);
      expect(runs.size).toBe(60);
      expect([...runs.values()].every((n) => n === 1)).toBe(true);
    } finally {
      await sagas.close();
    }
  });
  for (const at of ['h:o-1', 'live', 'fin:completed']) {
    it(`foreign data at ${at} (an instance's history, its shard's indexes): the saga runs to its end, indexed and expiring`, async () => {
      const admin = redis().client(0);
      await admin.set(`fx:{f:0}:${at}`, 'foreign');
      const log: string[] = [];
      const saga = defineSaga('f', [
        { name: 'a', run: () => void log.push('a') },
        { name: 'b', run: () => void log.push('b') },
      ]);
      const sagas = new SagaCoordinator({
        redis: redis().client(0),
        sagas: [saga],
        prefix: 'fx:',
        shards: 1,
      });
      try {
        expect((await sagas.run(saga, 'o-1', {})).status).toBe('completed');
        expect(log).toEqual(['a', 'b']);
        const done = await sagas.list(saga, { status: 'completed' });
        expect(done.map((s) => s.id)).toEqual(['o-1']);
        expect((await sagas.get(saga, 'o-1'))?.history.map((h) => h.event)).toContain('done');
        expect(await admin.pttl('fx:{f:0}:s:o-1')).toBeGreaterThan(0);
      } finally {
        await sagas.close();
      }
    });
  }

  it("foreign data at one instance's history does not keep the others of its shard from being recovered", async () => {
    const admin = redis().client(0);
    const saga = (log: string[]) =>
      defineSaga('r', [
        {
          name: 'a',
          run: (_ctx: unknown, signal: AbortSignal) =>
            log.length < 0
              ? undefined
              : new Promise<void>((resolve, reject) => {
                  log.push('a');
                  signal.addEventListener('abort', () => reject(signal.reason as Error));
                  if (log.includes('go')) resolve();
                }),
        },
      ]);
    // A coordinator starts three sagas of one shard and stops with their step running: their
    // leases run out, and another coordinator's recovery claims them.
    const first: string[] = [];
    const dead = new SagaCoordinator({
      redis: redis().client(0),
      sagas: [saga(first)],
      prefix: 'fx:',
      shards: 1,
      leaseMs: 300,
      recovery: false,
    });
    const runs = ['x-1', 'x-2', 'x-3'].map((id) =>
      dead.run(saga(first), id, {}).catch(() => undefined),
    );
    await until(() => expect(first).toHaveLength(3), 10_000);
    await dead.close();
    await Promise.all(runs);
    await admin.set('fx:{r:0}:h:x-2', 'foreign');
    const second = ['go'];
    const live = new SagaCoordinator({
      redis: redis().client(0),
      sagas: [saga(second)],
      prefix: 'fx:',
      shards: 1,
      leaseMs: 300,
      recoveryIntervalMs: 50,
    });
    try {
      await until(async () => {
        const statuses = await Promise.all(
          ['x-1', 'x-2', 'x-3'].map(async (id) => (await live.get('r', id))?.status),
        );
        expect(statuses).toEqual(['completed', 'completed', 'completed']);
      }, 15_000);
    } finally {
      await live.close();
    }
  });
});
