/**
 * Foreign or corrupted data at the keys a queue reads, written by another program (or by a bug
 * elsewhere): it is quarantined — kept in the partition's dead-letter stream with reason
 * `invalid` and its raw value, and reported through `onDeadLetter` — never trusted, never
 * silently dropped, and it never keeps the valid data around it from flowing.
 */
import { afterEach, expect, it } from 'vitest';
import { Queue, isInvalidMessageError, type DeadLetterEvent } from '../../src/queue/index.js';
import {
  dedupKey,
  encodeFields,
  leaseKey,
  membersKey,
  partitionOf,
} from '../../src/queue/codec.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

/** A key (`k0`, `k1`, …) whose messages go to partition `p` of `n`. */
function keyOf(p: number, n: number): string {
  for (let i = 0; ; i++) if (partitionOf(`k${i}`, n) === p) return `k${i}`;
}

/** A delayed-set member as Keel writes it: the message's fields as a JSON array. */
const delayedMember = (id: string, n: number): string =>
  JSON.stringify(
    encodeFields({ id, key: '', payload: JSON.stringify({ n }), headers: '', sentAt: 0 }),
  );

describeRedis('keel/queue against foreign data', () => {
  const redis = useRedis({ count: 1 });
  const opened: { close(): Promise<void> }[] = [];

  afterEach(async () => {
    for (const q of opened.splice(0)) await q.close();
    await redis().flushAll();
  });

  it('malformed delayed entries are quarantined to the DLQ and reported, and the valid ones around them are delivered', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const { delayed } = queue.keys('orders', 0);
    const malformed = [
      'not json',
      '{"a":1}',
      '"a JSON string"',
      '[]',
      '["odd","count","of fields"]',
      '[["nested"],"x"]',
      '["v",1]',
      '["v",null]',
      JSON.stringify(Array.from({ length: 10_000 }, (_, i) => `f${i}`)),
    ];
    // All due: valid messages before, between and after the malformed ones (by score).
    await admin.zadd(delayed, 0, delayedMember('first', 1));
    for (const [i, m] of malformed.entries()) await admin.zadd(delayed, 1 + i, m);
    await admin.zadd(delayed, 100, delayedMember('last', 2));
    const seen: string[] = [];
    const events: DeadLetterEvent[] = [];
    const consumer = queue.consume(
      'orders',
      'g',
      (m) => {
        seen.push(m.id);
      },
      { visibilityMs: 400 },
    );
    consumer.onDeadLetter((e) => events.push(e));
    await until(() => expect(seen.sort()).toEqual(['first', 'last']), 10_000);
    await until(() => expect(events).toHaveLength(malformed.length), 10_000);
    expect(await admin.zcard(delayed)).toBe(0);
    for (const e of events) {
      expect(e).toMatchObject({ reason: 'invalid', id: undefined, group: 'g', topic: 'orders' });
      expect(e.error).toMatch(/delayed/);
    }
    const letters = await queue.deadLetters('orders');
    expect(letters.map((l) => l.reason)).toEqual(malformed.map(() => 'invalid'));
    // Kept as they were, to inspect: the raw member, whole.
    expect(letters.map((l) => l.fields['x:raw']).sort()).toEqual([...malformed].sort());
    // Never replayed as messages.
    expect(await queue.replay('orders')).toBe(0);
  });

  it('a malformed delayed entry meeting foreign data at the DLQ key is still quarantined (the foreign key replaced), and reported', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const { delayed, dlq } = queue.keys('orders', 0);
    await admin.set(dlq, 'foreign');
    await admin.zadd(delayed, 0, '["odd"]', 1, delayedMember('m1', 1));
    const seen: string[] = [];
    const events: DeadLetterEvent[] = [];
    const consumer = queue.consume(
      'orders',
      'g',
      (m) => {
        seen.push(m.id);
      },
      { visibilityMs: 400 },
    );
    consumer.onDeadLetter((e) => events.push(e));
    await until(() => expect(seen).toEqual(['m1']), 10_000);
    await until(() => expect(events.map((e) => e.reason)).toEqual(['invalid']), 10_000);
    expect((await queue.deadLetters('orders')).map((l) => l.fields['x:raw'])).toEqual(['["odd"]']);
    expect(await admin.zcard(delayed)).toBe(0);
  });

  for (const ordered of [false, true]) {
    it(`${ordered ? 'ordered' : 'unordered'}: foreign data at one partition's stream key does not keep the consumer off the other partitions`, async () => {
      const admin = redis().client(0);
      const queue = new Queue({ client: admin, partitions: 2 });
      opened.push(queue);
      await admin.set(queue.keys('orders', 0).stream, 'foreign');
      const key = keyOf(1, 2);
      await queue.send('orders', { n: 1 }, { key, id: 'm1' });
      const seen: string[] = [];
      const errors: unknown[] = [];
      const consumer = queue.consume(
        'orders',
        'g',
        (m) => {
          seen.push(m.id);
        },
        { ordered, visibilityMs: 1000 },
      );
      consumer.onError((e) => errors.push(e));
      await until(() => expect(seen).toEqual(['m1']), 10_000);
      // Reported, naming the key's trouble.
      await until(() => expect(errors.map(String).join('\n')).toMatch(/WRONGTYPE/), 10_000);
      // Once the foreign data is gone, the partition works again.
      await admin.del(queue.keys('orders', 0).stream);
      await queue.send('orders', { n: 2 }, { key: keyOf(0, 2), id: 'm2' });
      await until(() => expect(seen).toEqual(['m1', 'm2']), 10_000);
    });
  }

  it('ordered: a foreign string without an expiry at a partition lease key does not keep that partition from every consumer for good', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin, partitions: 2 });
    opened.push(queue);
    // Keel's leases always expire (SET … PX, PEXPIRE): a string that never does is not one.
    await admin.set(leaseKey('keel:q', queue.keys('orders', 0), 'g'), 'someone');
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

  it('a foreign "1" without an expiry at a dedup key is not taken for a send already made: the message is sent', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const keys = queue.keys('orders', 0);
    // Keel's dedup records always expire (SET … PX dedupWindowMs): one that never does is not one.
    await admin.set(dedupKey('keel:q', keys, 'm1'), '1');
    expect((await queue.send('orders', { n: 1 }, { id: 'm1' })).status).toBe('sent');
    expect(
      (await queue.sendMany('orders', [{ payload: 2, id: 'm1' }])).map((r) => r.status),
    ).toEqual(['duplicate']);
    expect(await admin.xlen(keys.stream)).toBe(1);
    expect(await admin.pttl(dedupKey('keel:q', keys, 'm1'))).toBeGreaterThan(0);
  });

  it('a message whose entry has extra fields before its own is dead-lettered whole: listed with its id and payload, and replayable', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const { stream } = queue.keys('orders', 0);
    // A Keel message as another writer laid it out: its fields after twelve of its own.
    const junk = Array.from({ length: 12 }, (_, i) => `x${i}`);
    await admin.xadd(
      stream,
      '*',
      ...junk,
      'v',
      '1',
      'i',
      'm1',
      'k',
      '',
      'p',
      '{"n":1}',
      'h',
      '',
      't',
      '0',
    );
    let healthy = false;
    const handled: string[] = [];
    queue.consume(
      'orders',
      'g',
      (m) => {
        if (!healthy) throw new Error('boom');
        handled.push(`${m.id}:${JSON.stringify(m.payload)}`);
      },
      { maxAttempts: 1, visibilityMs: 1000 },
    );
    await until(async () => expect(await queue.deadLetters('orders')).toHaveLength(1), 10_000);
    const [letter] = await queue.deadLetters('orders');
    expect(letter).toMatchObject({ reason: 'failed', id: 'm1', payload: { n: 1 } });
    healthy = true;
    expect(await queue.replay('orders')).toBe(1);
    await until(() => expect(handled).toEqual(['m1:{"n":1}']), 10_000);
  });

  it("ordered: foreign members in the group's member set (no consumer's name) do not keep every consumer off every partition", async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin, partitions: 2 });
    opened.push(queue);
    // Never expiring (score +inf), so the heartbeat's sweep of expired members keeps them.
    await admin.zadd(
      membersKey('keel:q', 'orders', 'g'),
      'inf',
      '',
      'inf',
      'a b',
      'inf',
      'x\uD800',
    );
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

  it('a pending message deleted from the stream by someone else (XDEL) is reported when it is reclaimed, not acked in silence', async () => {
    const admin = redis().client(0);
    const queue = new Queue({ client: admin });
    opened.push(queue);
    const stream = queue.keys('orders', 0).stream;
    await admin.xgroup('CREATE', stream, 'g', '0', 'MKSTREAM');
    const { entryId } = await queue.send('orders', 1, { id: 'm1' });
    await admin.xreadgroup('GROUP', 'g', 'dead', 'COUNT', 1, 'STREAMS', stream, '>');
    await admin.xdel(stream, entryId as string);
    const errors: unknown[] = [];
    const consumer = queue.consume('orders', 'g', () => undefined, { visibilityMs: 200 });
    consumer.onError((e) => errors.push(e));
    await until(() => {
      const found = errors.find(isInvalidMessageError);
      expect(found?.entryId).toBe(entryId);
      expect(found?.reason).toMatch(/deleted/);
    }, 10_000);
    expect(Number((await admin.xpending(stream, 'g'))[0])).toBe(0);
  });
});
