import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { Redlock } from '../../src/lock/index.js';
import {
  ACQUIRE,
  FENCE_REPAIR,
  FENCE_SCAN,
  FENCE_TAG,
  SETTLE_FENCE,
} from '../../src/lock/scripts.js';
import { redisCost, redisCounters, type RedisCounters } from '../support/redis-cost.js';
import { throughNet, withOverrides, type Net } from '../support/latency.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// Tagged fencing counters (see ACQUIRE in src/lock/scripts.ts): a counter that passed the
// incarnation check holds its fence + FENCE_TAG and counts without the check afterwards. A tag
// is written only together with finding the incarnation key, and is lost only with the data;
// every other write (a repair's copy, a catch-up, an undone attempt's INCR) leaves an untagged
// counter untagged. These tests pin each rule on five real redis-servers, and a property runs
// random data losses, interrupted repairs and old-format counters against token order.

const MARKER = 'keel:lock:incarnation';
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('tagged fencing counters (five real redis-server processes)', () => {
  const redis = useRedis({ count: 5 });
  const NODES = [0, 1, 2, 3, 4];
  let opened: Redlock[] = [];
  let inspect: Redis[] = [];

  const node = (i: number): Redis => inspect[i] as Redis;
  const raw = async (i: number, key: string): Promise<number> =>
    Number((await node(i).get(key)) ?? '0');
  const redlockOf = (clients: readonly Redis[]): Redlock => {
    const redlock = new Redlock({
      clients,
      nodeTimeoutMs: 200,
      retryDelayMs: 10,
      retryJitterMs: 10,
    });
    opened.push(redlock);
    return redlock;
  };
  const clientsOf = (): Redis[] =>
    redis().clients({ maxRetriesPerRequest: 1, retryStrategy: () => 20 });
  const once = async (redlock: Redlock, resource: string): Promise<number> => {
    const lock = await redlock.acquire(resource, { ttlMs: 300 });
    await lock.release();
    return lock.fencingToken;
  };
  /** Runs a lock script on one node directly, as a client would. */
  const run = (i: number, source: string, keys: string[], args: (string | number)[]) =>
    node(i).eval(source, keys.length, ...keys, ...args);

  beforeEach(() => {
    opened = [];
    inspect = redis().clients();
  });

  afterEach(async () => {
    for (const redlock of opened.splice(0)) await redlock.close();
    await sleep(100);
    for (const c of inspect) c.disconnect();
    await redis().flushAll();
  });

  it('a counter is left untagged by its first grant and tagged by its second; from then on acquisitions read no incarnation key', async () => {
    const redlock = redlockOf(clientsOf());
    await once(redlock, 'bootstrap'); // every node gets its incarnation key
    const fence = `${redlock.keyOf('tagged')}:fence`;
    // A lock taken once (a lock per entity) pays no tag: INCR and the check, as before tags.
    expect(await once(redlock, 'tagged')).toBe(1);
    await until(async () => {
      expect(await Promise.all(NODES.map((i) => raw(i, fence)))).toEqual(NODES.map(() => 1));
    }, 5_000);
    const first = await once(redlock, 'tagged');
    expect(first).toBe(2);
    // The late nodes' answers land.
    await until(async () => {
      for (const i of NODES) expect(await raw(i, fence)).toBe(FENCE_TAG + first);
    }, 5_000);
    const before = await Promise.all(inspect.map(redisCounters));
    const tokens = [];
    for (let k = 0; k < 5; k++) tokens.push(await once(redlock, 'tagged'));
    expect(tokens).toEqual([1, 2, 3, 4, 5].map((d) => first + d));
    const costs = async () => {
      const after = await Promise.all(inspect.map(redisCounters));
      return NODES.map(
        (i) => redisCost(before[i] as RedisCounters, after[i] as RedisCounters).byCommand,
      );
    };
    await until(async () => {
      expect((await costs()).map((c) => c.get('incr'))).toEqual([5, 5, 5, 5, 5]);
    }, 5_000);
    for (const [i, cost] of (await costs()).entries()) {
      expect(cost.get('exists') ?? 0, `EXISTS on node ${i}`).toBe(0);
      expect(await raw(i, fence)).toBe(FENCE_TAG + first + 5);
    }
  });

  it('once a counter is tagged on the granting nodes, acquisitions send no incarnation key; a node answering them with an untagged counter is not counted, and the key is sent again', async () => {
    /** Keys of each ACQUIRE call, per node (no batching: every call is its own EVALSHA). */
    const sent: number[][] = NODES.map(() => []);
    const net: Net = { latency: [0, 0, 0, 0, 0], inflight: [0, 0, 0, 0, 0] };
    const clients = clientsOf().map((c, i) => {
      const slowed = throughNet(c, i, net);
      return withOverrides(slowed, {
        evalsha: (sha: string, numKeys: number, ...args: (string | number)[]) => {
          if (sha === ACQUIRE.sha) (sent[i] as number[]).push(numKeys);
          return slowed.evalsha(sha, numKeys, ...args);
        },
      });
    });
    const redlock = new Redlock({ clients, batching: false, nodeTimeoutMs: 500 });
    opened.push(redlock);
    await once(redlock, 'bootstrap'); // every node gets its incarnation key
    const fence = `${redlock.keyOf('hot')}:fence`;
    const cycle = async (): Promise<number[]> => {
      for (const list of sent) list.length = 0;
      const token = await once(redlock, 'hot');
      await sleep(30); // the late nodes' answers land
      expect(sent.map((list) => list.length)).toEqual([1, 1, 1, 1, 1]);
      return [token, ...sent.map((list) => list[0] as number)];
    };
    // New counter (1: not tagged), then its second grant tags it: both send the key.
    expect(await cycle()).toEqual([1, 3, 3, 3, 3, 3]);
    expect(await cycle()).toEqual([2, 3, 3, 3, 3, 3]);
    for (const i of NODES) expect(await raw(i, fence)).toBe(FENCE_TAG + 2);
    // Tagged everywhere: lock key and counter only.
    expect(await cycle()).toEqual([3, 2, 2, 2, 2, 2]);
    expect(await cycle()).toEqual([4, 2, 2, 2, 2, 2]);
    // Two nodes lose their data (tags with it): without the incarnation key their untagged
    // counters cannot be vouched for — not counted (from them the counter would say 1).
    for (const i of [0, 1]) await redis().flush(i);
    // The flushed nodes and one intact node decide the round.
    net.latency[3] = net.latency[4] = 30;
    const [after] = await cycle();
    expect(after).toBeGreaterThan(4);
    net.latency[3] = net.latency[4] = 0;
    // The next acquisition sends the key again (and the repaired nodes get tagged by it).
    const [next, ...keys] = await cycle();
    expect(next).toBeGreaterThan(after as number);
    expect(keys).toEqual([3, 3, 3, 3, 3]);
  });

  it('an old-format counter (the plain token) counts on from its value, and its first grant tags it', async () => {
    const redlock = redlockOf(clientsOf());
    await once(redlock, 'bootstrap'); // every node gets its incarnation key
    const fence = `${redlock.keyOf('old')}:fence`;
    for (const i of NODES) await node(i).set(fence, 41);
    expect(await once(redlock, 'old')).toBe(42);
    await sleep(50);
    for (const i of NODES) expect(await raw(i, fence)).toBe(FENCE_TAG + 42);
    expect(await once(redlock, 'old')).toBe(43);
  });

  it('a flushed node loses its tags with its data: not counted, repaired with untagged copies, tagged again by its next grant', async () => {
    const net: Net = { latency: [0, 0, 0, 0, 0], inflight: [0, 0, 0, 0, 0] };
    const redlock = redlockOf(clientsOf().map((c, i) => throughNet(c, i, net)));
    for (let k = 0; k < 3; k++) await once(redlock, 'lost');
    const fence = `${redlock.keyOf('lost')}:fence`;
    await redis().flush(0);
    await redis().flush(1);
    // The flushed nodes and one intact node decide the round.
    net.latency[3] = net.latency[4] = 30;
    const token = await once(redlock, 'lost');
    expect(token).toBeGreaterThan(3);
    for (const i of [0, 1]) {
      await until(async () => {
        expect(await node(i).exists(MARKER)).toBe(1);
      }, 5_000);
      const value = await raw(i, fence);
      expect(value, `node ${i} untagged after its repair`).toBeLessThan(FENCE_TAG);
      expect(value).toBeGreaterThanOrEqual(token);
    }
    net.latency[3] = net.latency[4] = 0;
    const next = await once(redlock, 'lost');
    expect(next).toBeGreaterThan(token);
    await sleep(50);
    for (const i of NODES) expect(await raw(i, fence)).toBe(FENCE_TAG + next);
  });

  it("a repair's copy never tags: an interrupted repair leaves counters that the acquire script does not count", async () => {
    const fence = 'keel:lock:{interrupted}:fence';
    // A repairer that died after its copy step, before marking the node.
    expect(
      await run(0, FENCE_REPAIR.source, [MARKER, 'keel:lock:repairing'], ['s', 'begin', 60_000]),
    ).toBe(1);
    await run(
      0,
      FENCE_REPAIR.source,
      [MARKER, 'keel:lock:repairing', fence],
      ['s', 'copy', 60_000, 7],
    );
    expect(await raw(0, fence)).toBe(7);
    const acquire = ['keel:lock:{interrupted}', fence, MARKER];
    expect(await run(0, ACQUIRE.source, acquire, ['t'.repeat(40), 1000])).toBe(-8);
    expect(await raw(0, fence)).toBe(8);
    // A copy onto a tagged counter raises it and keeps the tag (tagged = checked, not lost since).
    await node(0).set(fence, FENCE_TAG + 3);
    await run(
      0,
      FENCE_REPAIR.source,
      [MARKER, 'keel:lock:repairing', fence],
      ['s', 'copy', 60_000, 9],
    );
    expect(await raw(0, fence)).toBe(FENCE_TAG + 9);
    await run(
      0,
      FENCE_REPAIR.source,
      [MARKER, 'keel:lock:repairing', fence],
      ['s', 'copy', 60_000, 5],
    );
    expect(await raw(0, fence)).toBe(FENCE_TAG + 9);
    // The scan reads fences, tagged or not.
    await node(0).set('keel:lock:{plain}:fence', 4);
    const page = (await run(
      0,
      FENCE_SCAN.source,
      [MARKER, 'keel:lock:repairing'],
      [0, 'keel:lock:*:fence', 100, 's'],
    )) as unknown[];
    const read = new Map<string, number>();
    for (let j = 3; j + 1 < page.length; j += 2) read.set(String(page[j]), Number(page[j + 1]));
    expect(read).toEqual(
      new Map([
        [fence, 9],
        ['keel:lock:{plain}:fence', 4],
      ]),
    );
  });

  it('a catch-up tags a raised counter only where the incarnation key is, and keeps a tagged counter tagged', async () => {
    const fence = 'keel:lock:{settle}:fence';
    // No incarnation key: raised, untagged; its old value is reported.
    expect(await run(0, SETTLE_FENCE.source, [fence, MARKER], [1, 5])).toEqual([0, 1, 0]);
    expect(await raw(0, fence)).toBe(5);
    await node(0).set(MARKER, 'x');
    expect(await run(0, SETTLE_FENCE.source, [fence, MARKER], [1, 6])).toEqual([1, 1, 5]);
    expect(await raw(0, fence)).toBe(FENCE_TAG + 6);
    // Key gone, counter tagged: raised and still tagged; one at or above the wanted is kept.
    await node(0).del(MARKER);
    expect(await run(0, SETTLE_FENCE.source, [fence, MARKER], [1, 8])).toEqual([0, 1, 6]);
    expect(await raw(0, fence)).toBe(FENCE_TAG + 8);
    expect(await run(0, SETTLE_FENCE.source, [fence, MARKER], [1, 8])).toEqual([0, 0, 8]);
    // Without the incarnation key (Redis Cluster's layout): never tagged. The acquire script
    // answers an untagged counter it was not asked to check as unchecked (negated); a Redlock
    // on Cluster counts it (no incarnation check there), one on standalone nodes does not.
    const plain = 'keel:lock:{cluster}:fence';
    expect(await run(0, SETTLE_FENCE.source, [plain], [1, 3])).toEqual([1, 1, 0]);
    expect(await raw(0, plain)).toBe(3);
    expect(
      await run(0, ACQUIRE.source, ['keel:lock:{cluster}', plain], ['t'.repeat(40), 1000]),
    ).toBe(-4);
    expect(await raw(0, plain)).toBe(4);
  });

  it('several resources: each counter is tagged on its own; one untagged counter on a node without its key makes the node not counted', async () => {
    const keys = [
      'keel:lock:{m1}',
      'keel:lock:{m2}',
      'keel:lock:{m1}:fence',
      'keel:lock:{m2}:fence',
      MARKER,
    ];
    await node(0).set('keel:lock:{m1}:fence', FENCE_TAG + 10);
    // No key: m2 is untagged, so the node is not intact for this acquisition (2), fences decoded.
    expect(await run(0, ACQUIRE.source, keys, ['a'.repeat(40), 1000])).toEqual([2, 11, 1]);
    expect(await raw(0, 'keel:lock:{m2}:fence')).toBe(1);
    await node(0).del('keel:lock:{m1}', 'keel:lock:{m2}');
    await node(0).set(MARKER, 'x');
    expect(await run(0, ACQUIRE.source, keys, ['b'.repeat(40), 1000])).toEqual([1, 12, 2]);
    expect(await raw(0, 'keel:lock:{m1}:fence')).toBe(FENCE_TAG + 12);
    expect(await raw(0, 'keel:lock:{m2}:fence')).toBe(FENCE_TAG + 2);
    // Both tagged: counted without the key.
    await node(0).del('keel:lock:{m1}', 'keel:lock:{m2}', MARKER);
    expect(await run(0, ACQUIRE.source, keys, ['c'.repeat(40), 1000])).toEqual([1, 13, 3]);
  });

  it('property: tokens strictly increase across random data losses, interrupted repairs copying stale values, laggards, old-format counters and quorums (a minority faulted at a time)', async () => {
    const nodeOf = fc.integer({ min: 0, max: 4 });
    const step = fc.oneof(
      fc.record({
        t: fc.constant('acquire' as const),
        latency: fc.array(fc.constantFrom(0, 0, 25), { minLength: 5, maxLength: 5 }),
      }),
      fc.record({ t: fc.constant('flush' as const), node: nodeOf }),
      // A repairer died after copying onto a lost node: a small value, or another node's
      // counter (so it can match a laggard's, the case a counted copy would get wrong).
      fc.record({
        t: fc.constant('interrupted' as const),
        node: nodeOf,
        from: fc.oneof(nodeOf, fc.constant(-1)),
        less: fc.integer({ min: 0, max: 2 }),
      }),
      fc.record({ t: fc.constant('unmark' as const), node: nodeOf }),
      fc.record({ t: fc.constant('cut' as const), node: nodeOf }),
      fc.record({ t: fc.constant('mend' as const) }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.option(fc.integer({ min: 1, max: 5 }), { nil: undefined }),
        fc.array(step, { minLength: 1, maxLength: 12 }),
        async (oldFormat, steps) => {
          const net: Net = { latency: [0, 0, 0, 0, 0], inflight: [0, 0, 0, 0, 0] };
          const cut = new Set<number>();
          const clients = clientsOf();
          const reject = (): Promise<never> => Promise.reject(new Error('unreachable (injected)'));
          const redlock = new Redlock({
            clients: clients.map((c, i) => {
              const slow = throughNet(c, i, net);
              return withOverrides(slow, {
                evalsha: (...args: Parameters<Redis['evalsha']>) =>
                  cut.has(i) ? reject() : slow.evalsha(...args),
                eval: (...args: Parameters<Redis['eval']>) =>
                  cut.has(i) ? reject() : slow.eval(...args),
              });
            }),
            nodeTimeoutMs: 300,
            retryDelayMs: 10,
            retryJitterMs: 10,
            retryCount: 50,
          });
          const fence = `${redlock.keyOf('p')}:fence`;
          const decoded = async (i: number): Promise<number> => {
            const value = await raw(i, fence);
            return value > FENCE_TAG ? value - FENCE_TAG : value;
          };
          try {
            if (oldFormat !== undefined) {
              // A deployment of old-format counters (every node marked, the plain token stored).
              await once(redlock, 'other');
              for (const i of NODES) await node(i).set(fence, oldFormat);
            }
            const tokens = [await once(redlock, 'p')];
            if (oldFormat !== undefined) expect(tokens[0]).toBe(oldFormat + 1);
            // Nodes lost (flushed or unmarked, not yet repaired) or cut off: at most two.
            const lost = new Set<number>();
            const faulted = (): number => new Set([...lost, ...cut]).size;
            for (const s of steps) {
              if (s.t === 'acquire') {
                net.latency.splice(0, 5, ...s.latency);
                tokens.push(await once(redlock, 'p'));
                net.latency.fill(0);
                await sleep(30); // late answers and catch-ups land
                // A node is whole again once it is marked (repaired).
                for (const i of [...lost]) if ((await node(i).exists(MARKER)) === 1) lost.delete(i);
              } else if (s.t === 'flush' || s.t === 'unmark' || s.t === 'cut') {
                if (!lost.has(s.node) && !cut.has(s.node) && faulted() >= 2) continue;
                if (s.t === 'cut') cut.add(s.node);
                else {
                  if (s.t === 'flush') await redis().flush(s.node);
                  else await node(s.node).del(MARKER); // by hand, nothing lost
                  lost.add(s.node);
                }
              } else if (s.t === 'mend') {
                cut.clear();
              } else {
                if (!lost.has(s.node)) continue;
                const value = Math.max(0, (s.from < 0 ? 0 : await decoded(s.from)) - s.less);
                const keys = [MARKER, 'keel:lock:repairing'];
                const begun = await run(s.node, FENCE_REPAIR.source, keys, [
                  'dead',
                  'begin',
                  60_000,
                ]);
                if (begun !== 1) continue;
                await run(
                  s.node,
                  FENCE_REPAIR.source,
                  [...keys, fence],
                  ['dead', 'copy', 60_000, value],
                );
              }
            }
            cut.clear();
            tokens.push(await once(redlock, 'p'));
            for (let i = 1; i < tokens.length; i++) {
              expect(tokens[i], JSON.stringify({ tokens, steps })).toBeGreaterThan(
                tokens[i - 1] as number,
              );
            }
          } finally {
            await redlock.close();
            for (const c of clients) c.disconnect();
            await sleep(50);
            await redis().flushAll();
          }
        },
      ),
      {
        numRuns: 60,
        examples: [
          // Node 4 lags two tokens behind; nodes 0 and 1 are flushed and get node 4's counter
          // from a repairer that died; then 0, 1 and 4 decide a round. Were the copies counted,
          // the three would agree on a token already issued.
          [
            undefined,
            [
              { t: 'cut', node: 4 },
              { t: 'acquire', latency: [0, 0, 0, 0, 0] },
              { t: 'acquire', latency: [0, 0, 0, 0, 0] },
              { t: 'mend' },
              { t: 'flush', node: 0 },
              { t: 'flush', node: 1 },
              { t: 'interrupted', node: 0, from: 4, less: 0 },
              { t: 'interrupted', node: 1, from: 4, less: 0 },
              { t: 'acquire', latency: [0, 0, 25, 25, 0] },
            ],
          ],
        ],
      },
    );
  }, 120_000);
});
