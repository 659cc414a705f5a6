/**
 * The trading example's store: its two implementations (Lua scripts on a real redis-server, and
 * the in-process twin of embedded mode) answer every sequence of operations alike, and both
 * keep the fencing rule the demo's safety rests on — a record refuses any token older than the
 * newest it has admitted, for reads-for-update and writes alike.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { OrderRecord, Store, StoreSnapshot } from '../../examples/trading/store.js';
import { MemoryStore } from '../../examples/trading/store-memory.js';
import { RedisStore } from '../../examples/trading/store-redis.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const SKUS = ['SKU-A', 'SKU-B'];
const ORDERS = ['o0', 'o1', 'o2'];

type Op =
  | { readonly t: 'create'; readonly order: number; readonly key: number }
  | { readonly t: 'readOrder'; readonly order: number; readonly token: number }
  | {
      readonly t: 'writeOrder';
      readonly order: number;
      readonly token: number;
      readonly final: boolean;
    }
  | {
      readonly t: 'readStock';
      readonly sku: number;
      readonly order: number;
      readonly token: number;
    }
  | {
      readonly t: 'writeStock';
      readonly sku: number;
      readonly order: number;
      readonly token: number;
      readonly available: number;
    }
  | { readonly t: 'charge'; readonly order: number }
  | { readonly t: 'void'; readonly order: number };

const index = (n: number): fc.Arbitrary<number> => fc.nat(n - 1);
const token = fc.nat(6);
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ t: fc.constant('create' as const), order: index(3), key: index(2) }),
  fc.record({ t: fc.constant('readOrder' as const), order: index(3), token }),
  fc.record({ t: fc.constant('writeOrder' as const), order: index(3), token, final: fc.boolean() }),
  fc.record({ t: fc.constant('readStock' as const), sku: index(2), order: index(3), token }),
  fc.record({
    t: fc.constant('writeStock' as const),
    sku: index(2),
    order: index(3),
    token,
    available: fc.nat(20),
  }),
  fc.record({ t: fc.constant('charge' as const), order: index(3) }),
  fc.record({ t: fc.constant('void' as const), order: index(3) }),
);

const orderOf = (i: number, key: number, at: number): OrderRecord => ({
  id: ORDERS[i] as string,
  key: `key-${key}`,
  buyer: 'b',
  sku: 'SKU-A',
  qty: 1,
  amount: 500,
  state: 'pending',
  step: 'new',
  reason: '',
  createdBy: 'orders-1',
  createdAt: at,
});

/** Applies one operation; `at` is a distinct time per step. */
function apply(store: Store, o: Op, at: number): Promise<unknown> {
  switch (o.t) {
    case 'create':
      return store.createOrder(orderOf(o.order, o.key, at));
    case 'readOrder':
      return store.readOrder(ORDERS[o.order] as string, o.token);
    case 'writeOrder':
      return store.writeOrder(
        ORDERS[o.order] as string,
        o.token,
        o.final ? { state: 'confirmed', step: 'done' } : { step: 'charging' },
        at,
      );
    case 'readStock':
      return store.readStock(SKUS[o.sku] as string, o.token, ORDERS[o.order] as string);
    case 'writeStock':
      return store.writeStock(SKUS[o.sku] as string, o.token, ORDERS[o.order] as string, {
        available: o.available,
        sold: 20 - o.available,
        reservation: `reserved:${o.available % 3}`,
      });
    case 'charge':
      return store.charge(ORDERS[o.order] as string, 500);
    case 'void':
      return store.voidCharge(ORDERS[o.order] as string);
  }
}

/** A snapshot in a canonical order (Redis hashes and sets have none). */
function canonical(s: StoreSnapshot): StoreSnapshot {
  return {
    ...s,
    orders: [...s.orders].sort((a, b) => a.id.localeCompare(b.id)),
    stock: [...s.stock].sort((a, b) => a.sku.localeCompare(b.sku)),
  };
}

/**
 * Runs `ops` on `store` and checks the fencing rule against a model: per record, the newest
 * token admitted so far; an operation carrying a token is admitted exactly when it is not older.
 */
async function runChecked(store: Store, ops: readonly Op[]): Promise<unknown[]> {
  const newest = new Map<string, number>();
  const created = new Set<string>();
  const answers: unknown[] = [];
  await store.initStock({ 'SKU-A': 5, 'SKU-B': 7 });
  for (const [i, o] of ops.entries()) {
    // Order ids are fresh UUIDs in the demo: never create one that exists.
    if (o.t === 'create' && created.has(ORDERS[o.order] as string)) continue;
    const answer = await apply(store, o, 1000 + i);
    answers.push(answer);
    if (o.t === 'create') {
      const result = answer as { id: string; created: boolean };
      if (result.created) created.add(result.id);
      continue;
    }
    if (o.t === 'charge' || o.t === 'void') continue;
    const record =
      o.t === 'readStock' || o.t === 'writeStock'
        ? `s:${SKUS[o.sku] as string}`
        : `o:${ORDERS[o.order] as string}`;
    const exists = record.startsWith('s:') || created.has(record.slice(2));
    const admitted = exists && o.token >= (newest.get(record) ?? 0);
    if (admitted) newest.set(record, o.token);
    if (o.t === 'writeOrder' || o.t === 'writeStock') expect(answer).toBe(admitted);
    else if (!exists) expect(answer).toBeUndefined();
    else if (admitted) expect(answer).not.toBe('stale');
    else expect(answer).toBe('stale');
  }
  return answers;
}

const ops = fc.array(op, { minLength: 1, maxLength: 40 });

describe('trading store (in memory)', () => {
  it('refuses every token older than the newest a record admitted', async () => {
    await fc.assert(
      fc.asyncProperty(ops, async (list) => {
        await runChecked(new MemoryStore(), list);
      }),
      { numRuns: 300 },
    );
  });
});

describeRedis('trading store (Redis, real redis-server)', () => {
  const redis = useRedis({ count: 1 });
  let run = 0;

  it('answers every operation as the memory store does, and ends in the same state', async () => {
    const client = redis().client(0);
    await fc.assert(
      fc.asyncProperty(ops, async (list) => {
        const onRedis = new RedisStore(client, `prop:${run++}:`);
        const inMemory = new MemoryStore();
        expect(await runChecked(onRedis, list)).toEqual(await runChecked(inMemory, list));
        expect(canonical(await onRedis.snapshot())).toEqual(canonical(await inMemory.snapshot()));
        expect(await onRedis.pendingOrders(Infinity, 10)).toEqual(
          await inMemory.pendingOrders(Infinity, 10),
        );
      }),
      { numRuns: 250 },
    );
  });
});
