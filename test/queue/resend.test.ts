/**
 * Settling scripts sent twice. ioredis sends again every command written but not answered when
 * its connection drops (`autoResendUnfulfilledCommands`, on by default), so a dead-letter, a
 * retry or a quarantine may run twice in Redis for one call: the first copy acted, its reply was
 * lost, and the second copy runs after it. Each message must still be settled once (one DLQ
 * entry, one retry) and reported once (`onDeadLetter`). The connection drops right after the
 * chosen script call was written (test/support/resend.ts); the consumer's other connections
 * (its blocking reader) are its own and are not touched.
 */
import { afterEach, expect, it } from 'vitest';
import type { LuaScript } from '../../src/core/index.js';
import { Queue, type DeadLetterEvent } from '../../src/queue/index.js';
import { run } from '../../src/queue/client.js';
import { deadMarkKey, leaseKey, nextMarkKey } from '../../src/queue/codec.js';
import { ACK, DEAD, DEAD_MARK_MS, NEXT, REDELIVER, RETRY } from '../../src/queue/scripts.js';
import { until } from '../support/helpers.js';
import { losingOneReply, type LosingClient } from '../support/resend.js';
import { describeRedis, useRedis } from '../support/vitest.js';

describeRedis('keel/queue settling scripts sent twice (a reply lost with its connection)', () => {
  const redis = useRedis({ count: 1 });
  const opened: { close(): Promise<void> }[] = [];

  afterEach(async () => {
    for (const q of opened.splice(0)) await q.close();
    await redis().flushAll();
  });

  /**
   * Every send below names its message (`id`): a send in flight on the same connection when it
   * drops is sent again by ioredis, and without an id it would be enqueued twice (at-least-once,
   * as the README says) — a second delivery these tests would count against the consumer.
   *
   * A queue whose connection drops once, right after the script is sent. The script is loaded
   * first: a call answered `NOSCRIPT` has not run, and its copy sent again would be its first.
   */
  const losingQueue = async (
    script: LuaScript,
  ): Promise<{ queue: Queue; losing: LosingClient }> => {
    const own = redis().client(0);
    await own.script('LOAD', script.source);
    const losing = losingOneReply(own, script.sha);
    const queue = new Queue({ client: losing.client });
    opened.push(queue);
    losing.arm();
    return { queue, losing };
  };

  for (const ordered of [false, true]) {
    const mode = ordered ? 'ordered' : 'unordered';

    it(`${mode}: a dead letter whose reply was lost is in the DLQ once and reported once`, async () => {
      const { queue, losing } = await losingQueue(DEAD);
      const events: DeadLetterEvent[] = [];
      const consumer = queue.consume(
        'orders',
        'g',
        () => {
          throw new Error('always fails');
        },
        { maxAttempts: 1, visibilityMs: 2000, ordered },
      );
      consumer.onDeadLetter((e) => events.push(e));
      const sent = await queue.send('orders', { n: 1 }, { key: 'k', id: 'm1' });
      await until(() => expect(events).toHaveLength(1), 10_000);
      expect(losing.dropped).toBe(1);
      expect(events[0]?.id).toBe(sent.id);
      expect(events[0]?.reason).toBe('failed');
      const letters = await queue.deadLetters('orders');
      expect(letters.map((l) => l.id)).toEqual([sent.id]);
      // The next message is handled as usual (and nothing more is reported for the first).
      await queue.send('orders', { n: 2 }, { key: 'k', id: 'm2' });
      await until(() => expect(events).toHaveLength(2), 10_000);
      expect((await queue.deadLetters('orders')).map((l) => l.id)).toHaveLength(2);
    });

    it(`${mode}: a quarantine whose reply was lost is in the DLQ once and reported once`, async () => {
      const { queue, losing } = await losingQueue(DEAD);
      const seen: number[] = [];
      const events: DeadLetterEvent[] = [];
      const consumer = queue.consume<{ n: number }>(
        'orders',
        'g',
        (m) => {
          seen.push(m.payload.n);
        },
        { visibilityMs: 2000, ordered },
      );
      consumer.onDeadLetter((e) => events.push(e));
      const stream = queue.keys('orders', 0).stream;
      await redis().client(0).xadd(stream, '*', 'hello', 'world');
      await queue.send('orders', { n: 7 }, { id: 'm7' });
      await until(() => expect(seen).toEqual([7]), 10_000);
      await until(() => expect(events).toHaveLength(1), 10_000);
      expect(losing.dropped).toBe(1);
      expect(events[0]?.reason).toBe('invalid');
      expect(await queue.deadLetters('orders')).toHaveLength(1);
    });
  }

  it('unordered: a retry whose reply was lost is delivered again once (ordered mode retries in place)', async () => {
    const { queue, losing } = await losingQueue(RETRY);
    const attempts: number[] = [];
    queue.consume(
      'orders',
      'g',
      (m) => {
        attempts.push(m.attempt);
        if (m.attempt === 1) throw new Error('first attempt fails');
      },
      { maxAttempts: 5, backoff: () => 5, visibilityMs: 2000 },
    );
    await queue.send('orders', { n: 1 }, { key: 'k', id: 'm1' });
    await until(() => expect(attempts).toEqual([1, 2]), 10_000);
    expect(losing.dropped).toBe(1);
    // Settled: nothing pending, nothing delayed, nothing dead; no third delivery comes.
    const keys = queue.keys('orders', 0);
    const admin = redis().client(0);
    await until(async () => expect((await admin.xpending(keys.stream, 'g'))[0]).toBe(0), 5000);
    expect(await admin.zcard(keys.delayed)).toBe(0);
    expect(await queue.deadLetters('orders')).toEqual([]);
    await queue.send('orders', { n: 2 }, { key: 'k', id: 'm2' });
    await until(() => expect(attempts).toEqual([1, 2, 1, 2]), 10_000);
  });

  it('the mark answers only the call whose delivery it names: other consumers and older deliveries are refused', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const keys = queue.keys('orders', 0);
    const id = await admin.xadd(keys.stream, '*', 'f', 'v');
    await admin.xgroup('CREATE', keys.stream, 'g', '0');
    await admin.xreadgroup('GROUP', 'g', 'c1', 'COUNT', 1, 'STREAMS', keys.stream, '>');
    const mark = deadMarkKey('keel:q', keys, 'g', id ?? '');
    const dead = (consumer: string, deliveries: number | ''): Promise<unknown> =>
      run(
        admin,
        'dead-letter',
        DEAD,
        [keys.stream, keys.dlq, '', mark],
        ['g', id ?? '', consumer, '', deliveries, 'x:reason', 'failed'],
      );
    const first = await dead('c1', 1);
    expect(typeof first).toBe('string');
    expect(await dead('c1', 1)).toBe(first);
    expect(await dead('c2', 1)).toBe(0);
    expect(await dead('c1', 2)).toBe(0);
    expect(await dead('c1', '')).toBe(0);
    expect(await admin.xlen(keys.dlq)).toBe(1);
    const ttl = await admin.pttl(mark);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(DEAD_MARK_MS);
  });

  it('ordered: a read, or an ack with the next read, whose reply was lost hands the message over as delivered once', async () => {
    const { queue, losing } = await losingQueue(NEXT);
    const seen: string[] = [];
    const consumer = queue.consume<{ n: number }>(
      'orders',
      'g',
      (m) => {
        seen.push(`${m.payload.n}@${m.attempt}`);
        // The call that acks this message and reads the next one loses its reply.
        if (m.payload.n === 1) losing.arm();
      },
      // One attempt each: a message counted as delivered twice would be dead-lettered unseen.
      { ordered: true, maxAttempts: 1, visibilityMs: 2000 },
    );
    const dead: DeadLetterEvent[] = [];
    consumer.onDeadLetter((e) => dead.push(e));
    for (let n = 1; n <= 4; n++) await queue.send('orders', { n }, { key: 'k', id: `m${n}` });
    await until(() => expect(seen.length).toBeGreaterThanOrEqual(4), 10_000);
    // Late duplicates, if any, have come by then; the message names every delivery seen.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const said = `seen ${JSON.stringify(seen)}, dropped ${losing.dropped}, dead ${dead.length}`;
    // Twice: the first read (armed by losingQueue) and the ack of message 1 with the next read.
    expect(losing.dropped, said).toBe(2);
    expect(seen, said).toEqual(['1@1', '2@1', '3@1', '4@1']);
    expect(dead, said).toEqual([]);
  });

  it('ordered: a retry in place whose reply was lost counts one more delivery, not two', async () => {
    const { queue, losing } = await losingQueue(REDELIVER);
    const seen: number[] = [];
    let hold: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (hold = resolve));
    queue.consume(
      'orders',
      'g',
      async (m) => {
        seen.push(m.attempt);
        if (m.attempt === 1) {
          losing.arm();
          throw new Error('first attempt fails');
        }
        await held;
      },
      { ordered: true, maxAttempts: 5, backoff: () => 5, visibilityMs: 5000 },
    );
    await queue.send('orders', { n: 1 }, { key: 'k', id: 'm1' });
    await until(() => expect(seen).toEqual([1, 2]), 10_000);
    expect(losing.dropped).toBe(1);
    // Redis counts the deliveries another consumer would see on takeover: two so far.
    const pending = (await redis()
      .client(0)
      .xpending(queue.keys('orders', 0).stream, 'g', '-', '+', 10)) as [
      string,
      string,
      number,
      number,
    ][];
    expect(pending.map((p) => p[3])).toEqual([2]);
    hold();
  });

  it('ordered: a dead letter sent again after its lease lapsed (its first copy ran, the reply lost) answers its DLQ entry, so it is reported', async () => {
    // The copy sent again (after a reconnect slow enough, or a Redis pause long enough, for the
    // lease to run out) found the lease gone and answered -1: the message was in the DLQ and
    // acked, and the consumer that put it there never reported it (onDeadLetter).
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const keys = queue.keys('orders', 0);
    const lease = leaseKey('keel:q', keys, 'g');
    await admin.xgroup('CREATE', keys.stream, 'g', '0', 'MKSTREAM');
    const id = (await admin.xadd(keys.stream, '*', 'f', 'v')) ?? '';
    await admin.xreadgroup('GROUP', 'g', 'a', 'COUNT', 1, 'STREAMS', keys.stream, '>');
    await admin.set(lease, 'a', 'PX', 60_000);
    const mark = deadMarkKey('keel:q', keys, 'g', id);
    const dead = (): Promise<unknown> =>
      run(
        admin,
        'dead-letter',
        DEAD,
        [keys.stream, keys.dlq, lease, mark],
        ['g', id, 'a', 'a', '', 'x:reason', 'failed'],
      );
    const first = await dead();
    expect(typeof first).toBe('string');
    // The lease runs out (or another consumer takes it) before the copy sent again arrives.
    await admin.set(lease, 'b', 'PX', 60_000);
    expect(await dead()).toBe(first);
    expect(await admin.xlen(keys.dlq)).toBe(1);
    // Another consumer's call (it never dead-lettered this entry) is still refused by the lease.
    const other = run(
      admin,
      'dead-letter',
      DEAD,
      [keys.stream, keys.dlq, lease, mark],
      ['g', id, 'c', 'c', '', 'x:reason', 'failed'],
    );
    expect(await other).toBe(-1);
  });

  it('foreign data at the marks does not wedge a partition: an ordered read and a dead letter go on', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const keys = queue.keys('orders', 0);
    await admin.hset(nextMarkKey('keel:q', keys, 'g'), 'foreign', 'data');
    const seen: number[] = [];
    const events: DeadLetterEvent[] = [];
    const consumer = queue.consume<{ n: number }>(
      'orders',
      'g',
      (m) => {
        seen.push(m.payload.n);
        if (m.payload.n === 2) throw new Error('fails');
      },
      { ordered: true, maxAttempts: 1, visibilityMs: 2000 },
    );
    const errors: unknown[] = [];
    consumer.onError((e) => errors.push(e));
    consumer.onDeadLetter((e) => events.push(e));
    await queue.send('orders', { n: 1 }, { key: 'k', id: 'm1' });
    await queue.send('orders', { n: 2 }, { key: 'k', id: 'm2' });
    await until(() => expect(events).toHaveLength(1), 10_000);
    expect(seen).toEqual([1, 2]);
    expect(errors).toEqual([]);
    // A refused dead letter whose mark key holds foreign data answers 0, not an error.
    const id = await admin.xadd(keys.stream, '*', 'f', 'v');
    const mark = deadMarkKey('keel:q', keys, 'g', id ?? '');
    await admin.sadd(mark, 'foreign');
    const args = ['g', id ?? '', 'nobody', '', 1, 'x:reason', 'failed'];
    expect(await run(admin, 'dead-letter', DEAD, [keys.stream, keys.dlq, '', mark], args)).toBe(0);
  });
});

describeRedis('keel/queue ordered reads whose reply came back as an error after they ran', () => {
  const redis = useRedis({ count: 1 });
  const opened: { close(): Promise<void> }[] = [];

  afterEach(async () => {
    for (const q of opened.splice(0)) await q.close();
    await redis().flushAll();
  });

  it('ordered: a read (or an ack with the next read) that ran but failed on the client is sent again as the same call: each message delivered once', async () => {
    // `maxRetriesPerRequest: 0`: ioredis rejects the commands in flight when the connection
    // drops instead of sending them again (with the default, after 20 failed reconnections), so
    // the consumer itself sends its read again — after the first one ran in Redis.
    const own = redis().client(0, { maxRetriesPerRequest: 0 });
    await own.script('LOAD', NEXT.source);
    const losing = losingOneReply(own, NEXT.sha);
    const queue = new Queue({ client: losing.client });
    opened.push(queue);
    const stream = queue.keys('orders', 0).stream;
    await redis().client(0).xgroup('CREATE', stream, 'g', '0', 'MKSTREAM');
    for (let n = 1; n <= 4; n++) await queue.send('orders', { n }, { key: 'k', id: `m${n}` });
    // The first read (it delivers message 1) fails on the client after it ran.
    losing.arm();
    const seen: string[] = [];
    const errors: unknown[] = [];
    const consumer = queue.consume<{ n: number }>(
      'orders',
      'g',
      (m) => {
        seen.push(`${m.payload.n}@${m.attempt}`);
        // So does the call that acks message 2 and reads message 3.
        if (m.payload.n === 2) losing.arm();
      },
      // One attempt each: a message counted as delivered twice is dead-lettered unseen.
      { ordered: true, maxAttempts: 1, visibilityMs: 2000 },
    );
    consumer.onError((e) => errors.push(e));
    const dead: DeadLetterEvent[] = [];
    consumer.onDeadLetter((e) => dead.push(e));
    await until(() => expect(seen.length + dead.length).toBe(4), 15_000);
    expect(losing.dropped).toBe(2);
    // The reads did fail on the client (and were sent again by the consumer).
    expect(errors.length).toBeGreaterThanOrEqual(2);
    expect(dead).toEqual([]);
    expect(seen).toEqual(['1@1', '2@1', '3@1', '4@1']);
  });
});

describeRedis('keel/queue ordered ack on stopping sent twice', () => {
  const redis = useRedis({ count: 1 });
  const opened: { close(): Promise<void> }[] = [];

  afterEach(async () => {
    for (const q of opened.splice(0)) await q.close();
    await redis().flushAll();
  });

  it('ordered: the ack sent on close whose reply was lost still gives the partition lease back', async () => {
    const own = redis().client(0);
    await own.script('LOAD', ACK.source);
    const losing = losingOneReply(own, ACK.sha);
    const queue = new Queue({ client: losing.client });
    opened.push(queue);
    let started: () => void = () => undefined;
    const running = new Promise<void>((resolve) => (started = resolve));
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const consumer = queue.consume(
      'orders',
      'g',
      async () => {
        started();
        await gate;
      },
      { ordered: true, visibilityMs: 60_000, consumer: 'c1' },
    );
    await queue.send('orders', { n: 1 }, { key: 'k', id: 'm1' });
    await running;
    // Closing while the handler runs: its message is acked on its own (not with a next read).
    losing.arm();
    const closed = consumer.close();
    release();
    await closed;
    expect(losing.dropped).toBe(1);
    const keys = queue.keys('orders', 0);
    const admin = redis().client(0);
    expect((await admin.xpending(keys.stream, 'g'))[0]).toBe(0);
    // Given back: another consumer need not wait out the lease (here a minute).
    expect(await admin.get(leaseKey('keel:q', keys, 'g'))).toBeNull();
  });

  it("ordered: the ack of another group's copy (a replayed dead letter) whose reply was lost keeps the partition", async () => {
    const own = redis().client(0);
    await own.script('LOAD', ACK.source);
    const losing = losingOneReply(own, ACK.sha);
    const queue = new Queue({ client: losing.client });
    opened.push(queue);
    const stream = queue.keys('orders', 0).stream;
    const admin = redis().client(0);
    await admin.xgroup('CREATE', stream, 'g', '0', 'MKSTREAM');
    // What `replay()` adds for group `other`: this group acks it unhandled.
    await admin.xadd(stream, '*', 'v', '1', 'i', 'r1', 'k', 'k', 'p', '{"n":0}', 'g', 'other');
    await queue.send('orders', { n: 1 }, { key: 'k', id: 'm1' });
    losing.arm();
    const seen: number[] = [];
    queue.consume<{ n: number }>(
      'orders',
      'g',
      (m) => {
        seen.push(m.payload.n);
      },
      // Membership heartbeats 20 s apart: a partition given up would be taken back only then.
      { ordered: true, visibilityMs: 60_000 },
    );
    await until(() => expect(seen).toEqual([1]), 10_000);
    expect(losing.dropped).toBe(1);
  });

  /**
   * A message delivered to consumer `c1` by a read whose reply never reached it: the entry is
   * added and read for `c1` in one transaction, as Redis ran the read whose reply was lost (the
   * consumer's own blocking read, served only after the transaction, finds nothing new).
   */
  const deliverUnseen = async (queue: Queue, consumer: string): Promise<string> => {
    const admin = redis().client(0);
    const stream = queue.keys('orders', 0).stream;
    // A real message's fields: sent, read back and removed before the consumer reads it.
    await queue.send('scratch', { n: 1 });
    const [[id, fields] = ['', []]] = await admin.xrange(queue.keys('scratch', 0).stream, '-', '+');
    expect(id).not.toBe('');
    const [added] = (await admin
      .multi()
      .xadd(stream, '*', ...fields)
      .xreadgroup('GROUP', 'g', consumer, 'COUNT', 1, 'STREAMS', stream, '>')
      .exec()) as [[null, string]];
    return added[1];
  };

  it('unordered: a message whose read reply was lost is reclaimed at its first attempt, not dead-lettered unseen', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const attempts: number[] = [];
    const consumer = queue.consume(
      'orders',
      'g',
      (m) => {
        attempts.push(m.attempt);
      },
      { consumer: 'c1', maxAttempts: 1, visibilityMs: 500 },
    );
    const dead: DeadLetterEvent[] = [];
    consumer.onDeadLetter((e) => dead.push(e));
    // The consumer reads (its group exists) and has lived past the bound's one-second margin.
    await until(
      async () => expect(await admin.exists(queue.keys('orders', 0).stream)).toBe(1),
      5000,
    );
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const entry = await deliverUnseen(queue, 'c1');
    await until(() => expect(attempts).toEqual([1]), 10_000);
    expect(dead).toEqual([]);
    // Acked (acks go out in batches, after the handler resolved).
    await until(async () => {
      const pending = await admin.xpending(queue.keys('orders', 0).stream, 'g', '-', '+', 10);
      expect(pending.map((p) => (p as unknown[])[0])).not.toContain(entry);
    }, 5000);
  });

  it('unordered: a message delivered to the same consumer name before this instance was made still counts that delivery', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    await admin.xgroup('CREATE', queue.keys('orders', 0).stream, 'g', '0', 'MKSTREAM');
    // A previous process named c1 read it and died.
    await deliverUnseen(queue, 'c1');
    await new Promise((resolve) => setTimeout(resolve, 1200));
    const attempts: number[] = [];
    queue.consume(
      'orders',
      'g',
      (m) => {
        attempts.push(m.attempt);
      },
      { consumer: 'c1', maxAttempts: 5, visibilityMs: 500 },
    );
    await until(() => expect(attempts).toEqual([2]), 10_000);
  });
});
