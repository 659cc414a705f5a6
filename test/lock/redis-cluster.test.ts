/**
 * The lock and semaphore behavioural suite on a real 3-master Redis Cluster: a Redlock whose
 * one node is an ioredis `Cluster` client (the usual Redlock-on-Cluster setup; the cluster's
 * own replication is what protects each key, not a quorum of independent masters).
 */
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
});
