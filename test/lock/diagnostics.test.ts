import diagnostics from 'node:diagnostics_channel';
import { describe, expect, it } from 'vitest';
import { Redlock, isLockTakenError, type Lock } from '../../src/lock/index.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// Issue 15: the lock publishes what an operator needs on node:diagnostics_channel —
// keel:lock:acquire / extend / release traced, keel:lock:lost, keel:lock:quorum-failed and
// keel:lock:contended as events — and keeps stats(). One scripted scenario against five real
// nodes: acquire, extend, a contended acquire by another Redlock, three nodes paused past the
// lock's ttl (the lock is lost, its release cannot reach a quorum), resume.

interface Seen {
  readonly name: string;
  readonly message: Record<string, unknown>;
}

/** Subscribes to every lock channel; the records, and a function that unsubscribes. */
function listen(): { readonly seen: Seen[]; readonly stop: () => void } {
  const seen: Seen[] = [];
  const stops: (() => void)[] = [];
  for (const op of ['acquire', 'extend', 'release']) {
    const channel = diagnostics.tracingChannel(`keel:lock:${op}`);
    // The context object is filled in as the operation goes: keep a copy of what each
    // phase saw.
    const record =
      (phase: string) =>
      (message: unknown): void => {
        seen.push({ name: `${op}:${phase}`, message: { ...(message as object) } });
      };
    const handlers = {
      start: record('start'),
      end: () => undefined,
      asyncStart: () => undefined,
      // asyncEnd comes after `error` too: only a success is recorded as done.
      asyncEnd: (message: unknown): void => {
        if (!('error' in (message as object))) record('done')(message);
      },
      error: record('error'),
    };
    channel.subscribe(handlers);
    stops.push(() => channel.unsubscribe(handlers));
  }
  for (const event of ['lost', 'quorum-failed', 'contended']) {
    const name = `keel:lock:${event}`;
    const listener = (message: unknown): void => {
      seen.push({ name: event, message: { ...(message as object) } });
    };
    diagnostics.subscribe(name, listener);
    stops.push(() => diagnostics.unsubscribe(name, listener));
  }
  return {
    seen,
    stop: () => {
      for (const stop of stops) stop();
    },
  };
}

/** The reason `signal` aborted with, once it does. */
const aborted = (lock: Lock): Promise<unknown> =>
  new Promise((resolve) => {
    if (lock.signal.aborted) resolve(lock.signal.reason);
    else lock.signal.addEventListener('abort', () => resolve(lock.signal.reason), { once: true });
  });

describe('Redlock stats without Redis traffic', () => {
  it('starts at zero, with wall-clock and monotonic time', () => {
    const redlock = new Redlock({
      clients: [{ evalsha: () => Promise.resolve(0), eval: () => Promise.resolve(0) }],
    });
    const before = Date.now();
    const stats = redlock.stats();
    expect(stats.time).toBeGreaterThanOrEqual(before);
    expect(stats.monotonicTime).toBeLessThanOrEqual(performance.now());
    expect(stats).toMatchObject({
      acquired: 0,
      contended: 0,
      waiting: 0,
      held: 0,
      extensions: 0,
      lost: 0,
      waitMs: { count: 0, p50: 0, p99: 0 },
      holdMs: { count: 0, p50: 0, p99: 0 },
    });
    expect(Object.values(stats.failed).every((n) => n === 0)).toBe(true);
  });
});

describeRedis('lock diagnostics channels (five real nodes)', () => {
  const redis = useRedis({ count: 5 });

  it('publishes acquire, extend, contended, lost, quorum-failed and release for one scripted scenario, and counts them in stats()', async () => {
    const harness = redis();
    const clients = harness.clients();
    const addresses = harness.nodes.map((n) => `${n.host}:${n.port}`);
    const redlock = new Redlock({ clients, nodeTimeoutMs: 1000, retryCount: 0 });
    const other = new Redlock({ clients, nodeTimeoutMs: 1000, retryCount: 0 });
    const { seen, stop } = listen();
    const t0 = Date.now();
    try {
      const lock = await redlock.acquire('diag:1', { ttlMs: 1500 });
      expect(lock.remainingMs()).toBeGreaterThan(0);
      expect(lock.remainingMs()).toBeLessThanOrEqual(1500);
      await lock.extend(1500);

      const refused = await other.acquire('diag:1').catch((e: unknown) => e);
      expect(isLockTakenError(refused), String(refused)).toBe(true);

      // Three of five nodes stop answering; the lock's validity runs out meanwhile.
      const lost = aborted(lock);
      for (const node of [0, 1, 2]) harness.pause(node);
      try {
        await lost;
        expect(lock.remainingMs()).toBe(0);
        await expect(lock.release()).resolves.toEqual({ released: false, expired: true });
      } finally {
        for (const node of [0, 1, 2]) harness.resume(node);
      }

      const names = seen.map((s) => s.name);
      expect(names).toEqual([
        'acquire:start',
        'acquire:done',
        'extend:start',
        'extend:done',
        'acquire:start',
        'contended',
        'acquire:error',
        'lost',
        'release:start',
        'quorum-failed',
        'release:done',
      ]);
      const at = (name: string, from = 0): Record<string, unknown> => {
        const found = seen.slice(from).find((s) => s.name === name);
        if (found === undefined) throw new Error(`no ${name}`);
        return found.message;
      };
      for (const s of seen) {
        // Wall-clock epoch milliseconds, not the monotonic clock.
        expect(s.message.time, s.name).toBeGreaterThanOrEqual(t0);
        expect(s.message.time, s.name).toBeLessThanOrEqual(Date.now());
      }
      const acquired = at('acquire:done');
      expect(acquired).toMatchObject({
        resources: ['diag:1'],
        nodes: addresses,
        quorum: 3,
        attempts: 1,
        fencingToken: lock.fencingToken,
        fencingTokens: { 'diag:1': lock.fencingToken },
        result: lock,
      });
      expect(acquired.waitMs).toBeGreaterThanOrEqual(0);
      const votes = acquired.votes as { address: string; vote: string }[];
      expect(votes.filter((v) => v.vote === 'granted').length).toBeGreaterThanOrEqual(3);
      expect(votes.map((v) => v.address)).toEqual(addresses);

      expect(at('extend:done')).toMatchObject({
        resources: ['diag:1'],
        fencingToken: lock.fencingToken,
        ttlMs: 1500,
      });
      expect(at('extend:done').validUntil).toBeGreaterThan(0);

      expect(at('contended')).toMatchObject({
        resources: ['diag:1'],
        nodes: addresses,
        attempt: 1,
        takenBy: 'another',
      });
      expect(at('contended').freesInMs).toBeGreaterThan(0);
      const failed = at('acquire:error');
      expect(failed.error).toBe(refused);
      expect(failed).toMatchObject({ resources: ['diag:1'], attempts: 1 });
      expect((failed.votes as unknown[]).length).toBe(5);

      expect(at('lost')).toMatchObject({
        resources: ['diag:1'],
        nodes: addresses,
        fencingToken: lock.fencingToken,
        kind: 'deadline',
      });
      expect(at('lost').error).toBe(lock.signal.reason);
      expect(at('lost').holdMs).toBeGreaterThan(0);

      const quorumFailed = at('quorum-failed');
      expect(quorumFailed).toMatchObject({ operation: 'release', resources: ['diag:1'] });
      const failures = (quorumFailed.votes as { vote: string; address: string }[]).filter(
        (v) => v.vote === 'error',
      );
      expect(failures.map((v) => v.address)).toEqual(addresses.slice(0, 3));
      expect(at('release:done')).toMatchObject({
        resources: ['diag:1'],
        fencingToken: lock.fencingToken,
        result: { released: false, expired: true },
      });

      expect(redlock.stats()).toMatchObject({
        acquired: 1,
        contended: 0,
        waiting: 0,
        held: 0,
        extensions: 1,
        lost: 1,
        waitMs: { count: 1 },
        holdMs: { count: 1 },
      });
      expect(other.stats()).toMatchObject({ acquired: 0, contended: 1, failed: { taken: 1 } });
      const { holdMs } = redlock.stats();
      expect(holdMs.p50).toBeGreaterThan(0);
      expect(holdMs.p99).toBeGreaterThanOrEqual(holdMs.p50);
    } finally {
      stop();
      await redlock.close();
      await other.close();
    }
  });

  it('counts locks held and released, and acquisitions waiting for a held resource', async () => {
    const clients = redis().clients();
    const redlock = new Redlock({ clients, retryDelayMs: 20, retryJitterMs: 0 });
    try {
      const first = await redlock.acquire('diag:2');
      const second = redlock.acquire('diag:2');
      // The second waits behind the first (this process's own acquisition: a local turn).
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(redlock.stats()).toMatchObject({ held: 1, waiting: 1, contended: 1 });
      await first.release();
      const next = await second;
      expect(redlock.stats()).toMatchObject({ held: 1, waiting: 0, acquired: 2 });
      await next.release();
      expect(next.remainingMs()).toBe(0);
      expect(redlock.stats()).toMatchObject({ held: 0, acquired: 2, holdMs: { count: 2 } });
    } finally {
      await redlock.close();
    }
  });
});
