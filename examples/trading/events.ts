/**
 * Order events on `keel/queue` (Redis mode): a confirmed order emits `order-confirmed` through
 * the transactional outbox — the event and the "sent" record of it are written in one `MULTI`,
 * so neither exists without the other — and the `ledger` service consumes it with the
 * idempotent consumer, so its effect (revenue, one entry per order) is applied once however
 * often the message is delivered. The drill SIGKILLs a ledger instance mid-run and sends one
 * poison message; the audit then checks, from Redis itself, that every sent event was handled
 * or dead-lettered (lost 0) and that no effect was applied twice.
 */
import type { Redis } from 'ioredis';
import { Outbox, Queue } from 'keel/queue';
import type { Invariant } from './report.js';

/** The topic a confirmed order is announced on, and the ledger's consumer group. */
export const TOPIC = 'order-confirmed';
export const GROUP = 'ledger';

/** The event's payload. */
export interface OrderConfirmed {
  readonly orderId: string;
  readonly sku: string;
  readonly qty: number;
  readonly amount: number;
  /** The drill's poison message: the ledger always fails it, so it ends in the DLQ. */
  readonly poison?: boolean;
}

/** Keys of the event records of one run (all under the run's prefix). */
export function eventKeys(prefix: string) {
  return {
    /** Hash: order id → amount, written in the outbox transaction with the event. */
    sent: `${prefix}events:sent`,
    /** Hash: order id → how many times the ledger applied its effect (must be 1). */
    effects: `${prefix}events:effects`,
    /** Hash: `revenue` → cents booked by the ledger. */
    ledger: `${prefix}events:ledger`,
  };
}

/** The queue of a run (its keys under the run's prefix). */
export function eventQueue(client: Redis, prefix: string): Queue {
  return new Queue({ client, prefix: `${prefix}q` });
}

/** Emits order events through the outbox. */
export class OrderEvents {
  readonly #client: Redis;
  readonly #outbox: Outbox;
  readonly #keys: ReturnType<typeof eventKeys>;

  constructor(client: Redis, prefix: string) {
    this.#client = client;
    this.#outbox = new Outbox(eventQueue(client, prefix));
    this.#keys = eventKeys(prefix);
  }

  /**
   * Records the event as sent and stages it, in one transaction. Called before the order's
   * final write: if the process dies in between, the next holder of the order calls it again,
   * and the message id (`confirmed:<order id>`) makes the queue enqueue it once.
   */
  async confirmed(event: OrderConfirmed): Promise<void> {
    const tx = this.#client.multi();
    tx.hset(this.#keys.sent, event.orderId, String(event.amount));
    this.#outbox.stage(tx, TOPIC, event, { id: `confirmed:${event.orderId}`, key: event.orderId });
    const replies = await tx.exec();
    const failed = replies?.find(([error]) => error !== null);
    if (replies === null || failed !== undefined) {
      throw new Error(`order event for ${event.orderId} not written: ${String(failed?.[0])}`);
    }
  }
}

/** What the audit found about the events of a run. */
export interface EventsAudit {
  readonly sent: number;
  readonly handled: number;
  readonly deadLettered: number;
  readonly lost: number;
  readonly duplicateEffects: number;
  /** Confirmed orders with no sent event (the outbox would have lost them). */
  readonly confirmedWithoutEvent: number;
  readonly invariant: Invariant;
}

/**
 * Waits (up to `limitMs`) until every sent event was handled or dead-lettered, then checks:
 * sent = handled + dead-lettered, lost 0, duplicate effects 0, and every confirmed order has its
 * event.
 */
export async function auditEvents(
  client: Redis,
  prefix: string,
  confirmedOrders: readonly string[],
  limitMs = 30_000,
): Promise<EventsAudit> {
  const keys = eventKeys(prefix);
  const queue = eventQueue(client, prefix);
  const deadline = Date.now() + limitMs;
  let sent: Record<string, string> = {};
  let effects: Record<string, string> = {};
  let dead = new Set<string>();
  for (;;) {
    sent = await client.hgetall(keys.sent);
    effects = await client.hgetall(keys.effects);
    const letters = await queue.deadLetters(TOPIC, { limit: 100_000 });
    dead = new Set(letters.map((l) => (l.id ?? '').replace(/^confirmed:/, '')));
    const settled = Object.keys(sent).every((id) => id in effects || dead.has(id));
    if (settled || Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const ids = Object.keys(sent);
  const handled = ids.filter((id) => id in effects).length;
  const deadLettered = ids.filter((id) => dead.has(id) && !(id in effects)).length;
  const lost = ids.filter((id) => !(id in effects) && !dead.has(id)).length;
  const duplicateEffects = Object.values(effects).reduce(
    (a, n) => a + Math.max(0, Number(n) - 1),
    0,
  );
  const confirmedWithoutEvent = confirmedOrders.filter((id) => !(id in sent)).length;
  const ok =
    ids.length === handled + deadLettered &&
    lost === 0 &&
    duplicateEffects === 0 &&
    confirmedWithoutEvent === 0;
  return {
    sent: ids.length,
    handled,
    deadLettered,
    lost,
    duplicateEffects,
    confirmedWithoutEvent,
    invariant: {
      name: 'events: every one handled or dead-lettered, once',
      ok,
      detail: `sent ${ids.length} = handled ${handled} + dead-lettered ${deadLettered}, lost ${lost}, duplicate effects ${duplicateEffects}, confirmed orders without an event ${confirmedWithoutEvent}`,
    },
  };
}
