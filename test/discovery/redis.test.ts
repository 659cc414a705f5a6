import { describe, expect, it } from 'vitest';
import { systemClock } from '../../src/core/index.js';
import { RedisBackend } from '../../src/discovery/index.js';
import { invalidOption } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { registrySuite } from './shared-suite.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('discovery on the Redis backend (real redis-server): shared suite', () => {
  const redis = useRedis({ count: 1 });
  registrySuite(() => {
    const backends: RedisBackend[] = [];
    const admin = redis().client(0);
    const layout = new RedisBackend({ client: admin });
    const keysOf = (service: string) => layout.keys(service);
    return Promise.resolve({
      clock: systemClock,
      backend: () => {
        const backend = new RedisBackend({
          client: redis().client(0, { maxRetriesPerRequest: 1 }),
          blockMs: 500,
          readTimeoutMs: 1000,
        });
        backends.push(backend);
        return backend;
      },
      advance: sleep,
      stepMs: 20,
      ttlMs: 600,
      reapIntervalMs: 150,
      slackMs: 300,
      truth: async (service: string) => (await admin.hkeys(keysOf(service).records)).sort(),
      loseData: () => redis().flush(0),
      plant: async (service: string, id: string, raw: string) => {
        await admin.hset(keysOf(service).records, id, raw);
      },
      cleanup: async () => {
        await Promise.all(backends.map((b) => b.close()));
      },
    });
  });
});

describe('RedisBackend options', () => {
  it('validates its options', () => {
    expect(invalidOption(() => new RedisBackend({} as never)).option).toBe('client');
    const client = {
      evalsha: () => Promise.resolve(),
      eval: () => Promise.resolve(),
      call: () => Promise.resolve(),
      duplicate: () => client,
      disconnect: () => undefined,
      on: () => undefined,
    };
    expect(invalidOption(() => new RedisBackend({ client, blockMs: 0 })).option).toBe('blockMs');
    expect(new RedisBackend({ client }).keys('orders')).toEqual({
      records: 'keel:discovery:{orders}:records',
      leases: 'keel:discovery:{orders}:leases',
      expiry: 'keel:discovery:{orders}:expiry',
      meta: 'keel:discovery:{orders}:meta',
      log: 'keel:discovery:{orders}:log',
      graced: 'keel:discovery:{orders}:graced',
    });
  });
});
