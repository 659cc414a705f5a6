import { afterEach, expect, it } from 'vitest';
import { isInvalidOptionError } from '../../src/core/index.js';
import {
  Lock,
  Redlock,
  isLockTakenError,
  isLockTooSlowError,
  isQuorumUnavailableError,
  type NodeVote,
  type RedlockOptions,
} from '../../src/lock/index.js';
import { SLOW_RETRIES } from '../../src/lock/plan.js';
import { invalidOption } from '../support/helpers.js';
import { throughNet, type Net } from '../support/latency.js';
import { REDIS_HOST } from '../support/redis.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// Errors say what happened where (issue 13, items 2 and 7): every Redis-facing lock error
// names its nodes as host:port with what happened to each, carries the client's error as
// `cause`, and tells a lock held by someone else from one held by this process, and both from
// nodes too slow for the ttl and from a ttl too short to ever be granted.

const votesOf = (error: unknown): readonly NodeVote[] => (error as { votes: NodeVote[] }).votes;

describeRedis('lock errors against three real redis-server processes', () => {
  const redis = useRedis({ count: 3 });
  const made: Redlock[] = [];
  const redlockOf = (options: Partial<RedlockOptions> = {}): Redlock => {
    const redlock = new Redlock({
      clients: redis().clients({ maxRetriesPerRequest: 1 }),
      retryDelayMs: 5,
      retryJitterMs: 5,
      // Generous: a loaded machine must not turn answers into timeouts (the tests that are
      // about timeouts and refused connections set their own).
      nodeTimeoutMs: 2_000,
      ...options,
    });
    made.push(redlock);
    return redlock;
  };
  const address = (i: number): string => `${REDIS_HOST}:${redis().port(i)}`;

  afterEach(async () => {
    for (const r of made.splice(0)) await r.close();
    for (let i = 0; i < 3; i++) {
      const state = redis().node(i).state;
      if (state === 'paused') redis().resume(i);
      if (state === 'killed') await redis().restart(i);
    }
    await redis().flushAll();
  });

  it('a ttl that can never leave minValidityMs is refused at once, not retried', async () => {
    // Validity = ttl − (ttl × 0.01 + 2) − elapsed: 12 ms leaves at most 9.88 ms, never more
    // than the default minimum of 10.
    const redlock = redlockOf({ retryCount: 50, retryDelayMs: 50 });
    const error = await redlock.acquire('short', { ttlMs: 12 }).catch((e: unknown) => e);
    expect(isInvalidOptionError(error), String(error)).toBe(true);
    expect(error).toMatchObject({ option: 'ttlMs', owner: 'Redlock.acquire' });
    expect((error as Error).message).toMatch(/at least 13 ms/);
    // The same rule for a Redlock's default ttl, and for a semaphore's.
    expect(
      invalidOption(() => new Redlock({ clients: redis().clients(), ttlMs: 20, minValidityMs: 50 }))
        .option,
    ).toBe('ttlMs');
    const semaphore = redlock.semaphore('short', { permits: 2 });
    const permit = await semaphore.acquire({ ttlMs: 5 }).catch((e: unknown) => e);
    expect(permit).toMatchObject({ code: 'KEEL_INVALID_OPTION', option: 'ttlMs' });
    // The shortest ttl that can work is tried (granted, or found too slow by a busy machine).
    const lock = await redlock.acquire('short', { ttlMs: 13 }).catch((e: unknown) => e);
    expect(isInvalidOptionError(lock), String(lock)).toBe(false);
    if (lock instanceof Lock) await lock.release();
  });

  it('a quorum granted too late is LockTooSlowError, after a few rounds, not the retry budget', async () => {
    // Every script call reaches its node 60 ms late: a round takes ≥ 60 ms of a 70 ms ttl,
    // leaving less than 70 − 2.7 − 60 ≈ 7 ms of validity, below the minimum of 10.
    const net: Net = { latency: [60, 60, 60], inflight: [0, 0, 0] };
    const clients = redis()
      .clients({ maxRetriesPerRequest: 1 })
      .map((c, i) => throughNet(c, i, net));
    const redlock = redlockOf({ clients, retryCount: 20, nodeTimeoutMs: 5_000 });
    const error = await redlock.acquire('slow', { ttlMs: 70 }).catch((e: unknown) => e);
    expect(isLockTooSlowError(error), String(error)).toBe(true);
    expect(isLockTakenError(error)).toBe(false);
    expect(error).toMatchObject({ attempts: SLOW_RETRIES + 1, ttlMs: 70, resources: ['slow'] });
    expect((error as { elapsedMs: number }).elapsedMs).toBeGreaterThanOrEqual(55);
    expect(votesOf(error).filter((v) => v.kind === 'granted').length).toBeGreaterThanOrEqual(2);
    // The grant was undone everywhere.
    for (let i = 0; i < 3; i++) {
      expect(await redis().client(i).exists(redlock.keyOf('slow'))).toBe(0);
    }
    // The same for a semaphore's permits.
    const permits = await redlock
      .semaphore('slow', { permits: 2 })
      .acquire({ ttlMs: 70 })
      .catch((e: unknown) => e);
    expect(isLockTooSlowError(permits), String(permits)).toBe(true);
    expect(permits).toMatchObject({ attempts: SLOW_RETRIES + 1, resources: ['slow'] });
  });

  it('a lock held by this Redlock is reported as held by this process, one of another as another', async () => {
    const mine = redlockOf({ localTurns: false, retryCount: 1 });
    const lock = await mine.acquire('self', { ttlMs: 10_000 });
    const again = await mine.acquire('self').catch((e: unknown) => e);
    expect(isLockTakenError(again)).toBe(true);
    expect(again).toMatchObject({ takenBy: 'this-process' });
    expect((again as Error).message).toMatch(/this Redlock/);
    const kinds = votesOf(again).map((v) => v.kind);
    expect(kinds.filter((k) => k === 'held-by-this-process').length).toBeGreaterThanOrEqual(2);
    // Also when it waits in this process's line for its own lock (local turns, the default).
    const inLine = await redlockOf({ retryCount: 1 })
      .acquire('self')
      .catch((e: unknown) => e);
    expect(inLine).toMatchObject({ takenBy: 'another' }); // another Redlock: someone else
    const lined = redlockOf({ retryCount: 1 });
    const held = await lined.acquire('lined', { ttlMs: 10_000 });
    const behind = await lined.acquire('lined').catch((e: unknown) => e);
    expect(behind).toMatchObject({ takenBy: 'this-process' });
    // Released: no longer ours, and free.
    await lock.release();
    await held.release();
    const other = redlockOf({ retryCount: 0 });
    const theirs = await other.acquire('self', { ttlMs: 10_000 });
    const refused = await mine.acquire('self').catch((e: unknown) => e);
    expect(refused).toMatchObject({ takenBy: 'another' });
    expect(votesOf(refused).some((v) => v.kind === 'held-by-this-process')).toBe(false);
    expect(votesOf(refused).map((v) => v.address)).toEqual([0, 1, 2].map(address));
    await theirs.release();
  });

  it('nodes that are down are named host:port, as refused connections, with the ioredis error as cause', async () => {
    await redis().kill(1);
    await redis().kill(2);
    const redlock = redlockOf({ retryCount: 3, nodeTimeoutMs: 1_000 });
    const error = await redlock.acquire('down').catch((e: unknown) => e);
    expect(isQuorumUnavailableError(error), String(error)).toBe(true);
    const message = (error as Error).message;
    expect(message).toContain(`${address(1)} connection-refused`);
    expect(message).toContain(`${address(2)} connection-refused`);
    expect(message).not.toMatch(/timed out/);
    const failed = votesOf(error).filter((v) => v.vote === 'error');
    expect(failed.map((v) => [v.address, v.kind])).toEqual([
      [address(1), 'connection-refused'],
      [address(2), 'connection-refused'],
    ]);
    for (const v of failed) expect(v.cause).toMatchObject({ code: 'ECONNREFUSED' });
    const cause = (error as Error).cause;
    expect(cause).toBeInstanceOf(AggregateError);
    expect((cause as AggregateError).errors).toHaveLength(2);
  });

  it('a node the round was decided without is named once as pending, not "pending (pending …)"', async () => {
    const holder = redlockOf({ retryCount: 0 });
    const held = await holder.acquire('decided');
    // The contender's connections are open and its first contact with every node made before
    // node 2 pauses: on a loaded machine that setup could outlast the node timeout and turn
    // node 2's vote into a time-out, which this test is not about.
    const contender = redlockOf({ retryCount: 0 });
    await (await contender.acquire('decided:warm-up')).release();
    redis().pause(2); // nodes 0 and 1 say "held" at once: a quorum of 2, decided without 2
    const error = await contender.acquire('decided').catch((e: unknown) => e);
    redis().resume(2);
    expect(isLockTakenError(error), String(error)).toBe(true);
    expect(votesOf(error)[2]).toMatchObject({ address: address(2), kind: 'pending' });
    const message = (error as Error).message;
    expect(message).toContain(`${address(2)} pending (the round was decided without its answer)`);
    expect(message).not.toMatch(/pending \(pending/);
    await held.release();
  });

  it('a paused node is named and timed out; a script error is a script error with its ReplyError', async () => {
    redis().pause(0);
    redis().pause(1);
    const redlock = redlockOf({ retryCount: 0, nodeTimeoutMs: 100 });
    const error = await redlock.acquire('paused').catch((e: unknown) => e);
    expect(isQuorumUnavailableError(error)).toBe(true);
    expect((error as Error).message).toContain(`${address(0)} timed-out (timed out after 100 ms)`);
    expect(votesOf(error)[1]).toMatchObject({ address: address(1), kind: 'timed-out' });
    redis().resume(0);
    redis().resume(1);
    // A semaphore whose key holds a string: every node answers WRONGTYPE (a generous node
    // timeout, so that a loaded machine does not turn the answers into timeouts).
    const semaphore = redlockOf({ retryCount: 0, nodeTimeoutMs: 5_000 }).semaphore('typed', {
      permits: 2,
    });
    const key = `${redlock.keyOf('typed')}:semaphore`;
    for (let i = 0; i < 3; i++) await redis().client(i).set(key, 'not a sorted set');
    const wrong = await semaphore.acquire().catch((e: unknown) => e);
    expect(isQuorumUnavailableError(wrong), String(wrong)).toBe(true);
    const answered = votesOf(wrong).filter((v) => v.kind !== 'pending'); // decided at two
    expect(answered.length).toBeGreaterThanOrEqual(2);
    for (const v of answered) {
      expect(v.kind).toBe('script-error');
      expect(v.error).toMatch(/WRONGTYPE/);
      expect(v.cause).toMatchObject({ name: 'ReplyError' });
    }
    expect((wrong as Error).message).toContain(`${answered[0]?.address ?? '?'} script-error`);
    expect((wrong as Error).cause).toBeDefined();
  });
});
