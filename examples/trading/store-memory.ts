/**
 * The store in one process (embedded mode): the same records and the same fencing rules as
 * the Redis scripts in store-redis.ts, each operation atomic because it runs synchronously.
 */
import {
  isFinal,
  keysOf,
  orderFields,
  parseOrder,
  type Fenced,
  type LedgerEvent,
  type LedgerState,
  type OrderPatch,
  type OrderRecord,
  type StockView,
  type Store,
  type StoreSnapshot,
} from './store.js';

/** A record with the newest fencing token it has seen. */
interface FencedRecord {
  fence: number;
  fields: Map<string, string>;
}

/** Applies the fencing rule: refuse older tokens, remember newer ones. */
function admit(record: FencedRecord, token: number): boolean {
  if (token < record.fence) return false;
  record.fence = token;
  return true;
}

export class MemoryStore implements Store {
  readonly #orders = new Map<string, FencedRecord>();
  readonly #pending = new Map<string, number>();
  readonly #stock = new Map<string, FencedRecord>();
  readonly #ledger = new Map<string, LedgerState>();
  readonly #events: LedgerEvent[] = [];

  initStock(units: Readonly<Record<string, number>>): Promise<void> {
    this.#stock.clear();
    for (const [sku, n] of Object.entries(units)) {
      const fields = new Map([
        ['initial', String(n)],
        ['available', String(n)],
        ['sold', '0'],
      ]);
      this.#stock.set(sku, { fence: 0, fields });
    }
    return Promise.resolve();
  }

  createOrder(order: OrderRecord): Promise<{ id: string; created: boolean }> {
    if (this.#orders.has(order.id)) return Promise.resolve({ id: order.id, created: false });
    this.#orders.set(order.id, { fence: 0, fields: new Map(Object.entries(orderFields(order))) });
    this.#pending.set(order.id, order.createdAt);
    return Promise.resolve({ id: order.id, created: true });
  }

  readOrder(id: string, token: number): Promise<Fenced<OrderRecord | undefined>> {
    const record = this.#orders.get(id);
    if (record === undefined) return Promise.resolve(undefined);
    if (!admit(record, token)) return Promise.resolve('stale');
    return Promise.resolve(parseOrder(Object.fromEntries(record.fields)));
  }

  peekOrder(id: string): Promise<OrderRecord | undefined> {
    const record = this.#orders.get(id);
    return Promise.resolve(record && parseOrder(Object.fromEntries(record.fields)));
  }

  writeOrder(id: string, token: number, patch: OrderPatch, now: number): Promise<boolean> {
    const record = this.#orders.get(id);
    if (record === undefined || !admit(record, token)) return Promise.resolve(false);
    for (const [field, value] of Object.entries(patch)) record.fields.set(field, value);
    if (patch.state !== undefined && isFinal(patch.state)) this.#pending.delete(id);
    else this.#pending.set(id, now);
    return Promise.resolve(true);
  }

  pendingOrders(before: number, limit: number): Promise<string[]> {
    const due = [...this.#pending].filter(([, at]) => at <= before).sort((a, b) => a[1] - b[1]);
    return Promise.resolve(due.slice(0, limit).map(([id]) => id));
  }

  pendingCount(): Promise<number> {
    return Promise.resolve(this.#pending.size);
  }

  readStock(sku: string, token: number, orderId: string): Promise<Fenced<StockView | undefined>> {
    const record = this.#stock.get(sku);
    if (record === undefined) return Promise.resolve(undefined);
    if (!admit(record, token)) return Promise.resolve('stale');
    return Promise.resolve({
      available: Number(record.fields.get('available')),
      sold: Number(record.fields.get('sold')),
      reservation: record.fields.get(`r:${orderId}`),
    });
  }

  writeStock(sku: string, token: number, orderId: string, next: StockView): Promise<boolean> {
    const record = this.#stock.get(sku);
    if (record === undefined || !admit(record, token)) return Promise.resolve(false);
    record.fields.set('available', String(next.available));
    record.fields.set('sold', String(next.sold));
    if (next.reservation !== undefined) record.fields.set(`r:${orderId}`, next.reservation);
    return Promise.resolve(true);
  }

  charge(orderId: string): Promise<LedgerState> {
    const current = this.#ledger.get(orderId);
    if (current !== undefined) return Promise.resolve(current);
    this.#ledger.set(orderId, 'charged');
    this.#events.push({ type: 'charge', orderId });
    return Promise.resolve('charged');
  }

  voidCharge(orderId: string): Promise<LedgerState> {
    const current = this.#ledger.get(orderId);
    if (current === 'charged') {
      this.#ledger.set(orderId, 'refunded');
      this.#events.push({ type: 'refund', orderId });
      return Promise.resolve('refunded');
    }
    if (current !== undefined) return Promise.resolve(current);
    this.#ledger.set(orderId, 'voided');
    return Promise.resolve('voided');
  }

  snapshot(): Promise<StoreSnapshot> {
    const orders = [...this.#orders.values()].map((r) => parseOrder(Object.fromEntries(r.fields)));
    return Promise.resolve({
      orders,
      keys: keysOf(orders),
      stock: [...this.#stock].map(([sku, r]) => ({
        sku,
        initial: Number(r.fields.get('initial')),
        available: Number(r.fields.get('available')),
        sold: Number(r.fields.get('sold')),
        reservations: Object.fromEntries(
          [...r.fields].filter(([f]) => f.startsWith('r:')).map(([f, v]) => [f.slice(2), v]),
        ),
      })),
      ledger: Object.fromEntries(this.#ledger),
      events: [...this.#events],
      pending: this.#pending.size,
    });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
