/**
 * The store in Redis (Redis mode): one Lua script per operation, so each check-and-set is
 * atomic on the server. Key layout under a per-run prefix P:
 * `P:order:<id>` hash (order fields + `_fence`), `P:orders` set of order ids, `P:pending`
 * sorted set id → last touch, `P:stock:<sku>` hash (`initial`, `available`, `sold`, `_fence`,
 * `r:<orderId>` reservations), `P:skus` set, `P:ledger` hash order id → state,
 * `P:journal` list of `charge <id>` / `refund <id>`.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { ORDER_FIELDS, keysOf, orderFields, parseOrder } from './store.js';
import type * as S from './store.js';

// KEYS: orders, order, pending. ARGV: key, id, now, field, value, …
const CREATE_ORDER = `
if redis.call('EXISTS', KEYS[2]) == 1 then return {0, ARGV[2]} end
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
return {1, ARGV[2]}`;

// KEYS: record. ARGV: token, field, … → {1, values} | {0} fenced off | {2} no such record.
// A read for update: it registers the token, so older holders can no longer write.
const FENCED_READ = `
if redis.call('EXISTS', KEYS[1]) == 0 then return {2} end
local fence = tonumber(redis.call('HGET', KEYS[1], '_fence') or '0')
if tonumber(ARGV[1]) < fence then return {0} end
redis.call('HSET', KEYS[1], '_fence', ARGV[1])
return {1, redis.call('HMGET', KEYS[1], unpack(ARGV, 2))}`;

// KEYS: record [, pending]. ARGV: token, score or '-', member, field, value, … → 1 | 0 fenced off.
const FENCED_WRITE = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local fence = tonumber(redis.call('HGET', KEYS[1], '_fence') or '0')
if tonumber(ARGV[1]) < fence then return 0 end
redis.call('HSET', KEYS[1], '_fence', ARGV[1], unpack(ARGV, 4))
if #KEYS > 1 then
  if ARGV[2] == '-' then redis.call('ZREM', KEYS[2], ARGV[3])
  else redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3]) end
end
return 1`;

// KEYS: ledger, journal. ARGV: order id, amount.
const CHARGE = `
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then return current end
redis.call('HSET', KEYS[1], ARGV[1], 'charged')
redis.call('RPUSH', KEYS[2], 'charge ' .. ARGV[1] .. ' ' .. ARGV[2])
return 'charged'`;

// KEYS: ledger, journal. ARGV: order id.
const VOID = `
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current == 'charged' then
  redis.call('HSET', KEYS[1], ARGV[1], 'refunded')
  redis.call('RPUSH', KEYS[2], 'refund ' .. ARGV[1])
  return 'refunded'
end
if current then return current end
redis.call('HSET', KEYS[1], ARGV[1], 'voided')
return 'voided'`;

const sha1 = (text: string): string => createHash('sha1').update(text).digest('hex');
const SHAS = new Map(
  [CREATE_ORDER, FENCED_READ, FENCED_WRITE, CHARGE, VOID].map((s) => [s, sha1(s)]),
);

const flat = (fields: Record<string, string>): string[] => Object.entries(fields).flat();

export class RedisStore implements S.Store {
  readonly #redis: Redis;
  readonly #p: string;

  /** `prefix` keeps runs apart on shared servers (`--redis`). */
  constructor(redis: Redis, prefix: string) {
    this.#redis = redis;
    this.#p = prefix;
  }

  /** EVALSHA, falling back to EVAL the first time a server sees the script. */
  async #run(script: string, keys: readonly string[], args: readonly (string | number)[]) {
    const sha = SHAS.get(script) as string;
    try {
      return await this.#redis.evalsha(sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!String(error).includes('NOSCRIPT')) throw error;
      return this.#redis.eval(script, keys.length, ...keys, ...args);
    }
  }

  async initStock(units: Readonly<Record<string, number>>): Promise<void> {
    const tx = this.#redis.multi();
    for (const [sku, n] of Object.entries(units)) {
      tx.del(`${this.#p}stock:${sku}`);
      tx.hset(`${this.#p}stock:${sku}`, { initial: n, available: n, sold: 0 });
      tx.sadd(`${this.#p}skus`, sku);
    }
    await tx.exec();
  }

  async createOrder(order: S.OrderRecord): Promise<{ id: string; created: boolean }> {
    const reply = (await this.#run(
      CREATE_ORDER,
      [`${this.#p}orders`, `${this.#p}order:${order.id}`, `${this.#p}pending`],
      [order.key, order.id, order.createdAt, ...flat(orderFields(order))],
    )) as [number, string];
    return { id: reply[1], created: reply[0] === 1 };
  }

  async readOrder(id: string, token: number): Promise<S.Fenced<S.OrderRecord | undefined>> {
    const reply = (await this.#run(
      FENCED_READ,
      [`${this.#p}order:${id}`],
      [token, ...ORDER_FIELDS],
    )) as [number, (string | null)[]?];
    if (reply[0] === 2) return undefined;
    if (reply[0] === 0) return 'stale';
    const values = reply[1] ?? [];
    return parseOrder(Object.fromEntries(ORDER_FIELDS.map((f, i) => [f, values[i]])));
  }

  async peekOrder(id: string): Promise<S.OrderRecord | undefined> {
    const fields = await this.#redis.hgetall(`${this.#p}order:${id}`);
    return Object.keys(fields).length === 0 ? undefined : parseOrder(fields);
  }

  async writeOrder(id: string, token: number, patch: S.OrderPatch, now: number): Promise<boolean> {
    const final = patch.state !== undefined && patch.state !== 'pending';
    const fields = Object.entries(patch).flat();
    const reply = await this.#run(
      FENCED_WRITE,
      [`${this.#p}order:${id}`, `${this.#p}pending`],
      [token, final ? '-' : now, id, ...fields],
    );
    return reply === 1;
  }

  pendingOrders(before: number, limit: number): Promise<string[]> {
    return this.#redis.zrangebyscore(`${this.#p}pending`, '-inf', before, 'LIMIT', 0, limit);
  }

  pendingCount(): Promise<number> {
    return this.#redis.zcard(`${this.#p}pending`);
  }

  async readStock(
    sku: string,
    token: number,
    orderId: string,
  ): Promise<S.Fenced<S.StockView | undefined>> {
    const reply = (await this.#run(
      FENCED_READ,
      [`${this.#p}stock:${sku}`],
      [token, 'available', 'sold', `r:${orderId}`],
    )) as [number, (string | null)[]?];
    if (reply[0] === 2) return undefined;
    if (reply[0] === 0) return 'stale';
    const [available, sold, reservation] = reply[1] ?? [];
    return {
      available: Number(available),
      sold: Number(sold),
      reservation: reservation ?? undefined,
    };
  }

  async writeStock(
    sku: string,
    token: number,
    orderId: string,
    next: S.StockView,
  ): Promise<boolean> {
    const fields = ['available', String(next.available), 'sold', String(next.sold)];
    if (next.reservation !== undefined) fields.push(`r:${orderId}`, next.reservation);
    const reply = await this.#run(
      FENCED_WRITE,
      [`${this.#p}stock:${sku}`],
      [token, '', '', ...fields],
    );
    return reply === 1;
  }

  async charge(orderId: string, amount: number): Promise<S.LedgerState> {
    return (await this.#run(
      CHARGE,
      [`${this.#p}ledger`, `${this.#p}journal`],
      [orderId, amount],
    )) as S.LedgerState;
  }

  async voidCharge(orderId: string): Promise<S.LedgerState> {
    return (await this.#run(
      VOID,
      [`${this.#p}ledger`, `${this.#p}journal`],
      [orderId],
    )) as S.LedgerState;
  }

  async snapshot(): Promise<S.StoreSnapshot> {
    const r = this.#redis;
    const ids = await r.smembers(`${this.#p}orders`);
    const orderPipe = r.pipeline();
    for (const id of ids) orderPipe.hgetall(`${this.#p}order:${id}`);
    const orderReplies = (await orderPipe.exec()) ?? [];
    const orders = orderReplies.map(([, fields]) => parseOrder(fields as Record<string, string>));
    const skus = (await r.smembers(`${this.#p}skus`)).sort();
    const stockPipe = r.pipeline();
    for (const sku of skus) stockPipe.hgetall(`${this.#p}stock:${sku}`);
    const stockReplies = (await stockPipe.exec()) ?? [];
    const journal = await r.lrange(`${this.#p}journal`, 0, -1);
    return {
      orders,
      keys: keysOf(orders),
      stock: skus.map((sku, i) => {
        const fields = (stockReplies[i]?.[1] ?? {}) as Record<string, string>;
        return {
          sku,
          initial: Number(fields.initial),
          available: Number(fields.available),
          sold: Number(fields.sold),
          reservations: Object.fromEntries(
            Object.entries(fields)
              .filter(([f]) => f.startsWith('r:'))
              .map(([f, v]) => [f.slice(2), v]),
          ),
        };
      }),
      ledger: (await r.hgetall(`${this.#p}ledger`)) as Record<string, S.LedgerState>,
      events: journal.map((line): S.LedgerEvent => {
        const [type, orderId] = line.split(' ');
        return { type: type === 'refund' ? 'refund' : 'charge', orderId: orderId ?? '' };
      }),
      pending: await r.zcard(`${this.#p}pending`),
    };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Deletes every key under `prefix` on one server (a run's keys on servers that are not ours). */
export async function purgePrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (found.length > 0) await redis.unlink(...found);
  } while (cursor !== '0');
}
