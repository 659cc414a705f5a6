import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Redlock } from '../../src/lock/index.js';
import * as scripts from '../../src/lock/scripts.js';
import { RELEASE, SEM_RELEASE } from '../../src/lock/scripts.js';
import { until } from '../support/helpers.js';
import { cutOff } from '../support/cut-off.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// A release decided by a quorum leaves the other nodes to finish on their own. A node whose
// client fails the release — ioredis gives up on a command issued while it reconnects once
// `maxRetriesPerRequest` (here 1) reconnection attempts in a row failed — never ran it: it kept
// the released lock's key until its ttl, and refused every other acquirer there (with one more
// node down, nobody could take the resource for the whole ttl). An undo is sent again when its
// node's client is next ready; a release now is too, within the same bounds.

describeRedis('a release the client gave up on (ioredis maxRetriesPerRequest)', () => {
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

  /**
   * Every lock script cached on every server first: on a fresh server an acquisition's EVALSHA
   * is answered NOSCRIPT, and a node outside its quorum ran its EVAL fallback after the release
   * (answered "not held", then the late grant undone), so the release reported `released: false`.
   */
  const loadScripts = async (): Promise<void> => {
    const all = [
      scripts.ACQUIRE,
      scripts.RELEASE,
      scripts.EXTEND,
      scripts.SEM_ACQUIRE,
      scripts.SEM_RELEASE,
      scripts.SEM_EXTEND,
      scripts.SETTLE_FENCE,
    ];
    for (let i = 0; i < 3; i++) {
      const admin = redis().client(i);
      clients.push(admin);
      for (const s of all) await admin.script('LOAD', s.source);
    }
  };

  /** A Redlock whose node 0 can be cut off (its reconnections refused) until `heal()`. */
  const setUp = async () => {
    await loadScripts();
    const options = { maxRetriesPerRequest: 1, retryStrategy: () => 20 };
    const own = [0, 1, 2].map((i) => redis().client(i, options));
    clients.push(...own);
    const node0 = own[0] as Redis;
    const link = cutOff(node0);
    // Counts node 0's releases (and permit releases): answered, and failed by its client.
    let answered = 0;
    let failed = 0;
    const watched = new Proxy(node0, {
      get(target, property, receiver) {
        if (property !== 'evalsha') return Reflect.get(target, property, receiver) as unknown;
        return (...args: Parameters<Redis['evalsha']>) => {
          const reply = target.evalsha(...args);
          if (args[0] === RELEASE.sha || args[0] === SEM_RELEASE.sha) {
            reply.then(
              () => {
                answered++;
              },
              () => {
                failed++;
              },
            );
          }
          return reply;
        };
      },
    });
    const redlock = new Redlock({
      clients: [watched, own[1] as Redis, own[2] as Redis],
      ttlMs: 60_000,
      retryDelayMs: 10,
      notifications: false,
      batching: false,
    });
    opened.push(redlock);
    const direct = redis().client(0);
    clients.push(direct);
    return {
      redlock,
      node0,
      failed: () => failed,
      answered: () => answered,
      direct,
      cut: link.cut,
      heal: link.heal,
      /** Resolves once node 0's client is ready again and ran all it sent on becoming ready. */
      settled: async () => {
        await until(() => {
          expect(node0.status).toBe('ready');
        }, 5_000);
        await node0.ping();
      },
    };
  };

  it('is sent again once the node is reachable: the released lock leaves no key behind', async () => {
    const { redlock, node0, direct, cut, heal, failed } = await setUp();
    const resource = 'release-unreachable:lock';
    const key = redlock.keyOf(resource);
    const lock = await redlock.acquire(resource);
    expect(await direct.exists(key), 'the lock key on node 0').toBe(1);
    cut();
    await until(() => {
      expect(node0.status).not.toBe('ready');
    }, 5_000);
    const result = await lock.release();
    expect(result).toEqual({ released: true, expired: false });
    // Node 0's copy of the release was failed by its client, never sent.
    await until(() => {
      expect(failed()).toBe(1);
    }, 5_000);
    expect(await direct.exists(key), 'the released key is still on node 0').toBe(1);
    heal();
    await until(async () => {
      expect(await direct.exists(key), 'the lock key on node 0').toBe(0);
    }, 5_000);
  });

  it('is sent again once the node is reachable: a released permit leaves no slot behind', async () => {
    const { redlock, node0, direct, cut, heal, failed } = await setUp();
    const semaphore = redlock.semaphore('release-unreachable', { permits: 2 });
    const set = `${redlock.keyOf('release-unreachable')}:semaphore`;
    const permit = await semaphore.acquire();
    expect(await direct.zcard(set), 'the permit slot on node 0').toBe(1);
    cut();
    await until(() => {
      expect(node0.status).not.toBe('ready');
    }, 5_000);
    expect(await permit.release()).toEqual({ released: true, expired: false });
    await until(() => {
      expect(failed()).toBe(1);
    }, 5_000);
    expect(await direct.zcard(set), 'the released slot is still on node 0').toBe(1);
    heal();
    await until(async () => {
      expect(await direct.zcard(set), 'permit slots on node 0').toBe(0);
    }, 5_000);
  });

  // The release sent again is a compare-and-delete of the released lock's token: a lock taken
  // on that node since (here written there directly, as another holder's) is left alone.
  it('sent again, deletes nothing of a lock acquired since', async () => {
    const { redlock, node0, direct, cut, heal, failed, answered, settled } = await setUp();
    const resource = 'release-unreachable:since';
    const key = redlock.keyOf(resource);
    const lock = await redlock.acquire(resource);
    cut();
    await until(() => {
      expect(node0.status).not.toBe('ready');
    }, 5_000);
    await lock.release();
    await until(() => {
      expect(failed()).toBe(1);
    }, 5_000);
    await direct.set(key, 'another holder', 'PX', 60_000);
    const before = answered();
    heal();
    await settled();
    await until(() => {
      expect(answered(), 'the release sent again was answered').toBe(before + 1);
    }, 5_000);
    expect(await direct.get(key)).toBe('another holder');
  });

  // Bounded by close(), as undos are: nothing of the Redlock reaches a node after close().
  it('is not sent again after close(): the node keeps the key until its ttl', async () => {
    const { redlock, node0, direct, cut, heal, failed, answered, settled } = await setUp();
    const resource = 'release-unreachable:closed';
    const key = redlock.keyOf(resource);
    const lock = await redlock.acquire(resource);
    cut();
    await until(() => {
      expect(node0.status).not.toBe('ready');
    }, 5_000);
    await lock.release();
    await until(() => {
      expect(failed()).toBe(1);
    }, 5_000);
    const before = answered();
    await redlock.close();
    heal();
    await settled();
    expect(answered()).toBe(before);
    expect(await direct.exists(key), 'the lock key on node 0').toBe(1);
  });
});
