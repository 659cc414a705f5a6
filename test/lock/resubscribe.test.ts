import { expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { systemClock } from '../../src/core/index.js';
import { ReleaseNotifier, type DuplicableClient } from '../../src/lock/notifier.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('release-notification connections across reconnects (one real redis-server)', () => {
  const redis = useRedis({ count: 1 });

  // ioredis re-subscribes a reconnected subscriber by itself (`autoResubscribe`) and never
  // catches that SUBSCRIBE: when it fails (here: refused by an ACL; in the chaos suite: the
  // connection dropped again first), the promise rejects with nobody listening — an unhandled
  // rejection, which by default ends a user's process. Found by the lock chaos suite (12 in a
  // 300 s run; one crashed a worker).
  it('a re-subscription that fails after a reconnect is handled, not an unhandled rejection', async () => {
    const [client] = redis().clients({ maxRetriesPerRequest: 1 });
    const [admin] = redis().clients();
    const subscribers: Redis[] = [];
    const spy: DuplicableClient = {
      duplicate: (options) => {
        const made = (client as Redis).duplicate(options);
        subscribers.push(made);
        return made;
      },
    };
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on('unhandledRejection', onUnhandled);
    const notifier = new ReleaseNotifier([spy], systemClock, 2_000);
    try {
      const subscription = await notifier.subscribe(['keel:test:released']);
      const subscriber = subscribers[0] as Redis;
      const back = new Promise<void>((resolve) => subscriber.once('ready', () => resolve()));
      await (admin as Redis).call('ACL', 'SETUSER', 'default', 'resetchannels');
      await (admin as Redis).call('CLIENT', 'KILL', 'TYPE', 'pubsub');
      await back;
      await sleep(300);
      subscription[Symbol.dispose]();
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await (admin as Redis).call('ACL', 'SETUSER', 'default', 'allchannels');
      notifier.close();
      (client as Redis).disconnect();
      (admin as Redis).disconnect();
    }
    expect(unhandled.map(String)).toEqual([]);
  });

  it('a reconnected subscriber is subscribed again and its waiters are woken (releases may have been missed)', async () => {
    const [client] = redis().clients({ maxRetriesPerRequest: 1 });
    const [publisher] = redis().clients();
    const notifier = new ReleaseNotifier([client as Redis], systemClock, 2_000);
    try {
      const subscription = await notifier.subscribe(['keel:test:again']);
      await (publisher as Redis).call('CLIENT', 'KILL', 'TYPE', 'pubsub');
      // Woken once the subscription is live again (a release during the gap went unseen).
      await subscription.wait(subscription.count, 10_000, undefined);
      const woken = subscription.count;
      expect(woken).toBeGreaterThan(0);
      // And it is live: a release published now reaches it.
      let delivered = false;
      for (let i = 0; i < 50 && !delivered; i++) {
        await (publisher as Redis).publish('keel:test:again', `id-${i}`);
        await subscription.wait(woken, 100, undefined);
        delivered = subscription.count > woken;
      }
      expect(delivered).toBe(true);
      subscription[Symbol.dispose]();
    } finally {
      notifier.close();
      (client as Redis).disconnect();
      (publisher as Redis).disconnect();
    }
  });
});
