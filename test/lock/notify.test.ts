import { afterEach, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { Redlock } from '../../src/lock/index.js';
import { WAITING_MARK } from '../../src/lock/scripts.js';
import { withOverrides } from '../support/latency.js';
import { describeRedis, liveHandles, useRedis } from '../support/vitest.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('release notifications (pub/sub) against five real redis-server processes', () => {
  const redis = useRedis({ count: 5 });
  const opened: Redlock[] = [];
  const redlockOf = (options: Partial<ConstructorParameters<typeof Redlock>[0]> = {}): Redlock => {
    const redlock = new Redlock({
      clients: redis().clients({ maxRetriesPerRequest: 1 }),
      ...options,
    });
    opened.push(redlock);
    return redlock;
  };

  afterEach(async () => {
    for (const r of opened.splice(0)) await r.close();
    for (let i = 0; i < 5; i++) if (redis().node(i).state === 'paused') redis().resume(i);
    await redis().flushAll();
  });

  // A release waking a waiter, and an expiry freeing one, are in the shared suite
  // (shared-suite.ts), which runs on these five nodes (redlock.test.ts) and on Redis Cluster.

  it('with notifications off, waiters poll', async () => {
    const holder = redlockOf();
    const waiter = redlockOf({
      notifications: false,
      retryDelayMs: 50,
      retryJitterMs: 10,
      retryCount: 100,
    });
    const lock = await holder.acquire('sku:n3');
    const waiting = waiter.acquire('sku:n3');
    await sleep(120);
    await lock.release();
    const next = await waiting;
    await next.release();
    expect(next.fencingToken).toBeGreaterThan(lock.fencingToken);
  });

  it('a paused node does not hold a waiter up: the subscription falls back to the others', async () => {
    const holder = redlockOf();
    const waiter = redlockOf({ retryDelayMs: 20_000, retryJitterMs: 0, retryCount: 5 });
    redis().pause(4);
    const lock = await holder.acquire('sku:n4', { ttlMs: 30_000 });
    const waiting = waiter.acquire('sku:n4', { ttlMs: 30_000 });
    await sleep(300);
    await lock.release();
    const next = await waiting;
    await next.release();
    redis().resume(4);
  });

  it('a subscription confirmed only after the ack timeout wakes its waiter, which may have missed a release', async () => {
    // The waiter's SUBSCRIBE reaches the nodes 400 ms late (a slow new connection): it stops
    // waiting for the confirmation after the ack timeout (the node timeout, 100 ms), tries
    // again, and sleeps for its 20 s retry delay. The holder releases before the subscription
    // is live, so the release's message reaches nobody — the late confirmation must wake it.
    const slowSubscribe = (client: Redis): Redis =>
      withOverrides(client, {
        duplicate: () => {
          const subscriber = client.duplicate();
          const subscribe = subscriber.subscribe.bind(subscriber);
          return withOverrides(subscriber, {
            subscribe: async (...channels: string[]) => {
              await sleep(400);
              return subscribe(...channels);
            },
          });
        },
      });
    const holder = redlockOf();
    const waiter = redlockOf({
      clients: redis().clients({ maxRetriesPerRequest: 1 }).map(slowSubscribe),
      retryDelayMs: 20_000,
      retryJitterMs: 0,
      retryCount: 5,
    });
    const lock = await holder.acquire('sku:n6', { ttlMs: 30_000 });
    const waiting = waiter.acquire('sku:n6', {
      ttlMs: 30_000,
      signal: AbortSignal.timeout(10_000),
    });
    await sleep(200); // the waiter gave up on the confirmation and sleeps; nothing is subscribed
    await lock.release();
    const next = await waiting; // a TimeoutError here: the late confirmation did not wake it
    expect(next.fencingToken).toBeGreaterThan(lock.fencingToken);
    await next.release();
  });

  it('a release that woke the waiter but is still landing on some nodes is retried soon, not waited out', async () => {
    // A holder (token T) holds all five nodes. Its release lands on nodes 0 and 1 and publishes
    // there; nodes 2-4 still hold T for a moment. The woken waiter sees two grants and three
    // refusals naming T — a quorum, but of a holder whose release it saw: it retries soon
    // rather than sleeping for its 20 s retry delay (no further message will come).
    const waiter = redlockOf({ retryDelayMs: 20_000, retryJitterMs: 0, retryCount: 20 });
    const key = waiter.keyOf('sku:landing');
    const clients = redis().clients();
    const token = 'ab'.repeat(20);
    for (const c of clients) await c.set(key, token, 'PX', 30_000);
    const waiting = waiter.acquire('sku:landing', { signal: AbortSignal.timeout(10_000) });
    await sleep(200); // refused, subscribed, asleep
    const id = createHash('sha1').update(token).digest('hex').slice(0, 16);
    for (const i of [0, 1]) await clients[i]?.del(key);
    await clients[0]?.publish(`${key}:released`, id);
    await sleep(30);
    for (const i of [2, 3, 4]) await clients[i]?.del(key);
    const lock = await waiting; // a TimeoutError here: it waited for a message that never came
    await lock.release();
    for (const c of clients) c.disconnect();
  });

  it('a release publishes only where a waiter registered interest: none with nobody waiting', async () => {
    // Every release used to PUBLISH on every node, waiting or not: a script step per node per
    // cycle, and a message for every subscriber of the channel to read. A refused acquisition
    // now marks interest on the refusing node (inside the same script), and only a release
    // that finds the mark publishes.
    const redlock = redlockOf();
    const key = redlock.keyOf('sku:quiet');
    const listeners = redis().clients();
    const heard: string[] = [];
    for (const l of listeners) {
      l.on('message', (channel: string) => heard.push(channel));
      await l.subscribe(`${key}:released`);
    }
    for (let i = 0; i < 3; i++) await (await redlock.acquire('sku:quiet')).release();
    await sleep(100);
    expect(heard).toEqual([]);
    // With a waiter refused, the release is heard (on the nodes that refused it).
    const lock = await redlock.acquire('sku:quiet');
    const waiter = redlockOf({ retryDelayMs: 20_000, retryJitterMs: 0, retryCount: 5 });
    const waiting = waiter.acquire('sku:quiet', { signal: AbortSignal.timeout(10_000) });
    // Refused, subscribed, asleep: its interest is marked on a quorum. (A lock's first round
    // marks nothing — it sends one argument less — so the mark comes from the round the
    // waiter makes once subscribed; wait for it rather than for a fixed time, which a loaded
    // machine may not keep.)
    // The mark is in the key: the holder's token with WAITING_MARK appended.
    const probes = redis().clients();
    for (let i = 0; i < 500; i++) {
      const values = await Promise.all(probes.map((c) => c.get(key)));
      if (values.filter((v) => v?.endsWith(WAITING_MARK)).length >= redlock.quorum) break;
      await sleep(10);
    }
    for (const p of probes) p.disconnect();
    await lock.release();
    await (await waiting).release();
    expect(heard.length).toBeGreaterThanOrEqual(redlock.quorum);
    for (const l of listeners) l.disconnect();
  });

  it('no wake-up is lost when a release races the waiter’s refusal and subscription', async () => {
    // The waiter's 20 s retry delay means only a notification (or the re-attempt made right
    // after subscribing) can hand it the lock in time. The release lands anywhere from before
    // the waiter's first attempt to after its subscription: on each node either the attempt
    // finds the key gone, or its refusal marks interest there before the release runs.
    const holder = redlockOf();
    const waiter = redlockOf({ retryDelayMs: 20_000, retryJitterMs: 0, retryCount: 50 });
    for (let i = 0; i < 30; i++) {
      const lock = await holder.acquire('sku:race');
      const waiting = waiter.acquire('sku:race', { signal: AbortSignal.timeout(10_000) });
      await sleep(i % 6); // 0-5 ms: before, during and after the refusal and subscription
      await lock.release();
      const next = await waiting; // a TimeoutError here: a release went unheard
      expect(next.fencingToken).toBeGreaterThan(lock.fencingToken);
      await next.release();
    }
  });

  it('waiters left behind by a release hear the next holder’s release too', async () => {
    // Interest is marked for a while after each refusal, not deleted by the release it woke
    // someone for. Three acquisitions of one Redlock (no local turns) wait; a release wakes
    // one of them (the longest-waiting), the other two sleep on for their 20 s retry delay and
    // only the next holders' releases can wake them.
    const holder = redlockOf();
    const redlock = redlockOf({
      retryDelayMs: 20_000,
      retryJitterMs: 0,
      retryCount: 50,
      localTurns: false,
    });
    const waiters = [redlock, redlock, redlock];
    const lock = await holder.acquire('sku:chain');
    const got: number[] = [];
    const waiting = waiters.map(async (w) => {
      const held = await w.acquire('sku:chain', { signal: AbortSignal.timeout(10_000) });
      got.push(held.fencingToken);
      await sleep(30);
      await held.release();
    });
    await sleep(200); // all refused, subscribed, asleep
    await lock.release();
    await Promise.all(waiting); // a TimeoutError here: a later release went unheard
    expect(got).toHaveLength(3);
  });

  it('close() (and the idle linger) closes the subscriber connections it opened', async () => {
    const holder = redlockOf();
    const waiter = redlockOf({ retryDelayMs: 20_000, retryJitterMs: 0, retryCount: 5 });
    const again = redlockOf({ retryDelayMs: 20_000, retryJitterMs: 0, retryCount: 5 });
    for (const r of [holder, waiter, again]) await (await r.acquire('warm-up')).release(); // connect
    const before = liveHandles().TCPSocketWrap ?? 0;
    const lock = await holder.acquire('sku:n5');
    const waiting = waiter.acquire('sku:n5');
    await sleep(100);
    expect(liveHandles().TCPSocketWrap ?? 0).toBeGreaterThanOrEqual(before + 5); // one per node
    await lock.release();
    await (await waiting).release();
    await sleep(1_300); // past the one-second linger
    expect(liveHandles().TCPSocketWrap ?? 0).toBeLessThanOrEqual(before);
    // close() right away, too, and twice.
    const held = await holder.acquire('sku:n5');
    const blocked = again
      .acquire('sku:n5', { signal: AbortSignal.timeout(300) })
      .catch((e: unknown) => e);
    await sleep(100);
    await again.close();
    await again.close();
    expect(await blocked).toBeInstanceOf(Error);
    await held.release();
    await sleep(50);
    expect(liveHandles().TCPSocketWrap ?? 0).toBeLessThanOrEqual(before);
  });
});
