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
});
