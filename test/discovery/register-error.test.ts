import { afterEach, expect, it } from 'vitest';
import { RedisBackend, Registry, isRegistryUnavailableError } from '../../src/discovery/index.js';
import { REDIS_HOST } from '../support/redis.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// Issue 13, item 7: with Redis down, register's error named the instance's host:port (its
// default id) where the reader looks for Redis's. It must name Redis's own address.

describeRedis('register with Redis down names Redis, not the instance', () => {
  const redis = useRedis({ count: 1 });
  const cleanups: (() => Promise<void> | void)[] = [];

  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    if (redis().node(0).state === 'killed') await redis().restart(0);
  });

  it('the error says where Redis is, apart from the instance being registered', async () => {
    const backend = new RedisBackend({ client: redis().client(0, { maxRetriesPerRequest: 1 }) });
    cleanups.push(() => backend.close());
    const registry = new Registry({ backend, operationTimeoutMs: 500 });
    cleanups.push(() => registry.close());
    await redis().kill(0);
    const error = await registry
      .register({ service: 'orders', host: '10.0.0.5', port: 8080 })
      .catch((e: unknown) => e);
    expect(isRegistryUnavailableError(error), String(error)).toBe(true);
    const message = (error as Error).message;
    expect(message).toContain(`redis at ${REDIS_HOST}:${redis().port(0)}`);
    expect(message).toContain('orders/10.0.0.5:8080');
    expect(error).toMatchObject({
      operation: 'register orders/10.0.0.5:8080',
      store: `redis at ${REDIS_HOST}:${redis().port(0)}`,
    });
  });
});
