import { expect, it } from 'vitest';
import { RedisClusterHarness, clusterInfo, freeClusterPort, redisCliPath } from './cluster.js';
import { describeRedis, liveHandles, processExists, useRedisCluster } from './vitest.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('Redis Cluster test harness (real redis-server processes)', () => {
  const cluster = useRedisCluster();

  it('forms a 3-master cluster on loopback that every node reports ok', async () => {
    const c = cluster();
    expect(c.size).toBe(3);
    expect(new Set(c.nodes.map((node) => node.port)).size).toBe(3);
    // Each node's cluster bus listens on port + 10000, which must be a valid port.
    expect(c.nodes.every((node) => node.port + 10_000 <= 65_535)).toBe(true);
    for (const node of c.nodes) {
      const info = await clusterInfo(node.port);
      expect(info.cluster_state).toBe('ok');
      expect(info.cluster_slots_ok).toBe('16384');
      expect(info.cluster_known_nodes).toBe('3');
      expect(info.cluster_size).toBe('3'); // three masters serving slots
    }
  });

  it('an ioredis Cluster client reaches keys on every master', async () => {
    const c = cluster();
    const client = c.client();
    // Enough distinct hash tags to land on all three masters.
    const keys = Array.from({ length: 30 }, (_, i) => `{harness-${i}}:k`);
    await Promise.all(keys.map((key, i) => client.set(key, String(i))));
    expect(await Promise.all(keys.map((key) => client.get(key)))).toEqual(
      keys.map((_, i) => String(i)),
    );
    const owners = new Set(await Promise.all(keys.map((key) => c.masterOf(key))));
    expect(owners).toEqual(new Set([0, 1, 2]));
    // Keys of one hash tag share a slot; others generally do not, and Redis refuses those.
    expect(await c.slotOf('{a}:x')).toBe(await c.slotOf('{a}:y'));
    await expect(client.mget('{harness-0}:k', '{harness-1}:k')).rejects.toThrow(/CROSSSLOT/);
  });

  it('a killed master takes its slots down; restarted, it rejoins with its slots and no keys', async () => {
    const c = cluster();
    const client = c.client({ maxRedirections: 64, retryDelayOnClusterDown: 100 });
    const key = '{harness-restart}:k';
    await client.set(key, 'before');
    const owner = await c.masterOf(key);
    const pid = c.nodes[owner]?.pid ?? 0;
    await c.kill(owner);
    expect(processExists(pid)).toBe(false);
    await c.restart(owner);
    await c.waitHealthy(30_000);
    expect(await c.masterOf(key)).toBe(owner);
    expect(await client.get(key)).toBeNull(); // no persistence
    await client.set(key, 'after');
    expect(await client.get(key)).toBe('after');
  });

  it('pause freezes one master; resume brings it back', async () => {
    const c = cluster();
    const key = '{harness-pause}:k';
    const owner = await c.masterOf(key);
    const direct = c.nodeClient(owner, { commandTimeout: 300, maxRetriesPerRequest: 0 });
    await direct.set(key, 'v');
    c.pause(owner);
    await expect(direct.get(key)).rejects.toThrow(/timed out/i);
    c.resume(owner);
    await c.waitHealthy(30_000);
    expect(await c.client().get(key)).toBe('v');
  });

  it('finds redis-cli, and says how to get one when KEEL_REDIS_CLI is wrong', () => {
    expect(redisCliPath()).toMatch(/redis-cli$/);
    const saved = process.env.KEEL_REDIS_CLI;
    process.env.KEEL_REDIS_CLI = '/nonexistent/redis-cli';
    try {
      expect(() => redisCliPath()).toThrow(/KEEL_REDIS_CLI=\/nonexistent\/redis-cli .*redis-tools/);
    } finally {
      if (saved === undefined) delete process.env.KEEL_REDIS_CLI;
      else process.env.KEEL_REDIS_CLI = saved;
    }
  });

  it('freeClusterPort only gives ports whose cluster bus port (+10000) is valid', async () => {
    // Linux hands out ephemeral ports up to 60999; redis-server refuses a cluster port > 55535.
    for (let i = 0; i < 50; i++) expect(await freeClusterPort()).toBeLessThanOrEqual(55_535);
  });

  it('refuses fewer than three masters', async () => {
    await expect(RedisClusterHarness.start({ masters: 2 })).rejects.toThrow(/masters must be/);
  });
});

describeRedis('Redis Cluster test harness: reaping', () => {
  it('stop() reaps every master, cluster client and socket it created', async () => {
    const before = liveHandles();
    const c = await RedisClusterHarness.start();
    const pids = c.nodes.map((node) => node.pid ?? 0);
    const client = c.client();
    await client.set('{reap}:k', '1');
    let ended = false;
    client.once('end', () => (ended = true));
    await c.stop();
    await c.stop(); // idempotent
    expect(pids.every((pid) => pid > 0 && !processExists(pid))).toBe(true);
    // ('end', not status: ioredis 6 sets a Cluster's status back to 'close' when a node
    // connection closes after the client ended.)
    expect(ended).toBe(true);
    const extra = (): Record<string, number> =>
      Object.fromEntries(
        Object.entries(liveHandles()).filter(([kind, count]) => count > (before[kind] ?? 0)),
      );
    for (let turn = 0; turn < 200 && Object.keys(extra()).length > 0; turn++) await sleep(10);
    expect(extra()).toEqual({});
  }, 120_000);
});
