/**
 * The discovery behavioural suite on a real 3-master Redis Cluster: every backend talks to the
 * cluster through an ioredis `Cluster` client, and a service's keys live on whichever master
 * owns its hash tag's slot.
 */
import { describe, it } from 'vitest';
import { RedisBackend, Registry } from '../../src/discovery/index.js';
import { describeRedis, useRedisCluster } from '../support/vitest.js';
import { redisFixture } from './redis-fixture.js';
import { registrySuite } from './shared-suite.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('discovery on the Redis backend over Redis Cluster (3 masters)', () => {
  const cluster = useRedisCluster();
  describe('shared suite', () => {
    registrySuite(() =>
      Promise.resolve(
        redisFixture({
          admin: cluster().client(),
          client: () => cluster().client({ redisOptions: { maxRetriesPerRequest: 1 } }),
          loseData: () => cluster().flushAll(),
        }),
      ),
    );
  });

  describe('one reader per followed service', () => {
    it('reads each service on the master owning its slot, and close() ends every reader', async () => {
      const name = `keel-lanes-${process.pid}`;
      const client = cluster().client({ redisOptions: { connectionName: name } });
      const backend = new RedisBackend({ client, blockMs: 500, readTimeoutMs: 1000 });
      const registry = new Registry({ backend, reapIntervalMs: 0 });
      const services = ['orders', 'payments', 'inventory'].map((s) => `${s}-${process.pid}`);
      const watches = services.map((service) => registry.watch(service));
      await Promise.all(watches.map((w) => w.ready));
      const admins = cluster().nodes.map((node) => cluster().nodeClient(node.index));
      /** Per master: this backend's connections blocked in XREAD, and all of its connections. */
      const mine = async () =>
        Promise.all(
          admins.map(async (admin) => {
            const lines = String(await admin.call('CLIENT', 'LIST', 'TYPE', 'normal'))
              .split('\n')
              .filter((line) => line.includes(` name=${name} `));
            return {
              reading: lines.filter(
                (line) => / flags=\S*b/.test(line) && line.includes('cmd=xread'),
              ).length,
              all: lines.length,
            };
          }),
        );
      const owners = await Promise.all(
        services.map((service) => cluster().masterOf(backend.keys(service).log)),
      );
      const expected = [0, 1, 2].map((i) => owners.filter((owner) => owner === i).length);
      const deadline = performance.now() + 10_000;
      while ((await mine()).map((m) => m.reading).join() !== expected.join()) {
        if (performance.now() > deadline)
          throw new Error(`readers never blocked as expected: ${JSON.stringify(await mine())}`);
        await sleep(20);
      }
      await registry.close();
      await backend.close();
      client.disconnect();
      // Every connection of the backend (readers) and of the client is gone from every master.
      const closedBy = performance.now() + 10_000;
      while ((await mine()).some((m) => m.all > 0)) {
        if (performance.now() > closedBy)
          throw new Error(`connections left open: ${JSON.stringify(await mine())}`);
        await sleep(20);
      }
    });
  });
});
