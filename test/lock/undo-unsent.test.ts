import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Redlock, isLockTakenError } from '../../src/lock/index.js';
import { BATCH, RELEASE, SEM_RELEASE } from '../../src/lock/scripts.js';
import { until } from '../support/helpers.js';
import { cutOff } from '../support/cut-off.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// An attempt that a node's client failed without ever writing it — issued while the client was
// not connected and failed before it reconnected (`enableOfflineQueue: false` fails it at once;
// `maxRetriesPerRequest` after that many failed reconnections) — landed nothing there. Its undo
// was sent anyway, failed the same way, and waited for the client's next `ready` (up to 1024 per
// node, all sent at once on reconnection): pointless work, and room taken from the undos and
// releases that do need sending again.

describeRedis('an attempt the client failed unsent', () => {
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

  const setUp = (batching: boolean) => {
    const own = [0, 1, 2].map((i) =>
      redis().client(i, i === 0 ? { enableOfflineQueue: false, retryStrategy: () => 20 } : {}),
    );
    clients.push(...own);
    const node0 = own[0] as Redis;
    const link = cutOff(node0);
    // Node 0's undo calls (a release script, or a batch of calls), as issued.
    let undos = 0;
    const watched = new Proxy(node0, {
      get(target, property, receiver) {
        if (property !== 'evalsha') return Reflect.get(target, property, receiver) as unknown;
        return (...args: Parameters<Redis['evalsha']>) => {
          if ([RELEASE.sha, SEM_RELEASE.sha, BATCH.sha].includes(String(args[0]))) undos++;
          return target.evalsha(...args);
        };
      },
    });
    const redlock = new Redlock({
      clients: [watched, own[1] as Redis, own[2] as Redis],
      ttlMs: 60_000,
      retryDelayMs: 10,
      notifications: false,
      batching,
    });
    opened.push(redlock);
    return {
      redlock,
      node0,
      undos: () => undos,
      cut: async () => {
        link.cut();
        await until(() => {
          expect(node0.status).not.toBe('ready');
        }, 5_000);
      },
      heal: async () => {
        link.heal();
        await until(() => {
          expect(node0.status).toBe('ready');
        }, 5_000);
        // Answered after anything sent when the client became ready.
        await node0.ping();
      },
    };
  };

  for (const batching of [false, true]) {
    it(`is not undone there, before or after the client reconnects (batching ${batching})`, async () => {
      const { redlock, undos, cut, heal } = setUp(batching);
      const resource = 'undo-unsent:lock';
      const key = redlock.keyOf(resource);
      await (await redlock.acquire(resource)).release(); // scripts cached, counters made
      for (const i of [1, 2]) await (clients[i] as Redis).set(key, 'another holder', 'PX', 60_000);
      await cut();
      const before = undos();
      for (let i = 0; i < 3; i++) {
        const error = await redlock.acquire(resource, { retryCount: 0 }).catch((e: unknown) => e);
        expect(isLockTakenError(error), String(error)).toBe(true);
      }
      await heal();
      expect(undos() - before, 'undo calls to node 0').toBe(0);
    });
  }
});
