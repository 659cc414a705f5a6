/**
 * The eviction check (src/core/eviction.ts) against a real redis-server whose `maxmemory` and
 * `maxmemory-policy` the tests set: it reads the policy, warns once per client and component
 * when the server may evict keys, and stays quiet when it may not or when `CONFIG` is denied.
 * The lock, queue and saga constructors run it.
 */
import { Redis } from 'ioredis';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { evictionRisk, warnIfEvicting } from '../../src/core/index.js';
import { Redlock } from '../../src/lock/index.js';
import { Queue } from '../../src/queue/index.js';
import { IdempotencyKeys, SagaCoordinator, defineSaga } from '../../src/saga/index.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const later = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('eviction check (maxmemory-policy)', () => {
  const redis = useRedis({ count: 1 });
  let warnings: Error[] = [];
  const onWarning = (w: Error): void => {
    if ((w as { code?: unknown }).code === 'KEEL_REDIS_EVICTION') warnings.push(w);
  };
  const closers: (() => Promise<unknown>)[] = [];

  beforeEach(() => {
    warnings = [];
    process.on('warning', onWarning);
  });

  afterEach(async () => {
    process.off('warning', onWarning);
    for (const close of closers.splice(0)) await close();
    const admin = redis().client(0);
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', '0');
    await redis().flushAll();
  });

  const configure = async (policy: string, maxmemory: string): Promise<void> => {
    const admin = redis().client(0);
    await admin.config('SET', 'maxmemory-policy', policy);
    await admin.config('SET', 'maxmemory', maxmemory);
  };

  it('reads whether the server may evict keys', async () => {
    const client = redis().client(0);
    expect(await evictionRisk(client)).toBeUndefined();
    await configure('allkeys-lru', '1gb');
    expect(await evictionRisk(client)).toEqual({ policy: 'allkeys-lru', maxmemory: 1024 ** 3 });
    await configure('volatile-ttl', '1gb');
    expect(await evictionRisk(client)).toEqual({ policy: 'volatile-ttl', maxmemory: 1024 ** 3 });
    await configure('noeviction', '1gb');
    expect(await evictionRisk(client)).toBeUndefined();
    // A policy without maxmemory never evicts.
    await configure('allkeys-lru', '0');
    expect(await evictionRisk(client)).toBeUndefined();
  });

  it('a server that denies CONFIG is not judged (no error, no warning)', async () => {
    await configure('allkeys-lru', '1gb');
    const admin = redis().client(0);
    await admin.call('ACL', 'SETUSER', 'noconfig', 'on', '>pw', '~*', '&*', '+@all', '-config');
    const { port } = redis().node(0);
    const limited = new Redis({ host: '127.0.0.1', port, username: 'noconfig', password: 'pw' });
    closers.push(async () => {
      limited.disconnect();
      await admin.call('ACL', 'DELUSER', 'noconfig');
    });
    expect(await evictionRisk(limited)).toBeUndefined();
    warnIfEvicting(limited, 'keel/test');
    await later(200);
    expect(warnings).toEqual([]);
  });

  it('warns once per client and component, naming the server, the policy and the component', async () => {
    await configure('volatile-lru', '1gb');
    const client = redis().client(0);
    warnIfEvicting(client, 'keel/test');
    warnIfEvicting(client, 'keel/test');
    await until(() => expect(warnings).toHaveLength(1), 5000);
    const [w] = warnings;
    expect(w?.name).toBe('KeelWarning');
    expect(w?.message).toContain(`127.0.0.1:${redis().node(0).port}`);
    expect(w?.message).toContain('volatile-lru');
    expect(w?.message).toMatch(/^keel\/test: /);
    expect(w?.message).toContain('use noeviction');
    warnIfEvicting(client, 'keel/other');
    await until(() => expect(warnings).toHaveLength(2), 5000);
    await later(200);
    expect(warnings).toHaveLength(2);
  });

  it('no warning for a server that does not evict', async () => {
    warnIfEvicting(redis().client(0), 'keel/test');
    await configure('noeviction', '1gb');
    warnIfEvicting(redis().client(0), 'keel/test');
    await later(300);
    expect(warnings).toEqual([]);
  });

  it('Redlock, Queue, SagaCoordinator and IdempotencyKeys check their clients when made', async () => {
    await configure('allkeys-lru', '1gb');
    const redlock = new Redlock({ clients: [redis().client(0)] });
    closers.push(() => redlock.close());
    const queue = new Queue({ client: redis().client(0) });
    closers.push(() => queue.close());
    const saga = defineSaga('evict', [{ name: 'a', run: () => undefined }]);
    const coordinator = new SagaCoordinator({
      redis: redis().client(0),
      sagas: [saga],
      recovery: false,
    });
    closers.push(() => coordinator.close());
    new IdempotencyKeys({ redis: redis().client(0) });
    await until(() => expect(warnings).toHaveLength(4), 5000);
    const text = warnings.map((w) => w.message).join('\n');
    expect(text).toContain('keel/lock: Redis at');
    expect(text).toContain('keel/queue: Redis at');
    expect(text).toContain('keel/saga: Redis at');
  });
});
