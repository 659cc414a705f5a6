/**
 * keel/queue example tests against a real redis-server: the happy path, every error path
 * (retry, dead letter, foreign data, visibility timeout, late ack, close with work in flight),
 * dedup, delay, replay, backpressure, and option validation.
 */
import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import {
  Queue,
  isLeaseExpiredError,
  isPayloadError,
  isQueueClosedError,
  type Message,
} from '../../src/queue/index.js';
import { run } from '../../src/queue/client.js';
import { SEND_MAX, TRIM_DONE } from '../../src/queue/scripts.js';
import { invalidOption, until } from '../support/helpers.js';
import { describeRedis, liveHandles, useRedis } from '../support/vitest.js';

describeRedis('keel/queue on a real redis-server', () => {
  const redis = useRedis({ count: 1 });
  const opened: { close(): Promise<void> }[] = [];
  let client: Redis;
  const queueOf = (options: Partial<ConstructorParameters<typeof Queue>[0]> = {}): Queue => {
    client = redis().client(0);
    const queue = new Queue({ client, ...options });
    opened.push(queue);
    return queue;
  };

  afterEach(async () => {
    for (const q of opened.splice(0)) await q.close();
    await redis().flushAll();
  });

  it('sends, hands the message to one handler, acks after it resolves and deletes the entry', async () => {
    const queue = queueOf();
    const seen: Message<{ n: number }>[] = [];
    queue.consume<{ n: number }>('orders', 'billing', (m) => {
      seen.push(m);
    });
    const sent = await queue.send('orders', { n: 1 }, { key: 'k1', headers: { trace: 't1' } });
    expect(sent.status).toBe('sent');
    await until(() => expect(seen).toHaveLength(1), 10_000);
    const [m] = seen;
    expect(m?.payload).toEqual({ n: 1 });
    expect(m?.key).toBe('k1');
    expect(m?.headers).toEqual({ trace: 't1' });
    expect(m?.attempt).toBe(1);
    expect(m?.id).toBe(sent.id);
    const stream = queue.keys('orders', 0).stream;
    await until(async () => expect(await client.xlen(stream)).toBe(0), 10_000);
    const pending = await client.xpending(stream, 'billing');
    expect(pending[0]).toBe(0);
  });

  it('acked entries are removed while an older message is still pending; the pending one stays and is acked later', async () => {
    const queue = queueOf();
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    let handled = 0;
    queue.consume<{ n: number }>(
      'orders',
      'g',
      async (m) => {
        // The first message is held while the next 40 are handled and acked.
        if (m.payload.n === 0) await held;
        handled++;
      },
      { concurrency: 8 },
    );
    const first = await queue.send('orders', { n: 0 });
    await queue.sendMany(
      'orders',
      Array.from({ length: 40 }, (_, i) => ({ payload: { n: i + 1 } })),
    );
    const stream = queue.keys('orders', 0).stream;
    await until(() => expect(handled).toBe(40), 10_000);
    // Acked entries are deleted in batches (at least 16 at a time): all but a few are gone,
    // and the held one is still there, pending.
    await until(async () => expect(await client.xlen(stream)).toBeLessThan(16), 10_000);
    expect((await client.xrange(stream, '-', '+', 'COUNT', 1))[0]?.[0]).toBe(first.entryId);
    expect((await client.xpending(stream, 'g'))[0]).toBe(1);
    release();
    await until(() => expect(handled).toBe(41), 10_000);
    await until(async () => expect((await client.xpending(stream, 'g'))[0]).toBe(0), 10_000);
  });

  it('with two groups, an entry stays until both have acked it, then is removed (nothing kept after the last ack)', async () => {
    const queue = queueOf();
    const stream = queue.keys('orders', 0).stream;
    const seen = { billing: 0, shipping: 0 };
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    queue.consume<{ n: number }>('orders', 'billing', () => {
      seen.billing++;
    });
    // The second group holds every message until released.
    queue.consume<{ n: number }>(
      'orders',
      'shipping',
      async () => {
        await held;
        seen.shipping++;
      },
      { concurrency: 50 },
    );
    await queue.sendMany(
      'orders',
      Array.from({ length: 30 }, (_, i) => ({ payload: { n: i } })),
    );
    await until(() => expect(seen.billing).toBe(30), 10_000);
    await until(async () => expect((await client.xpending(stream, 'billing'))[0]).toBe(0), 10_000);
    // billing is done with all 30; shipping still needs them: none may go.
    expect(await client.xlen(stream)).toBe(30);
    release();
    await until(() => expect(seen.shipping).toBe(30), 10_000);
    await until(async () => expect(await client.xlen(stream)).toBe(0), 10_000);
  });

  it('dedups by message id within the window: the second send enqueues nothing', async () => {
    const queue = queueOf();
    const first = await queue.send('orders', { n: 1 }, { id: 'order-1' });
    const second = await queue.send('orders', { n: 2 }, { id: 'order-1' });
    expect(first.status).toBe('sent');
    expect(second.status).toBe('duplicate');
    expect(await client.xlen(queue.keys('orders', 0).stream)).toBe(1);
  });

  it('retention by age trims acked entries older than maxAgeMs, never a pending or undelivered one', async () => {
    const queue = queueOf({ retention: { maxAgeMs: 60_000 } });
    const stream = queue.keys('aged', 0).stream;
    // Two entries from long ago (explicit ids: ms 1000 and 2000) and one sent now.
    await client.xadd(stream, '1000-0', 'f', 'old');
    await client.xadd(stream, '2000-0', 'f', 'older-but-pending');
    await queue.send('aged', { n: 1 });
    const fresh = (await client.xrange(stream, '-', '+'))[2]?.[0];
    await client.xgroup('CREATE', stream, 'g', '0');
    await client.call('XREADGROUP', 'GROUP', 'g', 'c', 'COUNT', 2, 'STREAMS', stream, '>');
    await client.xack(stream, 'g', '1000-0');
    // 1000-0: acked and old, trimmed. 2000-0: old but pending, kept. The new one: unread, kept.
    expect(await queue.trim('aged')).toBe(1);
    expect((await client.xrange(stream, '-', '+')).map(([id]) => id)).toEqual(['2000-0', fresh]);
    // Once the group has read the new one too and acked both, the old one goes; the new one is
    // younger than maxAgeMs.
    await client.call('XREADGROUP', 'GROUP', 'g', 'c', 'STREAMS', stream, '>');
    await client.xack(stream, 'g', '2000-0', String(fresh));
    expect(await queue.trim('aged')).toBe(1);
    expect((await client.xrange(stream, '-', '+')).map(([id]) => id)).toEqual([fresh]);
  });

  it('retention on a partition whose stream does not exist (never sent to, or lost with a restart) trims nothing and reports no error', async () => {
    const queue = queueOf({ partitions: 3, retention: { maxAgeMs: 1000, maxLen: 10 } });
    await queue.send('sparse', { n: 1 }, { key: 'k' });
    // Two of the three partitions have no stream at all.
    expect(await queue.trim('sparse')).toBe(0);
    expect(await queue.trim('never-used')).toBe(0);
    // The consumers' sweep trims acked entries with its own script: the same holds there.
    const missing = queue.keys('never-used', 0).stream;
    expect(Number(await run(client, 'trim', TRIM_DONE, [missing], []))).toBe(0);
    // A key that is not a stream (foreign data) is still an error, naming Redis's complaint.
    await client.set(missing, 'not a stream');
    await expect(run(client, 'trim', TRIM_DONE, [missing], [])).rejects.toThrow(/WRONGTYPE/);
    await expect(queue.trim('never-used')).rejects.toThrow(/WRONGTYPE/);
  });

  it('holds a delayed message in the delayed set, then delivers it', async () => {
    const queue = queueOf();
    const r = await queue.send('orders', { n: 1 }, { delayMs: 300 });
    expect(r.status).toBe('delayed');
    const keys = queue.keys('orders', 0);
    expect(await client.zcard(keys.delayed)).toBe(1);
    expect(await client.xlen(keys.stream)).toBe(0);
    const seen: number[] = [];
    queue.consume<{ n: number }>(
      'orders',
      'g',
      (m) => {
        seen.push(m.payload.n);
      },
      { visibilityMs: 400 },
    );
    await until(() => expect(seen).toEqual([1]), 10_000);
    expect(await client.zcard(keys.delayed)).toBe(0);
  });

  it('sendMany sends each item, in input order of results', async () => {
    const queue = queueOf();
    const results = await queue.sendMany('orders', [
      { payload: 1, id: 'a' },
      { payload: 2, id: 'a' },
      { payload: 3 },
    ]);
    expect(results.map((r) => r.status)).toEqual(['sent', 'duplicate', 'sent']);
  });

  it('sendMany of more messages than one script call takes: every one sent once, in order', async () => {
    const queue = queueOf({ partitions: 2 });
    const n = 2 * SEND_MAX + 10;
    const items = Array.from({ length: n }, (_, i) => ({ payload: i, key: `k${i % 7}` }));
    const results = await queue.sendMany('orders', items);
    expect(results.every((r) => r.status === 'sent')).toBe(true);
    let total = 0;
    for (const p of [0, 1]) {
      const entries = await client.xrange(queue.keys('orders', p).stream, '-', '+');
      total += entries.length;
      // Stream order is input order.
      const payloads = entries.map(([, f]) => Number(JSON.parse(f[f.indexOf('p') + 1] ?? '')));
      expect(payloads).toEqual([...payloads].sort((a, b) => a - b));
      expect(entries.map(([id]) => id)).toEqual(
        results.filter((r) => r.partition === p).map((r) => r.entryId),
      );
    }
    expect(total).toBe(n);
  });

  it('retries a failing handler with backoff and a growing attempt count, then acks', async () => {
    const queue = queueOf();
    const attempts: number[] = [];
    queue.consume(
      'orders',
      'g',
      (m) => {
        attempts.push(m.attempt);
        if (m.attempt < 3) throw new Error(`boom ${m.attempt}`);
      },
      { backoff: { initialMs: 10 }, visibilityMs: 1000 },
    );
    await queue.send('orders', { n: 1 });
    await until(() => expect(attempts).toEqual([1, 2, 3]), 10_000);
    await until(
      async () => expect(await client.xlen(queue.keys('orders', 0).stream)).toBe(0),
      5000,
    );
    expect(await queue.deadLetters('orders')).toEqual([]);
  });

  it('dead-letters after maxAttempts with the last error, attempts and consumer names, acked in the same step', async () => {
    const queue = queueOf();
    const events: unknown[] = [];
    const consumer = queue.consume(
      'orders',
      'g',
      () => {
        throw new Error('always fails');
      },
      { maxAttempts: 3, backoff: () => 5, consumer: 'c1', visibilityMs: 1000 },
    );
    consumer.onDeadLetter((e) => events.push(e));
    const sent = await queue.send('orders', { n: 1 }, { key: 'k' });
    await until(async () => expect(await queue.deadLetters('orders')).toHaveLength(1), 10_000);
    const [letter] = await queue.deadLetters('orders');
    expect(letter?.id).toBe(sent.id);
    expect(letter?.reason).toBe('failed');
    expect(letter?.error).toContain('always fails');
    expect(letter?.attempts).toBe(3);
    expect(letter?.consumers).toContain('c1');
    expect(letter?.group).toBe('g');
    expect(letter?.payload).toEqual({ n: 1 });
    const stream = queue.keys('orders', 0).stream;
    expect((await client.xpending(stream, 'g'))[0]).toBe(0);
    await until(() => expect(events).toHaveLength(1), 5000);
  });

  it('replays dead letters to the group that gave up on them, with the attempt count reset', async () => {
    const queue = queueOf();
    let healthy = false;
    const handled: number[] = [];
    queue.consume(
      'orders',
      'g',
      (m) => {
        if (!healthy) throw new Error('down');
        handled.push(m.attempt);
      },
      { maxAttempts: 1, visibilityMs: 1000 },
    );
    await queue.send('orders', { n: 1 });
    await until(async () => expect(await queue.deadLetters('orders')).toHaveLength(1), 10_000);
    healthy = true;
    expect(await queue.replay('orders', { filter: (l) => l.group === 'g' })).toBe(1);
    await until(() => expect(handled).toEqual([1]), 10_000);
    expect(await queue.deadLetters('orders')).toEqual([]);
  });

  it('quarantines foreign stream entries to the DLQ with a reason and keeps consuming', async () => {
    const queue = queueOf();
    const seen: number[] = [];
    const consumer = queue.consume<{ n: number }>(
      'orders',
      'g',
      (m) => {
        seen.push(m.payload.n);
      },
      { visibilityMs: 1000 },
    );
    const events: { reason: string }[] = [];
    consumer.onDeadLetter((e) => events.push(e));
    const stream = queue.keys('orders', 0).stream;
    await client.xadd(stream, '*', 'hello', 'world');
    await client.xadd(stream, '*', 'v', '1', 'i', 'x', 'p', '{not json');
    await queue.send('orders', { n: 7 });
    await until(() => expect(seen).toEqual([7]), 10_000);
    await until(async () => expect(await queue.deadLetters('orders')).toHaveLength(2), 10_000);
    const letters = await queue.deadLetters('orders');
    expect(letters.map((l) => l.reason)).toEqual(['invalid', 'invalid']);
    expect(letters[1]?.error).toContain('payload');
    expect(await queue.replay('orders')).toBe(0);
    await until(() => expect(events).toHaveLength(2), 5000);
  });

  it('aborts a handler still running at its visibility timeout; another consumer reclaims it (attempt 2) and the late ack is refused', async () => {
    const queue = queueOf();
    const reasons: unknown[] = [];
    const handledBy: string[] = [];
    let release: () => void = () => undefined;
    const stuck = new Promise<void>((resolve) => (release = resolve));
    queue.consume(
      'orders',
      'g',
      async (m) => {
        m.signal.addEventListener('abort', () => reasons.push(m.signal.reason));
        await stuck; // ignores its signal: keeps running past the timeout
        handledBy.push(`a:${m.attempt}`);
      },
      { consumer: 'a', visibilityMs: 300, sweepMs: 50 },
    );
    await queue.send('orders', { n: 1 });
    await until(() => expect(reasons).toHaveLength(1), 10_000);
    expect(isLeaseExpiredError(reasons[0])).toBe(true);
    const attempts: number[] = [];
    queue.consume(
      'orders',
      'g',
      (m) => {
        attempts.push(m.attempt);
      },
      { consumer: 'b', visibilityMs: 300, sweepMs: 50 },
    );
    await until(() => expect(attempts).toEqual([2]), 10_000);
    release();
    await until(() => expect(handledBy).toEqual(['a:1']), 5000);
    const stream = queue.keys('orders', 0).stream;
    await until(async () => expect((await client.xpending(stream, 'g'))[0]).toBe(0), 5000);
    expect(await queue.deadLetters('orders')).toEqual([]);
  });

  it('a message reclaimed back to the consumer still running its older delivery is handled again; the older delivery’s late ack is refused and the newer one’s outcome counts', async () => {
    const queue = queueOf();
    const stream = queue.keys('orders', 0).stream;
    const calls: number[] = [];
    const reasons: unknown[] = [];
    const gates = new Map<number, { open: () => void; fail: (e: Error) => void }>();
    let entryId = '';
    let staleDone = false;
    queue.consume(
      'orders',
      'g',
      async (m) => {
        entryId = m.entryId;
        calls.push(m.attempt);
        m.signal.addEventListener('abort', () => reasons.push(m.signal.reason));
        // Ignores its signal: runs until the test lets it finish.
        await new Promise<void>((resolve, reject) =>
          gates.set(m.attempt, { open: resolve, fail: reject }),
        );
        if (m.attempt === 1) staleDone = true;
      },
      { consumer: 'a', visibilityMs: 300, sweepMs: 50, maxAttempts: 3, backoff: () => 1 },
    );
    await queue.send('orders', { n: 1 });
    await until(() => expect(calls).toEqual([1]), 10_000);
    // Another consumer reclaims it (delivery 2) and dies at once: its copy idles on 'ghost'.
    const claimed = (await client.xclaim(stream, 'g', 'ghost', 0, entryId)) as [string][];
    expect(claimed.map(([id]) => id)).toEqual([entryId]);
    // 'a' reclaims it from the dead 'ghost' (delivery 3) while delivery 1 still runs on 'a'.
    await until(() => expect(calls).toEqual([1, 3]), 10_000);
    await until(() => expect(reasons.length).toBeGreaterThanOrEqual(1), 5000);
    expect(isLeaseExpiredError(reasons[0])).toBe(true);
    // Delivery 1 finishes now: its ack must not settle delivery 3's message.
    gates.get(1)?.open();
    await until(() => expect(staleDone).toBe(true), 5000);
    await new Promise((r) => setTimeout(r, 100)); // its ack (if any) is written by now
    const [row] = (await client.xpending(stream, 'g', '-', '+', 10)) as [
      string,
      string,
      number,
      number,
    ][];
    expect(row?.[0]).toBe(entryId);
    expect(row?.[1]).toBe('a');
    expect(row?.[3]).toBe(3);
    // Delivery 3 fails on its last attempt: that outcome counts — the message is dead-lettered.
    gates.get(3)?.fail(new Error('third time unlucky'));
    await until(async () => expect(await queue.deadLetters('orders')).toHaveLength(1), 10_000);
    const [letter] = await queue.deadLetters('orders');
    expect(letter?.attempts).toBe(3);
    expect(letter?.error).toContain('third time unlucky');
    expect((await client.xpending(stream, 'g'))[0]).toBe(0);
    expect(calls).toEqual([1, 3]);
  });

  it('never has more than `concurrency` handlers in flight', async () => {
    const queue = queueOf();
    let now = 0;
    let peak = 0;
    let done = 0;
    queue.consume(
      'orders',
      'g',
      async () => {
        now++;
        peak = Math.max(peak, now);
        await new Promise((r) => setTimeout(r, 20));
        now--;
        done++;
      },
      { concurrency: 3 },
    );
    await queue.sendMany(
      'orders',
      Array.from({ length: 20 }, (_, i) => ({ payload: i })),
    );
    await until(() => expect(done).toBe(20), 20_000);
    expect(peak).toBe(3);
  });

  it('close() waits for in-flight handlers and acks them; later calls are refused', async () => {
    const queue = queueOf();
    let finished = 0;
    let started = 0;
    const consumer = queue.consume('orders', 'g', async () => {
      started++;
      await new Promise((r) => setTimeout(r, 100));
      finished++;
    });
    await queue.send('orders', 1);
    await until(() => expect(started).toBe(1), 10_000);
    await consumer.close();
    expect(finished).toBe(1);
    await consumer.close();
    expect(await client.xlen(queue.keys('orders', 0).stream)).toBe(0);
    await queue.close();
    await expect(queue.send('orders', 2)).rejects.toSatisfy(isQueueClosedError);
  });

  it('close() hands back a handler that outlives closeTimeoutMs: aborted, and another consumer gets it at once', async () => {
    const queue = queueOf();
    const reasons: unknown[] = [];
    const consumer = queue.consume(
      'orders',
      'g',
      async (m) => {
        await new Promise<void>((resolve) => m.signal.addEventListener('abort', () => resolve()));
        reasons.push(m.signal.reason);
        throw m.signal.reason;
      },
      { closeTimeoutMs: 50, visibilityMs: 60_000 },
    );
    await queue.send('orders', 1);
    await until(
      async () => expect((await client.xpending(queue.keys('orders', 0).stream, 'g'))[0]).toBe(1),
      10_000,
    );
    await consumer.close();
    expect(isQueueClosedError(reasons[0])).toBe(true);
    const attempts: number[] = [];
    queue.consume(
      'orders',
      'g',
      (m) => {
        attempts.push(m.attempt);
      },
      { visibilityMs: 60_000, sweepMs: 50 },
    );
    // Handed back: reclaimed by the next sweep, not after the 60 s visibility timeout.
    await until(() => expect(attempts).toEqual([2]), 10_000);
  });

  it('await using closes the consumer', async () => {
    const queue = queueOf();
    {
      await using consumer = queue.consume('orders', 'g', () => undefined);
      expect(consumer.name).toContain(':');
    }
  });

  it('rejects bad options and payloads with typed errors naming what was wrong', async () => {
    const queue = queueOf();
    expect(invalidOption(() => new Queue({ client: {} as never })).option).toBe('client');
    expect(invalidOption(() => queueOf({ partitions: 0 })).option).toBe('partitions');
    expect(invalidOption(() => queueOf({ prefix: 'a{b}' })).option).toBe('prefix');
    expect(
      invalidOption(() => queue.consume('orders', 'g', () => undefined, { concurrency: 0 })).option,
    ).toBe('concurrency');
    expect(
      invalidOption(() => queue.consume('orders', 'g', () => undefined, { backoff: { factor: 0 } }))
        .option,
    ).toBe('backoff.factor');
    expect(invalidOption(() => queue.consume('or ders', 'g', () => undefined)).option).toBe(
      'topic',
    );
    expect(invalidOption(() => queue.consume('orders', 'g', 42 as never)).option).toBe('handler');
    await expect(queue.send('orders', 1, { delayMs: -1 })).rejects.toMatchObject({
      option: 'delayMs',
    });
    await expect(queue.send('orders', 1n)).rejects.toSatisfy(isPayloadError);
    await expect(queue.send('orders', undefined)).rejects.toSatisfy(isPayloadError);
    const controller = new AbortController();
    controller.abort(new Error('stop'));
    await expect(queue.send('orders', 1, { signal: controller.signal })).rejects.toThrow('stop');
  });
  it('leaves no timers or sockets behind once the consumer and its clients are closed', async () => {
    const before = liveHandles();
    const own = redis().client(0);
    const queue = new Queue({ client: own });
    const seen: number[] = [];
    const consumer = queue.consume<number>(
      'orders',
      'g',
      (m) => {
        seen.push(m.payload);
      },
      { sweepMs: 20 },
    );
    await queue.send('orders', 1, { delayMs: 10 });
    await until(() => expect(seen).toEqual([1]), 10_000);
    await consumer.close();
    await queue.close();
    await own.quit();
    await until(() => {
      const after = liveHandles();
      expect(after.Timeout ?? 0).toBeLessThanOrEqual(before.Timeout ?? 0);
      expect(after.TCPSocketWrap ?? 0).toBeLessThanOrEqual(before.TCPSocketWrap ?? 0);
    }, 5000);
  });
  it('closes the consumer when its signal aborts', async () => {
    const queue = queueOf();
    const controller = new AbortController();
    const consumer = queue.consume('orders', 'g', () => undefined, { signal: controller.signal });
    controller.abort();
    await consumer.closed;
    expect(consumer.inFlight).toBe(0);
  });
});
