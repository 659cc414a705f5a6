import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { Redlock, isFencingLostError, type RedlockOptions } from '../../src/lock/index.js';
import { FENCE_TAG } from '../../src/lock/scripts.js';
import { throughNet, withOverrides, type Net } from '../support/latency.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// Fencing tokens across node restarts and lagging nodes, against five real redis-server
// processes. A node that comes back empty must not make a token repeat or go backwards: the
// Redlock notices it (its `<prefix>incarnation` key is gone), does not count its counters, and
// repairs it from a quorum of intact nodes; a node that answers after the round was decided is
// brought up to the token; and when a majority lost its counters at once, acquire refuses with
// FencingLostError instead of issuing a token.

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * How long a restarted node may take to be repaired: the Redlock checks on reconnect and, if a
 * check leaves the node unrepaired (a node slow to answer on a loaded machine), tries again up to
 * 5 times a second apart (RECHECKS × RECHECK_MS in redlock.ts). A wait as long as that window
 * failed whenever one check missed under load; twice the window leaves room for the checks.
 */
const REPAIRED_MS = 10_000;

/** Polls `condition` every 10 ms until it holds; throws after `ms`. */
async function until(condition: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
}

describeRedis(
  'fencing tokens across restarts and lagging nodes (five real redis-server processes)',
  () => {
    const redis = useRedis({ count: 5 });
    const NODES = [0, 1, 2, 3, 4];
    let opened: Redlock[] = [];
    let inspect: Redis[] = [];

    /** Clients that reconnect quickly after a node restarts (like a tuned production client). */
    const clientsOf = (): Redis[] =>
      redis().clients({ maxRetriesPerRequest: 1, retryStrategy: () => 20 });

    const redlockOf = (
      clients: readonly Redis[],
      options: Partial<RedlockOptions> = {},
    ): Redlock => {
      const redlock = new Redlock({
        clients,
        nodeTimeoutMs: 200,
        retryDelayMs: 10,
        retryJitterMs: 10,
        ...options,
      });
      opened.push(redlock);
      return redlock;
    };

    /** Kills node `node`, restarts it empty, and waits until its client in `raw` is ready again. */
    const restartEmpty = async (raw: readonly Redis[], node: number): Promise<void> => {
      await redis().kill(node);
      await redis().restart(node);
      await until(
        () => Promise.resolve(raw[node]?.status === 'ready'),
        REPAIRED_MS,
        `node ${node} reconnected`,
      );
    };

    /** The fence a counter holds (tagged or not, see FENCE_TAG). */
    const counterOn = async (node: number, key: string): Promise<number> => {
      const value = Number((await (inspect[node] as Redis).get(key)) ?? '0');
      return value > FENCE_TAG ? value - FENCE_TAG : value;
    };
    const markedOn = async (node: number): Promise<boolean> =>
      (await (inspect[node] as Redis).exists('keel:lock:incarnation')) === 1;

    /** Takes and releases the lock `times` times; the tokens, in order. */
    const cycle = async (redlock: Redlock, resource: string, times: number): Promise<number[]> => {
      const tokens: number[] = [];
      for (let i = 0; i < times; i++) {
        const lock = await redlock.acquire(resource, { ttlMs: 300 });
        tokens.push(lock.fencingToken);
        await lock.release();
      }
      return tokens;
    };

    beforeEach(() => {
      opened = [];
      inspect = redis().clients({ maxRetriesPerRequest: 1, retryStrategy: () => 20 });
    });

    afterEach(async () => {
      for (const redlock of opened.splice(0)) await redlock.close();
      for (const i of NODES) {
        const state = redis().node(i).state;
        if (state === 'paused') redis().resume(i);
        if (state === 'killed') await redis().restart(i);
      }
      await sleep(300); // repairs and catch-ups in flight end
      for (const c of inspect) c.disconnect();
      await redis().flushAll();
    });

    it('rolling delayed empty restarts of three of five nodes (each after 2 × ttl, no lock traffic between) never make a token repeat or go backwards', async () => {
      const TTL = 300;
      const net: Net = { latency: [0, 0, 0, 0, 0], inflight: [0, 0, 0, 0, 0] };
      const raw = clientsOf();
      const redlock = redlockOf(raw.map((c, i) => throughNet(c, i, net)));
      const before = await cycle(redlock, 'rolling', 5);
      expect(before).toEqual([...before].sort((a, b) => a - b));
      const last = before.at(-1) as number;
      const fence = `${redlock.keyOf('rolling')}:fence`;

      for (const node of [0, 1, 2]) {
        await redis().kill(node);
        await sleep(2 * TTL); // "delayed restarts": down for longer than any lock's ttl
        await redis().restart(node);
        // Back before the next one goes down: the Redlock, still connected, repairs it.
        await until(() => markedOn(node), REPAIRED_MS, `node ${node} repaired`).catch(
          () => undefined,
        );
      }
      // The two untouched nodes answer last, so a round is decided by the restarted ones.
      net.latency[3] = net.latency[4] = 30;
      const after = await redlock.acquire('rolling', { ttlMs: TTL });
      expect(after.fencingToken).toBeGreaterThan(last);
      await after.release();
      // Every restarted node holds the counter again, at least at the last token.
      for (const node of [0, 1, 2]) {
        expect(await markedOn(node)).toBe(true);
        expect(await counterOn(node, fence)).toBeGreaterThanOrEqual(after.fencingToken);
      }
    });

    it('property: over random rolling restart schedules (kill, down for a while, back empty, one node at a time), tokens strictly increase', async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.integer({ min: 0, max: 20 }), { minLength: 5, maxLength: 5 }),
          fc.array(
            fc.record({
              node: fc.integer({ min: 0, max: 4 }),
              downMs: fc.constantFrom(0, 50, 400),
              acquisitions: fc.integer({ min: 0, max: 2 }),
            }),
            { minLength: 1, maxLength: 4 },
          ),
          async (latency, schedule) => {
            const net: Net = { latency: [...latency], inflight: [0, 0, 0, 0, 0] };
            const raw = clientsOf();
            const redlock = redlockOf(raw.map((c, i) => throughNet(c, i, net)));
            try {
              const tokens = await cycle(redlock, 'schedule', 2);
              for (const step of schedule) {
                await redis().kill(step.node);
                await sleep(step.downMs);
                await redis().restart(step.node);
                // Back before the next one goes down: repaired by the connected Redlock.
                await until(() => markedOn(step.node), REPAIRED_MS, `node ${step.node} repaired`);
                tokens.push(...(await cycle(redlock, 'schedule', step.acquisitions)));
              }
              tokens.push(...(await cycle(redlock, 'schedule', 1)));
              for (let i = 1; i < tokens.length; i++) {
                expect(tokens[i], JSON.stringify(tokens)).toBeGreaterThan(tokens[i - 1] as number);
              }
            } finally {
              await redlock.close();
              for (const c of raw) c.disconnect();
              await redis().flushAll();
            }
          },
        ),
        { numRuns: 6 },
      );
    }, 120_000);

    it('a restarted node too slow to answer the reconnect check is repaired by a later check', async () => {
      const net: Net = { latency: [0, 0, 0, 0, 0], inflight: [0, 0, 0, 0, 0] };
      const raw = clientsOf();
      const redlock = redlockOf(raw.map((c, i) => throughNet(c, i, net)));
      const before = await cycle(redlock, 'slow-back', 2);
      for (const node of NODES) await until(() => markedOn(node), REPAIRED_MS, `node ${node}`);
      // Node 2 comes back empty, and its first answers take longer than nodeTimeoutMs (200): the
      // check its reconnect starts hears nothing from it (as on a loaded machine, or a server
      // still warming up). That check must not be the last word on the node.
      net.latency[2] = 500;
      await restartEmpty(raw, 2);
      await sleep(400);
      net.latency[2] = 0;
      // Nothing else (no acquisition) would look at node 2 again.
      await until(() => markedOn(2), REPAIRED_MS, 'node 2 repaired');
      expect(await counterOn(2, `${redlock.keyOf('slow-back')}:fence`)).toBeGreaterThanOrEqual(
        before.at(-1) as number,
      );
    });

    it('close() during the fencing repair a reconnect started: no command reaches a node after close() resolves', async () => {
      const net: Net = { latency: [0, 0, 0, 0, 0], inflight: [0, 0, 0, 0, 0] };
      const raw = clientsOf();
      let closed = false;
      const afterClose: string[] = [];
      // Every script call the Redlock makes, noted when it comes after close() resolved.
      const clients = raw.map((c, i) => {
        const slow = throughNet(c, i, net);
        const note =
          (name: 'evalsha' | 'eval') =>
          (...args: (string | number)[]): Promise<unknown> => {
            if (closed) afterClose.push(`${name} on node ${i}`);
            return (slow[name] as (...a: (string | number)[]) => Promise<unknown>)(...args);
          };
        return withOverrides(slow, { evalsha: note('evalsha'), eval: note('eval') });
      });
      const redlock = redlockOf(clients, { nodeTimeoutMs: 2_000 });
      await cycle(redlock, 'closing-repair', 2);
      for (const node of NODES) await until(() => markedOn(node), REPAIRED_MS, `node ${node}`);
      // Node 2 comes back empty; every round of the repair its reconnect starts (status, begin,
      // scans, copy, end) takes 100 ms, so close() comes in the middle of it.
      for (const node of NODES) net.latency[node] = 100;
      await restartEmpty(raw, 2);
      await redlock.close();
      closed = true;
      await sleep(1_500); // the rest of a repair (and a recheck) would show by now
      expect(afterClose).toEqual([]);
    });

    it('two of five nodes flushed at once (no reconnect to notice): their counters are not counted, and the acquisition that meets them has them repaired', async () => {
      const net: Net = { latency: [0, 0, 0, 0, 0], inflight: [0, 0, 0, 0, 0] };
      const redlock = redlockOf(clientsOf().map((c, i) => throughNet(c, i, net)));
      const before = await cycle(redlock, 'flushed', 4);
      const fence = `${redlock.keyOf('flushed')}:fence`;
      await redis().flush(0);
      await redis().flush(1);
      // The flushed nodes and one intact node decide the round.
      net.latency[3] = net.latency[4] = 30;
      const lock = await redlock.acquire('flushed');
      expect(lock.fencingToken).toBeGreaterThan(before.at(-1) as number);
      await lock.release();
      for (const node of [0, 1]) {
        await until(() => markedOn(node), REPAIRED_MS, `node ${node} repaired`);
        expect(await counterOn(node, fence)).toBeGreaterThanOrEqual(lock.fencingToken);
      }
      net.latency[3] = net.latency[4] = 0;
      const next = await redlock.acquire('flushed');
      expect(next.fencingToken).toBeGreaterThan(lock.fencingToken);
      await next.release();
    });

    it('a node that answers after the round was decided is brought up to the token', async () => {
      const net: Net = { latency: [0, 0, 0, 0, 0], inflight: [0, 0, 0, 0, 0] };
      let unreachable = false;
      const clients = clientsOf().map((c, i) => {
        const slow = throughNet(c, i, net);
        if (i !== 4) return slow;
        const fail = (): Promise<never> => Promise.reject(new Error('connection reset (injected)'));
        return withOverrides(slow, {
          evalsha: (...args: Parameters<Redis['evalsha']>) =>
            unreachable ? fail() : slow.evalsha(...args),
          eval: (...args: Parameters<Redis['eval']>) => (unreachable ? fail() : slow.eval(...args)),
        });
      });
      const redlock = redlockOf(clients);
      const fence = `${redlock.keyOf('laggard')}:fence`;
      await cycle(redlock, 'laggard', 1);
      // Node 4 misses three acquisitions: its counter falls behind.
      unreachable = true;
      await cycle(redlock, 'laggard', 3);
      unreachable = false;
      expect(await counterOn(4, fence)).toBeLessThan(await counterOn(0, fence));
      // Now it answers, but late: the round is decided without it.
      net.latency[4] = 40;
      const lock = await redlock.acquire('laggard');
      await until(
        async () => (await counterOn(4, fence)) === lock.fencingToken,
        3_000,
        `node 4's counter at the token ${lock.fencingToken} (it is ${await counterOn(4, fence)})`,
      );
      await lock.release();
      const counters = await Promise.all(NODES.map((i) => counterOn(i, fence)));
      expect(counters).toEqual(NODES.map(() => lock.fencingToken));
    });

    it('a majority that lost its counters at once: acquire refuses with FencingLostError, leaves nothing held, and works again once the loss is accepted', async () => {
      const redlock = redlockOf(clientsOf());
      const before = await cycle(redlock, 'amnesia', 3);
      for (const node of [0, 1, 2]) await redis().flush(node);
      const error = await redlock.acquire('amnesia').catch((e: unknown) => e);
      expect(isFencingLostError(error), String(error)).toBe(true);
      expect(error).toMatchObject({
        code: 'KEEL_LOCK_FENCING_LOST',
        resources: ['amnesia'],
        intact: [3, 4],
        emptied: [0, 1, 2],
      });
      expect((error as Error).message).toContain('127.0.0.1');
      // The refused attempt was undone everywhere.
      for (const node of NODES) {
        expect(await (inspect[node] as Redis).exists(redlock.keyOf('amnesia'))).toBe(0);
      }
      // The documented way out: accept the loss by deleting the marker on the survivors; the
      // counters are then rebuilt from the maximum over every node.
      for (const node of [3, 4]) await (inspect[node] as Redis).del('keel:lock:incarnation');
      const lock = await redlock.acquire('amnesia');
      expect(lock.fencingToken).toBeGreaterThan(before.at(-1) as number);
      await lock.release();
    });

    // The repair reads the counters with SCAN MATCH `<keyPrefix>*:fence`: every integer key of
    // that shape is taken for one of Keel's counters and copied onto the restarted node. Keys
    // outside the prefix are not Keel's and must never be copied (with `keyPrefix: ''` every
    // key was inside it: a foreign `billing:fence` was written onto the restarted node, so
    // that prefix is refused, see inputs.test.ts).
    it('the repair copies no foreign key: an integer key named `…:fence` outside keyPrefix stays where it is', async () => {
      const raw = clientsOf();
      const redlock = redlockOf(raw);
      const before = await cycle(redlock, 'own', 2);
      for (const node of NODES) await until(() => markedOn(node), REPAIRED_MS, `node ${node}`);
      const foreign = ['billing:fence', 'keel:lockx:fence', '{own}:fence'];
      for (const node of NODES) {
        for (const key of foreign) await (inspect[node] as Redis).set(key, 7);
      }
      await restartEmpty(raw, 0);
      await until(() => markedOn(0), REPAIRED_MS, 'node 0 repaired');
      expect(await counterOn(0, `${redlock.keyOf('own')}:fence`)).toBeGreaterThanOrEqual(
        before.at(-1) as number,
      );
      for (const key of foreign) {
        expect(await (inspect[0] as Redis).exists(key), `${key} on node 0`).toBe(0);
      }
    });

    it('a resource named `{f}:fence` is its own lock, not the fencing counter of `f`', async () => {
      const redlock = redlockOf(clientsOf(), { retryCount: 0 });
      const f = await redlock.acquire('f');
      await f.release();
      const odd = await redlock.acquire('{f}:fence');
      // While `{f}:fence` is held, `f` can be locked and counts on.
      const again = await redlock.acquire('f');
      expect(again.fencingToken).toBe(f.fencingToken + 1);
      await again.release();
      await odd.release();
      // `{f}` is not `f` either; each counts on its own.
      const pair = await redlock.acquire(['{f}:fence', '{f}']);
      expect(pair.fencingTokens['{f}:fence']).toBe(odd.fencingToken + 1);
      expect(pair.fencingTokens['{f}']).toBe(1);
      await pair.release();
      const last = await redlock.acquire('f');
      expect(last.fencingToken).toBe(again.fencingToken + 1);
      await last.release();
    });
  },
);
