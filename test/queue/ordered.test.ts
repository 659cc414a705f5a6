/**
 * Per-key ordering, the idempotent consumer and the transactional outbox, against a real
 * redis-server.
 */
import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Outbox, Queue, idempotent, type Effect, type Message } from '../../src/queue/index.js';
import { NEXT } from '../../src/queue/scripts.js';
import { afterScript, readLate } from '../support/resend.js';
import { invalidOption, until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

/**
 * One key per partition of `topic`, found by hashing (the partition a key goes to is fixed):
 * partition → key.
 */
function keyPerPartition(queue: Queue, topic: string, partitions: number): Map<number, string> {
  const keyOf = new Map<number, string>();
  for (let i = 0; keyOf.size < partitions; i++) {
    const key = `key${i}`;
    const p = Number(/:(\d+)\}$/.exec(queue.hashTag(topic, key))?.[1]);
    if (!keyOf.has(p)) keyOf.set(p, key);
  }
  return keyOf;
}

describeRedis('keel/queue ordering, idempotency and outbox', () => {
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

  it('ordered: same-key messages are handled one at a time, in send order, across consumers and retries', async () => {
    const queue = queueOf({ partitions: 4 });
    const keys = ['a', 'b', 'c', 'd', 'e'];
    const perKey = 12;
    const order = new Map<string, number[]>();
    const busy = new Set<string>();
    let overlaps = 0;
    const handler = async (m: Message<{ seq: number }>): Promise<void> => {
      const key = m.key ?? '';
      if (busy.has(key)) overlaps++;
      busy.add(key);
      try {
        await new Promise((r) => setTimeout(r, 2));
        // Every third message fails its first attempt: order must survive the retry.
        if (m.payload.seq % 3 === 0 && m.attempt === 1) throw new Error('transient');
        order.set(key, [...(order.get(key) ?? []), m.payload.seq]);
      } finally {
        busy.delete(key);
      }
    };
    const options = { ordered: true, concurrency: 4, visibilityMs: 2000, backoff: () => 5 };
    queue.consume('ledger', 'g', handler, { ...options, consumer: 'one' });
    queue.consume('ledger', 'g', handler, { ...options, consumer: 'two' });
    for (let seq = 0; seq < perKey; seq++) {
      for (const key of keys) await queue.send('ledger', { seq }, { key });
    }
    const expected = Array.from({ length: perKey }, (_, i) => i);
    await until(() => {
      for (const key of keys) expect(order.get(key)).toEqual(expected);
    }, 30_000);
    expect(overlaps).toBe(0);
  });

  it('ordered: an idle partition is woken by a new message, not by its next poll (polls and blocking reads 60 s apart)', async () => {
    const queue = queueOf({ partitions: 4 });
    const keyOf = keyPerPartition(queue, 'wake', 4);
    const seen: string[] = [];
    const consumer = queue.consume<{ n: number }>(
      'wake',
      'g',
      (m) => {
        seen.push(`${m.partition}:${m.payload.n}`);
      },
      { ordered: true, concurrency: 4, pollMs: 60_000, blockMs: 60_000 },
    );
    const acked = async (p: number): Promise<void> => {
      const stream = queue.keys('wake', p).stream;
      await until(async () => expect((await client.xpending(stream, 'g'))[0]).toBe(0), 10_000);
    };
    // Each message goes to a partition that has been idle since its last one was acked: the
    // partitions go idle at different times, so later ones join a blocking read already waiting.
    let n = 0;
    for (let round = 0; round < 2; round++) {
      for (const p of [0, 1, 2, 3]) {
        await queue.send('wake', { n }, { key: keyOf.get(p) });
        await until(() => expect(seen).toContain(`${p}:${n}`), 10_000);
        await acked(p);
        n++;
      }
    }
    expect(seen).toHaveLength(8);
    // Closing does not wait for the 60-second blocking read.
    await consumer.close();
  });

  it('ordered: after Redis restarts, idle partitions are still woken by new messages (the reader’s new connection id is used to add them)', async () => {
    const queue = queueOf({ partitions: 4 });
    const keyOf = keyPerPartition(queue, 'wake', 4);
    const seen: string[] = [];
    queue.consume<{ n: number }>(
      'wake',
      'g',
      (m) => {
        seen.push(`${m.partition}:${m.payload.n}`);
      },
      { ordered: true, concurrency: 4, pollMs: 60_000, blockMs: 60_000, visibilityMs: 1500 },
    );
    const acked = async (p: number): Promise<void> => {
      const stream = queue.keys('wake', p).stream;
      await until(async () => expect((await client.xpending(stream, 'g'))[0]).toBe(0), 10_000);
    };
    await queue.send('wake', { n: 0 }, { key: keyOf.get(0) });
    await until(() => expect(seen).toContain('0:0'), 10_000);
    await redis().restart(0);
    // Back empty: the consumer re-creates its groups and takes its leases again.
    await until(async () => {
      for (const p of [0, 1, 2, 3]) {
        expect(await client.get(`keel:q:{wake:${p}}:lease:g`)).not.toBeNull();
      }
    }, 20_000);
    let n = 1;
    for (const p of [1, 2, 3, 0]) {
      await queue.send('wake', { n }, { key: keyOf.get(p) });
      await until(() => expect(seen).toContain(`${p}:${n}`), 10_000);
      await acked(p);
      n++;
    }
  });

  it('ordered: after Redis restarts, delayed messages of every partition are promoted, and the sweep reports no error for a partition with no stream yet', async () => {
    const queue = queueOf({ partitions: 4 });
    const keyOf = keyPerPartition(queue, 'later', 4);
    const seen: string[] = [];
    const errors: unknown[] = [];
    queue
      .consume<{ n: number }>(
        'later',
        'g',
        (m) => {
          seen.push(`${m.partition}:${m.payload.n}`);
        },
        { ordered: true, concurrency: 4, visibilityMs: 1500, sweepMs: 50 },
      )
      .onError((error) => errors.push(error));
    const leased = (): Promise<void> =>
      until(async () => {
        for (const p of [0, 1, 2, 3]) {
          expect(await client.get(`keel:q:{later:${p}}:lease:g`)).not.toBeNull();
        }
      }, 20_000);
    await leased();
    // Back empty: no partition has a stream until something is sent to it.
    await redis().restart(0);
    await leased();
    for (const p of [3, 2, 1, 0]) {
      await queue.send('later', { n: p }, { key: keyOf.get(p), delayMs: 100 });
    }
    await until(() => expect([...seen].sort()).toEqual(['0:0', '1:1', '2:2', '3:3']), 10_000);
    expect(errors.filter((e) => /no such key/.test(String(e)))).toEqual([]);
  });

  it('ordered: a partition busy while Redis restarts is woken by its next message once idle (the reader’s new id is known before its read is sent again)', async () => {
    const queue = queueOf({ partitions: 2 });
    const keyOf = keyPerPartition(queue, 'busy', 2);
    const seen: string[] = [];
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (open = resolve));
    queue.consume<{ n: number }>(
      'busy',
      'g',
      async (m) => {
        seen.push(`${m.partition}:${m.payload.n}`);
        if (m.payload.n === 0) await gate;
      },
      { ordered: true, concurrency: 2, pollMs: 60_000, blockMs: 60_000, visibilityMs: 1500 },
    );
    await queue.send('busy', { n: 0 }, { key: keyOf.get(0) });
    await until(() => expect(seen).toContain('0:0'), 10_000);
    // Partition 0 is busy: the reader blocks (60 s) for partition 1 alone. Redis restarts; the
    // reader's connection comes back and its read is sent again as it was.
    await redis().restart(0);
    await until(async () => {
      for (const p of [0, 1]) expect(await client.get(`keel:q:{busy:${p}}:lease:g`)).not.toBeNull();
    }, 20_000);
    // Partition 0 goes idle (its message's record went with the restart): it must be added to
    // the read at once, by an unblock sent to the reader's new id.
    open();
    // Idle: its group is back (made again when its next read found none), and its read found
    // nothing. (Sending earlier would only let its read find the message without waiting.)
    const stream0 = queue.keys('busy', 0).stream;
    await until(async () => expect(await client.xinfo('GROUPS', stream0)).toHaveLength(1), 10_000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    await queue.send('busy', { n: 1 }, { key: keyOf.get(0) });
    await until(() => expect(seen).toContain('0:1'), 10_000);
  });

  it('ordered: after the reader’s connection is dropped and comes back with a new id, idle partitions are still woken at once (not after blockMs)', async () => {
    const queue = queueOf({ partitions: 2 });
    const keyOf = keyPerPartition(queue, 'kick', 2);
    const seen: string[] = [];
    queue.consume<{ n: number }>(
      'kick',
      'g',
      (m) => {
        seen.push(`${m.partition}:${m.payload.n}`);
      },
      { ordered: true, concurrency: 2, pollMs: 60_000, blockMs: 60_000 },
    );
    // The reader: the one connection blocked in XREAD.
    const readerIds = async (): Promise<string[]> =>
      String(await client.call('CLIENT', 'LIST'))
        .split('\n')
        .filter((line) => / cmd=xread( |$)/.test(line) && / flags=b /.test(line))
        .map((line) => /(?:^|\s)id=(\d+)/.exec(line)?.[1] ?? '');
    await queue.send('kick', { n: 0 }, { key: keyOf.get(0) });
    await until(() => expect(seen).toContain('0:0'), 10_000);
    let old: string[] = [];
    await until(async () => {
      old = await readerIds();
      expect(old).toHaveLength(1);
    }, 10_000);
    await client.call('CLIENT', 'KILL', 'ID', old[0] as string);
    // Back, blocked again, on a connection with another id.
    await until(async () => {
      const now = await readerIds();
      expect(now).toHaveLength(1);
      expect(now[0]).not.toBe(old[0]);
    }, 20_000);
    // Each message makes its partition busy, then idle again: the idle one must be added to the
    // read at once — by an unblock sent to the reader's new id.
    let n = 1;
    for (const p of [0, 1, 0, 1, 0]) {
      await queue.send('kick', { n }, { key: keyOf.get(p) });
      await until(() => expect(seen).toContain(`${p}:${n}`), 10_000);
      n++;
    }
  });

  it('ordered: a handler stuck past its visibility timeout gives the partition up; the next owner redelivers in order and the late ack is refused', async () => {
    const queue = queueOf();
    let release: () => void = () => undefined;
    const stuck = new Promise<void>((resolve) => (release = resolve));
    const aLog: string[] = [];
    queue.consume<{ seq: number }>(
      'ledger',
      'g',
      async (m) => {
        if (m.payload.seq === 0) await stuck;
        aLog.push(`${m.payload.seq}@${m.attempt}`);
      },
      { ordered: true, consumer: 'a', visibilityMs: 400 },
    );
    for (let seq = 0; seq < 3; seq++) await queue.send('ledger', { seq }, { key: 'k' });
    await until(
      async () => expect(await client.get(`keel:q:{ledger:0}:lease:g`)).toBe('a'),
      10_000,
    );
    const bLog: string[] = [];
    queue.consume<{ seq: number }>(
      'ledger',
      'g',
      (m) => {
        bLog.push(`${m.payload.seq}@${m.attempt}`);
      },
      { ordered: true, consumer: 'b', visibilityMs: 400 },
    );
    await until(() => expect(bLog).toEqual(['0@2', '1@1', '2@1']), 20_000);
    release();
    await until(() => expect(aLog).toEqual(['0@1']), 5000);
    const stream = queue.keys('ledger', 0).stream;
    await until(async () => expect((await client.xpending(stream, 'g'))[0]).toBe(0), 5000);
    expect(await queue.deadLetters('ledger')).toEqual([]);
  });

  it('idempotent: a message delivered twice applies its Redis effect once', async () => {
    const queue = queueOf();
    const inner = idempotent<{ amount: number }>({ client: redis().client(0) }, (m, effect) => {
      effect.call('HINCRBY', ['{acct}:balance'], 'alice', m.payload.amount);
      effect.call('RPUSH', ['{acct}:log'], m.id);
    });
    let first = true;
    const runs: number[] = [];
    // The first delivery applies the effect, then hangs past its visibility timeout without an
    // ack — as a consumer that died between the effect and the ack would.
    queue.consume<{ amount: number }>(
      'pay',
      'g',
      async (m) => {
        runs.push(m.attempt);
        await inner(m);
        if (first) {
          first = false;
          await new Promise<void>((resolve) => m.signal.addEventListener('abort', () => resolve()));
          throw m.signal.reason;
        }
      },
      { visibilityMs: 300, sweepMs: 50 },
    );
    await queue.send('pay', { amount: 5 });
    await until(() => expect(runs).toEqual([1, 2]), 10_000);
    await until(async () => expect(await client.xlen(queue.keys('pay', 0).stream)).toBe(0), 10_000);
    expect(await client.hget('{acct}:balance', 'alice')).toBe('5');
    expect(await client.lrange('{acct}:log', 0, -1)).toHaveLength(1);
  });

  it('idempotent: an effect command Redis refuses records nothing — the retry applies the effect', async () => {
    const queue = queueOf();
    await client.set('{acct}:count', 'not a hash');
    const inner = idempotent<{ n: number }>({ client: redis().client(0) }, (m, effect) => {
      effect.call('RPUSH', ['{acct}:log'], m.id);
      effect.call('HINCRBY', ['{acct}:count'], 'n', m.payload.n);
    });
    const attempts: number[] = [];
    queue.consume<{ n: number }>(
      'pay',
      'g',
      async (m) => {
        attempts.push(m.attempt);
        if (m.attempt === 2) await client.del('{acct}:count');
        await inner(m);
      },
      { backoff: () => 0 },
    );
    await queue.send('pay', { n: 3 }, { id: 'pay-1' });
    await until(() => expect(attempts).toEqual([1, 2]), 10_000);
    await until(async () => expect(await client.hget('{acct}:count', 'n')).toBe('3'), 10_000);
    expect(await client.keys('keel:q:done:*')).toHaveLength(1);
    // The first attempt's RPUSH ran before HINCRBY failed (a script is not rolled back), and the
    // retry ran the whole effect: as before, a failing effect is applied again in full.
    expect(await client.lrange('{acct}:log', 0, -1)).toEqual(['pay-1', 'pay-1']);
  });

  it('idempotent: bad effect commands are typed errors, and the message is retried', () => {
    let captured: Effect | undefined;
    const handler = idempotent({ client: redis().client(0) }, (_m, effect) => {
      captured = effect;
    });
    const message = { signal: new AbortController().signal, topic: 't', group: 'g', id: 'x' };
    void Promise.resolve(handler(message as never)).catch(() => undefined);
    if (captured === undefined) throw new Error('no effect');
    const effectOf = (): Effect => captured as Effect;
    const effect = effectOf();
    expect(invalidOption(() => effect.call('', ['k'])).option).toBe('effect.call command');
    expect(invalidOption(() => effect.call('SET', 'k' as never)).option).toBe('effect.call keys');
    expect(invalidOption(() => effect.call('SET', ['k'], NaN)).option).toBe('effect.call args');
    expect(invalidOption(() => idempotent({} as never, () => undefined)).option).toBe('client');
  });

  it('outbox: business state and the message are written in one MULTI — both, or neither', async () => {
    const queue = queueOf();
    const outbox = new Outbox(queue);
    const tag = queue.hashTag('orders', 'order:7');
    const tx = client.multi();
    tx.hset(`${tag}:order:7`, 'status', 'confirmed');
    const staged = outbox.stage(tx, 'orders', { orderId: 7 }, { key: 'order:7', id: 'order-7' });
    await tx.exec();
    expect(await client.hget(`${tag}:order:7`, 'status')).toBe('confirmed');
    const seen: string[] = [];
    queue.consume('orders', 'g', (m) => {
      seen.push(m.id);
    });
    await until(() => expect(seen).toEqual([staged.id]), 10_000);

    // A discarded transaction writes neither.
    const discarded = client.multi();
    discarded.hset(`${tag}:order:8`, 'status', 'confirmed');
    outbox.stage(discarded, 'orders', { orderId: 8 }, { key: 'order:8' });
    discarded.discard();
    // A transaction Redis refuses (a bad command queued) writes neither.
    const refused = client.multi();
    refused.hset(`${tag}:order:9`, 'status', 'confirmed');
    outbox.stage(refused, 'orders', { orderId: 9 }, { key: 'order:9' });
    (refused as unknown as { call(...a: string[]): unknown }).call('NOSUCHCOMMAND');
    await expect(refused.exec()).rejects.toThrow();
    await queue.send('orders', { orderId: 10 }, { id: 'after' });
    await until(() => expect(seen).toEqual([staged.id, 'after']), 10_000);
    expect(await client.exists(`${tag}:order:8`, `${tag}:order:9`)).toBe(0);
    expect(invalidOption(() => outbox.stage({} as never, 'orders', 1)).option).toBe('transaction');
  });

  it('ordered: a handler aborted by close (past closeTimeoutMs) is not retried in place while closing: the message stays pending for the next owner, not dead-lettered', async () => {
    const queue = queueOf();
    const attempts: number[] = [];
    const consumer = queue.consume(
      'close',
      'g',
      (m) =>
        new Promise<void>((_resolve, reject) => {
          attempts.push(m.attempt);
          const stop = (): void => {
            reject(m.signal.reason as Error);
          };
          if (m.signal.aborted) stop();
          else m.signal.addEventListener('abort', stop);
        }),
      { ordered: true, maxAttempts: 3, backoff: () => 5, closeTimeoutMs: 50, visibilityMs: 5000 },
    );
    await queue.send('close', { n: 1 }, { key: 'k' });
    await until(() => expect(attempts).toEqual([1]), 10_000);
    await consumer.close();
    expect(attempts).toEqual([1]);
    expect(await queue.deadLetters('close')).toEqual([]);
    const pending = await client.xpending(queue.keys('close', 0).stream, 'g');
    expect(pending[0]).toBe(1);
  });

  it('ordered: a message whose read is answered after the partition was given up is not handled by the loop that gave it up', async () => {
    const own = redis().client(0);
    await own.script('LOAD', NEXT.source);
    // Once armed, the next NEXT call's answer (and every other answer on the connection, the
    // lease renewals' too) is read 1.5 s late: the consumer gives the partition up (its lease
    // runs out unrenewed on its clock) before the read's answer, which delivers message 2, comes.
    const { client: slow, arm } = afterScript(own, NEXT.sha, (c) => readLate(c, 1500));
    const queue = new Queue({ client: slow });
    opened.push(queue);
    const seen: string[] = [];
    let running = 0;
    let overlapped = false;
    queue.consume<{ n: number }>(
      'orders',
      'g',
      async (m) => {
        if (++running > 1) overlapped = true;
        seen.push(`${m.payload.n}@${m.attempt}`);
        if (m.payload.n === 1) arm();
        await new Promise((resolve) => setTimeout(resolve, 50));
        running--;
      },
      { ordered: true, maxAttempts: 5, visibilityMs: 1000 },
    );
    for (let n = 1; n <= 3; n++) await queue.send('orders', { n }, { key: 'k', id: `m${n}` });
    await until(() => expect(seen.some((s) => s.startsWith('3@'))).toBe(true), 15_000);
    const said = `seen ${JSON.stringify(seen)}`;
    // Message 2 once — by the partition's next owner, as its second delivery — then message 3.
    expect(
      seen.filter((s) => s.startsWith('2@')),
      said,
    ).toEqual(['2@2']);
    expect(
      seen.map((s) => s.split('@')[0]),
      said,
    ).toEqual(['1', '2', '3']);
    expect(overlapped, said).toBe(false);
  });
});
