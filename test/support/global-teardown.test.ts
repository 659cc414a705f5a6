import { afterEach, expect, it } from 'vitest';
import { setup } from './global-setup.js';
import { RedisHarness } from './redis.js';
import { describeRedis, processExists } from './vitest.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// Alone in its file: it points this worker's pid directory at a fresh one for the duration.
describeRedis('Redis test harness: the global teardown', () => {
  const saved = process.env.KEEL_REDIS_PID_DIR;
  afterEach(() => {
    process.env.KEEL_REDIS_PID_DIR = saved;
  });

  it('reaps a redis-server that a crashed worker left running', async () => {
    const teardown = setup(); // a fresh pid directory, as at the start of a run
    const redis = await RedisHarness.start({ count: 1 });
    const cluster = await RedisHarness.start({
      count: 1,
      args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf'],
    });
    const pids = [redis.node(0).pid ?? 0, cluster.node(0).pid ?? 0];
    try {
      expect(pids.every((pid) => pid > 0 && processExists(pid))).toBe(true);
      // The worker "crashed": nobody calls stop(); the teardown must find and kill both by
      // their pid files (redis-server renames its process, so its command line no longer
      // holds the `--port` it was started with).
      teardown();
      for (let i = 0; i < 250 && pids.some(processExists); i++) await sleep(20);
      expect(pids.filter(processExists)).toEqual([]);
    } finally {
      await redis.stop();
      await cluster.stop();
    }
  });
});
