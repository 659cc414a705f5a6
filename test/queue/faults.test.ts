/**
 * Server-side faults the chaos suite does not script: Redis out of memory under `noeviction`
 * (`maxmemory` set below what it uses, so every write that may grow memory is refused with
 * `OOM`), and foreign data of the wrong type at the keys a partition uses besides its stream.
 * Each test states what must hold while the fault lasts — nothing lost, nothing half-applied, no
 * partition wedged — and, where it matters, once it is gone.
 *
 * Redis 7.0 refuses a script without flags (`EVAL` of a script with no `#!lua` line) for memory
 * only at its first write that may grow memory (`denyoom`), and only while nothing was written
 * before it: once a script has written anything, its later writes all run (a script cannot be
 * stopped half-way). A command inside `MULTI` is checked the same way at `EXEC`, on its own.
 */
import { afterEach, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { Outbox, Queue, isQueueRedisError, type DeadLetterEvent } from '../../src/queue/index.js';
import { dedupKey, leaseKey, membersKey, partitionOf } from '../../src/queue/codec.js';
import { invalidOption, until } from '../support/helpers.js';
import { isInvalidOptionError } from '../../src/core/index.js';
import { describeRedis, useRedis } from '../support/vitest.js';

/** Out of memory under `noeviction`: every `denyoom` write is refused until {@link memoryBack}. */
async function outOfMemory(admin: Redis): Promise<void> {
  await admin.config('SET', 'maxmemory-policy', 'noeviction');
  await admin.config('SET', 'maxmemory', '1');
}

async function memoryBack(admin: Redis): Promise<void> {
  await admin.config('SET', 'maxmemory', '0');
}

/** Redis's clock, ms. */
async function serverMs(admin: Redis): Promise<number> {
  const [s, us] = await admin.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

/** A key (`k0`, `k1`, …) whose messages go to partition `p` of `n`. */
function keyOf(p: number, n: number): string {
  for (let i = 0; ; i++) if (partitionOf(`k${i}`, n) === p) return `k${i}`;
}

describeRedis('keel/queue under faults the chaos suite does not script', () => {
  const redis = useRedis({ count: 1 });
  const opened: { close(): Promise<void> }[] = [];

  afterEach(async () => {
    const admin = redis().client(0);
    await memoryBack(admin);
    await admin.call('CLIENT', 'UNPAUSE');
    for (const q of opened.splice(0)) await q.close();
    await redis().flushAll();
  });

  it('out of memory: a send is refused with a typed error saying so, and leaves no dedup record', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    await queue.send('orders', { n: 0 }, { id: 'warm' }); // the send script is cached
    await outOfMemory(admin);
    const error = await queue.send('orders', { n: 1 }, { id: 'm1' }).catch((e: unknown) => e);
    const plain = await queue.send('orders', { n: 2 }).catch((e: unknown) => e);
    await memoryBack(admin);
    expect(isQueueRedisError(error) && error.failure).toBe('out-of-memory');
    expect(isQueueRedisError(plain) && plain.failure).toBe('out-of-memory');
    // Nothing was written: the same id is sent now, not answered as a duplicate.
    expect((await queue.send('orders', { n: 1 }, { id: 'm1' })).status).toBe('sent');
    expect(await admin.xlen(queue.keys('orders', 0).stream)).toBe(2);
  });

  it('out of memory part-way through a sendMany: the batch lands whole or not at all, so sending it again duplicates nothing', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin, partitions: 2 });
    opened.push(queue);
    await queue.send('orders', 'warm', { id: 'warm', delayMs: 60_000 }); // the send script is cached
    // Room for a few of the batch's messages but not all: a batch written command by command
    // is refused from the message that finds memory full on.
    const info = await admin.info('memory');
    const used = Number(/used_memory:(\d+)/.exec(info)?.[1]);
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', String(used + 128 * 1024));
    const big = 'x'.repeat(16 * 1024);
    const items = Array.from({ length: 40 }, (_, n) => ({
      payload: `${big}${n}`,
      key: `k${n % 4}`,
      // Plain sends, sends with an id (dedup) and delayed ones, in both partitions.
      ...(n % 3 === 1 ? { id: `m${n}` } : {}),
      ...(n % 5 === 2 ? { delayMs: 60_000 } : {}),
    }));
    const error = await queue.sendMany('orders', items).catch((e: unknown) => e);
    await memoryBack(admin);
    /** Messages in the streams and delayed sets (the warm-up's excluded), and dedup records. */
    const landed = async (): Promise<number> => {
      let n = -1;
      for (const p of [0, 1]) {
        n += await admin.xlen(queue.keys('orders', p).stream);
        n += await admin.zcard(queue.keys('orders', p).delayed);
      }
      return n;
    };
    expect(isQueueRedisError(error) && error.failure).toBe('out-of-memory');
    expect(await landed()).toBe(0);
    // Nothing was recorded either: sent again, every message lands once, none a duplicate.
    const results = await queue.sendMany('orders', items);
    expect(results.filter((r) => r.status === 'duplicate')).toEqual([]);
    expect(await landed()).toBe(items.length);
  });

  it('out of memory part-way through a plain sendMany (one stream, no ids, no delays: MULTI … EXEC): refused whole', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const stream = queue.keys('orders', 0).stream;
    const info = await admin.info('memory');
    const used = Number(/used_memory:(\d+)/.exec(info)?.[1]);
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', String(used + 128 * 1024));
    const big = 'x'.repeat(16 * 1024);
    const items = Array.from({ length: 40 }, (_, n) => ({ payload: `${big}${n}` }));
    const error = await queue.sendMany('orders', items).catch((e: unknown) => e);
    await memoryBack(admin);
    expect(isQueueRedisError(error) && error.failure, String(error)).toBe('out-of-memory');
    expect(await admin.xlen(stream)).toBe(0);
    await queue.sendMany('orders', items);
    expect(await admin.xlen(stream)).toBe(items.length);
  });

  it('foreign data at the stream of a plain sendMany: refused naming the stream, nothing written', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const stream = queue.keys('orders', 0).stream;
    await admin.set(stream, 'foreign');
    const error = await queue
      .sendMany('orders', [{ payload: 1 }, { payload: 2 }])
      .catch((e: unknown) => e);
    expect(isQueueRedisError(error), String(error)).toBe(true);
    expect(String(error)).toContain(stream);
    expect(String(error)).toMatch(/WRONGTYPE.*nothing of the batch was sent/);
    expect(await admin.keys('*')).toEqual([stream]);
    expect(await admin.get(stream)).toBe('foreign');
  });

  it('foreign data at a key a sendMany writes: the batch is refused whole with a typed error naming the key', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin, partitions: 2 });
    opened.push(queue);
    const delayed = queue.keys('orders', 1).delayed;
    await admin.set(delayed, 'foreign');
    const items = [0, 1, 2, 3].map((n) => ({
      payload: n,
      key: keyOf(n % 2, 2),
      id: `m${n}`,
      // Partition 0's go to its stream, partition 1's to the foreign delayed set.
      ...(n % 2 === 1 ? { delayMs: 60_000 } : {}),
    }));
    const error = await queue.sendMany('orders', items).catch((e: unknown) => e);
    expect(isQueueRedisError(error)).toBe(true);
    expect(String(error)).toContain(delayed);
    expect(String(error)).toMatch(/WRONGTYPE/);
    // Nothing written: no message, no dedup record; the foreign data is left as it was.
    expect(await admin.xlen(queue.keys('orders', 0).stream)).toBe(0);
    expect(await admin.keys('*')).toEqual([delayed]);
    expect(await admin.get(delayed)).toBe('foreign');
  });

  it('outbox: memory running out between staging and EXEC writes neither the business state nor the message', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const outbox = new Outbox(queue);
    await admin.set('cart:7', 'full');
    // A transaction sent command by command (ioredis `multi({ pipeline: false })`): the business
    // write queued, the message staged, then memory runs out (other clients' writes) before EXEC.
    const tx = redis().client(0);
    await tx.multi({ pipeline: false });
    await tx.del('cart:7');
    let queued: unknown;
    outbox.stage(
      {
        eval: (...args: Parameters<Redis['eval']>) => (queued = tx.eval(...args)),
      },
      'carts',
      { cart: 7, cleared: true },
      { key: 'cart:7', id: 'cart-7-cleared' },
    );
    await queued;
    await outOfMemory(admin);
    const reply = await tx.exec().catch((error: unknown) => error);
    await memoryBack(admin);
    const deleted = (await admin.exists('cart:7')) === 0;
    const stream = queue.keys('carts', 0).stream;
    const sent = (await admin.xlen(stream)) === 1;
    // Both or neither: here neither (EXEC refused as a whole), the caller told.
    expect({ deleted, sent }).toEqual({ deleted: false, sent: false });
    expect(String(reply)).toMatch(/OOM/);
  });

  it('out of memory: a message that fails its last attempt is still dead-lettered, once', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    let calls = 0;
    const events: DeadLetterEvent[] = [];
    const consumer = queue.consume(
      'orders',
      'g',
      async () => {
        calls++;
        if (calls === 1) await outOfMemory(admin);
        throw new Error('always fails');
      },
      { maxAttempts: 1, visibilityMs: 500 },
    );
    consumer.onDeadLetter((e) => events.push(e));
    await queue.send('orders', { n: 1 }, { id: 'm1' });
    // Moving a message to the DLQ stream frees its stream entry: it needs no more memory than
    // it holds, and it must not wait for memory (the message would be delivered again meanwhile).
    await until(async () => {
      expect(await admin.xlen(queue.keys('orders', 0).dlq)).toBe(1);
      expect(events.map((e) => [e.id, e.reason])).toEqual([['m1', 'failed']]);
    }, 10_000);
    expect(calls).toBe(1);
    const pending = (await admin.xpending(queue.keys('orders', 0).stream, 'g')) as [number];
    expect(pending[0]).toBe(0);
  });

  it('foreign data at a dedup key is not taken for a send already made: the message is sent', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const keys = queue.keys('orders', 0);
    await admin.hset(dedupKey('keel:q', keys, 'm1'), 'foreign', 'data');
    await admin.set(dedupKey('keel:q', keys, 'm2'), 'not a keel record');
    expect((await queue.send('orders', { n: 1 }, { id: 'm1' })).status).toBe('sent');
    expect((await queue.send('orders', { n: 2 }, { id: 'm2', delayMs: 1 })).status).toBe('delayed');
    // Now recorded: the same ids again are duplicates.
    expect((await queue.send('orders', { n: 1 }, { id: 'm1' })).status).toBe('duplicate');
    expect((await queue.send('orders', { n: 2 }, { id: 'm2' })).status).toBe('duplicate');
    expect(await admin.xlen(keys.stream)).toBe(1);
  });

  it('foreign data at the stream or delayed set: a send with an id is refused naming the key, and leaves no dedup record', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const { stream, delayed } = queue.keys('orders', 0);
    await admin.set(stream, 'foreign');
    await admin.set(delayed, 'foreign');
    const now = await queue.send('orders', 1, { id: 'm1' }).catch((e: unknown) => e);
    const later = await queue
      .send('orders', 2, { id: 'm2', delayMs: 60_000 })
      .catch((e: unknown) => e);
    expect(isQueueRedisError(now) && String(now)).toMatch(/WRONGTYPE.*\{orders:0\}:s/);
    expect(isQueueRedisError(later) && String(later)).toMatch(/WRONGTYPE.*\{orders:0\}:d/);
    // Nothing of either send stayed: once the keys are clean, the same ids are sent (not
    // answered as duplicates of sends that never happened).
    expect((await admin.keys('*')).sort()).toEqual([delayed, stream].sort());
    await admin.del(stream, delayed);
    expect((await queue.send('orders', 1, { id: 'm1' })).status).toBe('sent');
    expect((await queue.send('orders', 2, { id: 'm2', delayMs: 60_000 })).status).toBe('delayed');
  });

  it('foreign data at the DLQ key: a message that used up its attempts is still dead-lettered, once', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    await admin.set(queue.keys('orders', 0).dlq, 'foreign');
    let calls = 0;
    const events: DeadLetterEvent[] = [];
    const consumer = queue.consume(
      'orders',
      'g',
      () => {
        calls++;
        throw new Error('always fails');
      },
      { maxAttempts: 1, visibilityMs: 300 },
    );
    consumer.onDeadLetter((e) => events.push(e));
    await queue.send('orders', { n: 1 }, { id: 'm1' });
    await until(() => expect(events.map((e) => e.id)).toEqual(['m1']), 10_000);
    expect((await queue.deadLetters('orders')).map((l) => l.id)).toEqual(['m1']);
    expect(calls).toBe(1);
  });

  it('foreign data at the stream: replay refuses, naming the key, and the dead letter stays in the DLQ', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const { stream, dlq } = queue.keys('orders', 0);
    // A dead letter as a consumer leaves it, then the stream key replaced by foreign data.
    await admin.xadd(
      dlq,
      '*',
      ...['v', '1', 'i', 'm1', 'k', '', 'p', '1', 'h', '', 't', '0'],
      ...['x:reason', 'failed', 'x:error', 'boom', 'x:attempts', '1', 'x:group', 'g'],
    );
    await admin.set(stream, 'foreign');
    const error = await queue.replay('orders').catch((e: unknown) => e);
    expect(isQueueRedisError(error) && String(error)).toMatch(/WRONGTYPE.*\{orders:0\}:s/);
    expect((await queue.deadLetters('orders')).map((l) => l.id)).toEqual(['m1']);
  });

  it('foreign data at the delayed set: a retry is not lost (the retried copy goes to the stream)', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    await admin.set(queue.keys('orders', 0).delayed, 'foreign');
    const attempts: number[] = [];
    const errors: unknown[] = [];
    const consumer = queue.consume(
      'orders',
      'g',
      (m) => {
        attempts.push(m.attempt);
        if (m.attempt === 1) throw new Error('fails once');
      },
      { maxAttempts: 3, visibilityMs: 2000, backoff: () => 20 },
    );
    consumer.onError((e) => errors.push(e));
    await queue.send('orders', { n: 1 }, { id: 'm1' });
    await until(() => expect(attempts).toEqual([1, 2]), 10_000);
    // Reported, not hidden: the foreign key is named by the errors.
    await until(() => expect(errors.map(String).join('\n')).toMatch(/WRONGTYPE/), 10_000);
    expect(await queue.deadLetters('orders')).toEqual([]);
  });

  it("foreign data at one partition's delayed set does not stop the sweep of the others (reclaims go on)", async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin, partitions: 2 });
    opened.push(queue);
    await admin.set(queue.keys('orders', 0).delayed, 'foreign');
    // A message of partition 1 delivered to a consumer that died before acking it.
    const stream = queue.keys('orders', 1).stream;
    await admin.xgroup('CREATE', stream, 'g', '0', 'MKSTREAM');
    await queue.send('orders', { n: 1 }, { key: keyOf(1, 2), id: 'm1' });
    await admin.xreadgroup('GROUP', 'g', 'dead', 'COUNT', 1, 'STREAMS', stream, '>');
    const seen: string[] = [];
    const errors: unknown[] = [];
    const consumer = queue.consume(
      'orders',
      'g',
      (m) => {
        seen.push(m.id);
      },
      { visibilityMs: 200 },
    );
    consumer.onError((e) => errors.push(e));
    await until(() => expect(seen).toEqual(['m1']), 10_000);
    expect(errors.map(String).join('\n')).toMatch(/WRONGTYPE/);
  });

  it("ordered: foreign data at one partition's lease key wedges neither that partition nor the others", async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin, partitions: 2 });
    opened.push(queue);
    await admin.hset(leaseKey('keel:q', queue.keys('orders', 0), 'g'), 'foreign', 'data');
    const seen: string[] = [];
    queue.consume(
      'orders',
      'g',
      (m) => {
        seen.push(m.id);
      },
      { ordered: true, visibilityMs: 1000 },
    );
    await queue.send('orders', { n: 0 }, { key: keyOf(0, 2), id: 'p0' });
    await queue.send('orders', { n: 1 }, { key: keyOf(1, 2), id: 'p1' });
    await until(() => expect([...seen].sort()).toEqual(['p0', 'p1']), 10_000);
  });

  it("ordered: a member-set heartbeat refused for another reason than foreign data (ACL) keeps the group's members and is reported", async () => {
    const admin = redis().client(0);
    await admin.call(
      'ACL',
      'SETUSER',
      'no-zrem',
      'on',
      '>pw',
      '~*',
      '&*',
      '+@all',
      '-zremrangebyscore',
    );
    const client = redis().client(0, { username: 'no-zrem', password: 'pw' });
    const queue = new Queue({ client });
    opened.push(queue);
    const key = membersKey('keel:q', 'orders', 'g');
    await admin.zadd(key, (await serverMs(admin)) + 600_000, 'other');
    const errors: unknown[] = [];
    const consumer = queue.consume('orders', 'g', () => undefined, {
      ordered: true,
      visibilityMs: 1000,
    });
    consumer.onError((e) => errors.push(e));
    // Until the heartbeat either joined the group or was refused.
    await until(async () => {
      expect(
        errors.length + Number((await admin.zscore(key, consumer.name)) !== null),
      ).toBeGreaterThan(0);
    }, 10_000);
    // The other member's entry is real data: kept. The refusal is reported as it was.
    expect(await admin.zrange(key, '0', '-1')).toEqual(['other']);
    expect(isQueueRedisError(errors[0])).toBe(true);
    expect(String(errors[0])).toMatch(/zremrangebyscore/i);
    await queue.close();
    await admin.call('ACL', 'DELUSER', 'no-zrem');
  });

  it('a retry whose delayed set refused the copy for another reason than foreign data (ACL) is reported with that reason, and not lost', async () => {
    const admin = redis().client(0);
    await admin.call('ACL', 'SETUSER', 'no-zadd', 'on', '>pw', '~*', '&*', '+@all', '-zadd');
    const queue = new Queue({ client: redis().client(0, { username: 'no-zadd', password: 'pw' }) });
    opened.push(queue);
    const attempts: number[] = [];
    const errors: unknown[] = [];
    const consumer = queue.consume(
      'orders',
      'g',
      (m) => {
        attempts.push(m.attempt);
        if (m.attempt === 1) throw new Error('fails once');
      },
      { maxAttempts: 3, visibilityMs: 2000, backoff: () => 20 },
    );
    consumer.onError((e) => errors.push(e));
    await queue.send('orders', { n: 1 }, { id: 'm1' });
    await until(() => expect(attempts).toEqual([1, 2]), 10_000);
    await until(() => expect(errors.length).toBeGreaterThan(0), 10_000);
    const retry = errors.find((e) => isQueueRedisError(e) && e.operation === 'retry orders');
    expect(String(retry)).toMatch(/zadd/i);
    expect(String(retry)).not.toMatch(/WRONGTYPE|not a sorted set/);
    expect(await queue.deadLetters('orders')).toEqual([]);
    await queue.close();
    await admin.call('ACL', 'DELUSER', 'no-zadd');
  });

  it("ordered: foreign data at the group's member set does not keep every consumer off every partition", async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    await admin.set(membersKey('keel:q', 'orders', 'g'), 'foreign');
    const seen: string[] = [];
    queue.consume(
      'orders',
      'g',
      (m) => {
        seen.push(m.id);
      },
      { ordered: true, visibilityMs: 1000 },
    );
    await queue.send('orders', { n: 0 }, { key: 'k', id: 'm1' });
    await until(() => expect(seen).toEqual(['m1']), 10_000);
  });

  it('ordered: an owner keeps its partition while Redis is out of memory (no second delivery after)', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    // Both sent before anything runs out.
    await queue.send('orders', { n: 1 }, { key: 'k', id: 'm1' });
    await queue.send('orders', { n: 2 }, { key: 'k', id: 'm2' });
    const seen: string[] = [];
    const aborted: boolean[] = [];
    let began = 0;
    /** Until `ms` past the start of the fault, on Redis's clock (TIME is not refused). */
    const until_ = (ms: number): Promise<void> =>
      until(async () => {
        expect((await serverMs(admin)) - began).toBeGreaterThanOrEqual(ms);
      }, 20_000);
    queue.consume(
      'orders',
      'g',
      async (m) => {
        seen.push(m.id);
        // Memory runs out as m1 is handled, for 1.2 leases, over two handlers that each take
        // well under their visibility timeout; it comes back at the end of m2's.
        if (m.id === 'm1' && began === 0) {
          await outOfMemory(admin);
          began = await serverMs(admin);
          await until_(1800);
        } else if (m.id === 'm2' && aborted.length === 0) {
          await until_(3600);
          aborted.push(m.signal.aborted);
          await memoryBack(admin);
        }
      },
      { ordered: true, visibilityMs: 3000 },
    );
    const stream = queue.keys('orders', 0).stream;
    await until(async () => {
      expect(seen).toContain('m2');
      expect(((await admin.xpending(stream, 'g')) as [number])[0]).toBe(0);
    }, 30_000);
    expect(aborted).toEqual([false]);
    expect(seen).toEqual(['m1', 'm2']);
  });

  for (const ordered of [false, true]) {
    const mode = ordered ? 'ordered' : 'unordered';
    it(`${mode}: SCRIPT FLUSH several times while messages flow loses, repeats and dead-letters nothing`, async () => {
      const admin = redis().client(0);
      const queue = new Queue({ client: redis().client(0), partitions: 2 });
      opened.push(queue);
      const seen = new Map<string, number>();
      const flushes: number[] = [];
      queue.consume(
        'orders',
        'g',
        async (m) => {
          seen.set(m.id, (seen.get(m.id) ?? 0) + 1);
          // The server forgets every script while handlers run, acks and retries are in flight.
          if (flushes.length < 4 && seen.size % 10 === 0) {
            flushes.push(seen.size);
            await admin.script('FLUSH');
          }
          if (m.attempt === 1 && m.payload === 7) throw new Error('fails once');
        },
        { ordered, visibilityMs: 5000, backoff: () => 10, maxAttempts: 3 },
      );
      const ids: string[] = [];
      for (let n = 0; n < 60; n++) {
        const id = `m${n}`;
        ids.push(id);
        // Sends with ids (the dedup script) and delayed ones, interleaved with the flushes.
        if (n % 3 === 0) await queue.send('orders', n, { key: `k${n % 5}`, id });
        else if (n % 3 === 1) await queue.send('orders', n, { key: `k${n % 5}`, id, delayMs: 5 });
        else {
          // Two at once: one call of the send script for both.
          ids.push(`${id}b`);
          await queue.sendMany('orders', [
            { payload: n, key: `k${n % 5}`, id },
            { payload: -n, key: `k${n % 5}`, id: `${id}b` },
          ]);
        }
        if (n % 20 === 10) await admin.script('FLUSH');
      }
      await until(() => {
        expect([...seen.keys()].sort()).toEqual([...ids].sort());
        expect(seen.get('m7')).toBe(2);
      }, 20_000);
      expect(flushes.length).toBeGreaterThan(0);
      // Each message once, but the one that failed once (twice).
      expect([...seen].filter(([, n]) => n !== 1)).toEqual([['m7', 2]]);
      expect(await queue.deadLetters('orders')).toEqual([]);
      for (const p of [0, 1]) {
        await until(async () => {
          const pending = (await admin.xpending(queue.keys('orders', p).stream, 'g')) as [number];
          expect(pending[0]).toBe(0);
        }, 10_000);
      }
    });
  }
  it("ordered: writes paused (CLIENT PAUSE WRITE) past the lease: a message goes to another handler only once the first one's signal aborted, and order holds", async () => {
    const admin = redis().client(0);
    const order: string[] = [];
    /** Per delivery of m1: were all earlier deliveries' signals aborted when it began? */
    const earlierAborted: boolean[] = [];
    const m1Signals: AbortSignal[] = [];
    const handler = async (m: { id: string; signal: AbortSignal }): Promise<void> => {
      order.push(m.id);
      if (m.id !== 'm1') return;
      earlierAborted.push(m1Signals.every((signal) => signal.aborted));
      m1Signals.push(m.signal);
      if (m1Signals.length === 1) {
        // Every write (scripts included) waits 2.5 s: no renewal of the 1 s lease lands.
        await admin.call('CLIENT', 'PAUSE', 2500, 'WRITE');
        await until(() => expect(m.signal.aborted).toBe(true), 10_000);
      }
    };
    const queues = [0, 1].map(() => new Queue({ client: redis().client(0) }));
    opened.push(...queues);
    for (const q of queues)
      q.consume('orders', 'g', handler, { ordered: true, visibilityMs: 1000 });
    const [queue] = queues as [Queue];
    await queue.send('orders', 1, { key: 'k', id: 'm1' });
    await queue.send('orders', 2, { key: 'k', id: 'm2' });
    await until(() => expect(order).toContain('m2'), 20_000);
    expect(earlierAborted.every(Boolean)).toBe(true);
    expect(order.at(-1)).toBe('m2');
    expect(order.filter((id) => id === 'm2')).toHaveLength(1);
    expect(await queue.deadLetters('orders')).toEqual([]);
  });

  it('outbox: bad stage options are a typed error naming them, and nothing is queued in the transaction', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin, partitions: 2 });
    opened.push(queue);
    const outbox = new Outbox(queue);
    // As a transaction shows it: a delay that is not a number, found only inside EXEC, fails
    // the message there, after the business write was applied.
    await admin.set('cart:8', 'full');
    const multi = admin.multi();
    multi.del('cart:8');
    let error: unknown;
    try {
      outbox.stage(multi, 'carts', { n: 1 }, { delayMs: 'soon' as never, id: 'c8' });
      await multi.exec();
    } catch (e) {
      error = e;
    }
    const sent = await admin.xlen(queue.keys('carts', partitionOf('c8', 2)).stream);
    expect({ deleted: (await admin.exists('cart:8')) === 0, sent }).toEqual({
      deleted: false,
      sent: 0,
    });
    expect(isInvalidOptionError(error)).toBe(true);
    let queued = 0;
    const tx = { eval: () => queued++ };
    const bad: [string, unknown][] = [
      ['delayMs', { delayMs: 'soon' }],
      ['delayMs', { delayMs: -1 }],
      ['id', { id: 5 }],
      ['id', { id: '' }],
      ['key', { key: 7 }],
      ['headers', { headers: { trace: 1 } }],
      ['nope', { nope: true }],
    ];
    for (const [option, options] of bad) {
      expect(invalidOption(() => outbox.stage(tx, 'carts', 1, options as never)).option).toBe(
        option,
      );
    }
    expect(queued).toBe(0);
  });

  it('hashTag: a key that is not a string is a typed error naming it, with any number of partitions', () => {
    for (const partitions of [1, 4]) {
      const queue = new Queue({ client: redis().client(0), partitions });
      opened.push(queue);
      for (const key of [42, undefined, null, {}]) {
        expect(invalidOption(() => queue.hashTag('orders', key as never)).option).toBe('keyOrId');
      }
      expect(queue.hashTag('orders', 'k')).toMatch(/^\{orders:\d\}$/);
    }
  });
});
