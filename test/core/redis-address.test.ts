import { Cluster, Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { redisAddress } from '../../src/core/index.js';

// How errors name a Redis server, from real ioredis clients' own options (lazyConnect: none of
// these connects anywhere).

describe('redisAddress: a Redis server as errors name it', () => {
  const opened: { disconnect: () => void }[] = [];
  afterEach(() => {
    for (const c of opened.splice(0)) c.disconnect();
  });
  const keep = <T extends { disconnect: () => void }>(client: T): T => {
    opened.push(client);
    return client;
  };

  it('a standalone client: host:port, defaults included; a Unix socket: its path', () => {
    expect(redisAddress(keep(new Redis({ host: '10.1.2.3', port: 6390, lazyConnect: true })))).toBe(
      '10.1.2.3:6390',
    );
    expect(redisAddress(keep(new Redis({ lazyConnect: true })))).toBe('localhost:6379');
    expect(redisAddress(keep(new Redis({ path: '/run/redis.sock', lazyConnect: true })))).toBe(
      '/run/redis.sock',
    );
  });

  it('a Sentinel client: the master group name and its sentinels', () => {
    const client = keep(
      new Redis({
        sentinels: [
          { host: '10.0.0.1', port: 26379 },
          { host: '10.0.0.2', port: 26380 },
        ],
        name: 'orders-master',
        lazyConnect: true,
      }),
    );
    expect(redisAddress(client)).toBe('sentinel orders-master via 10.0.0.1:26379,10.0.0.2:26380');
  });

  it('a Cluster client: its startup nodes', () => {
    const cluster = keep(
      new Cluster(
        [
          { host: '10.0.1.1', port: 7000 },
          { host: '10.0.1.2', port: 7001 },
        ],
        {
          lazyConnect: true,
        },
      ),
    );
    expect(redisAddress(cluster)).toBe('cluster via 10.0.1.1:7000,10.0.1.2:7001');
  });

  it('anything else: undefined, never a throw', () => {
    for (const value of [undefined, null, 42, 'redis', {}, { options: null }, { options: {} }]) {
      expect(redisAddress(value)).toBeUndefined();
    }
  });
});
