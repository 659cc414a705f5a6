/**
 * calls — how the services call each other, through `keel/resilience` instead of hand-written
 * retry loops and hand-timed leases: the gateway's calls to `orders`, and orders' calls to
 * `payments` (charge, void) and to the inventory shard that owns a SKU. Each wrapper is a small
 * function; the services only decide what a reply means.
 */
import { BreakerRegistry } from 'keel/breaker';
import type { FollowingBalancer } from 'keel/balancer';
import type { Instance, ServiceWatch } from 'keel/discovery';
import {
  RetryBudget,
  isResilientCallError,
  resilientCall,
  retry,
  type TriedEndpoint,
} from 'keel/resilience';
import { call, type Reply } from '../http.js';

/** What one resilient call did: when it started, attempts that reached a service, local rejections. */
export type CallRecord = readonly [at: number, attempts: number, rejected: number];

/** Attempts that reached an instance (a breaker's local rejection sent nothing). */
const sent = (tried: readonly TriedEndpoint[]): number =>
  tried.reduce((n, t) => (t.outcome === 'rejected' ? n : n + 1), 0);
const rejectedLocally = (tried: readonly TriedEndpoint[]): number => tried.length - sent(tried);

/** The attempts of a call that ended in a {@link ResilientCallError} (none for other errors). */
const triedOf = (error: unknown): readonly TriedEndpoint[] =>
  isResilientCallError(error) ? error.tried : [];

// ---------------------------------------------------------------------------------------------
// gateway → orders

/** The gateway's caller of `orders`, and what it counted. */
export interface OrdersCalls {
  /**
   * POSTs an order to an `orders` instance; on a network error or a 500 the request goes again
   * to *another* instance, within the retry budget. The reply and the instance that gave it.
   */
  send(body: unknown, alive: AbortSignal): Promise<{ reply: Reply; via: string }>;
  /** Calls made, attempts that reached an instance, and retries the budget refused. */
  readonly counts: { requests: number; attempts: number; budgetRefused: number };
}

/** A 500 from orders: the instance failed the request; another one may not. */
class OrdersFailed extends Error {
  override readonly name = 'OrdersFailed';
  constructor(readonly reply: Reply) {
    super(`orders answered 500: ${String(reply.body.error)}`);
  }
}

/**
 * The gateway's calls to `orders`. Idempotent: the buyer's key maps to one order, so a request
 * sent again finds the order the first one created. Up to 3 attempts, each on an instance not
 * tried yet, no backoff (another instance gains nothing from waiting), and a retry budget (20 %
 * of requests + 10/s, Finagle's defaults) so a sick fleet never sees triple the load. A breaker
 * per instance leaves a failing one out of the picks, beside the balancer's outlier ejection.
 */
export function ordersCalls(orders: FollowingBalancer<ServiceWatch>): OrdersCalls {
  const counts = { requests: 0, attempts: 0, budgetRefused: 0 };
  const caller = resilientCall(orders, {
    retry: { maxAttempts: 3, backoff: { type: 'none' }, budget: new RetryBudget() },
    breakers: { failureRateThreshold: 0.5, minimumCalls: 5, openDurationMs: 2000 },
  });
  return {
    counts,
    async send(body, alive) {
      counts.requests++;
      try {
        const { value, tried } = await caller.callWithReport(
          async (endpoint, signal) => {
            const { host, port } = endpoint.data as Instance;
            const reply = await call(port, '/orders', body, { signal, timeoutMs: 10_000 }, host);
            if (reply.status === 500) throw new OrdersFailed(reply);
            return { reply, via: endpoint.id };
          },
          { idempotent: true, signal: alive },
        );
        counts.attempts += sent(tried);
        return value;
      } catch (error) {
        counts.attempts += sent(triedOf(error));
        if (isResilientCallError(error) && error.stoppedBy === 'budget') counts.budgetRefused++;
        // The last answer was a 500: pass it on as it is.
        if (isResilientCallError(error) && error.cause instanceof OrdersFailed) {
          return { reply: error.cause.reply, via: error.tried.at(-1)?.id ?? '?' };
        }
        throw error;
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// orders → payments

/** A definite "not charged" from payments (503, outage): counts against the breaker. */
export class PaymentsRefused extends Error {
  override readonly name = 'PaymentsRefused';
}

/** What a charge came to. */
export type ChargeOutcome = 'charged' | 'declined' | 'voided' | 'unavailable' | 'unknown';

/** A breaker of one payments instance changed state. */
export interface PaymentsBreakerChange {
  readonly at: number;
  /** The payments instance the breaker guards. */
  readonly target: string;
  readonly from: string;
  readonly to: string;
  readonly reason: string;
}

/** Orders' calls to `payments`. */
export interface PaymentsCalls {
  /** Charges the order; the outcome (`unknown`: may have been charged, void it). */
  charge(order: ChargeOrder, alive: AbortSignal): Promise<ChargeOutcome>;
  /** Voids the order's charge (refunds it, or blocks a late one); throws when no instance could. */
  voidCharge(orderId: string, alive: AbortSignal): Promise<void>;
  /** The breakers' states by instance id, `closed/open` (payments-1, payments-2). */
  breakerStates(): string;
  /** Every charge call: when, attempts sent, local rejections (for the report's outage figures). */
  readonly chargeLog: CallRecord[];
  /** Retries and hedges the budget had left when asked (a snapshot for /stats). */
  budgetBalance(): number;
}

/** The fields of an order a charge needs. */
export interface ChargeOrder {
  readonly id: string;
  readonly key: string;
  readonly amount: number;
}

/**
 * Orders' calls to `payments`, over the balancer of live payments instances, with a breaker per
 * payments instance (a `BreakerRegistry` keyed by instance id: one sick instance is left out of
 * the picks while the other keeps taking charges) and a per-attempt timeout.
 *
 * Charges are retried, never hedged. A charge is idempotent only because it carries its
 * idempotency key: the order id, which payments' ledger is keyed by (`store.charge` answers an
 * existing entry instead of charging again, and a void blocks a late charge). So a charge that
 * timed out or met a down instance goes once more to the *other* instance: its answer settles
 * whether the order was charged, where a single attempt would leave "unknown" and force a void.
 * Hedging stays off: a hedge doubles the charges sent while payments is merely slow, and the
 * slow tail here is a charge that outlives the timeout — the retry already covers it.
 */
export function paymentsCalls(
  payments: FollowingBalancer<ServiceWatch>,
  timeoutMs: number,
  onBreakerChange: (change: PaymentsBreakerChange) => void,
): PaymentsCalls {
  const breakers = new BreakerRegistry({
    window: { type: 'count', size: 20 },
    minimumCalls: 8,
    failureRateThreshold: 0.5,
    openDurationMs: 700,
    backoff: { multiplier: 1.5, maxOpenDurationMs: 2000 },
    halfOpenPermits: 2,
  });
  const budget = new RetryBudget();
  const watched = new Set<string>();
  /** Subscribes to an instance's breaker the first time a call goes its way. */
  const watch = (id: string): void => {
    if (watched.has(id)) return;
    watched.add(id);
    breakers.breakerFor(id).onStateChange(({ from, to, reason }) => {
      onBreakerChange({ at: Date.now(), target: id, from, to, reason });
    });
  };
  const charges = resilientCall(payments, {
    breakers,
    // Two payments instances: the retry goes to the other one, at once.
    retry: { maxAttempts: 2, backoff: { type: 'none' }, budget },
    attemptTimeoutMs: timeoutMs,
  });
  const voids = resilientCall(payments, {
    breakers,
    retry: { maxAttempts: 3, backoff: { type: 'constant', delayMs: 50 }, budget },
    attemptTimeoutMs: 2000,
  });
  const chargeLog: CallRecord[] = [];

  const post = async (
    endpointId: string,
    instance: Instance,
    path: string,
    body: unknown,
    signal: AbortSignal,
  ): Promise<Reply> => {
    watch(endpointId);
    const reply = await call(instance.port, path, body, { signal }, instance.host);
    if (reply.status >= 500) throw new PaymentsRefused(String(reply.body.error));
    return reply;
  };

  return {
    chargeLog,
    budgetBalance: () => budget.balance,
    breakerStates: () =>
      breakers
        .keys()
        .sort()
        .map((id) => breakers.breakerFor(id).state)
        .join('/'),
    async charge(order, alive) {
      const at = Date.now();
      // Attempts sent that have not answered (yet): a timed-out attempt is failed by
      // resilientCall at once, while its request may still reach the ledger. Counted before the
      // request goes out, so the count is right whenever the call settles.
      const unanswered = { n: 0 };
      try {
        const { value: reply, tried } = await charges.callWithReport(
          async (endpoint, signal) => {
            watch(endpoint.id);
            const { host, port } = endpoint.data as Instance;
            unanswered.n++;
            // `orderId` is the charge's idempotency key: payments' ledger is keyed by it.
            const r = await call(
              port,
              '/charge',
              { orderId: order.id, key: order.key, amount: order.amount },
              { signal },
              host,
            );
            unanswered.n--;
            if (r.status >= 500) throw new PaymentsRefused(String(r.body.error));
            return r;
          },
          { idempotent: true, signal: alive },
        );
        chargeLog.push([at, sent(tried), rejectedLocally(tried)]);
        if (reply.status === 200) return 'charged';
        if (reply.status === 402) return 'declined';
        return 'voided'; // 409: the ledger has a void for this order already
      } catch (error) {
        if (alive.aborted) throw error;
        const tried = triedOf(error);
        chargeLog.push([at, sent(tried), rejectedLocally(tried)]);
        // Refused by every instance tried, or never sent (breakers open, no instance): certainly
        // not charged. An attempt without an answer: unknown.
        return unanswered.n > 0 ? 'unknown' : 'unavailable';
      }
    },
    async voidCharge(orderId, alive) {
      try {
        const reply = await voids.call(
          (endpoint, signal) =>
            post(endpoint.id, endpoint.data as Instance, '/void', { orderId }, signal),
          { idempotent: true, signal: alive },
        );
        if (reply.status !== 200) throw new Error(`void answered ${reply.status}`);
      } catch (error) {
        if (alive.aborted) throw error;
        throw new Error('void failed; the saga retries it', { cause: error });
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// orders → inventory

/** A reply from a shard that says "not now, try again" (421 moved, 503 busy, 409 fenced). */
class ShardNotReady extends Error {
  override readonly name = 'ShardNotReady';
}

/** The fields of an order an inventory call needs. */
export interface StockOrder {
  readonly id: string;
  readonly sku: string;
  readonly qty: number;
}

/**
 * Retries of an inventory call. The shard is not the balancer's pick but the ring's owner of the
 * SKU, so this is a plain `retry()`: up to 12 attempts, exponential backoff from 10 ms to 100 ms
 * (a ring change or a stalled owner settles within a few hundred ms), only on the replies that
 * say "try again" and on "no owner yet". reserve/commit/release are keyed by order id on the
 * shard, so a retry is safe.
 */
const inventoryRetry = retry({
  maxAttempts: 12,
  backoff: { type: 'exponential', initialMs: 10, maxMs: 100, factor: 1.5, jitter: 0.2 },
  retryOn: [ShardNotReady],
});

/**
 * Runs `op` for the order on the shard that owns its SKU now (`owner()` is asked at every
 * attempt: the ring may move between attempts). The shard's status (`reserved`, `sold-out`, …).
 */
export async function inventoryCall(
  owner: (sku: string) => Instance | undefined,
  op: 'reserve' | 'commit' | 'release',
  order: StockOrder,
  alive: AbortSignal,
): Promise<string> {
  try {
    return await inventoryRetry.execute(
      async (signal) => {
        const shard = owner(order.sku);
        if (shard === undefined) throw new ShardNotReady('no owner');
        const reply = await call(
          shard.port,
          `/${op}`,
          { sku: order.sku, orderId: order.id, qty: order.qty },
          { signal },
          shard.host,
        );
        if (reply.status === 200) return String(reply.body.status);
        // 421: the shard's ring moved on before ours; 409 fenced / 503 busy: try again.
        if (reply.status === 421 || reply.status === 503 || reply.body.error === 'fenced') {
          throw new ShardNotReady(`${reply.status} ${String(reply.body.error)}`);
        }
        throw new Error(
          `inventory ${op} ${order.sku}: ${reply.status} ${String(reply.body.error)}`,
        );
      },
      { signal: alive },
    );
  } catch (error) {
    if (error instanceof ShardNotReady) {
      throw new Error(`inventory ${op} ${order.sku}: no owner answered`, { cause: error });
    }
    throw error;
  }
}
