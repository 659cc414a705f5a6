/**
 * keel/saga on a real 3-master Redis Cluster: every script touches the keys of one hash tag
 * (`{<saga>:<shard>}`, or `{<key>}` for idempotency keys), so sagas run, are recovered, listed
 * and read, and idempotency keys work, with no CROSSSLOT error.
 */
import type { Cluster } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { IdempotencyKeys, SagaCoordinator, defineSaga } from '../../src/saga/index.js';
import { SagaStore } from '../../src/saga/store.js';
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

  it('transitions of one tick are batched per hash tag: no batch crosses a slot', async () => {
    const store = new SagaStore({
      client,
      prefix: 'batch:',
      shards: 8,
      leaseMs: 15_000,
      historyLimit: 64,
      finishedHistory: 6,
      retentionMs: 60_000,
    });
    const ids = Array.from({ length: 40 }, (_, i) => `t-${i}`);
    const rows: { owner: string; fence: number; version: number }[] = [];
    for (const id of ids) {
      const started = await store.start('cb', id, 'me', '{}', 0, 3);
      rows.push({ owner: 'me', fence: 1, version: started.row?.version ?? 0 });
    }
    const masters = cluster().nodes.map((n) => cluster().nodeClient(n.index));
    const calls = async (): Promise<number> => {
      let total = 0;
      for (const m of masters) {
        const info = await m.info('commandstats');
        for (const x of info.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm))
          total += Number(x[1]);
      }
      return total;
    };
    try {
      const before = await calls();
      // One is refused (stale fence): only its own transition.
      const replies = await Promise.all(
        ids.map((id, i) =>
          store.transition(
            'cb',
            id,
            { owner: 'me', fence: i === 9 ? 5 : 1, version: rows[i]?.version ?? 0 },
            'begin',
            0,
            '',
            '1',
          ),
        ),
      );
      const sent = (await calls()) - before;
      expect(replies.map((r) => r.ok)).toEqual(ids.map((_, i) => i !== 9));
      expect(replies[9]).toMatchObject({ ok: false, why: 'fenced' });
      // The first alone, then at most one call per hash tag (8 shards), NOSCRIPT fallbacks aside.
      expect(sent).toBeLessThanOrEqual(2 * (1 + 8));
      for (const [i, id] of ids.entries()) {
        expect((await store.read('cb', id))?.row.version).toBe(i === 9 ? 1 : 2);
      }
    } finally {
      for (const m of masters) m.disconnect();
    }
  }, 120_000);
});
