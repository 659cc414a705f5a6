import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import {
  IdempotencyKeys,
  isIdempotencyCancelledError,
  isIdempotencyConflictError,
} from '../../src/saga/index.js';
import { ManualClock } from '../../src/core/index.js';
import { ACQUIRE, COMPLETE, UNDO_BEGIN, UNDO_END } from '../../src/saga/idempotency.js';
import { invalidOption } from '../support/helpers.js';
import { losingOneReply } from '../support/resend.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const later = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('IdempotencyKeys on a real redis-server', () => {
  const redis = useRedis();
  let client: Redis;
  beforeAll(() => {
    client = redis().client(0);
  });
  afterAll(() => {
    client.disconnect();
  });
  afterEach(async () => {
    await redis().flushAll();
  });

  it('the first call runs; concurrent and later calls with the key wait for and return its result', async () => {
    const { idempotent } = new IdempotencyKeys({ redis: client });
    let runs = 0;
    const fn = async (): Promise<{ id: string }> => {
      runs++;
      await later(100);
      return { id: `ch_${runs}` };
    };
    const results = await Promise.all([1, 2, 3, 4].map(() => idempotent('charge:1', fn)));
    expect(results).toEqual([{ id: 'ch_1' }, { id: 'ch_1' }, { id: 'ch_1' }, { id: 'ch_1' }]);
    expect(await idempotent('charge:1', fn)).toEqual({ id: 'ch_1' });
    expect(runs).toBe(1);
  });

  it('a different payload for one key is a typed conflict; the same payload in another key order is not', async () => {
    const { idempotent } = new IdempotencyKeys({ redis: client });
    await idempotent('k', () => 1, { payload: { cents: 5, currency: 'eur' } });
    expect(await idempotent('k', () => 2, { payload: { currency: 'eur', cents: 5 } })).toBe(1);
    const error = await idempotent('k', () => 3, { payload: { cents: 6, currency: 'eur' } }).catch(
      (e: unknown) => e,
    );
    expect(isIdempotencyConflictError(error)).toBe(true);
  });

  it('a failing call stores nothing: the next call runs afresh', async () => {
    const { idempotent } = new IdempotencyKeys({ redis: client });
    await expect(idempotent('f', () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await idempotent('f', () => 'ok')).toBe('ok');
  });

  it("a dead holder's in-progress lease is taken over after leaseMs, not after the result ttl", async () => {
    // A holder that died: its clock never moves, so its heartbeat never renews the lease.
    const frozen = new IdempotencyKeys({ redis: client, leaseMs: 300, clock: new ManualClock() });
    const holder = frozen.idempotent('dead', () => new Promise<never>(() => undefined));
    void holder.catch(() => undefined);
    await later(50);
    const keys = new IdempotencyKeys({ redis: client, leaseMs: 300, ttlMs: 86_400_000 });
    const started = performance.now();
    expect(await keys.idempotent('dead', () => 'taken over')).toBe('taken over');
    expect(performance.now() - started).toBeLessThan(5000);
    expect(await client.pttl('keel:idem:{dead}')).toBeGreaterThan(80_000_000);
  });

  it('a call whose claim was applied but its answer lost (connection dropped, sent again) runs at once, not after its own lease', async () => {
    const own = redis().client(0);
    const { client: lossy, arm } = losingOneReply(own, ACQUIRE.sha);
    const { idempotent } = new IdempotencyKeys({ redis: lossy, leaseMs: 60_000 });
    await idempotent('warm-up', () => 0); // the scripts are cached: the next claim goes by hash
    let runs = 0;
    arm();
    const call = idempotent('charge:lost-claim', () => ++runs);
    // Waiting for its own claim would take the whole lease (60 s).
    const outcome = await Promise.race([call, later(10_000).then(() => 'still waiting')]);
    expect(outcome).toBe(1);
    expect(await idempotent('charge:lost-claim', () => ++runs)).toBe(1);
    expect(runs).toBe(1);
    own.disconnect();
  });

  it('a call whose result was stored but its answer lost (connection dropped, sent again) returns the result, not IdempotencyLostError', async () => {
    const own = redis().client(0);
    const { client: lossy, arm } = losingOneReply(own, COMPLETE.sha);
    const { idempotent } = new IdempotencyKeys({ redis: lossy });
    await idempotent('warm-up', () => 0);
    let runs = 0;
    arm();
    expect(await idempotent('charge:lost-store', () => ++runs)).toBe(1);
    expect(await idempotent('charge:lost-store', () => ++runs)).toBe(1);
    expect(runs).toBe(1);
    own.disconnect();
  });

  it.each([
    ['its start', UNDO_BEGIN.sha],
    ['its end', UNDO_END.sha],
  ])(
    'a compensation whose answer to %s was lost (connection dropped, sent again) undoes once and says undone, at once',
    async (_, sha) => {
      const own = redis().client(0);
      const { client: lossy, arm } = losingOneReply(own, sha);
      const keys = new IdempotencyKeys({ redis: lossy, leaseMs: 60_000 });
      await keys.compensate('warm-up', () => undefined); // the scripts are cached
      await keys.idempotent('warm-up-2', () => 0);
      await keys.compensate('warm-up-2', () => undefined);
      expect(await keys.idempotent('refund:1', () => 'charged')).toBe('charged');
      const undone: unknown[] = [];
      arm();
      const call = keys.compensate('refund:1', (result) => void undone.push(result));
      const outcome = await Promise.race([call, later(10_000).then(() => 'still waiting')]);
      expect(outcome).toBe('undone');
      expect(undone).toEqual(['charged']);
      expect(await keys.compensate('refund:1', () => void undone.push('again'))).toBe('already');
      expect(undone).toEqual(['charged']);
      own.disconnect();
    },
  );

  it('a waiter waits while the holder is alive (its lease renewed), however long the call', async () => {
    const keys = new IdempotencyKeys({ redis: client, leaseMs: 150 });
    let runs = 0;
    const slow = keys.idempotent('slow', async () => {
      runs++;
      await later(600); // four leases long; the heartbeat keeps it
      return 'slow result';
    });
    await later(30);
    const waiter = keys.idempotent('slow', () => {
      runs++;
      return 'waiter ran';
    });
    expect(await Promise.all([slow, waiter])).toEqual(['slow result', 'slow result']);
    expect(runs).toBe(1);
  });

  it("compensate: undoes a completed action once; an empty compensation bars a later action (Seata's two anomalies)", async () => {
    const { idempotent, compensate } = new IdempotencyKeys({ redis: client });
    await idempotent('a', () => ({ held: 5 }));
    const undone: unknown[] = [];
    expect(await compensate('a', (result) => void undone.push(result))).toBe('undone');
    expect(await compensate('a', (result) => void undone.push(result))).toBe('already');
    expect(undone).toEqual([{ held: 5 }]);
    // After its compensation the action must not run (suspension).
    const late = await idempotent('a', () => 'late').catch((e: unknown) => e);
    expect(isIdempotencyCancelledError(late)).toBe(true);

    // Compensation with no action to undo: nothing is undone, and the action is barred.
    let ran = false;
    expect(await compensate('never-ran', () => void (ran = true))).toBe('empty');
    expect(ran).toBe(false);
    const barred = await idempotent('never-ran', () => 'too late').catch((e: unknown) => e);
    expect(isIdempotencyCancelledError(barred)).toBe(true);
  });

  it('compensate waits for an action in progress, then undoes it', async () => {
    const { idempotent, compensate } = new IdempotencyKeys({ redis: client });
    const action = idempotent('busy', async () => {
      await later(200);
      return 'done';
    });
    await later(30);
    const seen: unknown[] = [];
    expect(await compensate('busy', (r) => void seen.push(r))).toBe('undone');
    expect(await action).toBe('done');
    expect(seen).toEqual(['done']);
  });

  it('rejects bad options and keys with typed errors', async () => {
    invalidOption(() => new IdempotencyKeys({ redis: client, leaseMs: 120_000 }));
    invalidOption(() => new IdempotencyKeys({ redis: client, leaseMs: 5000, ttlMs: 2000 }));
    const { idempotent } = new IdempotencyKeys({ redis: client });
    await expect(idempotent('', () => 1)).rejects.toMatchObject({ code: 'KEEL_INVALID_OPTION' });
    const aborted = AbortSignal.abort(new Error('stop'));
    await expect(idempotent('x', () => 1, { signal: aborted })).rejects.toThrow('stop');
  });
});
