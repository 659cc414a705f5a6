/**
 * orders — takes an order through its saga: reserve stock on the inventory shard that owns the
 * SKU (`keel/hashring` over the live `inventory` instances), charge through `payments` behind a
 * `keel/breaker` circuit breaker with a per-call timeout, then commit the reservation — or
 * compensate (void an ambiguous charge, release the reservation) and end in a clear state.
 *
 * Idempotency: the buyer's key maps to one order id, atomically in the store, so a retried
 * request finds the order it already created. Each order is worked on under a `keel/lock` lock
 * on the order, and every step is persisted (fenced by that lock's token) before its side
 * effect runs, so whoever holds the order next — a retry on another instance, or the sweeper
 * after an instance died — carries on from the recorded step and never repeats a finished one.
 */
import { randomUUID } from 'node:crypto';
import { LoadBalancer, leastRequest } from 'keel/balancer';
import { CircuitBreaker, isBreakerOpenError } from 'keel/breaker';
import type { Instance } from 'keel/discovery';
import { HashRing } from 'keel/hashring';
import { isLockTakenError, type Lock } from 'keel/lock';
import { priceOf } from '../config.js';
import { call, sleep, type Reply } from '../http.js';
import { isFinal, type OrderPatch, type OrderRecord, type OrderState } from '../store.js';
import { startService, text, type RunningService, type ServiceContext } from './service.js';

/** Per-call timeout of a charge: past it the charge is ambiguous and must be voided. */
export const PAYMENT_TIMEOUT_MS = 300;
/** The order lock's ttl: longer than a healthy saga, short enough for a quick takeover. */
const ORDER_LOCK_TTL_MS = 3000;

/** A definite "not charged" from payments (outage): counts against the breaker. */
class PaymentsRefused extends Error {
  override readonly name = 'PaymentsRefused';
}

type ChargeOutcome = 'charged' | 'declined' | 'voided' | 'unavailable' | 'unknown';

/** The order's lock was lost or fenced off: stop, the next holder carries on. */
class Superseded extends Error {
  override readonly name = 'Superseded';
}

export interface BreakerTransition {
  readonly at: number;
  readonly instance: string;
  readonly from: string;
  readonly to: string;
  readonly reason: string;
}

export interface RingChange {
  readonly at: number;
  readonly nodes: readonly string[];
  readonly movedSkus: number;
  readonly movedFraction: number;
}

export function startOrders(ctx: ServiceContext): Promise<RunningService> {
  const { registry, store, locks } = ctx.platform;
  const counts = { created: 0, replayed: 0, swept: 0, busy: 0, voids: 0 };
  const byState: Record<string, number> = {};
  const transitions: BreakerTransition[] = [];
  const ringChanges: RingChange[] = [];

  // Payments: a balancer over the live instances, behind one breaker for the dependency.
  const payments = LoadBalancer.following(registry.watch('payments'), {
    strategy: leastRequest(),
    outlierEjection: { consecutiveFailures: 5, baseEjectionMs: 2000 },
  });
  const breaker = new CircuitBreaker({
    name: `payments@${ctx.id}`,
    window: { type: 'count', size: 20 },
    minimumCalls: 8,
    failureRateThreshold: 0.5,
    openDurationMs: 700,
    backoff: { multiplier: 1.5, maxOpenDurationMs: 2000 },
    halfOpenPermits: 2,
    timeoutMs: PAYMENT_TIMEOUT_MS,
  });
  const stateSub = breaker.onStateChange(({ from, to, reason }) => {
    transitions.push({ at: Date.now(), instance: ctx.id, from, to, reason });
  });

  // Inventory: a ring over the live shards, rebuilt once per batch of changes the view applies
  // (when the set of shards changed).
  const inventory = registry.watch('inventory');
  let ring = new HashRing<Instance>();
  const rebuild = (): void => {
    const up = inventory.instances({ status: 'up' });
    const ids = up.map((i) => i.id).join(',');
    if (
      ids ===
      ring
        .nodes()
        .map((n) => n.id)
        .sort()
        .join(',')
    )
      return;
    const next = new HashRing<Instance>({ nodes: up.map((i) => ({ id: i.id, data: i })) });
    if (ring.size > 0 && next.size > 0) {
      const moved = ctx.skus.filter((sku) => ring.get(sku)?.id !== next.get(sku)?.id).length;
      ringChanges.push({
        at: Date.now(),
        nodes: up.map((i) => i.id),
        movedSkus: moved,
        movedFraction: HashRing.diff(ring, next).movedFraction,
      });
    }
    ring = next;
  };
  inventory.onSettled(rebuild);
  rebuild(); // the view as it is now (empty until the first snapshot is in)

  async function callPayments(path: string, body: unknown, signal: AbortSignal): Promise<Reply> {
    const lease = payments.acquire();
    if (lease === undefined) throw new PaymentsRefused('no payments instance');
    const started = performance.now();
    let ok = false;
    try {
      const { host, port } = lease.endpoint.data;
      const reply = await call(port, path, body, { signal }, host);
      ok = reply.status < 500;
      return reply;
    } finally {
      lease.done({ ok, latencyMs: performance.now() - started });
    }
  }

  async function charge(order: OrderRecord, alive: AbortSignal): Promise<ChargeOutcome> {
    try {
      const reply = await breaker.execute(async (signal) => {
        const r = await callPayments(
          '/charge',
          { orderId: order.id, key: order.key, amount: order.amount },
          AbortSignal.any([signal, alive]),
        );
        if (r.status >= 500) throw new PaymentsRefused(String(r.body.error));
        return r;
      });
      if (reply.status === 200) return 'charged';
      if (reply.status === 402) return 'declined';
      return 'voided'; // 409: the ledger has a void for this order already
    } catch (error) {
      if (alive.aborted) throw error;
      // Refused or never sent: certainly not charged. Anything else (timeout, reset): unknown.
      return isBreakerOpenError(error) || error instanceof PaymentsRefused
        ? 'unavailable'
        : 'unknown';
    }
  }

  async function voidCharge(order: OrderRecord, alive: AbortSignal): Promise<void> {
    counts.voids++;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const reply = await callPayments(
          '/void',
          { orderId: order.id },
          AbortSignal.any([alive, AbortSignal.timeout(2000)]),
        );
        if (reply.status === 200) return;
      } catch (error) {
        if (alive.aborted) throw error;
      }
      await sleep(50 * (attempt + 1), alive);
    }
    throw new Error('void failed; the sweeper will retry');
  }

  async function inventoryCall(
    op: 'reserve' | 'commit' | 'release',
    order: OrderRecord,
    alive: AbortSignal,
  ): Promise<string> {
    for (let attempt = 0; attempt < 12; attempt++) {
      const owner = ring.get(order.sku)?.data;
      if (owner !== undefined) {
        const reply = await call(
          owner.port,
          `/${op}`,
          { sku: order.sku, orderId: order.id, qty: order.qty },
          { signal: alive },
          owner.host,
        );
        if (reply.status === 200) return String(reply.body.status);
        // 421: the shard's ring moved on before ours; 409 fenced / 503 busy: try again.
        if (reply.status !== 421 && reply.status !== 503 && reply.body.error !== 'fenced') {
          throw new Error(
            `inventory ${op} ${order.sku}: ${reply.status} ${String(reply.body.error)}`,
          );
        }
      }
      await sleep(10 * (attempt + 1), alive);
    }
    throw new Error(`inventory ${op} ${order.sku}: no owner answered`);
  }

  /** Takes the order one persisted step at a time until it is final. */
  async function advance(id: string, lock: Lock, alive: AbortSignal): Promise<OrderRecord> {
    const write = async (patch: OrderPatch): Promise<void> => {
      if (alive.aborted) throw alive.reason as Error;
      if (!(await store.writeOrder(id, lock.fencingToken, patch, Date.now())))
        throw new Superseded();
    };
    const finish = (state: OrderState): Promise<void> => write({ state, step: 'done' });
    let order: OrderRecord;
    // Whether this holder found the order already at `charging`: then an earlier holder may
    // have sent a charge, and a refusal now (outage, open breaker) proves nothing about it.
    let resumedCharging: boolean | undefined;
    for (;;) {
      if (alive.aborted) throw alive.reason as Error;
      if (lock.signal.aborted) throw new Superseded();
      const current = await store.readOrder(id, lock.fencingToken);
      if (current === 'stale') throw new Superseded();
      if (current === undefined) throw new Error(`order ${id} vanished`);
      order = current;
      resumedCharging ??= order.step === 'charging';
      if (isFinal(order.state)) return order;
      switch (order.step) {
        case 'new': {
          const status = await inventoryCall('reserve', order, alive);
          if (status === 'sold-out') await finish('rejected:sold-out');
          else if (status === 'reserved' || status === 'committed')
            await write({ step: 'charging' });
          else await finish('rejected:payment-unavailable'); // released earlier by a compensation
          break;
        }
        case 'charging': {
          const outcome = await charge(order, alive);
          const reason =
            outcome === 'declined' ? 'rejected:payment-declined' : 'rejected:payment-unavailable';
          if (outcome === 'charged') await write({ step: 'committing' });
          // Possibly charged (a timeout, or an earlier holder's attempt): void before releasing;
          // the void also blocks a charge still on its way to the ledger.
          else if (outcome === 'unknown' || resumedCharging)
            await write({ step: 'voiding', reason });
          else await write({ step: 'releasing', reason });
          break;
        }
        case 'voiding':
          await voidCharge(order, alive);
          await write({ step: 'releasing' });
          break;
        case 'committing':
          await inventoryCall('commit', order, alive);
          await finish('confirmed');
          break;
        case 'releasing':
          await inventoryCall('release', order, alive);
          await finish((order.reason || 'rejected:payment-unavailable') as OrderState);
          break;
        case 'done':
          throw new Error(`order ${order.id} is done but ${order.state}`);
      }
    }
  }

  /**
   * Works on order `id` under its lock, waiting up to `waitMs` for it (0: only if free). The
   * order as it stands afterwards; `undefined` when someone else holds it.
   */
  async function process(
    id: string,
    waitMs: number,
    alive: AbortSignal,
  ): Promise<OrderRecord | undefined> {
    try {
      return await locks.using(
        `order:${id}`,
        {
          ttlMs: ORDER_LOCK_TTL_MS,
          ...(waitMs === 0 ? { retryCount: 0 } : { waitMs }),
          signal: alive,
          // Never extended: a saga that outlives the ttl loses the order to the next holder (a
          // retry, the sweeper), and its own later writes are refused by the fencing token.
          maxExtensions: 0,
        },
        async (_signal, lock) => {
          const order = await advance(id, lock, alive).catch((error: unknown) => {
            if (alive.aborted) throw error;
            // Superseded or a step failed: leave it pending; a retry or the sweeper goes on.
            return store.peekOrder(id);
          });
          if (order !== undefined && isFinal(order.state))
            byState[order.state] = (byState[order.state] ?? 0) + 1;
          return order;
        },
      );
    } catch (error) {
      if (alive.aborted) throw error;
      if (isLockTakenError(error)) return undefined;
      throw error;
    }
  }

  let sweeping = false;
  let sweeper: NodeJS.Timeout | undefined;

  return startService('orders', ctx, (alive) => {
    // Pending orders nobody has touched for a while (their instance died, or their step failed
    // and the buyer gave up): pick them up, one at a time, if their lock is free.
    sweeper = setInterval(() => {
      if (sweeping || alive.aborted) return;
      sweeping = true;
      void (async () => {
        try {
          for (const id of await store.pendingOrders(Date.now() - 1000, 20)) {
            if (alive.aborted) return;
            const order = await process(id, 0, alive);
            if (order !== undefined) counts.swept++;
          }
        } catch {
          // next round
        } finally {
          sweeping = false;
        }
      })();
    }, 400);
    sweeper.unref();
    return {
      routes: {
        'POST /orders': async (body) => {
          const key = text(body.key);
          const sku = text(body.sku);
          const qty = Number(body.qty);
          if (
            key === undefined ||
            sku === undefined ||
            !ctx.skus.includes(sku) ||
            !Number.isInteger(qty) ||
            qty < 1 ||
            qty > 10
          ) {
            return { status: 400, body: { error: 'key, a known sku and qty 1..10 expected' } };
          }
          const { id, created } = await store.createOrder({
            id: randomUUID(),
            key,
            buyer: text(body.buyer) ?? 'anonymous',
            sku,
            qty,
            amount: qty * priceOf(sku),
            state: 'pending',
            step: 'new',
            reason: '',
            createdBy: ctx.id,
            createdAt: Date.now(),
          });
          if (created) counts.created++;
          else counts.replayed++;
          const order = await process(id, 5000, alive);
          if (order === undefined || !isFinal(order.state)) {
            counts.busy++;
            return { status: 503, body: { orderId: id, state: 'pending', created } };
          }
          return { status: 200, body: { orderId: id, state: order.state, created } };
        },
      },
      stats: () => ({
        ...counts,
        byState,
        breaker: breaker.state,
        transitions,
        ringChanges,
        ring: ring.nodes().map((n) => n.id),
        payments: payments.size,
      }),
      dispose: () => {
        clearInterval(sweeper);
        stateSub.dispose();
        payments.close();
        inventory.close();
      },
    };
  });
}
