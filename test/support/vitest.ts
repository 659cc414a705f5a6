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
 * Starts something with `start()` before the suite's tests (within `timeoutMs`, or the hook
 * timeout) and stops it after them. Returns an accessor, since it exists only once `beforeAll`
 * has run.
 */
function useStarted<T extends { stop(): Promise<void> }>(
  what: string,
  start: () => Promise<T>,
  timeoutMs?: number,
): () => T {
  let started: T | undefined;
  beforeAll(async () => {
    started = await start();
  }, timeoutMs);
  afterAll(async () => {
    await started?.stop();
  });
  return () => {
    if (started === undefined)
      throw new Error(`the ${what} has not started (is this inside a test?)`);
    return started;
  };
}

/** Starts a {@link RedisHarness} before the suite's tests and stops it after them. */
export function useRedis(options: RedisHarnessOptions = {}): () => RedisHarness {
  return useStarted('Redis harness', () => RedisHarness.start(options));
}

/**
 * Starts a {@link RedisClusterHarness} (a real 3-master Redis Cluster by default) before the
 * suite's tests and stops it after them. The hook gets the cluster's whole start budget and
 * more, since forming a cluster on a loaded machine takes seconds.
 */
export function useRedisCluster(options: RedisClusterOptions = {}): () => RedisClusterHarness {
  const budget = (options.startTimeoutMs ?? 60_000) + 30_000;
  return useStarted('Redis Cluster harness', () => RedisClusterHarness.start(options), budget);
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
