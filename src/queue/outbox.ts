/**
 * The transactional outbox: an outgoing message is staged inside the caller's Redis
 * transaction (`MULTI` … `EXEC`) beside the business state it belongs to, so either both are
 * written or neither — a crash can never keep the state and lose the event, or send an event
 * for state that was never written. The staged command is the producer's own send script
 * (dedup and delay included), queued in the transaction with `EVAL` — declared with a `#!lua`
 * line (Redis 7.0 or later), so that Redis out of memory refuses the whole transaction rather
 * than only the message (see `STAGED_SEND` in scripts.ts).
 *
 * @packageDocumentation
 */
import { InvalidOptionError } from '../core/index.js';
import { checkName, checkSend, sendCall, type Queue, type SendItem } from './queue.js';
import { STAGED_SEND } from './scripts.js';

/** A transaction being built: an ioredis `client.multi()` fits. */
export interface Transaction {
  /** Queues a script call in the transaction (ioredis `multi().eval`). */
  eval(source: string, numKeys: number, ...args: (string | number)[]): unknown;
}

/** What {@link Outbox.stage} queued. */
export interface StagedMessage {
  /** The message id (given or generated). */
  readonly id: string;
  /** The partition it will be written to. */
  readonly partition: number;
}

/**
 * Stages messages of a {@link Queue} inside Redis transactions. On Redis Cluster every key of
 * one transaction must share a slot: name the business keys with `queue.hashTag(topic, key)`.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { Outbox, Queue } from 'keel/queue';
 *
 * const client = new Redis();
 * const outbox = new Outbox(new Queue({ client }));
 * const tx = client.multi();
 * tx.hset('order:7', 'status', 'confirmed');
 * outbox.stage(tx, 'orders', { orderId: 7, status: 'confirmed' }, { key: 'order:7', id: 'order-7-confirmed' });
 * await tx.exec();
 * ```
 */
export class Outbox {
  readonly #queue: Queue;

  constructor(queue: Queue) {
    if (!((queue as unknown) instanceof Object) || !('plan' in queue)) {
      throw new InvalidOptionError('Outbox', 'queue', 'a Queue', queue);
    }
    this.#queue = queue;
  }

  /**
   * Queues the send of one message in `transaction`; it is written when the transaction is.
   *
   * @throws {@link keel!InvalidOptionError} for a bad topic, transaction or option (nothing is
   * queued then)
   * @throws `PayloadError` when the payload is not JSON-serialisable
   */
  stage<T>(
    transaction: Transaction,
    topic: string,
    payload: T,
    options?: Omit<SendItem<T>, 'payload'>,
  ): StagedMessage {
    checkName('Outbox.stage', 'topic', topic);
    if (
      !((transaction as unknown) instanceof Object) ||
      typeof (transaction as { eval?: unknown }).eval !== 'function'
    ) {
      throw new InvalidOptionError(
        'Outbox.stage',
        'transaction',
        'a MULTI transaction (client.multi())',
        transaction,
      );
    }
    // Checked here as `send` checks them: a bad option found inside `EXEC` (a delay that is not
    // a number fails the script there) would fail the message after the business writes ran.
    checkSend(`Outbox.stage(${topic})`, options);
    const plan = this.#queue.plan(topic, { ...options, payload });
    const { keys, args } = sendCall([plan]);
    transaction.eval(STAGED_SEND.source, keys.length, ...keys, ...args);
    return { id: plan.id, partition: plan.partition };
  }
}
