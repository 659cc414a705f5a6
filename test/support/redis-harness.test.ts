import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RedisHarness, canListen, freePort, harnessPort, rawCommand } from './redis.js';
import { describeRedis, processExists } from './vitest.js';

function processState(pid: number): string | undefined {
  try {
    // Field 3 of /proc/<pid>/stat: R running, S sleeping, T stopped, Z zombie.
    return /\) (\S)/.exec(readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

describeRedis('Redis test harness (real redis-server processes)', () => {
  let redis: RedisHarness;
  let clients: Redis[];

  beforeAll(async () => {
    redis = await RedisHarness.start({ count: 3 });
    // Short command timeout and no retries: a paused server must surface as an error quickly.
    clients = redis.clients({ commandTimeout: 300, maxRetriesPerRequest: 0 });
  });
  afterAll(async () => {
    await redis.stop();
  });

  it('starts independent servers on distinct loopback ports without persistence', async () => {
    expect(redis.size).toBe(3);
    const ports = redis.nodes.map((node) => node.port);
    expect(new Set(ports).size).toBe(3);
    for (const [i, client] of clients.entries()) {
      await client.set('who', `node-${i}`);
    }
    for (const [i, client] of clients.entries()) {
      expect(await client.get('who')).toBe(`node-${i}`);
      expect(await client.config('GET', 'save')).toEqual(['save', '']);
      expect(await client.config('GET', 'appendonly')).toEqual(['appendonly', 'no']);
      expect(await client.config('GET', 'bind')).toEqual(['bind', '127.0.0.1']);
    }
    expect(redis.nodes.every((node) => node.state === 'running' && node.pid !== undefined)).toBe(
      true,
    );
  });

  it('pause freezes one server (SIGSTOP) and resume brings it back with its data', async () => {
    const pid = redis.node(1).pid ?? 0;
    redis.pause(1);
    expect(redis.node(1).state).toBe('paused');
    expect(processState(pid)).toBe('T');
    await expect(clients[1]?.get('who')).rejects.toThrow(/timed out/i);
    expect(await redis.ping(1, 200)).toBe(false);
    // The others are unaffected.
    expect(await clients[0]?.get('who')).toBe('node-0');
    redis.resume(1);
    expect(redis.node(1).state).toBe('running');
    expect(await redis.ping(1)).toBe(true);
    const fresh = redis.client(1);
    expect(await fresh.get('who')).toBe('node-1');
  });

  it('kill (SIGKILL) ends the process; restart brings it back empty on the same port', async () => {
    const port = redis.port(2);
    const pid = redis.node(2).pid ?? 0;
    await redis.kill(2);
    expect(redis.node(2).state).toBe('killed');
    expect(redis.node(2).pid).toBeUndefined();
    expect(processExists(pid)).toBe(false);
    await expect(rawCommand(port, 'PING', 300)).rejects.toThrow();
    await redis.restart(2);
    expect(redis.port(2)).toBe(port);
    expect(redis.node(2).state).toBe('running');
    expect(redis.node(2).pid).not.toBe(pid);
    const client = redis.client(2);
    expect(await client.get('who')).toBeNull(); // no persistence: a restarted master is empty
    await client.set('who', 'node-2 again');
    expect(await client.get('who')).toBe('node-2 again');
  });

  it('restart also works on a paused server', async () => {
    redis.pause(0);
    await redis.restart(0);
    expect(await redis.ping(0)).toBe(true);
  });

  it('flush deletes every key on one server only', async () => {
    const a = redis.client(0);
    const b = redis.client(1);
    await a.set('k', '1');
    await b.set('k', '1');
    await redis.flush(0);
    expect(await a.dbsize()).toBe(0);
    expect(await b.get('k')).toBe('1');
  });

  it('refuses impossible transitions with clear errors', async () => {
    expect(() => {
      redis.resume(0);
    }).toThrow(/is running; cannot resume/);
    expect(() => redis.node(7)).toThrow(/no redis #7/);
    await redis.kill(2);
    expect(() => {
      redis.pause(2);
    }).toThrow(/is killed; cannot pause/);
    await expect(redis.flush(2)).rejects.toThrow(/cannot flush/);
    await redis.restart(2);
  });

  it('await using stops the harness at the end of the block', async () => {
    let pid: number;
    {
      await using scoped = await RedisHarness.start();
      pid = scoped.node(0).pid ?? 0;
      expect(processExists(pid)).toBe(true);
    }
    expect(processExists(pid)).toBe(false);
  });

  it('a server that cannot start fails with its own log, not a hang', async () => {
    // Bad configuration: redis-server refuses to start and says why.
    await expect(
      RedisHarness.start({ args: ['--maxmemory-policy', 'no-such-policy'] }),
    ).rejects.toThrow(/exited during start-up[\s\S]*maxmemory-policy/i);
  });

  it('freePort gives a bindable loopback port', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    expect(port).toBeLessThan(65536);
  });

  it("harnessPort hands out this worker's own ports, below the ephemeral range, in turn", async () => {
    // Two suites in parallel workers never share a port, and none of them is one the OS could
    // hand a client connection (see harnessPort).
    const pool = Number(process.env.VITEST_POOL_ID);
    const first = 10_000 + ((pool - 1) % 8) * 1250;
    const ports = [];
    for (let i = 0; i < 20; i++) ports.push(await harnessPort());
    for (const port of ports) {
      expect(port).toBeGreaterThanOrEqual(first);
      expect(port).toBeLessThan(first + 1250);
      expect(await canListen(port)).toBe(true);
    }
    expect(new Set(ports).size, 'distinct ports').toBe(20);
    const bus = await harnessPort(true);
    expect(await canListen(bus + 10_000)).toBe(true);
  });

  it('harnessPort skips a port something is listening on', async () => {
    const taken = createServer();
    const port = await harnessPort();
    await new Promise<void>((resolve) => taken.listen(port, '127.0.0.1', resolve));
    try {
      // Went round the whole block: the next pick comes back to `port` and must skip it.
      for (let i = 0; i < 1250; i++) expect(await harnessPort()).not.toBe(port);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});
