/**
 * The shared store: orders, stock per SKU and the payments
 * ledger. In Redis mode it is Redis (store-redis.ts); in embedded mode a Map-backed twin with
 * the same semantics (store-memory.ts).
 *
 * Fencing. Order records and stock records remember the newest fencing token that touched
 * them (`_fence`) and refuse any read-for-update or write that carries an older one: once a
 * newer lock holder has read a record, the older holder — whose lock expired while it was
 * paused, or who still thinks it owns a SKU after a rebalance — can no longer write it
 * (the "fencing token" of Kleppmann, "How to do distributed locking", 2016). Reads register
 * the token too, so a write based on a read older than someone else's read is refused as well.
 */

/** Final states an order ends in, plus `pending` while it is being worked on. */
export type OrderState =
  | 'pending'
  | 'confirmed'
  | 'rejected:sold-out'
  | 'rejected:payment-declined'
  | 'rejected:payment-unavailable';

/** Where a pending order is in its saga; each step is persisted before its side effect runs. */
export type OrderStep = 'new' | 'charging' | 'voiding' | 'committing' | 'releasing' | 'done';

/** One order as stored. */
export interface OrderRecord {
  readonly id: string;
  /**
   * The buyer's idempotency key: one order per key, however often it is sent (keel/saga's
   * IdempotencyKeys, in services/orders.ts; the order id is derived from it).
   */
  readonly key: string;
  readonly buyer: string;
  readonly sku: string;
  readonly qty: number;
  /** Cents. */
  readonly amount: number;
  readonly state: OrderState;
  readonly step: OrderStep;
  /** The final state a compensation ends in (`rejected:…`), set when one starts. */
  readonly reason: string;
  /** Instance that created the order. */
  readonly createdBy: string;
  readonly createdAt: number;
}

/** What an order update may change. */
export type OrderPatch = Partial<Pick<OrderRecord, 'state' | 'step' | 'reason'>>;

/**
 * A SKU's stock as one fenced read sees it, with this order's reservation:
 * `reserved:<qty>`, `committed:<qty>`, `released:<qty>` or undefined.
 */
export interface StockView {
  readonly available: number;
  readonly sold: number;
  readonly reservation: string | undefined;
}

/** A ledger entry per order id. `refunded` = charged, then voided. */
export type LedgerState = 'charged' | 'voided' | 'refunded';

/** One line of the payments ledger's append-only journal. */
export interface LedgerEvent {
  readonly type: 'charge' | 'refund';
  readonly orderId: string;
}

/** Everything, read back for the audit at the end of a run. */
export interface StoreSnapshot {
  readonly orders: readonly OrderRecord[];
  /** Idempotency key → order id (from the orders). */
  readonly keys: Readonly<Record<string, string>>;
  readonly stock: readonly {
    readonly sku: string;
    readonly initial: number;
    readonly available: number;
    readonly sold: number;
    /** Order id → reservation state. */
    readonly reservations: Readonly<Record<string, string>>;
  }[];
  readonly ledger: Readonly<Record<string, LedgerState>>;
  readonly events: readonly LedgerEvent[];
  readonly pending: number;
}

export type Fenced<T> = T | 'stale';

/** The store's operations; both implementations are atomic per call. */
export interface Store {
  /** Puts the initial stock (and forgets any earlier run under the same prefix). */
  initStock(units: Readonly<Record<string, number>>): Promise<void>;
  /**
   * Creates the order unless one with its id exists: returns the id, and whether it was created
   * now. Atomic, so a saga step that runs again (after a crash) creates nothing twice.
   */
  createOrder(order: OrderRecord): Promise<{ id: string; created: boolean }>;
  /** A fenced read of an order (`undefined` if it does not exist). */
  readOrder(id: string, token: number): Promise<Fenced<OrderRecord | undefined>>;
  /** A plain read of an order, for answering: no fencing, no side effect. */
  peekOrder(id: string): Promise<OrderRecord | undefined>;
  /** A fenced update of an order; keeps the pending index in step. False when fenced off. */
  writeOrder(id: string, token: number, patch: OrderPatch, now: number): Promise<boolean>;
  /** Ids of pending orders not touched since `before` (oldest first). */
  pendingOrders(before: number, limit: number): Promise<string[]>;
  pendingCount(): Promise<number>;
  /** A fenced read of a SKU's stock with `orderId`'s reservation (`undefined` for an unknown SKU). */
  readStock(sku: string, token: number, orderId: string): Promise<Fenced<StockView | undefined>>;
  /** A fenced write of a SKU's stock and `orderId`'s reservation. False when fenced off. */
  writeStock(sku: string, token: number, orderId: string, next: StockView): Promise<boolean>;
  /** Records a charge for `orderId` unless the ledger has an entry: returns the entry. */
  charge(orderId: string, amount: number): Promise<LedgerState>;
  /** Voids `orderId`'s charge: refunds it if charged, or blocks a late one. Returns the entry. */
  voidCharge(orderId: string): Promise<LedgerState>;
  snapshot(): Promise<StoreSnapshot>;
  close(): Promise<void>;
}

/** Order fields as flat strings (the Redis hash layout; the memory store uses it too). */
export function orderFields(order: OrderRecord): Record<string, string> {
  return {
    id: order.id,
    key: order.key,
    buyer: order.buyer,
    sku: order.sku,
    qty: String(order.qty),
    amount: String(order.amount),
    state: order.state,
    step: order.step,
    reason: order.reason,
    createdBy: order.createdBy,
    createdAt: String(order.createdAt),
  };
}

/** The inverse of {@link orderFields}. */
export function parseOrder(
  fields: Readonly<Record<string, string | null | undefined>>,
): OrderRecord {
  return {
    id: fields.id ?? '',
    key: fields.key ?? '',
    buyer: fields.buyer ?? '',
    sku: fields.sku ?? '',
    qty: Number(fields.qty),
    amount: Number(fields.amount),
    state: (fields.state ?? 'pending') as OrderState,
    step: (fields.step ?? 'new') as OrderStep,
    reason: fields.reason ?? '',
    createdBy: fields.createdBy ?? '',
    createdAt: Number(fields.createdAt),
  };
}

export const ORDER_FIELDS = Object.keys(
  orderFields(parseOrder({})),
) as readonly (keyof OrderRecord)[];

export const isFinal = (state: OrderState): boolean => state !== 'pending';

/**
 * Idempotency key → order id, from the orders (for the audit). There is one order per key; were
 * there more, the first by id is named, whatever order the store lists them in.
 */
export function keysOf(orders: readonly OrderRecord[]): Record<string, string> {
  const keys: Record<string, string> = {};
  for (const o of orders) {
    const named = keys[o.key];
    if (named === undefined || o.id < named) keys[o.key] = o.id;
  }
  return keys;
}
