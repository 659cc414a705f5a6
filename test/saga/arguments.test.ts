/**
 * Bad arguments to the coordinator's methods: each answers a typed error naming what was wrong
 * (never a plain TypeError from reading a property of it), and nothing is written.
 */
import { expect, it } from 'vitest';
import { InvalidOptionError } from '../../src/core/index.js';
import { SagaCoordinator, defineSaga, isSagaUnknownError } from '../../src/saga/index.js';
import { describeRedis, useRedis } from '../support/vitest.js';

describeRedis('keel/saga: bad arguments to SagaCoordinator methods (real Redis)', () => {
  const redis = useRedis({ count: 1 });
  const saga = defineSaga('args', [{ name: 'a', run: () => 1 }]);

  const rejection = (call: () => Promise<unknown>): Promise<unknown> =>
    Promise.resolve()
      .then(call)
      .then(
        () => undefined,
        (error: unknown) => error,
      );

  it('a saga that is neither a definition nor a name: InvalidOptionError naming "saga"', async () => {
    const sagas = new SagaCoordinator({ redis: redis().client(0), sagas: [saga], recovery: false });
    try {
      for (const bad of [null, undefined, 42, true, Symbol('s')]) {
        const calls: [string, () => Promise<unknown>][] = [
          ['run', () => sagas.run(bad as never, 'id-1', {})],
          ['get', () => sagas.get(bad as never, 'id-1')],
          ['cancel', () => sagas.cancel(bad as never, 'id-1')],
          ['list', () => sagas.list(bad as never)],
        ];
        for (const [name, call] of calls) {
          const error = await rejection(call);
          expect(error, `${name}(${String(bad)})`).toBeInstanceOf(InvalidOptionError);
          expect((error as InvalidOptionError).option, name).toBe('saga');
        }
      }
      // A name or definition this coordinator was not given stays a SagaUnknownError.
      expect(isSagaUnknownError(await rejection(() => sagas.get('other', 'id-1')))).toBe(true);
      expect(await redis().client(0).keys('keel:saga:*')).toEqual([]);
    } finally {
      await sagas.close();
    }
  });

  it('run\'s options that are not an object: InvalidOptionError naming "options", nothing started', async () => {
    const sagas = new SagaCoordinator({ redis: redis().client(0), sagas: [saga], recovery: false });
    try {
      for (const bad of ['fast', 5, true]) {
        const error = await rejection(() => sagas.run(saga, 'id-2', {}, bad as never));
        expect(error, String(bad)).toBeInstanceOf(InvalidOptionError);
        expect((error as InvalidOptionError).option).toBe('options');
      }
      expect(await sagas.get(saga, 'id-2')).toBeUndefined();
    } finally {
      await sagas.close();
    }
  });
});
