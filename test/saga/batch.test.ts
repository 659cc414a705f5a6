/**
 * Transitions issued in the same tick on one coordinator's client go to Redis as ONE script
 * call that runs each transition's own logic (its fencing and version checks included) on its
 * own keys and answers each separately. These tests pin what that must not change: a refused
 * transition in a batch leaves the others exactly as they would be alone; a Redis that lost its
 * script cache (restarted) still runs a batch; and (in cluster.test.ts) a batch never mixes slots.
 * Counts come from `INFO commandstats` (deterministic), never from timings.
 */
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import {
  SagaCoordinator,
  defineSaga,
  isSagaStoreError,
  type SagaTransitionEvent,
} from '../../src/saga/index.js';
import {
  MAX_BATCH,
  MAX_BATCH_TEXT,
  SagaStore,
  encodeBatch,
  type TransitionReply,
} from '../../src/saga/store.js';
import { describeRedis, useRedis } from '../support/vitest.js';

/**
 * Script calls (EVALSHA and EVAL) since the last RESETSTAT; `calls` counts the ones answered
 * with an error too (NOSCRIPT).
 */
async function scriptCalls(client: Redis): Promise<{ evalsha: number; eval: number }> {
  const info = await client.info('commandstats');
  const count = (name: string): number =>
    Number(new RegExp(`^cmdstat_${name}:calls=(\\d+)`, 'm').exec(info)?.[1] ?? 0);
  return { evalsha: count('evalsha'), eval: count('eval') };
}

const storeOf = (client: Redis, prefix: string): SagaStore =>
  new SagaStore({
    client,
    prefix,
    shards: 4,
    leaseMs: 15_000,
    historyLimit: 64,
    finishedHistory: 6,
    retentionMs: 60_000,
  });

describeRedis('saga transitions batched per tick', () => {
  const redis = useRedis();
  let client: Redis;
  let admin: Redis;
  beforeAll(() => {
    client = redis().client(0);
    admin = redis().client(0);
  });
  afterAll(() => {
    client.disconnect();
    admin.disconnect();
  });
  afterEach(async () => {
    await redis().flushAll();
  });

  /** Starts `n` instances of a 3-step saga `b`, one after the other. */
  async function startAll(store: SagaStore, n: number) {
    const rows = [];
    for (let i = 0; i < n; i++) {
      const started = await store.start('b', `i-${i}`, 'me', '{}', 0, 3);
      if (started.row === undefined) throw new Error('start failed');
      rows.push({ owner: 'me', fence: started.row.fence, version: started.row.version });
    }
    return rows;
  }

  it('transitions of one tick go as one script call; a refused one changes nothing for the others', async () => {
    const store = storeOf(client, 'mix:');
    const rows = await startAll(store, 10);
    await admin.config('RESETSTAT');
    // Same tick: the first goes out at once (nothing in flight), the other nine wait for the
    // end of the tick and go together. Three are refused, each by its own check.
    const replies: TransitionReply[] = await Promise.all(
      rows.map((row, i) => {
        if (i === 3)
          return store.transition('b', `i-${i}`, { ...row, fence: 7 }, 'begin', 0, '', '1');
        if (i === 5)
          return store.transition('b', `i-${i}`, { ...row, version: 9 }, 'begin', 0, '', '1');
        if (i === 7) return store.transition('b', `i-${i}`, row, 'begin', 2, '', '1');
        return store.transition('b', `i-${i}`, row, 'begin', 0, '', '1');
      }),
    );
    expect((await scriptCalls(admin)).evalsha).toBe(2);
    replies.forEach((reply, i) => {
      if (i === 3) expect(reply).toMatchObject({ ok: false, why: 'fenced', fence: 1, version: 1 });
      else if (i === 5) expect(reply).toMatchObject({ ok: false, why: 'version', version: 1 });
      else if (i === 7) expect(reply).toMatchObject({ ok: false, why: 'state', status: 'running' });
      else expect(reply).toMatchObject({ ok: true, version: 2, status: 'running', cj: -1 });
    });
    for (let i = 0; i < rows.length; i++) {
      const read = await store.read('b', `i-${i}`);
      const refused = i === 3 || i === 5 || i === 7;
      expect(read?.row.version).toBe(refused ? 1 : 2);
      expect(read?.row.phase).toBe(refused ? 'idle' : 'run');
      expect(read?.history.map((h) => h.split('|')[3])).toEqual(
        refused ? ['start'] : ['start', 'begin'],
      );
    }
    // Each refused caller can go on from what its refusal said; the others are unaffected.
    const after = await Promise.all(
      rows.map((row, i) =>
        [3, 5, 7].includes(i)
          ? store.transition('b', `i-${i}`, row, 'begin', 0, '', '1')
          : store.transition('b', `i-${i}`, { ...row, version: 2 }, 'done', 0, '', '{}'),
      ),
    );
    expect(after.every((r) => r.ok)).toBe(true);
  });

  it('a start stores its numbers as plain digits, alone and batched (the bytes as ever)', async () => {
    const store = storeOf(client, 'digits:');
    // Same tick: the first goes alone (START), the second rides in a batch (TRANSITIONS).
    const [alone, batched] = await Promise.all([
      store.start('b', 'one', 'me', '{"a":1}', 0, 3),
      store.start('b', 'two', 'me', '{"a":2}', 2500, 3),
    ]);
    for (const [id, started, timeoutMs] of [
      ['one', alone, 0],
      ['two', batched, 2500],
    ] as const) {
      const { base } = store.keys('b', id);
      const now = started.now;
      const lease = started.row?.leaseUntil ?? -1;
      expect(lease).toBe(now + 15_000);
      expect(await client.hgetall(`${base}s:${id}`)).toEqual({
        n: 'b',
        in: id === 'one' ? '{"a":1}' : '{"a":2}',
        st: 'running',
        cur: '0',
        cj: '-1',
        ph: 'idle',
        v: '1',
        f: '1',
        ow: 'me',
        ls: String(lease),
        dl: timeoutMs === 0 ? '0' : String(now + timeoutMs),
        t0: String(now),
        up: String(now),
        ns: '3',
        ix: String(lease),
      });
      expect(await client.zscore(`${base}live`, id)).toBe(String(lease));
      expect(await client.lrange(`${base}h:${id}`, 0, -1)).toEqual([`${now}|1|1|start|-1|me`]);
    }
  });

  it('a long burst starts going out before its tick ends, in calls of at most MAX_BATCH', async () => {
    // Node and Redis should work at once: the first transitions of a burst of 100 (as when one
    // batch's replies wake 100 sagas) run on the server while the rest are still being issued,
    // instead of all waiting for the end of the tick (see MAX_BATCH). Counted on the client's
    // EVALSHA calls as they are made (a real Redis answers them).
    const sent: number[] = [];
    const counting = {
      evalsha: (sha: string, numKeys: number, ...args: (string | number | Buffer)[]) => {
        // A batch's first argument after its keys is its transition count; 1 for one alone.
        const first = args[numKeys];
        sent.push(args.length - numKeys === 8 && typeof first === 'number' ? first : 1);
        return client.evalsha(sha, numKeys, ...args);
      },
      eval: (source: string, numKeys: number, ...args: (string | number | Buffer)[]) =>
        client.eval(source, numKeys, ...args),
    };
    const store = new SagaStore({
      client: counting,
      prefix: 'burst:',
      shards: 4,
      leaseMs: 15_000,
      historyLimit: 64,
      finishedHistory: 6,
      retentionMs: 60_000,
    });
    const n = 100;
    const rows = await startAll(store, n);
    sent.length = 0;
    const replies: Promise<TransitionReply>[] = [];
    let sentBeforeTickEnd = 0;
    for (let i = 0; i < n; i++) {
      replies.push(
        store.transition('b', `i-${i}`, rows[i] as (typeof rows)[number], 'begin', 0, '', '1'),
      );
      if (i === n - 1) sentBeforeTickEnd = sent.reduce((a, b) => a + b, 0);
    }
    const answered = await Promise.all(replies);
    expect(answered.every((r) => r.ok && r.version === 2)).toBe(true);
    // The first alone (nothing in flight), then full batches as they fill; the rest at the end.
    expect(sentBeforeTickEnd).toBe(1 + MAX_BATCH * Math.floor((n - 1) / MAX_BATCH));
    expect(sentBeforeTickEnd).toBeGreaterThanOrEqual(n / 2);
    expect(sent.reduce((a, b) => a + b, 0)).toBe(n);
    expect(Math.max(...sent)).toBeLessThanOrEqual(MAX_BATCH);
    for (let i = 0; i < n; i++) {
      const read = await store.read('b', `i-${i}`);
      expect(read?.history.map((h) => h.split('|')[3])).toEqual(['start', 'begin']);
    }
  });

  it('a tick of large outputs goes in more than one script call, none past MAX_BATCH_TEXT', async () => {
    const store = storeOf(client, 'big:');
    const rows = await startAll(store, 5);
    for (let i = 0; i < rows.length; i++) {
      await store.transition('b', `i-${i}`, rows[i] as (typeof rows)[number], 'begin', 0, '', '1');
    }
    await admin.config('RESETSTAT');
    // Each output a bit under a third of the cap: the first goes alone (nothing in flight),
    // the next three fill one batch, and the fifth would take it past the cap, so the batch goes
    // first and the fifth after it. Without the cap: 2 calls, the last one carrying all four.
    const size = Math.floor(MAX_BATCH_TEXT * 0.3);
    const outputs = rows.map((_, i) => JSON.stringify(`${i}`.repeat(size)));
    const replies = await Promise.all(
      rows.map((row, i) =>
        store.transition(
          'b',
          `i-${i}`,
          { ...row, version: 2 },
          'done',
          0,
          '',
          outputs[i] as string,
        ),
      ),
    );
    expect((await scriptCalls(admin)).evalsha).toBe(3);
    expect(replies.every((r) => r.ok)).toBe(true);
    for (let i = 0; i < rows.length; i++) {
      const read = await store.read('b', `i-${i}`);
      expect(read?.history.map((h) => h.split('|')[3])).toEqual(['start', 'begin', 'done']);
      expect(read?.row.outputs.get(0)).toBe(outputs[i]);
    }
  });

  it('each transition in a batch is checked against its own owner (sent once when shared)', async () => {
    const store = storeOf(client, 'owners:');
    const rows = await startAll(store, 4);
    const theirs = await store.start('b', 'theirs', 'you', '{}', 0, 3);
    const you = { owner: 'you', fence: 1, version: theirs.row?.version ?? 0 };
    await admin.config('RESETSTAT');
    const replies = await Promise.all([
      store.transition('b', 'i-0', rows[0] ?? you, 'begin', 0, '', '1'),
      store.transition('b', 'i-1', rows[1] ?? you, 'begin', 0, '', '1'),
      store.transition('b', 'theirs', you, 'begin', 0, '', '1'),
      // Not the owner: refused, though another transition of the batch is its owner's.
      store.transition('b', 'theirs', { ...you, owner: 'me' }, 'done', 0, '', '{}'),
      // An empty owner (no coordinator has one) is not taken for the batch's shared owner.
      store.transition('b', 'i-2', { ...(rows[2] ?? you), owner: '' }, 'begin', 0, '', '1'),
      store.transition('b', 'i-3', rows[3] ?? you, 'begin', 0, '', '1'),
    ]);
    expect((await scriptCalls(admin)).evalsha).toBe(2);
    expect(replies.map((r) => (r.ok ? 'ok' : r.why))).toEqual([
      'ok',
      'ok',
      'ok',
      'fenced',
      'fenced',
      'ok',
    ]);
    expect((await store.read('b', 'theirs'))?.row).toMatchObject({ owner: 'you', version: 2 });
    expect((await store.read('b', 'i-2'))?.row).toMatchObject({ owner: 'me', version: 1 });
  });

  it('a finishing transition and a step transition in one batch each do their own writes', async () => {
    const store = storeOf(client, 'fin:');
    const rows = await startAll(store, 4);
    // i-1 fails before any step began (finishes compensated), the others begin step 0, in one
    // tick.
    await admin.config('RESETSTAT');
    const replies = await Promise.all(
      rows.map((row, i) =>
        i === 1
          ? store.transition('b', `i-${i}`, row, 'fail', 0, 'x', 'refused')
          : store.transition('b', `i-${i}`, row, 'begin', 0, '', '1'),
      ),
    );
    expect((await scriptCalls(admin)).evalsha).toBe(2);
    expect(replies[1]).toMatchObject({ ok: true, status: 'compensated', why: 'refused', lease: 0 });
    expect(replies.filter((r) => r.ok && r.status === 'running')).toHaveLength(3);
    expect(await client.zscore(`${store.keys('b', 'i-1').base}live`, 'i-1')).toBeNull();
    expect(
      await client.zscore(`${store.keys('b', 'i-1').base}fin:compensated`, 'i-1'),
    ).not.toBeNull();
    expect(await client.pttl(store.keys('b', 'i-1').all[0] ?? '')).toBeGreaterThan(0);
    expect(await client.pttl(store.keys('b', 'i-0').all[0] ?? '')).toBe(-1);
  });

  it('starts of one tick go as one script call, each answered as alone (created, exists, claimed, conflict)', async () => {
    const store = storeOf(client, 'starts:');
    // Before the tick: one instance that exists and is live, one whose owner's lease ran out.
    await store.start('b', 'live', 'you', '{}', 0, 3);
    await store.start('b', 'dead', 'you', '{}', 0, 3);
    await client.hset(store.keys('b', 'dead').all[0] ?? '', 'ls', 1);
    await admin.config('RESETSTAT');
    const [first, ...rest] = await Promise.all([
      store.start('b', 'n-0', 'me', '{"a":1}', 0, 3),
      store.start('b', 'n-1', 'me', '{"a":2}', 5000, 4),
      store.start('b', 'live', 'me', '{}', 0, 3),
      store.start('b', 'dead', 'me', '{}', 0, 3),
      store.start('b', 'live', 'me', '{"other":1}', 0, 3),
      store.start('b', 'n-2', 'me', '{"a":3}', 0, 3),
    ]);
    // The first alone (nothing in flight), the other five together.
    expect((await scriptCalls(admin)).evalsha).toBe(2);
    expect([first, ...rest].map((r) => r.kind)).toEqual([
      'created',
      'created',
      'exists',
      'claimed',
      'conflict',
      'created',
    ]);
    expect(rest[1].row).toMatchObject({ owner: 'you', fence: 1 });
    expect(rest[2].row).toMatchObject({ owner: 'me', fence: 2, version: 2 });
    // A created instance's row, built from what START wrote, is what Redis holds.
    for (const [id, started] of [
      ['n-0', first],
      ['n-1', rest[0]],
      ['n-2', rest[4]],
    ] as const) {
      expect(started.row).toEqual((await store.read('b', id))?.row);
      expect((await store.read('b', id))?.history.map((h) => h.split('|')[3])).toEqual(['start']);
    }
    expect(rest[0].row?.deadline).toBe(rest[0].now + 5000);
    // Each created one is in its shard's recovery index, scored by its lease.
    const n1 = store.keys('b', 'n-1');
    expect(Number(await client.zscore(`${n1.base}live`, 'n-1'))).toBe(rest[0].row?.leaseUntil);
  });

  it('a batch item reads its id from its hash key: ids of any text land on their own instance', async () => {
    // The batch sends no id (the hash key's tail is the id): ids with the separators the batch
    // uses, key-like text, braces and multi-byte characters must land where they would alone.
    const ids = ['a|b', '1|2|3|begin|0', 's:x', 'x}y{z', 'ü-日本-🎉', ' ', 'live'];
    const store = storeOf(client, 'ids:');
    const started = await Promise.all(ids.map((id) => store.start('b', id, 'me', '{}', 0, 2)));
    expect(started.map((s) => s.kind)).toEqual(ids.map(() => 'created'));
    const begun = await Promise.all(
      ids.map((id) =>
        store.transition(
          'b',
          id,
          { owner: 'me', fence: 1, version: 1 },
          'begin',
          0,
          `d-${id}`,
          '1',
        ),
      ),
    );
    expect(begun.map((r) => r.ok && r.version)).toEqual(ids.map(() => 2));
    const done = await Promise.all(
      ids.map((id) =>
        store.transition('b', id, { owner: 'me', fence: 1, version: 2 }, 'done', 0, '', `"${id}"`),
      ),
    );
    expect(done.map((r) => r.ok && r.version)).toEqual(ids.map(() => 3));
    for (const id of ids) {
      const read = await store.read('b', id);
      expect(read?.row.outputs.get(0)).toBe(`"${id}"`);
      expect(read?.row.version).toBe(3);
      expect(read?.history.map((h) => h.split('|')[3])).toEqual(['start', 'begin', 'done']);
      // The detail (any text, multi-byte included) is cut from the batch item by its byte length.
      expect(read?.history[1]?.endsWith(`|0|d-${id}`)).toBe(true);
      // The recovery index holds the instance under its own id.
      const { base } = store.keys('b', id);
      expect(await admin.zscore(`${base}live`, id)).not.toBeNull();
    }
    const hashes = (await admin.keys('ids:*')).filter((k) => /^ids:\{b:\d+\}:s:/.test(k));
    expect(hashes).toHaveLength(ids.length);
  });

  it("a batch sends every transition's own arguments as one text; owners, details and outputs of any text come through", async () => {
    const owners = ['me', 'ü|1|2|', '🎉 x', 'me'];
    const store = storeOf(client, 'one:');
    await Promise.all(owners.map((o, i) => store.start('b', `o-${i}`, o, '{}', 0, 2)));
    const items = owners.map((owner, i) => ({
      keys: store.keys('b', `o-${i}`).all,
      args: [`o-${i}`, owner, 1, 1, 'begin', 0, `é|${i}|`, `"日|${i}"`],
    }));
    const settings = { leaseMs: 5000, historyLimit: 8, retentionMs: 60_000, finishedHistory: 4 };
    // Eight arguments whatever the number of transitions: the settings, the owner, one text.
    expect(encodeBatch(items, settings).args).toHaveLength(8);
    expect(encodeBatch([...items, ...items], settings).args).toHaveLength(8);
    const replies = await Promise.all(
      owners.map((owner, i) =>
        store.transition(
          'b',
          `o-${i}`,
          { owner, fence: 1, version: 1 },
          'begin',
          0,
          `é|${i}|`,
          `${i}`,
        ),
      ),
    );
    expect(replies.map((r) => r.ok && r.version)).toEqual([2, 2, 2, 2]);
    for (let i = 0; i < owners.length; i++) {
      const read = await store.read('b', `o-${i}`);
      expect(read?.row).toMatchObject({ owner: owners[i], version: 2, phase: 'run' });
      expect(read?.row.attempts.get(0)).toBe(i);
      expect(read?.history[1]?.endsWith(`|begin|0|é|${i}|`)).toBe(true);
    }
  });

  it('a failed call rejects each transition and start with a store error naming it, alone or batched', async () => {
    // The coordinator retries a write only on a store error (it may have landed): the batcher,
    // which decodes and names each reply, must give one for every way a call fails.
    const own = redis().client(0);
    const store = storeOf(own, 'fail:');
    const rows = await startAll(store, 3);
    own.disconnect();
    const calls = [
      store.transition(
        'b',
        'i-0',
        rows[0] ?? { owner: 'me', fence: 1, version: 1 },
        'begin',
        0,
        '',
        '1',
      ),
      store.transition(
        'b',
        'i-1',
        rows[1] ?? { owner: 'me', fence: 1, version: 1 },
        'begin',
        0,
        '',
        '1',
      ),
      store.start('b', 'new', 'me', '{}', 0, 3),
    ];
    const errors = await Promise.all(
      calls.map((p) =>
        p.then(
          () => undefined,
          (e: unknown) => e,
        ),
      ),
    );
    expect(errors.map((e) => isSagaStoreError(e))).toEqual([true, true, true]);
    expect(errors.map((e) => (e as Error).message)).toEqual([
      expect.stringContaining('begin step 0 of b/i-0'),
      expect.stringContaining('begin step 0 of b/i-1'),
      expect.stringContaining('start b/new'),
    ]);
    // An error Redis raises for one transition of a batch (WRONGTYPE: its hash key holds a
    // string) is a store error too; the others of the batch land.
    const store2 = storeOf(client, 'fail2:');
    const [r0, r1] = await startAll(store2, 2);
    await admin.set(store2.keys('b', 'w').all[0] ?? '', 'not a hash');
    const row = { owner: 'me', fence: 1, version: 1 };
    const mixed = await Promise.all(
      [
        store2.transition('b', 'i-0', r0 ?? row, 'begin', 0, '', '1'), // alone: nothing in flight
        store2.transition('b', 'i-1', r1 ?? row, 'begin', 0, '', '1'), // these two: one batch
        store2.transition('b', 'w', row, 'begin', 0, '', '1'),
      ].map((p) =>
        p.then(
          (r) => r.ok,
          (e: unknown) => e,
        ),
      ),
    );
    expect(mixed.slice(0, 2)).toEqual([true, true]);
    expect(isSagaStoreError(mixed[2])).toBe(true);
    expect((mixed[2] as Error).message).toContain('begin step 0 of b/w');
  });

  it('a created start with a fractional timeoutMs reports the deadline Redis holds', async () => {
    // Redis turns a Lua number into an integer reply: the row is built from what START wrote.
    const store = storeOf(client, 'frac:');
    const started = await store.start('b', 'f', 'me', '{}', 1500.5, 3);
    expect(started.kind).toBe('created');
    expect(started.row?.deadline).toBe(started.now + 1500.5);
    expect(started.row).toEqual((await store.read('b', 'f'))?.row);
  });

  it('a batch sent to a restarted Redis (no script cached) falls back to EVAL and lands', async () => {
    await redis().restart(0);
    const store = storeOf(client, 'restart:');
    const rows = await startAll(store, 6);
    await admin.config('RESETSTAT');
    const replies = await Promise.all(
      rows.map((row, i) => store.transition('b', `i-${i}`, row, 'begin', 0, '', '1')),
    );
    expect(replies.every((r) => r.ok && r.version === 2)).toBe(true);
    // One EVALSHA alone and one batch, each answered NOSCRIPT and sent again with EVAL.
    expect(await scriptCalls(admin)).toEqual({ evalsha: 2, eval: 2 });
    // Cached now: the next tick's batch needs no fallback.
    await admin.config('RESETSTAT');
    const next = await Promise.all(
      rows.map((row, i) =>
        store.transition('b', `i-${i}`, { ...row, version: 2 }, 'done', 0, '', '{}'),
      ),
    );
    expect(next.every((r) => r.ok && r.version === 3)).toBe(true);
    expect(await scriptCalls(admin)).toEqual({ evalsha: 2, eval: 0 });
  });

  it('sagas in flight on one coordinator share script calls; each history is its own', async () => {
    const saga = defineSaga('flight', [
      { name: 'a', run: (ctx) => `a-${ctx.sagaId}` },
      { name: 'b', run: (ctx) => `b-${ctx.sagaId}` },
      { name: 'c', run: (ctx) => ctx.outputs.a },
    ]);
    const sagas = new SagaCoordinator({ redis: client, sagas: [saga], recovery: false });
    const events: SagaTransitionEvent[] = [];
    sagas.onTransition((e) => events.push(e));
    try {
      await admin.config('RESETSTAT');
      const ids = Array.from({ length: 30 }, (_, i) => `f-${i}`);
      const outcomes = await Promise.all(ids.map((id) => sagas.run(saga, id, { id })));
      const calls = await scriptCalls(admin);
      for (const [i, outcome] of outcomes.entries()) {
        expect(outcome).toEqual({
          status: 'completed',
          id: `f-${i}`,
          outputs: { a: `a-f-${i}`, b: `b-f-${i}`, c: `a-f-${i}` },
        });
      }
      // 30 × (start + 2 per step) = 210 state changes; batched, far fewer script calls.
      expect(events).toHaveLength(210);
      expect(calls.evalsha + calls.eval).toBeLessThanOrEqual(105);
      for (const id of ids) {
        const snap = await sagas.get(saga, id);
        expect(snap?.version).toBe(7);
        expect(snap?.history.map((h) => `${h.event}:${h.step ?? ''}`).slice(-3)).toEqual([
          'done:b',
          'begin:c',
          'done:c',
        ]);
      }
    } finally {
      await sagas.close();
    }
  });
});
