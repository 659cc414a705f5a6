/**
 * orders — takes an order through its saga on `keel/saga`: record the order, reserve stock on
 * the inventory shard that owns the SKU (`keel/hashring` over the live `inventory` instances),
 * charge through `payments` with `keel/resilience` (a breaker per payments instance, a
 * per-attempt timeout, a retry on the other instance within a budget: services/calls.ts), then
 * commit the reservation — or compensate in reverse (void the charge, release the reservation,
 * record the rejection) and end in a clear state.
 *
 * Durability: every step is recorded in Redis before and after it runs (one fenced script per
 * state change), so when an instance dies mid-step another one's recovery loop claims the saga
 * after its lease and carries on from the recorded step, re-running the interrupted call with
 * the same order id (the ledger and the stock records are keyed by it, so nothing happens
 * twice). The order's final state is written with the saga claim's fencing token, so an owner
 * that lost the saga cannot overwrite it.
 *
 * Idempotency: the buyer's key goes through keel/saga's `IdempotencyKeys` (Stripe's rules: the
 * first request runs, concurrent and later ones get its answer, a dead holder's key is taken
 * over after a short lease, another order under the same key is refused). The order id is
 * derived from the key, so a request that takes over a dead holder's key finds the same saga.
 */
import { createHash } from 'node:crypto';
import { LoadBalancer, leastRequest } from 'keel/balancer';
import type { Instance } from 'keel/discovery';
import { HashRing } from 'keel/hashring';
import {
  IdempotencyKeys,
  SagaCoordinator,
  defineSaga,
  isIdempotencyConflictError,
  type SagaOutcome,
  type StepContext,
} from 'keel/saga';
import { priceOf } from '../config.js';
import { sleep } from '../http.js';
import type { OrderRecord, OrderState } from '../store.js';
import { inventoryCall as callInventory, paymentsCalls, type ChargeOutcome } from './calls.js';
import { startService, text, type RunningService, type ServiceContext } from './service.js';

/**
 * Per-attempt timeout of a charge: past it the attempt is ambiguous; the charge goes once more to
 * the other payments instance, and is voided if no attempt answers.
 */
export const PAYMENT_TIMEOUT_MS = 300;
/** A saga's lease: a dead instance's sagas are claimed by another this long after its last write. */
const SAGA_LEASE_MS = 2000;
/** How long a request waits for its saga before answering 503 (the gateway gives up at 10 s). */
const ANSWER_WITHIN_MS = 4000;

/** The order's final state was refused: a newer owner of its saga has written it. */
class Superseded extends Error {
  override readonly name = 'Superseded';
}

/** The SKU is sold out: the saga compensates (no retry) and the order is rejected. */
class SoldOut extends Error {
  override readonly name = 'SoldOut';
}

/** The card was declined: the saga compensates (no retry). */
class PaymentDeclined extends Error {
  override readonly name = 'PaymentDeclined';
}

/** Payments refused or the outcome is unknown: retried by the saga, then compensated. */
class PaymentFailed extends Error {
  override readonly name = 'PaymentFailed';
}

/** The request stops waiting; the saga goes on (a retry of the request finds its answer). */
class StillPending extends Error {
  override readonly name = 'StillPending';
}

/** What the order saga is started with: the same on every request for one key. */
interface OrderInput {
  readonly id: string;
  readonly key: string;
  readonly buyer: string;
  readonly sku: string;
  readonly qty: number;
  readonly amount: number;
}

/** The order id for a buyer's key: every request (and every instance) derives the same one. */
const orderIdFor = (key: string): string =>
  `o-${createHash('sha256').update(key).digest('hex').slice(0, 24)}`;

/** The rejection an order ends in, from why its saga compensated. */
export function rejectionOf(reason: string): OrderState {
  if (reason.includes('SoldOut:')) return 'rejected:sold-out';
  if (reason.includes('PaymentDeclined:')) return 'rejected:payment-declined';
  return 'rejected:payment-unavailable';
}

/** What the saga's outcome means for the buyer; `undefined` while it is not settled. */
function stateOf(outcome: SagaOutcome): OrderState | undefined {
  if (outcome.status === 'completed') return 'confirmed';
  if (outcome.status === 'compensated') return rejectionOf(outcome.reason);
  return undefined; // needs-attention: an operator settles it
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
  const { registry, store } = ctx.platform;
  const counts = { created: 0, replayed: 0, recovered: 0, busy: 0, voids: 0 };
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

  /** Records the order (once: its id is derived from the key). */
  async function recordOrder(input: OrderInput): Promise<void> {
    await store.createOrder(orderOf(input));
  }

  /** Writes the order's final state, fenced by the saga claim's token. */
  async function finishOrder(id: string, fence: number, state: OrderState): Promise<void> {
    if (!(await store.writeOrder(id, fence, { state, step: 'done' }, Date.now())))
      throw new Superseded(`order ${id}: a newer owner of its saga wrote it`);
    byState[state] = (byState[state] ?? 0) + 1;
  }

  /** Reserves the order's units; a sold-out SKU ends the saga. */
  async function reserve(order: OrderRecord, signal: AbortSignal): Promise<string> {
    const status = await inventoryCall('reserve', order, signal);
    if (status === 'sold-out') throw new SoldOut(`${order.sku} is sold out`);
    if (status !== 'reserved' && status !== 'committed')
      throw new PaymentFailed(`reservation is ${status}`);
    return status;
  }

  /** Charges the order; anything but a charge throws (declines are not retried). */
  async function chargeOrder(order: OrderRecord, signal: AbortSignal): Promise<ChargeOutcome> {
    const outcome = await charge(order, signal);
    if (holdCharges > 0) {
      // The drill's fault: stay inside the payment step until this instance is killed.
      holdCharges--;
      midPayment.push(order.id);
      await sleep(60_000, signal);
    }
    if (outcome === 'charged') return outcome;
    if (outcome === 'declined') throw new PaymentDeclined('card declined');
    throw new PaymentFailed(`charge ${outcome}`);
  }

  const orderOf = (input: OrderInput): OrderRecord => ({
    ...input,
    state: 'pending',
    step: 'new',
    reason: '',
    createdBy: ctx.id,
    createdAt: Date.now(),
  });

  // The order saga. Step bodies stay one call each: the remote calls live in the functions above.
  const orderSaga = defineSaga(
    'order',
    [
      {
        name: 'record',
        run: (c: StepContext<OrderInput>) => recordOrder(c.input),
        // The last compensation: the order ends rejected, with why its saga compensated.
        compensate: (c) => finishOrder(c.input.id, c.fence, rejectionOf(c.reason)),
      },
      {
        name: 'reserve',
        run: (c, signal) => reserve(orderOf(c.input), signal),
        compensate: async (c, signal) => {
          await inventoryCall('release', orderOf(c.input), signal);
        },
        retry: { attempts: 3, initialDelayMs: 50, retryIf: (e) => !(e instanceof SoldOut) },
      },
      {
        name: 'charge',
        run: (c, signal) => chargeOrder(orderOf(c.input), signal),
        // Voids whether or not the charge is known to have happened: the ledger refunds a
        // charge, or records a void that refuses a charge still on its way.
        compensate: (c, signal) => voidCharge(orderOf(c.input), signal),
        retry: {
          attempts: 3,
          initialDelayMs: 100,
          retryIf: (e) => !(e instanceof PaymentDeclined),
        },
      },
      {
        name: 'commit',
        run: async (c, signal) => {
          const order = orderOf(c.input);
          await inventoryCall('commit', order, signal);
          // Redis mode: the order-confirmed event, through the outbox (see ../events.ts).
          await ctx.platform.events?.confirmed({
            orderId: order.id,
            sku: order.sku,
            qty: order.qty,
            amount: order.amount,
          });
          await finishOrder(c.input.id, c.fence, 'confirmed');
        },
        retry: { attempts: 10, initialDelayMs: 50, maxDelayMs: 1000 },
      },
    ],
    // Compensations keep trying through a payments outage (about 20 s) before an order is
    // parked for an operator.
    { compensationRetry: { attempts: 30, initialDelayMs: 50, maxDelayMs: 1000 } },
  );
  const sagas = new SagaCoordinator({
    redis: ctx.platform.sagaRedis,
    prefix: `${ctx.platform.sagaPrefix}saga:`,
    sagas: [orderSaga],
    owner: `${ctx.id}:${process.pid}:${Date.now()}`,
    leaseMs: SAGA_LEASE_MS,
    recoveryIntervalMs: 300,
  });
  const sagaEvents = sagas.onTransition((e) => {
    if (e.event === 'claim') counts.recovered++;
  });
  const keys = new IdempotencyKeys({
    redis: ctx.platform.sagaRedis,
    prefix: `${ctx.platform.sagaPrefix}idem:`,
    leaseMs: SAGA_LEASE_MS,
    maxPollMs: 50,
  });
  let holdCharges = 0;
  const midPayment: string[] = [];

  /** Runs (or joins) the order's saga; `undefined` when it is not settled within the wait. */
  async function settle(input: OrderInput): Promise<OrderState | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => {
        resolve(undefined);
      }, ANSWER_WITHIN_MS);
    });
    try {
      const outcome = await Promise.race([sagas.run(orderSaga, input.id, input), waited]);
      return outcome === undefined ? undefined : stateOf(outcome);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The sagas as stored, for the report: counts, the parked ones, any still live. */
  async function sagaReport(ids: readonly string[]): Promise<Record<string, unknown>> {
    const of = (
      status: 'completed' | 'compensated' | 'needs-attention' | 'running' | 'compensating',
    ) => sagas.list(orderSaga, { status, limit: 10_000 });
    const [completed, compensated, parked, running, compensating] = await Promise.all([
      of('completed'),
      of('compensated'),
      of('needs-attention'),
      of('running'),
      of('compensating'),
    ]);
    const traced = await Promise.all(ids.map((id) => sagas.get(orderSaga, id)));
    return {
      completed: completed.length,
      compensated: compensated.length,
      needsAttention: parked.map((p) => ({ id: p.id, reason: p.reason ?? '' })),
      stuck: [...running, ...compensating].map((p) => ({
        id: p.id,
        status: p.status,
        step: p.step,
      })),
      traced: traced.map((snap, i) => ({
        id: ids[i],
        status: snap?.status ?? 'missing',
        // Who finished it: the owners that claimed it after its first one.
        claimedBy: (snap?.history ?? []).filter((h) => h.event === 'claim').map((h) => h.detail),
        owner: snap?.owner ?? '',
        reason: snap?.reason ?? '',
        events: (snap?.history ?? []).map(
          (h) => `${h.event}${h.step === undefined ? '' : ` ${h.step}`}`,
        ),
      })),
    };
  }

  return startService('orders', ctx, () => {
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
          const buyer = text(body.buyer) ?? 'anonymous';
          const input: OrderInput = {
            id: orderIdFor(key),
            key,
            buyer,
            sku,
            qty,
            amount: qty * priceOf(sku),
          };
          const mine = { ran: false }; // whether this request ran the saga (or got a stored answer)
          try {
            const answer = await keys.idempotent(
              `order:${key}`,
              async () => {
                mine.ran = true;
                const state = await settle(input);
                if (state === undefined) throw new StillPending(input.id);
                return { orderId: input.id, state };
              },
              { payload: { buyer, sku, qty }, signal: AbortSignal.timeout(ANSWER_WITHIN_MS) },
            );
            if (mine.ran) counts.created++;
            else counts.replayed++;
            return { status: 200, body: { ...answer, created: mine.ran } };
          } catch (error) {
            if (isIdempotencyConflictError(error)) {
              return { status: 422, body: { error: `key ${key} was used for another order` } };
            }
            // Not settled in time (or waiting for another request with this key): try again.
            counts.busy++;
            return {
              status: 503,
              body: { orderId: input.id, state: 'pending', created: mine.ran },
            };
          }
        },
        'POST /admin/hold-charges': (body) => {
          holdCharges = Number(body.count) || 0;
          return Promise.resolve({ status: 200, body: { holdCharges } });
        },
        'POST /sagas': async (body) => {
          const ids = Array.isArray(body.ids) ? body.ids.map(String) : [];
          return { status: 200, body: await sagaReport(ids) };
        },
      },
      stats: () => ({
        ...counts,
        byState,
        midPayment,
        breaker: paying.breakerStates(),
        chargeLog: paying.chargeLog,
        transitions,
        ringChanges,
        ring: ring.nodes().map((n) => n.id),
        payments: payments.size,
      }),
      dispose: () => {
        // A crash (embedded mode) or a stop: running steps abort and nothing more is recorded;
        // another instance claims these sagas when their lease runs out.
        void sagas.close();
        sagaEvents.dispose();
        payments.close();
        inventory.close();
      },
    };
  });
}
