import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import {
  Redlock,
  isLockLostError,
  isLockTakenError,
  isQuorumUnavailableError,
} from '../../src/lock/index.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// Keys of a held lock replaced behind its back by values of another type (a hash where the lock
// key was, a string where the semaphore's sorted set was, a list where a fencing counter was):
// every node answers the scripts with WRONGTYPE. Each call must end in Keel's typed errors or
// documented results — never a plain error, a hang, or a lock still reported held.

describeRedis(
  'keys replaced by a foreign type while held (three real redis-server processes)',
  () => {
    const redis = useRedis({ count: 3 });
    let opened: Redlock[] = [];
    let clients: Redis[] = [];

    afterEach(async () => {
      await Promise.all(opened.map((r) => r.close()));
      for (const c of clients) c.disconnect();
      opened = [];
      clients = [];
      await redis().flushAll();
    });

    const setUp = (): { redlock: Redlock; nodes: Redis[] } => {
      const own = redis().clients();
      const nodes = redis().clients();
      clients.push(...own, ...nodes);
      const redlock = new Redlock({ clients: own, nodeTimeoutMs: 2_000, retryDelayMs: 10 });
      opened.push(redlock);
      return { redlock, nodes };
    };

    it('a lock key turned into a hash: extend loses the lock, release reports it expired, acquire says taken', async () => {
      const { redlock, nodes } = setUp();
      const lock = await redlock.acquire('foreign');
      const signal = lock.signal;
      const key = redlock.keyOf('foreign');
      for (const c of nodes) await c.multi().del(key).hset(key, 'field', '1').exec();
      const extended = await lock.extend(5_000).catch((e: unknown) => e);
      expect(isLockLostError(extended), String(extended)).toBe(true);
      expect(signal.aborted && isLockLostError(signal.reason)).toBe(true);
      expect(await lock.release()).toEqual({ released: false, expired: true });
      const again = await redlock.acquire('foreign', { retryCount: 0 }).catch((e: unknown) => e);
      expect(isLockTakenError(again), String(again)).toBe(true);
      for (const c of nodes)
        expect(await c.type(key), 'the foreign hash is left alone').toBe('hash');
    });

    it('a fencing counter turned into a list: acquire fails with QuorumUnavailableError naming the script error', async () => {
      const { redlock, nodes } = setUp();
      const counter = `${redlock.keyOf('counted')}:fence`;
      for (const c of nodes) await c.rpush(counter, 'x');
      const error = await redlock.acquire('counted', { retryCount: 0 }).catch((e: unknown) => e);
      expect(isQuorumUnavailableError(error), String(error)).toBe(true);
      expect(String(error)).toContain('WRONGTYPE');
      for (const c of nodes)
        expect(await c.exists(redlock.keyOf('counted')), 'nothing held').toBe(0);
    });

    it('a semaphore set turned into a string: the permit is lost, release reports it expired, acquire fails typed', async () => {
      const { redlock, nodes } = setUp();
      const semaphore = redlock.semaphore('foreign', { permits: 2 });
      const permit = await semaphore.acquire();
      const set = `${redlock.keyOf('foreign')}:semaphore`;
      for (const c of nodes) await c.set(set, 'not a sorted set');
      const extended = await permit.extend(5_000).catch((e: unknown) => e);
      expect(isLockLostError(extended), String(extended)).toBe(true);
      expect(await permit.release()).toEqual({ released: false, expired: true });
      const again = await semaphore.acquire({ retryCount: 0 }).catch((e: unknown) => e);
      expect(isQuorumUnavailableError(again), String(again)).toBe(true);
      for (const c of nodes) expect(await c.get(set)).toBe('not a sorted set');
    });
  },
);
