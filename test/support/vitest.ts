/**
 * vitest glue for the Redis harness: `useRedis()` starts servers for one suite and always stops
 * them, pass or fail; `describeRedis` is `describe`, skipped only under an explicit
 * `KEEL_SKIP_REDIS=1` (which the global setup announces).
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { RedisClusterHarness, type RedisClusterOptions } from './cluster.js';
import { RedisHarness, type RedisHarnessOptions } from './redis.js';

/** True only when the user asked to skip the Redis suites. */
export const redisSkipped = process.env.KEEL_SKIP_REDIS === '1';

/** `describe` for suites that need Redis (skipped only with KEEL_SKIP_REDIS=1, on purpose). */
export const describeRedis = describe.skipIf(redisSkipped);

/**
 * Starts a {@link RedisHarness} before the suite's tests and stops it after them. Returns an
 * accessor, since the harness exists only once `beforeAll` has run.
 */
export function useRedis(options: RedisHarnessOptions = {}): () => RedisHarness {
  let harness: RedisHarness | undefined;
  beforeAll(async () => {
    harness = await RedisHarness.start(options);
  });
  afterAll(async () => {
    await harness?.stop();
  });
  return () => {
    if (harness === undefined)
      throw new Error('the Redis harness has not started (is this inside a test?)');
    return harness;
  };
}

/**
 * Starts a {@link RedisClusterHarness} (a real 3-master Redis Cluster by default) before the
 * suite's tests and stops it after them. The hook gets the cluster's whole start budget, since
 * forming a cluster on a loaded machine takes seconds.
 */
export function useRedisCluster(options: RedisClusterOptions = {}): () => RedisClusterHarness {
  let harness: RedisClusterHarness | undefined;
  const budget = (options.startTimeoutMs ?? 60_000) + 30_000;
  beforeAll(async () => {
    harness = await RedisClusterHarness.start(options);
  }, budget);
  afterAll(async () => {
    await harness?.stop();
  });
  return () => {
    if (harness === undefined)
      throw new Error('the Redis Cluster harness has not started (is this inside a test?)');
    return harness;
  };
}

/** True while a process with this pid exists (signal 0 probes without touching it). */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Live handles of the kinds a leaking harness or client would leave: sockets, children, timers. */
export function liveHandles(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const name of process.getActiveResourcesInfo()) {
    if (
      name === 'TCPSocketWrap' ||
      name === 'ProcessWrap' ||
      name === 'Timeout' ||
      name === 'TCPServerWrap'
    ) {
      counts[name] = (counts[name] ?? 0) + 1;
    }
  }
  return counts;
}
