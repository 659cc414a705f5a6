import { afterEach, describe, expect, it, vi } from 'vitest';
import { RedisBackend, Registry } from '../../src/discovery/index.js';
import { invalidOption } from '../support/helpers.js';
import { describeRedis, liveHandles, useRedis } from '../support/vitest.js';
import { redisFixture } from './redis-fixture.js';
import { registrySuite } from './shared-suite.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('discovery on the Redis backend (real redis-server): shared suite', () => {
  const redis = useRedis({ count: 1 });
  registrySuite(() =>
    Promise.resolve(
      redisFixture({
        admin: redis().client(0),
        client: () => redis().client(0, { maxRetriesPerRequest: 1 }),
        loseData: () => redis().flush(0),
      }),
    ),
  );
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

describeRedis('RedisBackend layout and connections (real redis-server)', () => {
  const redis = useRedis({ count: 1 });
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    vi.restoreAllMocks();
    for (const cleanup of cleanups.reverse()) await cleanup();
    cleanups.length = 0;
    await redis().flushAll();
  });

  const open = (connectionName?: string) => {
    const client = redis().client(0, connectionName === undefined ? {} : { connectionName });
    const backend = new RedisBackend({ client, blockMs: 500 });
    const registry = new Registry({ backend, reapIntervalMs: 100 });
    cleanups.push(async () => {
      await registry.close();
      await backend.close();
    });
    return { backend, registry };
  };

  it('expiries are scored by Redis server time: a client clock a day ahead changes nothing', async () => {
    const { backend, registry } = open();
    const admin = redis().client(0);
    const day = 86_400_000;
    const realNow = Date.now.bind(Date);
    vi.spyOn(Date, 'now').mockImplementation(() => realNow() + day);
    vi.spyOn(performance, 'now').mockImplementation(() => realNow() + day);
    await registry.register({ service: 'orders', id: 'o1', host: 'h', port: 1 }, { ttlMs: 5000 });
    vi.restoreAllMocks();
    const [seconds, micros] = (await admin.call('TIME')) as [string, string];
    const serverNow = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    const score = Number(await admin.zscore(backend.keys('orders').expiry, 'o1'));
    expect(score - serverNow).toBeGreaterThan(0);
    expect(score - serverNow).toBeLessThanOrEqual(5000);
  });

  it("keeps every key of a service under the service's hash tag (one Redis Cluster slot)", async () => {
    const { backend, registry } = open();
    const admin = redis().client(0);
    for (const service of ['orders', 'payments']) {
      const r = await registry.register({ service, id: `${service}-1`, host: 'h', port: 1 });
      await r.setStatus('draining');
      await registry.ready(service);
    }
    await registry.reap();
    const keys = (await admin.keys('*')).sort();
    expect(keys.length).toBeGreaterThanOrEqual(8);
    for (const key of keys) {
      const tag = /\{([^}]*)\}/.exec(key)?.[1];
      expect(['orders', 'payments']).toContain(tag);
      expect(Object.values(backend.keys(tag as string))).toContain(key);
    }
  });

  it('leaves no sockets or timers behind once the registry and backend are closed', async () => {
    const client = redis().client(0);
    await client.ping();
    const before = liveHandles();
    const backend = new RedisBackend({ client, blockMs: 200 });
    const registry = new Registry({ backend, reapIntervalMs: 50, ttlMs: 300 });
    const registration = await registry.register({ service: 'orders', host: 'h', port: 1 });
    const watch = registry.watch('orders');
    await watch.ready;
    await sleep(400); // heartbeats, reaps, blocking reads and idle epoch checks all ran
    expect(registration.state).toBe('active');
    await registry.close();
    await backend.close();
    // Sockets close asynchronously. (A ref'd timer ioredis had running before may be gone
    // after, so timers may only be fewer.)
    const settled = (): boolean => {
      const now = liveHandles();
      return (
        now.TCPSocketWrap === before.TCPSocketWrap && (now.Timeout ?? 0) <= (before.Timeout ?? 0)
      );
    };
    const deadline = performance.now() + 3000;
    while (!settled() && performance.now() < deadline) await sleep(20);
    expect(liveHandles().TCPSocketWrap).toBe(before.TCPSocketWrap);
    expect(liveHandles().Timeout ?? 0).toBeLessThanOrEqual(before.Timeout ?? 0);
    await client.quit();
  });

  it('shares one blocking reader connection among every watch of every registry on a backend', async () => {
    const name = `keel-shared-${process.pid}`;
    const { backend, registry } = open(name);
    const second = new Registry({ backend, reapIntervalMs: 0 });
    cleanups.push(() => second.close());
    const watches = ['orders', 'payments', 'inventory'].flatMap((service) => [
      registry.watch(service),
      second.watch(service),
    ]);
    await Promise.all(watches.map((w) => w.ready));
    const admin = redis().client(0);
    const mine = async () =>
      String(await admin.call('CLIENT', 'LIST', 'TYPE', 'normal'))
        .split('\n')
        .filter((line) => line.includes(` name=${name} `));
    const deadline = performance.now() + 5000;
    while (!(await mine()).some((line) => / flags=\S*b/.test(line))) {
      if (performance.now() > deadline) throw new Error('the reader never blocked');
      await sleep(20);
    }
    const lines = await mine();
    // The client given to the backend, and one duplicate for XREAD.
    expect(lines).toHaveLength(2);
    expect(lines.filter((line) => line.includes('cmd=xread'))).toHaveLength(1);
    for (const w of watches) w.close();
  });
});
