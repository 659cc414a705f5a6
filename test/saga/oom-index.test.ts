/**
 * The shard indexes under a Redis out of memory (`noeviction`): a transition whose first write is
 * the move of its instance in the shard's `live` index (a step's begin that reindexes) is refused
 * whole, as any script whose first write may grow memory — it must not take the refusal for
 * foreign data at the index and delete the index (every other instance of the shard would then
 * be out of recovery's sight). A heartbeat's first write is an `HDEL` (allowed out of memory), so
 * it lands, and its reindex with it.
 */
import { afterEach, expect, it } from 'vitest';
import { TRANSITION } from '../../src/saga/scripts.js';
import { describeRedis, useRedis } from '../support/vitest.js';

describeRedis('keel/saga shard indexes out of memory (real Redis)', () => {
  const redis = useRedis({ count: 1 });

  afterEach(async () => {
    const admin = redis().client(0);
    await admin.config('SET', 'maxmemory', '0');
    await redis().flushAll();
    admin.disconnect();
  });

  for (const op of ['begin', 'renew'] as const) {
    it(`a ${op} that reindexes, out of memory, leaves every instance in the shard's live index`, async () => {
      const admin = redis().client(0);
      const base = 'keel:saga:{s:0}:';
      const keys = [
        `${base}i:mine`,
        `${base}h:mine`,
        `${base}live`,
        `${base}fin:completed`,
        `${base}fin:compensated`,
        `${base}fin:needs-attention`,
      ];
      // An instance this owner runs, with no `ix` (so a transition moves it in `live`), beside
      // two other instances of the shard in the index.
      await admin.hset(keys[0] as string, {
        st: 'running',
        ow: 'me',
        f: '1',
        v: '3',
        cur: '0',
        dl: '0',
      });
      await admin.zadd(keys[2] as string, 1_000, 'other-1', 2_000, 'other-2', 500, 'mine');
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      await admin.config('SET', 'maxmemory', '1');

      const outcome = await admin
        .eval(
          TRANSITION.source,
          keys.length,
          ...keys,
          'mine',
          'me',
          '1',
          '3',
          '30000',
          '100',
          '60000',
          '10',
          op,
          '0',
          '',
          '1',
        )
        .then(
          (reply) => ({ reply: String(reply) }),
          (error: unknown) => ({ error: String(error) }),
        );
      await admin.config('SET', 'maxmemory', '0');

      expect((await admin.zrange(keys[2] as string, '0', '-1')).sort()).toEqual([
        'mine',
        'other-1',
        'other-2',
      ]);
      if (op === 'begin') {
        // Refused whole (nothing written), as before the script could tell foreign data apart.
        expect(String((outcome as { error?: string }).error)).toContain('OOM');
        expect(await admin.zscore(keys[2] as string, 'mine')).toBe('500');
      } else {
        // The heartbeat lands: the owner keeps its lease while memory is short.
        expect((outcome as { reply?: string }).reply).toMatch(/^1\|3\|/);
        expect(Number(await admin.zscore(keys[2] as string, 'mine'))).toBeGreaterThan(2_000);
      }
    });
  }
});
