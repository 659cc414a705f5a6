/**
 * A load that misses and waits for another process's fill: how many round trips it makes before
 * it waits, and that it cannot miss the fill message — even one that its subscriber connection
 * hears before the reply to its own read comes back on the other connection (two sockets: the
 * event loop may handle either first).
 */
import { expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { until } from '../support/helpers.js';
import { withOverrides } from '../support/latency.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { heldLoad, useCaches } from '../support/cache.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A promise and the function that resolves it. */
function signal(): { readonly promise: Promise<void>; readonly fire: () => void } {
  let fire = (): void => undefined;
  const promise = new Promise<void>((resolve) => (fire = resolve));
  return { promise, fire };
}

describeRedis('Cache: waiting for another process’s load (real redis-server)', () => {
  const redis = useRedis();
  const { client, cacheOf } = useCaches(redis);

  it('a fill heard before the reply to the waiter’s own read is not lost', async () => {
    const a = cacheOf({ leaseTtlMs: 30_000 });
    const raw = client();
    const readRan = signal();
    const heard = signal();
    let held = false;
    const wrapped = withOverrides(raw, {
      // b's read script runs in Redis (and finds a's lease) at once, but its reply is handed to
      // b only after b's subscriber connection has heard a's fill: the order the two sockets
      // are read in is not fixed.
      evalsha: async (...args: Parameters<Redis['evalsha']>) => {
        const reply = await raw.evalsha(...args);
        if (!held) {
          held = true;
          readRan.fire();
          await heard.promise;
        }
        return reply;
      },
      duplicate: (...args: Parameters<Redis['duplicate']>) => {
        const subscriber = raw.duplicate(...args);
        // Registered after the cache's own listener (it subscribes in its constructor): by the
        // time this runs, the cache has handled the message.
        subscriber.on('message', () => {
          heard.fire();
        });
        return subscriber;
      },
    });
    // A lost wake-up would sleep until the lease runs out (30 s) or the next poll (60 s).
    const b = cacheOf({ redis: wrapped, leaseTtlMs: 30_000, pollIntervalMs: 60_000 });
    await until(() => expect(b.listening).toBe(true), 10_000);
    const { loading, release } = await heldLoad(a, 'k', { n: 1 });
    const waiting = b.getOrLoad('k', () => {
      throw new Error('b must not load');
    });
    await readRan.promise;
    release();
    await expect(loading).resolves.toEqual({ n: 1 });
    await expect(
      Promise.race([waiting, sleep(5_000).then(() => 'still waiting')]),
    ).resolves.toEqual({ n: 1 });
  });

  it('concurrent callers of a cold key: the lease read leaves with the GET, one round trip before the loader', async () => {
    const raw = client();
    const events: string[] = [];
    const logged = withOverrides(raw, {
      get: (key: string) => {
        events.push('GET sent');
        return raw.get(key).then((reply) => {
          events.push('GET reply');
          return reply;
        });
      },
      evalsha: (...args: Parameters<Redis['evalsha']>) => {
        events.push('EVALSHA sent');
        return raw.evalsha(...args).then((reply) => {
          events.push('EVALSHA reply');
          return reply;
        });
      },
    });
    const cache = cacheOf({ redis: logged });
    let calls = 0;
    const loader = (): string => {
      calls++;
      events.push('loader');
      return 'v';
    };
    await expect(
      Promise.all(Array.from({ length: 3 }, () => cache.getOrLoad('cold', loader))),
    ).resolves.toEqual(['v', 'v', 'v']);
    expect(calls).toBe(1);
    // The fill (the second EVALSHA) follows the loader.
    expect(events.slice(0, 5)).toEqual([
      'GET sent',
      'EVALSHA sent',
      'GET reply',
      'EVALSHA reply',
      'loader',
    ]);
  });

  it('a lease read sent with a GET that hits gives the lease back if it took it (the value went meanwhile)', async () => {
    const writer = cacheOf();
    await writer.set('k', 'v');
    const raw = client();
    const probe = client();
    const replied = signal();
    const wrapped = withOverrides(raw, {
      get: (key: string) =>
        raw.get(key).then((reply) => {
          replied.fire();
          return reply;
        }),
      // The lease read runs only after the GET has found the value and the value is deleted:
      // it finds none and takes the lease.
      evalsha: async (...args: Parameters<Redis['evalsha']>) => {
        await replied.promise;
        await probe.del('keel:cache:{default:k}');
        const reply = await raw.evalsha(...args);
        // The first script is the lease read (the release that follows comes through here too).
        if (leaseAfterRead === -1) {
          leaseAfterRead = await probe.exists('keel:cache:{default:k}:lease');
        }
        return reply;
      },
    });
    let leaseAfterRead = -1;
    const reader = cacheOf({ redis: wrapped, l1: false, leaseTtlMs: 30_000 });
    await expect(
      Promise.all([reader.getOrLoad('k', () => 'loaded'), reader.getOrLoad('k', () => 'loaded')]),
    ).resolves.toEqual(['v', 'v']);
    // The lease read did take the lease (else this test proves nothing)…
    await until(() => expect(leaseAfterRead).toBe(1), 5_000);
    // …and it is not held for its 30 s: nobody else would load the key until it ran out.
    await until(
      async () => expect(await probe.exists('keel:cache:{default:k}:lease')).toBe(0),
      5_000,
    );
  });

  it('concurrent callers of a warm key: the lease read sent with the GET carries no value, and the value is decoded once', async () => {
    const writer = cacheOf();
    await writer.set('warm', { n: 7 });
    const raw = client();
    const scriptReplies: unknown[] = [];
    const logged = withOverrides(raw, {
      evalsha: (...args: Parameters<Redis['evalsha']>) =>
        raw.evalsha(...args).then((reply) => {
          scriptReplies.push(reply);
          return reply;
        }),
    });
    let decoded = 0;
    const reader = cacheOf({
      redis: logged,
      l1: false,
      serializer: {
        serialize: (value) => JSON.stringify(value),
        deserialize: (text) => {
          decoded++;
          return JSON.parse(text) as unknown;
        },
      },
    });
    await expect(
      Promise.all(Array.from({ length: 3 }, () => reader.getOrLoad('warm', () => ({ n: 0 })))),
    ).resolves.toEqual([{ n: 7 }, { n: 7 }, { n: 7 }]);
    // The lease read did leave with the GET (a second caller joined while it was on its way)…
    await until(() => expect(scriptReplies.length).toBe(1), 5_000);
    // …but found the value without sending it, and no lease was taken.
    expect(scriptReplies[0]).toEqual([1, 0, -2]);
    expect(decoded).toBe(1);
  });

  it('a lease read that finds a value which came after the GET missed reads it (no lease, no load)', async () => {
    const writer = cacheOf();
    const raw = client();
    const gotReply = signal();
    const wrapped = withOverrides(raw, {
      // The GET misses; the value is written before the lease read runs.
      get: (key: string) =>
        raw.get(key).then((reply) => {
          gotReply.fire();
          return reply;
        }),
      evalsha: async (...args: Parameters<Redis['evalsha']>) => {
        await gotReply.promise;
        await writer.set('late', 'arrived');
        return raw.evalsha(...args);
      },
    });
    const reader = cacheOf({ redis: wrapped, l1: false });
    let loads = 0;
    const loader = (): string => {
      loads++;
      return 'loaded';
    };
    await expect(
      Promise.all([reader.getOrLoad('late', loader), reader.getOrLoad('late', loader)]),
    ).resolves.toEqual(['arrived', 'arrived']);
    expect(loads).toBe(0);
  });
});
