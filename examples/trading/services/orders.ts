/**
 * orders — takes an order through its saga: reserve stock on the inventory shard that owns the
 * SKU (`keel/hashring` over the live `inventory` instances), charge through `payments` with
 * `keel/resilience` (a breaker per payments instance, a per-attempt timeout, a retry on the other
 * instance within a budget: services/calls.ts), then commit the reservation — or
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
import type { Instance } from 'keel/discovery';
import { HashRing } from 'keel/hashring';
import { isLockTakenError, type Lock } from 'keel/lock';
import { priceOf } from '../config.js';
import { isFinal, type OrderPatch, type OrderRecord, type OrderState } from '../store.js';
import { startService, text, type RunningService, type ServiceContext } from './service.js';
import { inventoryCall as callInventory, paymentsCalls, type ChargeOutcome } from './calls.js';

/**
 * Per-attempt timeout of a charge: past it the attempt is ambiguous; the charge goes once more to
 * the other payments instance, and is voided if no attempt answers.
 */
export const PAYMENT_TIMEOUT_MS = 300;
/** The order lock's ttl: longer than a healthy saga, short enough for a quick takeover. */
const ORDER_LOCK_TTL_MS = 3000;

/** The order's lock was lost or fenced off: stop, the next holder carries on. */
class Superseded extends Error {
  override readonly name = 'Superseded';
}

export interface BreakerTransition {
  readonly at: number;
  readonly instance: string;
  /** The payments instance whose breaker (in `instance`) changed. */
  readonly target?: string;
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

  // Payments: a balancer over the live instances, a breaker per instance (services/calls.ts).
  const payments = LoadBalancer.following(registry.watch('payments'), {
    strategy: leastRequest(),
    outlierEjection: { consecutiveFailures: 5, baseEjectionMs: 2000 },
  });
  const paying = paymentsCalls(payments, PAYMENT_TIMEOUT_MS, ({ at, target, from, to, reason }) => {
    transitions.push({ at, instance: ctx.id, target, from, to, reason });
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

  const charge = (order: OrderRecord, alive: AbortSignal): Promise<ChargeOutcome> =>
    paying.charge(order, alive);
  const voidCharge = (order: OrderRecord, alive: AbortSignal): Promise<void> => {
    counts.voids++;
    return paying.voidCharge(order.id, alive);
  };
  const inventoryCall = (
    op: 'reserve' | 'commit' | 'release',
    order: OrderRecord,
    alive: AbortSignal,
  ): Promise<string> => callInventory((sku) => ring.get(sku)?.data, op, order, alive);

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
          // Redis mode: the order-confirmed event, through the outbox (see ../events.ts).
          await ctx.platform.events?.confirmed({
            orderId: id,
            sku: order.sku,
            qty: order.qty,
            amount: order.amount,
          });
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
        breaker: paying.breakerStates(),
        chargeLog: paying.chargeLog,
        transitions,
        ringChanges,
        ring: ring.nodes().map((n) => n.id),
        payments: payments.size,
      }),
      dispose: () => {
        clearInterval(sweeper);
        payments.close();
        inventory.close();
      },
    };
  });
}
