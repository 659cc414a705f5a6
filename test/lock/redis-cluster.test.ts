/**
 * The lock and semaphore behavioural suite on a real 3-master Redis Cluster: a Redlock whose
 * one node is an ioredis `Cluster` client (the usual Redlock-on-Cluster setup; the cluster's
 * own replication is what protects each key, not a quorum of independent masters).
 */
import { expect, it } from 'vitest';
import { Redlock, isQuorumUnavailableError } from '../../src/lock/index.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedisCluster } from '../support/vitest.js';
import { lockSuite } from './shared-suite.js';

describeRedis('Redlock on a Redis Cluster (3 masters, one Cluster client)', () => {
  const cluster = useRedisCluster();
  lockSuite(() => ({
    clients: () => [cluster().client({ redisOptions: { maxRetriesPerRequest: 1 } })],
    flushAll: () => cluster().flushAll(),
    cluster: true,
    // A fresh Cluster client's first call waits for the slot map and a connection to the
    // owning master: more than the default 100 ms on a loaded machine, and with one node
    // a single timeout is a lost quorum.
    options: { nodeTimeoutMs: 2000 },
  }));

  it('a lock whose master is down fails with QuorumUnavailableError, and works again once it is back', async () => {
    const redlock = new Redlock({
      clients: [cluster().client({ redisOptions: { maxRetriesPerRequest: 1 } })],
      nodeTimeoutMs: 2000,
      retryCount: 0,
    });
    try {
      await (await redlock.acquire('sku:down')).release(); // connected, slot map known
      const owner = await cluster().masterOf(redlock.keyOf('sku:down'));
      await cluster().kill(owner);
      const error = await redlock
        .acquire('sku:down', { signal: AbortSignal.timeout(20_000) })
        .catch((e: unknown) => e);
      expect(isQuorumUnavailableError(error), String(error)).toBe(true);
      await cluster().restart(owner);
      await cluster().waitHealthy(30_000);
      await until(async () => {
        await (await redlock.acquire('sku:down')).release();
      }, 20_000);
    } finally {
      await redlock.close();
      if (cluster().nodes.some((node) => node.state === 'killed'))
        for (const node of cluster().nodes)
          if (node.state === 'killed') await cluster().restart(node.index);
    }
  }, 90_000);
});
