/**
 * Foreign data in an instance's own fields (something other than Keel wrote them): an instance
 * a claim finds malformed is parked `needs-attention` with the reason and reported, never
 * driven, and never keeps the other instances of its shard from being recovered.
 */
import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import {
  SagaCoordinator,
  defineSaga,
  isSagaStoreError,
  type SagaTransitionEvent,
} from '../../src/saga/index.js';
import { until, within } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

/** One step that waits for its signal, unless `log` holds 'go'. */
const hanging = (log: string[]) =>
  defineSaga('r', [
    {
      name: 'a',
      run: (_ctx: unknown, signal: AbortSignal) =>
        new Promise<void>((resolve, reject) => {
          log.push('a');
          signal.addEventListener('abort', () => reject(signal.reason as Error));
          if (log.includes('go')) resolve();
        }),
    },
  ]);

const PREFIX = 'mf:';
const hash = (id: string): string => `${PREFIX}{r:0}:s:${id}`;

describeRedis('keel/saga: malformed instances (real Redis)', () => {
  const redis = useRedis({ count: 1 });

  afterEach(async () => {
    await redis().flushAll();
  });

  /** Three instances of one shard whose coordinator stopped mid-step: their leases run out. */
  async function abandoned(ids: readonly string[]): Promise<void> {
    const first: string[] = [];
    const dead = new SagaCoordinator({
      redis: redis().client(0),
      sagas: [hanging(first)],
      prefix: PREFIX,
      shards: 1,
      leaseMs: 300,
      recovery: false,
    });
    const runs = ids.map((id) => dead.run(hanging(first), id, {}).catch(() => undefined));
    await until(() => expect(first).toHaveLength(ids.length), 10_000);
    await dead.close();
    await Promise.all(runs);
  }

  const corruptions: readonly [string, (admin: Redis) => Promise<unknown>, boolean][] = [
    ['key holds a string', (a) => a.del(hash('x-2')).then(() => a.set(hash('x-2'), 'x')), false],
    ['its lease is not a number', (a) => a.hset(hash('x-2'), 'ls', 'soon'), true],
    ['its fence is not an integer', (a) => a.hset(hash('x-2'), 'f', '1.5'), true],
    ['its lease is missing', (a) => a.hdel(hash('x-2'), 'ls'), true],
    ['its current step is not a number', (a) => a.hset(hash('x-2'), 'cur', 'b'), true],
    ['its current step is past its steps', (a) => a.hset(hash('x-2'), 'cur', '7'), true],
    ['its status is not one of Keel', (a) => a.hset(hash('x-2'), 'st', 'paused'), true],
  ];
  for (const [what, corrupt, isHash] of corruptions) {
    it(`an instance in the recovery index whose ${what.replace(/^its /, '')} is parked and reported, and the others of its shard are recovered`, async () => {
      await abandoned(['x-1', 'x-2', 'x-3']);
      const admin = redis().client(0);
      await corrupt(admin);
      const live = new SagaCoordinator({
        redis: redis().client(0),
        sagas: [hanging(['go'])],
        prefix: PREFIX,
        shards: 1,
        leaseMs: 300,
        recoveryIntervalMs: 50,
      });
      const parked: SagaTransitionEvent[] = [];
      live.onTransition((e) => {
        if (e.id === 'x-2') parked.push(e);
      });
      try {
        await until(async () => {
          const statuses = await Promise.all(
            ['x-1', 'x-3'].map(async (id) => (await live.get('r', id))?.status),
          );
          expect(statuses).toEqual(['completed', 'completed']);
        }, 15_000);
        await until(() => expect(parked.map((e) => e.event)).toEqual(['park']), 5_000);
        expect(parked[0]?.status).toBe('needs-attention');
        // Out of recovery's work list: not claimed again and again.
        expect(await admin.zscore(`${PREFIX}{r:0}:live`, 'x-2')).toBeNull();
        if (isHash) {
          const snap = await live.get('r', 'x-2');
          expect(snap?.status).toBe('needs-attention');
          expect(snap?.reason).toMatch(/^malformed instance: /);
          const attention = await live.list('r', { status: 'needs-attention' });
          expect(attention.map((s) => s.id)).toEqual(['x-2']);
        } else {
          expect(await admin.get(hash('x-2'))).toBe('x'); // the foreign value is left as it was
        }
      } finally {
        await live.close();
      }
    });
  }

  it('run() of a malformed instance whose lease ran out answers needs-attention (it never returned)', async () => {
    await abandoned(['x-1']);
    const admin = redis().client(0);
    await admin.hset(hash('x-1'), 'cur', 'b');
    const again = new SagaCoordinator({
      redis: redis().client(0),
      sagas: [hanging(['go'])],
      prefix: PREFIX,
      shards: 1,
      leaseMs: 300,
      recovery: false,
      recoveryIntervalMs: 50,
    });
    try {
      await until(async () => {
        const snap = await again.get('r', 'x-1');
        const [sec, us] = await admin.time();
        expect(snap?.leaseUntil).toBeLessThan(Number(sec) * 1000 + Math.floor(Number(us) / 1000));
      }, 10_000);
      const outcome = await within(again.run(hanging(['go']), 'x-1', {}), 10_000, 'run');
      expect(outcome.status).toBe('needs-attention');
      expect((outcome as { reason: string }).reason).toBe('malformed instance: cur = b');
    } finally {
      await again.close();
    }
  });
  for (const field of ['in', 'o:0'] as const) {
    it(`an instance whose stored ${field === 'in' ? 'input' : 'output'} is not JSON: get, list and run answer a typed error naming it`, async () => {
      const saga = defineSaga('j', [{ name: 'a', run: () => ({ ok: 1 }) }]);
      const sagas = new SagaCoordinator({ redis: redis().client(0), sagas: [saga], shards: 1 });
      try {
        await sagas.run(saga, 'j-1', {});
        await redis().client(0).hset('keel:saga:{j:0}:s:j-1', field, '{not json');
        const what = field === 'in' ? 'input' : 'output of step a';
        const calls: [string, () => Promise<unknown>][] = [
          ['get', () => sagas.get(saga, 'j-1')],
          ['list', () => sagas.list(saga)],
        ];
        // (run compares the stored input with its own: a different one is a conflict.)
        if (field === 'o:0') calls.push(['run', () => sagas.run(saga, 'j-1', {})]);
        for (const [name, call] of calls) {
          const error = await call().then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(isSagaStoreError(error), name).toBe(true);
          expect((error as Error).message, name).toContain(`j/j-1 ${what}`);
        }
      } finally {
        await sagas.close();
      }
    });
  }
  it('a huge history (a foreign write of the right type) is read only up to historyLimit', async () => {
    const saga = defineSaga('hh', [{ name: 'a', run: () => 1 }]);
    const sagas = new SagaCoordinator({
      redis: redis().client(0),
      sagas: [saga],
      shards: 1,
      historyLimit: 16,
    });
    try {
      await sagas.run(saga, 'h-1', {});
      const admin = redis().client(0);
      const entries = Array.from({ length: 20_000 }, (_, i) => `${i}|9|1|foreign|-1|x`);
      for (let at = 0; at < entries.length; at += 5_000) {
        await admin.rpush('keel:saga:{hh:0}:h:h-1', ...entries.slice(at, at + 5_000));
      }
      const history = (await sagas.get(saga, 'h-1'))?.history ?? [];
      expect(history).toHaveLength(16);
      expect(history.at(-1)?.time).toBe(19_999); // the newest
    } finally {
      await sagas.close();
    }
  });
  it("list() of a saga answers the others while one live instance's key holds another type", async () => {
    await abandoned(['x-1', 'x-2', 'x-3']);
    const admin = redis().client(0);
    await admin.del(hash('x-2'));
    await admin.set(hash('x-2'), 'x');
    const sagas = new SagaCoordinator({
      redis: redis().client(0),
      sagas: [hanging([])],
      prefix: PREFIX,
      shards: 1,
      recovery: false,
    });
    try {
      const listed = await sagas.list('r', { status: 'running' });
      expect(listed.map((s) => s.id).sort()).toEqual(['x-1', 'x-3']);
    } finally {
      await sagas.close();
    }
  });
});
