/**
 * The discovery behavioural suite on a real 3-master Redis Cluster: every backend talks to the
 * cluster through an ioredis `Cluster` client, and a service's keys live on whichever master
 * owns its hash tag's slot.
 */
import { describe, expect, it } from 'vitest';
import { RedisBackend, Registry } from '../../src/discovery/index.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedisCluster } from '../support/vitest.js';
import { WatchHistory } from './history.js';
import { faultBackendOptions, faultRegistryOptions, redisFixture } from './redis-fixture.js';
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
    it('reads each service on the master owning its slot; a reader closes with its last watch, and close() ends them all', async () => {
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
      // No watch left: the per-service readers close; only the client's own connections (one
      // per master at most) stay.
      for (const w of watches) w.close();
      await until(async () => {
        const now = await mine();
        expect(now.map((m) => m.reading)).toEqual([0, 0, 0]);
        expect(now.reduce((sum, m) => sum + m.all, 0)).toBeLessThanOrEqual(3);
      }, 10_000);
      // A new watch opens a reader again.
      const again = registry.watch(services[0] as string);
      await again.ready;
      await until(async () => {
        expect((await mine()).reduce((sum, m) => sum + m.reading, 0)).toBe(1);
      }, 10_000);
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

  describe('faults', () => {
    it('the master of a watched service killed and restarted empty: instances re-register, watchers converge without evicting', async () => {
      const service = `cluster-killed-${process.pid}`;
      const open = (): Registry => {
        const client = cluster().client({
          redisOptions: { maxRetriesPerRequest: 1 },
          retryDelayOnClusterDown: 100,
        });
        return new Registry({
          backend: new RedisBackend({ client, ...faultBackendOptions }),
          ...faultRegistryOptions,
          dataLossGraceMs: 4000,
        });
      };
      const writer = open();
      const reader = open();
      const other = `${service}-bystander`; // likely on another master: must keep working
      const live = await Promise.all(
        [1, 2, 3].map((i) =>
          writer.register({ service, id: `${service}-${i}`, host: '127.0.0.1', port: i }),
        ),
      );
      const watch = reader.watch(service);
      const bystander = reader.watch(other);
      await Promise.all([watch.ready, bystander.ready]);
      const history = new WatchHistory(watch);
      const before = watch.epoch;
      const admin = cluster().client();
      const layout = new RedisBackend({ client: admin });
      const truth = async (): Promise<string[]> =>
        (await admin.hkeys(layout.keys(service).records)).sort();
      const owner = await cluster().masterOf(layout.keys(service).log);
      try {
        await cluster().kill(owner);
        await sleep(300);
        await cluster().restart(owner); // same identity and slots, no keys
        await cluster().waitHealthy(30_000);
        await until(async () => {
          expect(await truth()).toEqual(live.map((r) => r.id).sort());
          for (const r of live) expect(r.state).toBe('active');
        }, 15_000);
        const expected = await truth();
        await until(() => {
          expect(watch.stale).toBe(false);
          expect(watch.epoch).not.toBe(before);
          history.expectConverged(expected);
        }, 15_000);
        expect(history.changes.filter((c) => c.type === 'removed')).toEqual([]);
        // It keeps following the new epoch's log, and the other service's watch works too.
        await live[0]?.deregister();
        await writer.register({ service: other, id: `${other}-1`, host: '127.0.0.1', port: 1 });
        await until(() => {
          history.expectConverged(expected.slice(1));
          expect(bystander.instances().map((i) => i.id)).toEqual([`${other}-1`]);
        }, 6000);
      } finally {
        history.dispose();
        await reader.close();
        await writer.close();
      }
    }, 90_000);
  });
});
