/**
 * `MemorySagaBackend` against a real redis-server: every sequence of `keel/saga`'s script calls
 * (saga start, transitions of every kind from right and wrong owners, fences and versions, claims,
 * reads, cancels, lists; idempotency acquire / complete / release / renew / undo) gets the same
 * replies from both, so the ported scripts keep the Lua's ownership, fencing and idempotency
 * rules. Time-valued fields (server time, leases, waits) are normalized; leases are either 0
 * (expired at once) or 100 s (never expires during a run), so expiry decides alike on both.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { runScript, type LuaScript, type ScriptClient } from '../../src/core/index.js';
import { isInvalidOptionError } from '../../src/core/options.js';
import {
  ACQUIRE,
  COMPLETE,
  RELEASE,
  RENEW,
  UNDO_BEGIN,
  UNDO_END,
} from '../../src/saga/idempotency.js';
import {
  IdempotencyKeys,
  MemorySagaBackend,
  SagaCoordinator,
  defineSaga,
} from '../../src/saga/index.js';
import {
  CANCEL,
  CLAIM,
  LIST,
  READ,
  START,
  TRANSITION,
  TRANSITIONS,
} from '../../src/saga/scripts.js';
import { SagaStore, encodeBatch } from '../../src/saga/store.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const IDS = ['a', 'b'];
/** Owners, details and op arguments include the batch encoding's separator and multi-byte text. */
const OWNERS = ['o1', 'o2', 'ö|🎉'];
const TEXTS = ['', '|', 'é|🎉', 'a detail', '||é'];
const LEASES = [0, 100_000];
const OPS = ['begin', 'done', 'next', 'fail', 'cbegin', 'cdone', 'park', 'renew', 'bogus'] as const;
const STATUSES = ['', 'running', 'compensating', 'completed', 'compensated', 'needs-attention'];
const KEYS = ['k1', 'k2'];
const TOKENS = ['t1', 't2'];

const SCRIPTS: Readonly<Record<string, LuaScript>> = {
  START,
  TRANSITION,
  TRANSITIONS,
  CLAIM,
  READ,
  CANCEL,
  LIST,
  ACQUIRE,
  COMPLETE,
  RELEASE,
  RENEW,
  UNDO_BEGIN,
  UNDO_END,
};

/** A script call, by the script's name (so a counterexample reads well). */
type Call = readonly [string, readonly string[], readonly (string | number)[]];

const pick = <T>(list: readonly T[]): fc.Arbitrary<T> => fc.constantFrom(...list);

function calls(prefix: string): fc.Arbitrary<Call[]> {
  const store = new SagaStore({
    client: {} as ScriptClient,
    prefix,
    shards: 1,
    leaseMs: 0,
    historyLimit: 4,
    finishedHistory: 2,
    retentionMs: 100_000,
  });
  const keys = (id: string): string[] => [...store.keys('S', id).all];
  const base = store.base('S', 0);
  const idem = (k: string): string[] => [`${prefix}idem:{${k}}`];
  const transition = fc
    .record({
      id: pick(IDS),
      owner: pick(OWNERS),
      fence: fc.integer({ min: 1, max: 3 }),
      version: fc.integer({ min: 1, max: 8 }),
      lease: pick(LEASES),
      op: pick(OPS),
      step: fc.integer({ min: -1, max: 3 }),
      detail: pick(TEXTS),
      argument: pick(TEXTS),
    })
    .map(({ id, owner, fence, version, lease, op, step, detail, argument }) => ({
      keys: keys(id),
      own: [id, owner, fence, version] as (string | number)[],
      lease,
      rest: [op, step, detail, op === 'begin' || op === 'cbegin' ? '1' : argument],
    }));
  /** A start in a batch: its arguments in a transition's slots (see TRANSITIONS). */
  const startItem = fc
    .record({
      id: pick(IDS),
      owner: pick(OWNERS),
      input: pick(['{"x":1}', '{"x":2}']),
      timeout: pick([0, 1_000_000]),
      steps: fc.integer({ min: 1, max: 3 }),
    })
    .map(({ id, owner, input, timeout, steps }) => ({
      keys: keys(id),
      own: [id, owner, '', timeout] as (string | number)[],
      rest: ['start', steps, 'S', input],
    }));
  const call: fc.Arbitrary<Call> = fc.oneof(
    fc
      .record({
        id: pick(IDS),
        owner: pick(OWNERS),
        input: pick(['{"x":1}', '{"x":2}']),
        lease: pick(LEASES),
        steps: fc.integer({ min: 1, max: 3 }),
      })
      .map(({ id, owner, input, lease, steps }): Call => [
        'START',
        keys(id).slice(0, 3),
        [id, owner, 'S', input, lease, 4, 0, steps],
      ]),
    transition.map(({ keys: k, own, lease, rest }): Call => [
      'TRANSITION',
      k,
      [...own, lease, 4, 100_000, 2, ...rest],
    ]),
    // Several transitions in one call (what a coordinator sends for the transitions of a tick),
    // starts among them: the same ids may repeat, so a later one sees what an earlier one wrote.
    fc
      .record({
        lease: pick(LEASES),
        list: fc.array(fc.oneof(transition, transition, startItem), {
          minLength: 1,
          maxLength: 4,
        }),
      })
      .map(({ lease, list }): Call => {
        const batch = encodeBatch(
          list.map((t) => ({ keys: t.keys, args: [...t.own, ...t.rest] })),
          { leaseMs: lease, historyLimit: 4, retentionMs: 100_000, finishedHistory: 2 },
        );
        return ['TRANSITIONS', batch.keys, batch.args];
      }),
    fc
      // A limit of at least the number of ids: with a smaller one, which of two sagas whose
      // leases end in the same millisecond is claimed depends on each backend's own clock.
      .record({
        owner: pick(OWNERS),
        lease: pick(LEASES),
        limit: fc.integer({ min: IDS.length, max: IDS.length + 1 }),
      })
      .map(({ owner, lease, limit }): Call => [
        'CLAIM',
        [`${base}live`],
        [owner, lease, 4, limit, base],
      ]),
    pick(IDS).map((id): Call => ['READ', keys(id).slice(0, 2), []]),
    pick(IDS).map((id): Call => ['CANCEL', keys(id).slice(0, 1), []]),
    // As CLAIM's: a limit of at least the number of ids (which of two sagas whose scores fall
    // in the same millisecond on one backend comes first depends on each backend's own clock).
    fc
      .record({
        status: pick(STATUSES),
        limit: fc.integer({ min: IDS.length, max: IDS.length + 1 }),
      })
      .map(({ status, limit }): Call => ['LIST', keys('').slice(2), [status, limit, base]]),
    fc
      .record({
        k: pick(KEYS),
        token: pick(TOKENS),
        fp: pick(['', 'f1', 'f2']),
        lease: pick(LEASES),
      })
      .map(({ k, token, fp, lease }): Call => ['ACQUIRE', idem(k), [token, fp, lease, 100_000]]),
    fc
      .record({ k: pick(KEYS), token: pick(TOKENS), result: pick(['j1', 'u']) })
      .map(({ k, token, result }): Call => ['COMPLETE', idem(k), [token, result, 100_000]]),
    fc
      .record({ k: pick(KEYS), token: pick(TOKENS) })
      .map(({ k, token }): Call => ['RELEASE', idem(k), [token]]),
    fc
      .record({ k: pick(KEYS), token: pick(TOKENS), state: pick(['run', 'undoing']) })
      .map(({ k, token, state }): Call => ['RENEW', idem(k), [token, 100_000, state]]),
    fc
      .record({ k: pick(KEYS), token: pick(TOKENS), lease: pick(LEASES) })
      .map(({ k, token, lease }): Call => ['UNDO_BEGIN', idem(k), [token, lease, 100_000]]),
    fc
      .record({ k: pick(KEYS), token: pick(TOKENS) })
      .map(({ k, token }): Call => ['UNDO_END', idem(k), [token, 100_000]]),
  );
  return fc.array(call, { minLength: 1, maxLength: 40 });
}

/** Replaces what depends on the clock: epoch-ms numbers and strings, waits, history times. */
function normalize(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normalize);
  if (typeof value === 'number') return value > 1000 ? 'N' : value;
  if (typeof value === 'string') {
    if (/^\d{4,}$/.test(value)) return 'N';
    // History entries start with the time; transition replies (`1|version|now|lease|…`) hold
    // it and the lease among their fields.
    return value.replace(/(^|\|)\d{10,}(?=\||$)/g, '$1T');
  }
  return value;
}

/**
 * A CLAIM reply `[now, [id, hash, id, hash…]]` with its pairs in id order. Redis answers them in
 * lease order; two sagas whose leases end in the same millisecond on one backend may not on the
 * other (each backend reads its own clock, a moment apart), so the order among them is not
 * something the two can agree on.
 */
function claimSorted(reply: unknown): unknown {
  if (!Array.isArray(reply) || !Array.isArray(reply[1])) return reply;
  const flat = reply[1] as unknown[];
  const pairs: [unknown, unknown][] = [];
  for (let i = 0; i < flat.length; i += 2) pairs.push([flat[i], flat[i + 1]]);
  pairs.sort(([a], [b]) => String(a).localeCompare(String(b)));
  return [reply[0], pairs.flat()];
}

/** A LIST reply `[id, status, …]` with its pairs in id order (see {@link claimSorted}). */
function pairsSorted(reply: unknown): unknown {
  if (!Array.isArray(reply)) return reply;
  const flat = reply as unknown[];
  const pairs: [unknown, unknown][] = [];
  for (let i = 0; i < flat.length; i += 2) pairs.push([flat[i], flat[i + 1]]);
  pairs.sort(([a], [b]) => String(a).localeCompare(String(b)));
  return pairs.flat();
}

async function replay(client: ScriptClient, list: readonly Call[]): Promise<unknown[]> {
  const out: unknown[] = [];
  for (const [name, keys, args] of list) {
    try {
      const reply = await runScript(client, SCRIPTS[name] as LuaScript, keys, args);
      const sorted =
        name === 'CLAIM' ? claimSorted(reply) : name === 'LIST' ? pairsSorted(reply) : reply;
      out.push(normalize(sorted));
    } catch (error) {
      out.push(`error: ${String(error).includes('unknown transition') ? 'unknown op' : 'other'}`);
    }
  }
  return out;
}

describeRedis('MemorySagaBackend answers as Redis does (real redis-server)', () => {
  const redis = useRedis({ count: 1 });

  it("every sequence of saga and idempotency script calls gets Redis's replies", async () => {
    const client = redis().client(0);
    await fc.assert(
      fc.asyncProperty(calls('mem:'), async (list) => {
        await redis().flushAll();
        const onRedis = await replay(client, list);
        const inMemory = await replay(new MemorySagaBackend(), list);
        expect(inMemory).toEqual(onRedis);
        // The recovery index never runs ahead of a live instance's lease (a transition moves it
        // only when the lease moved by more than half its length): a claim finds every
        // instance whose lease ran out.
        const live = await client.zrange('mem:{S:0}:live', '0', '-1', 'WITHSCORES');
        for (let i = 0; i + 1 < live.length; i += 2) {
          const [st, ls] = await client.hmget(`mem:{S:0}:s:${live[i]}`, 'st', 'ls');
          if (st === 'running' || st === 'compensating') {
            expect(Number(live[i + 1])).toBeLessThanOrEqual(Number(ls));
          }
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('MemorySagaBackend', () => {
  it('refuses scripts that are not keel/saga’s, and bad options with a typed error', async () => {
    const backend = new MemorySagaBackend();
    await expect(backend.eval('return 1', 0)).rejects.toThrow(/keel\/saga scripts only/);
    await expect(backend.evalsha('0'.repeat(40), 0)).rejects.toThrow(/NOSCRIPT/);
    let error: unknown;
    try {
      new MemorySagaBackend({ now: 5 as unknown as () => number });
    } catch (e) {
      error = e;
    }
    expect(isInvalidOptionError(error)).toBe(true);
  });

  it('runs sagas and idempotency keys for a coordinator; compensations see the fence and the reason', async () => {
    const backend = new MemorySagaBackend();
    const seen: string[] = [];
    const saga = defineSaga('m', [
      {
        name: 'a',
        run: (ctx) => `a@${ctx.fence}`,
        compensate: (ctx) => {
          seen.push(`undo a ${String(ctx.output)} fence ${ctx.fence}: ${ctx.reason}`);
        },
      },
      {
        name: 'b',
        run: () => {
          throw new Error('nope');
        },
        retry: { attempts: 1 },
      },
    ]);
    await using sagas = new SagaCoordinator({ redis: backend, sagas: [saga], recovery: false });
    const outcome = await sagas.run(saga, 'm-1', {});
    expect(outcome).toEqual({
      status: 'compensated',
      id: 'm-1',
      reason: 'step b failed after 1 attempts: Error: nope',
    });
    expect(seen).toEqual(['undo a a@1 fence 1: step b failed after 1 attempts: Error: nope']);
    expect((await sagas.list(saga, { status: 'compensated' })).map((s) => s.id)).toEqual(['m-1']);
    const { idempotent } = new IdempotencyKeys({ redis: backend });
    let runs = 0;
    const once = (): Promise<number> => idempotent('k', () => ++runs, { payload: 1 });
    expect(await Promise.all([once(), once()])).toEqual([1, 1]);
    expect(runs).toBe(1);
  });
});
