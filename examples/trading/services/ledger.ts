/**
 * ledger — consumes `order-confirmed` events (keel/queue, consumer group `ledger`) and books
 * each order's revenue once: the idempotent consumer applies the effect and records the message
 * as processed in one script, so a redelivery (this instance was SIGKILLed mid-handler, a
 * visibility timeout) changes nothing. A poison message fails every attempt and is
 * dead-lettered, atomically with its ack. Redis mode only (the queue lives in Redis).
 */
import { idempotent } from 'keel/queue';
import { GROUP, TOPIC, eventKeys, eventQueue, type OrderConfirmed } from '../events.js';
import { sleep } from '../http.js';
import { startService, type RunningService, type ServiceContext } from './service.js';

export function startLedger(ctx: ServiceContext): Promise<RunningService> {
  const redis = ctx.platform.redis;
  if (redis === undefined) throw new Error('the ledger needs Redis mode (keel/queue)');
  const prefix = ctx.platform.prefix ?? '';
  const keys = eventKeys(prefix);
  const queue = eventQueue(redis, prefix);
  const counts = { handled: 0, failed: 0, deadLettered: 0, redelivered: 0 };
  const book = idempotent<OrderConfirmed>(
    { client: redis, prefix: `${prefix}done` },
    (message, effect) => {
      effect.call('HINCRBY', [keys.ledger], 'revenue', message.payload.amount);
      effect.call('HINCRBY', [keys.effects], message.payload.orderId, 1);
    },
  );
  const consumer = queue.consume<OrderConfirmed>(
    TOPIC,
    GROUP,
    async (message) => {
      if (message.attempt > 1) counts.redelivered++;
      try {
        if (message.payload.poison === true) throw new Error('poison: cannot be booked');
        await sleep(5 + (message.payload.qty % 5) * 3, message.signal); // posting takes a moment
        await book(message);
        counts.handled++;
      } catch (error) {
        counts.failed++;
        throw error;
      }
    },
    { concurrency: 8, visibilityMs: 2000, maxAttempts: 3, backoff: { initialMs: 50 } },
  );
  const sub = consumer.onDeadLetter(() => {
    counts.deadLettered++;
  });
  return startService('ledger', ctx, () => ({
    routes: {},
    stats: () => ({ ...counts, inFlight: consumer.inFlight }),
    dispose: () => {
      sub.dispose();
      void consumer.close();
    },
  }));
}
