/**
 * Property tests of keel/queue's invariants on a real redis-server: retention never trims a
 * pending or undelivered entry; dedup enqueues each id once; a delayed message is never
 * delivered early (by Redis server time); a message ends either handled-and-acked or in the
 * dead-letter stream — never both, never neither, never still pending; only the newest delivery
 * of a message settles it.
 */
import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { afterAll, expect, it } from 'vitest';
import { run } from '../../src/queue/client.js';
import { Queue } from '../../src/queue/index.js';
import { TRIM_DONE } from '../../src/queue/scripts.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

describeRedis('keel/queue properties', () => {
  const redis = useRedis({ count: 1 });
  let client: Redis | undefined;
  const clientOf = (): Redis => (client ??= redis().client(0));
  afterAll(() => client?.disconnect());

  const serverMs = async (): Promise<number> => {
    const [s, us] = (await clientOf().time()) as [string | number, string | number];
    return Number(s) * 1000 + Math.floor(Number(us) / 1000);
  };

  it('retention never trims a pending or undelivered entry, and trims to maxLen when all is acked', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 40 }),
        fc.array(fc.record({ read: fc.nat(40), ackEvery: fc.integer({ min: 1, max: 4 }) }), {
          minLength: 1,
          maxLength: 2,
        }),
        fc.integer({ min: 1, max: 10 }),
        async (sends, groups, maxLen) => {
          const c = clientOf();
          await c.flushall();
          const queue = new Queue({ client: c, retention: { maxLen } });
          const stream = queue.keys('t', 0).stream;
          for (let i = 0; i < sends; i++) await queue.send('t', i);
          const mustKeep = new Set<string>();
          const all = (await c.xrange(stream, '-', '+')).map(([id]) => id);
          for (const [g, spec] of groups.entries()) {
            await c.xgroup('CREATE', stream, `g${g}`, '0');
            const read = Math.min(spec.read, sends);
            if (read > 0) {
              const reply = await c.call(
                'XREADGROUP',
                'GROUP',
                `g${g}`,
                'c',
                'COUNT',
                read,
                'STREAMS',
                stream,
                '>',
              );
              const entries = extract(reply);
              entries.forEach((id, i) => {
                if (i % spec.ackEvery === 0) void c.xack(stream, `g${g}`, id);
                else mustKeep.add(id);
              });
            }
            for (const id of all.slice(read)) mustKeep.add(id); // undelivered to this group
          }
          await c.ping();
          await queue.trim('t');
          const left = new Set((await c.xrange(stream, '-', '+')).map(([id]) => id));
          for (const id of mustKeep) expect(left.has(id)).toBe(true);
          if (mustKeep.size === 0) expect(left.size).toBeLessThanOrEqual(maxLen);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('the sweep’s trim of acked entries never removes a pending or undelivered one, and removes everything below what every group still needs (one group or several)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 30 }),
        fc.integer({ min: 1, max: 2 }),
        // Rounds of: read up to `read` new entries to a group, then ack those whose bit is set.
        fc.array(fc.record({ group: fc.nat(1), read: fc.nat(8), acks: fc.array(fc.boolean()) }), {
          maxLength: 6,
        }),
        async (sends, groups, rounds) => {
          const c = clientOf();
          await c.flushall();
          const queue = new Queue({ client: c });
          const stream = queue.keys('d', 0).stream;
          for (let i = 0; i < sends; i++) await queue.send('d', i);
          for (let g = 0; g < groups; g++)
            await c.xgroup('CREATE', stream, `g${g}`, '0', 'MKSTREAM');
          const all = (await c.xrange(stream, '-', '+')).map(([id]) => id);
          const pending = Array.from({ length: groups }, () => new Set<string>());
          const delivered = Array.from({ length: groups }, () => 0);
          for (const r of rounds) {
            const g = r.group % groups;
            if (r.read === 0) continue;
            const got = extract(
              await c.call(
                'XREADGROUP',
                'GROUP',
                `g${g}`,
                'c',
                'COUNT',
                r.read,
                'STREAMS',
                stream,
                '>',
              ),
            );
            delivered[g] = (delivered[g] ?? 0) + got.length;
            got.forEach((id, i) => {
              if (r.acks[i] === true) void c.xack(stream, `g${g}`, id);
              else pending[g]?.add(id);
            });
          }
          await c.ping();
          const mustKeep = new Set<string>();
          for (let g = 0; g < groups; g++) {
            for (const id of pending[g] ?? []) mustKeep.add(id);
            for (const id of all.slice(delivered[g])) mustKeep.add(id); // not yet delivered to g
          }
          const trimmed = Number(await run(c, 'trim', TRIM_DONE, [stream], []));
          const left = (await c.xrange(stream, '-', '+')).map(([id]) => id);
          for (const id of mustKeep) expect(left).toContain(id);
          expect(left.length).toBe(all.length - trimmed);
          // Exactly what every group is done with goes: each group is done below its oldest
          // pending entry, or (none pending) below its first undelivered one.
          let done = all.length;
          for (let g = 0; g < groups; g++) {
            const oldest = Math.min(...[...(pending[g] ?? [])].map((id) => all.indexOf(id)));
            done = Math.min(done, Number.isFinite(oldest) ? oldest : (delivered[g] ?? 0));
          }
          expect(left).toEqual(all.slice(done));
        },
      ),
      { numRuns: 60 },
    );
  });

  it('dedup: each id is enqueued once within the window, whatever the send order', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.constantFrom('a', 'b', 'c', 'd', 'e'), { maxLength: 30 }),
        async (ids) => {
          const c = clientOf();
          await c.flushall();
          const queue = new Queue({ client: c, partitions: 3 });
          const results = [];
          for (const id of ids) results.push(await queue.send('t', { id }, { id }));
          const firsts = ids.map((id, i) => ids.indexOf(id) === i);
          expect(results.map((r) => r.status)).toEqual(
            firsts.map((f) => (f ? 'sent' : 'duplicate')),
          );
          let total = 0;
          for (let p = 0; p < 3; p++) total += await c.xlen(queue.keys('t', p).stream);
          expect(total).toBe(new Set(ids).size);
        },
      ),
      { numRuns: 30 },
    );
  });

  it('delay: a delayed message is never delivered before its due time on the Redis clock', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 250 }), { minLength: 1, maxLength: 5 }),
        async (delays) => {
          const c = clientOf();
          await c.flushall();
          const queue = new Queue({ client: redis().client(0) });
          const due = new Map<string, number>();
          const early: string[] = [];
          const seen = new Set<string>();
          queue.consume(
            't',
            'g',
            async (m) => {
              const now = await serverMs();
              if (now < (due.get(m.id) ?? Infinity))
                early.push(`${m.id} at ${now}, due ${due.get(m.id)}`);
              seen.add(m.id);
            },
            { sweepMs: 10, visibilityMs: 5000 },
          );
          for (const [i, delayMs] of delays.entries()) {
            const before = await serverMs();
            due.set(`m${i}`, before + delayMs);
            await queue.send('t', i, { id: `m${i}`, delayMs });
          }
          await until(() => expect(seen.size).toBe(delays.length), 10_000);
          await queue.close();
          expect(early).toEqual([]);
        },
      ),
      { numRuns: 8 },
    );
  });

  it('DLQ atomicity: each message ends handled-and-acked or dead-lettered — exactly one, and nothing pending', async () => {
    const maxAttempts = 3;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: maxAttempts + 1 }), { minLength: 1, maxLength: 8 }),
        async (failures) => {
          const c = clientOf();
          await c.flushall();
          const queue = new Queue({ client: redis().client(0) });
          const succeeded = new Map<string, number>();
          queue.consume<number>(
            't',
            'g',
            (m) => {
              if (m.attempt <= (failures[m.payload] ?? 0)) throw new Error(`fail ${m.attempt}`);
              succeeded.set(m.id, (succeeded.get(m.id) ?? 0) + 1);
            },
            { maxAttempts, backoff: () => 1, sweepMs: 10, visibilityMs: 5000 },
          );
          for (const [i] of failures.entries()) await queue.send('t', i, { id: `m${i}` });
          const expectDead = failures.flatMap((f, i) => (f >= maxAttempts ? [`m${i}`] : []));
          const expectOk = failures.flatMap((f, i) => (f < maxAttempts ? [`m${i}`] : []));
          await until(async () => {
            const dead = (await queue.deadLetters('t')).map((l) => l.id);
            expect(dead.sort()).toEqual(expectDead.sort());
            expect([...succeeded.keys()].sort()).toEqual(expectOk.sort());
            const pending = await c.xpending(queue.keys('t', 0).stream, 'g');
            expect(pending[0]).toBe(0);
          }, 15_000);
          await queue.close();
          for (const n of succeeded.values()) expect(n).toBe(1);
          expect(await c.xlen(queue.keys('t', 0).stream)).toBe(0);
          expect(await c.zcard(queue.keys('t', 0).delayed)).toBe(0);
        },
      ),
      { numRuns: 8 },
    );
  });

  it('a delivery settles its message only while it is the newest: an older delivery of a message reclaimed back to the same consumer is refused, whatever it and the newer one do, in either order', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.boolean(),
        fc.boolean(),
        async (staleOk, currentOk, staleFirst) => {
          const c = clientOf();
          await c.flushall();
          const queue = new Queue({ client: redis().client(0) });
          const keys = queue.keys('t', 0);
          const calls: number[] = [];
          const finished: number[] = [];
          const gates = new Map<number, (ok: boolean) => void>();
          let entryId = '';
          queue.consume(
            't',
            'g',
            async (m) => {
              entryId = m.entryId;
              calls.push(m.attempt);
              const ok = await new Promise<boolean>((resolve) => gates.set(m.attempt, resolve));
              finished.push(m.attempt);
              if (!ok) throw new Error(`attempt ${m.attempt} failed`);
            },
            { consumer: 'a', visibilityMs: 300, sweepMs: 50, maxAttempts: 3, backoff: () => 1 },
          );
          await queue.send('t', 1);
          await until(() => expect(calls).toEqual([1]), 10_000);
          // Taken over by a consumer that dies at once, then reclaimed back to 'a'.
          await c.xclaim(keys.stream, 'g', 'ghost', 0, entryId);
          await until(() => expect(calls).toEqual([1, 3]), 10_000);
          const finish = async (attempt: number, ok: boolean): Promise<void> => {
            gates.get(attempt)?.(ok);
            await until(() => expect(finished).toContain(attempt), 5000);
            await new Promise((r) => setTimeout(r, 100)); // its settling call is written by now
          };
          if (staleFirst) await finish(1, staleOk);
          await finish(3, currentOk);
          if (!staleFirst) await finish(1, staleOk);
          await until(async () => {
            expect((await c.xpending(keys.stream, 'g'))[0]).toBe(0);
            const dead = await queue.deadLetters('t');
            expect(dead.map((l) => l.attempts)).toEqual(currentOk ? [] : [3]);
          }, 10_000);
          await queue.close();
          // Nothing the older delivery did took effect: no retry copy, no second settle.
          expect(calls).toEqual([1, 3]);
          expect(await c.xlen(keys.stream)).toBe(0);
          expect(await c.zcard(keys.delayed)).toBe(0);
        },
      ),
      { numRuns: 8 },
    );
  }, 90_000);
});

function extract(reply: unknown): string[] {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  const first: unknown = reply[0];
  const entries = (typeof first === 'string' ? reply[1] : (first as unknown[])[1]) as [
    string,
    unknown,
  ][];
  return entries.map(([id]) => id);
}
