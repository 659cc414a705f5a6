/**
 * The instance a coordinator drives vanishes from Redis (restarted empty without persistence,
 * flushed): `run()` must not start the saga again from its first step as if nothing had
 * happened — steps already compensated would run forward again — but fail with a typed error.
 */
import { expect, it } from 'vitest';
import { SagaCoordinator, defineSaga, isSagaStoreError } from '../../src/saga/index.js';
import { describeRedis, useRedis } from '../support/vitest.js';

describeRedis('keel/saga: an instance lost from Redis mid-saga (real Redis)', () => {
  const redis = useRedis({ count: 1 });

  it('Redis restarted empty during a compensation: run() rejects with SagaStoreError, nothing runs again', async () => {
    const log: string[] = [];
    let restarted = false;
    const saga = defineSaga('lost', [
      {
        name: 'a',
        run: () => void log.push('run a'),
        compensate: async () => {
          log.push('undo a');
          if (!restarted) {
            restarted = true;
            await redis().restart(0);
          }
        },
      },
      {
        name: 'b',
        run: () => {
          log.push('run b');
          throw new Error('declined');
        },
        retry: { attempts: 1 },
      },
    ]);
    const sagas = new SagaCoordinator({
      redis: redis().client(0),
      sagas: [saga],
      shards: 1,
      leaseMs: 500,
      recoveryIntervalMs: 50,
    });
    try {
      const error = await sagas.run(saga, 'l-1', {}).then(
        (outcome) => outcome,
        (e: unknown) => e,
      );
      expect(isSagaStoreError(error)).toBe(true);
      expect((error as Error).message).toContain('lost/l-1');
      expect((error as Error).message).toContain('missing');
      expect(log).toEqual(['run a', 'run b', 'undo a']);
    } finally {
      await sagas.close();
    }
  });
});
