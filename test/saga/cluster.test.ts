/**
 * keel/saga on a real 3-master Redis Cluster: every script touches the keys of one hash tag
 * (`{<saga>:<shard>}`, or `{<key>}` for idempotency keys), so sagas run, are recovered, listed
 * and read, and idempotency keys work, with no CROSSSLOT error.
 */
import type { Cluster } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { IdempotencyKeys, SagaCoordinator, defineSaga } from '../../src/saga/index.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedisCluster } from '../support/vitest.js';

describeRedis('keel/saga on Redis Cluster', () => {
  const cluster = useRedisCluster();
  let client: Cluster;
  beforeAll(() => {
    client = cluster().client();
  });
  afterAll(() => {
    client.disconnect();
  });

  it('runs, recovers, lists and reads sagas spread over the slots; idempotency keys work', async () => {
    let hang = true;
    const saga = defineSaga('cl', [
      { name: 'a', run: (ctx) => `a-${ctx.sagaId}`, compensate: () => undefined },
      {
        name: 'b',
        run: async (ctx) => {
          if (hang && ctx.sagaId === 'stuck') await new Promise(() => undefined);
          return 2;
        },
      },
    ]);
    const a = new SagaCoordinator({
      redis: client,
      sagas: [saga],
      recovery: false,
      leaseMs: 300,
      clock: new ManualClock(),
    });
    const b = new SagaCoordinator({ redis: client, sagas: [saga], recovery: false, leaseMs: 2000 });
    try {
      const ids = Array.from({ length: 12 }, (_, i) => `id-${i}`);
      const outcomes = await Promise.all(ids.map((id) => b.run(saga, id, { i: id })));
      expect(outcomes.every((o) => o.status === 'completed')).toBe(true);
      void a.run(saga, 'stuck', null).catch(() => undefined);
      await until(async () => {
        expect((await b.get(saga, 'stuck'))?.step).toBe('b');
      }, 30_000);
      hang = false;
      await until(async () => {
        expect(await b.recoverNow()).toBe(1);
      }, 30_000);
      await until(async () => {
        expect((await b.get(saga, 'stuck'))?.status).toBe('completed');
      }, 30_000);
      expect((await b.list(saga, { status: 'completed' })).length).toBe(13);
      const { idempotent } = new IdempotencyKeys({ redis: client });
      expect(await idempotent('cluster-key', () => 7)).toBe(7);
      expect(await idempotent('cluster-key', () => 8)).toBe(7);
    } finally {
      await a.close();
      await b.close();
    }
  }, 120_000);
});
