import { expect, it } from 'vitest';
import { RedisHarness } from './redis.js';
import { describeRedis, liveHandles, processExists } from './vitest.js';

// Alone in its file, so no other suite's sockets or timers blur the before/after comparison.
describeRedis('Redis test harness: reaping', () => {
  it('stop() reaps every process, client, socket and timer it created', async () => {
    const before = liveHandles();
    const redis = await RedisHarness.start({ count: 2 });
    const pids = redis.nodes.map((node) => node.pid ?? 0);
    const client = redis.client(0);
    const lazy = redis.client(1, { lazyConnect: true });
    await client.ping();
    redis.pause(1); // a paused server must not stop the harness from shutting down
    expect(liveHandles()).not.toEqual(before);
    await redis.stop();
    await redis.stop(); // idempotent
    expect(pids.every((pid) => pid > 0 && !processExists(pid))).toBe(true);
    expect(redis.nodes.every((node) => node.state === 'stopped')).toBe(true);
    expect(client.status).toBe('end');
    expect(lazy.status).toBe('end');
    // libuv closes handles asynchronously, a loop turn or two after 'close'; allow a generous
    // bounded wait for that, then require every handle the harness made to be gone: no kind
    // of handle more numerous than before (a handle that existed before — a timer of the test
    // runner's, say — may have ended meanwhile).
    const extra = (): Record<string, number> => {
      const now = liveHandles();
      return Object.fromEntries(
        Object.entries(now).filter(([kind, count]) => count > (before[kind] ?? 0)),
      );
    };
    for (let turn = 0; turn < 200 && Object.keys(extra()).length > 0; turn++)
      await new Promise((resolve) => setTimeout(resolve, 10));
    expect(extra()).toEqual({});
  });
});
