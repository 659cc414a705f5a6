/**
 * Processed once: the idempotent-consumer helper. The handler describes its Redis effect as a
 * list of commands; the helper applies them and records the message id as processed in one
 * script, unless the id is already recorded — so a message delivered twice (a consumer died
 * after the effect and before the ack, a visibility timeout, a replay) changes Redis once.
 *
 * @packageDocumentation
 */
import {
  InvalidOptionError,
  guardedOption,
  integerOption,
  resolveOptions,
  stringOption,
} from '../core/index.js';
import { isQueueClient, runBatched, type QueueRedisClient } from './client.js';
import type { Handler, Message } from './consumer.js';
import { APPLY_ONCE } from './scripts.js';

/** The Redis effect of a handler, applied atomically with the processed-id record. */
export interface Effect {
  /**
   * Adds a command. `keys` are the command's key arguments, which come first (as in
   * `INCRBY key n`, `HSET key f v`, `XADD key * f v`); `args` follow them. All keys must share
   * a slot on Redis Cluster (use a hash tag); the processed record joins the first key's slot.
   */
  call(command: string, keys: readonly string[], ...args: readonly (string | number)[]): Effect;
}

/** Options of {@link idempotent}. */
export interface IdempotentOptions {
  /** The client the effect runs on. */
  readonly client: QueueRedisClient;
  /** How long a processed id is remembered (keep it above the redelivery horizon). @defaultValue 7 days */
  readonly ttlMs?: number | undefined;
  /** Prefix of processed-id keys. @defaultValue 'keel:q:done' */
  readonly prefix?: string | undefined;
}

interface Command {
  readonly name: string;
  readonly keys: readonly string[];
  readonly args: readonly (string | number)[];
}

/**
 * The hash tag of a key as Redis Cluster computes slots: the text between the first `{` and
 * the next `}` when non-empty, else the whole key.
 */
export function hashTagOf(key: string): string {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) return key.slice(open + 1, close);
  }
  return key;
}

const OWNER = 'idempotent';

/**
 * Wraps a handler so its Redis effect is applied at most once per message id (per group).
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { Queue, idempotent } from 'keel/queue';
 *
 * const client = new Redis();
 * const queue = new Queue({ client });
 * queue.consume<{ account: string; amount: number }>(
 *   'payments',
 *   'ledger',
 *   idempotent({ client }, (message, effect) => {
 *     effect.call('HINCRBY', ['{ledger}:balances'], message.payload.account, message.payload.amount);
 *   }),
 * );
 * ```
 */
export function idempotent<T>(
  options: IdempotentOptions,
  handler: (message: Message<T>, effect: Effect) => Promise<void> | void,
): Handler<T> {
  const o = resolveOptions(OWNER, options, {
    client: guardedOption(isQueueClient, 'an ioredis client', { required: true }),
    ttlMs: integerOption({ default: 7 * 24 * 3_600_000, min: 1 }),
    prefix: stringOption({ default: 'keel:q:done', nonEmpty: true }),
  });
  if (typeof handler !== 'function') {
    throw new InvalidOptionError(OWNER, 'handler', 'a function (message, effect) => …', handler);
  }
  return async (message) => {
    const commands: Command[] = [];
    const effect: Effect = {
      call(command, keys, ...args) {
        if (typeof command !== 'string' || command === '') {
          throw new InvalidOptionError(OWNER, 'effect.call command', 'a command name', command);
        }
        if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string' && k !== '')) {
          throw new InvalidOptionError(OWNER, 'effect.call keys', 'an array of key names', keys);
        }
        for (const a of args) {
          if (typeof a !== 'string' && !(typeof a === 'number' && Number.isFinite(a))) {
            throw new InvalidOptionError(OWNER, 'effect.call args', 'strings or finite numbers', a);
          }
        }
        commands.push({ name: command, keys: [...(keys as string[])], args: [...args] });
        return effect;
      },
    };
    await handler(message, effect);
    message.signal.throwIfAborted();
    const first = commands.find((c) => c.keys.length > 0)?.keys[0];
    const tag = first === undefined ? `${message.topic}:${message.partition}` : hashTagOf(first);
    const record = `${o.prefix}:{${tag}}:${message.topic}:${message.group}:${message.id}`;
    const keys = [record];
    const args: (string | number)[] = [o.ttlMs, commands.length];
    for (const c of commands) {
      keys.push(...c.keys);
      args.push(c.keys.length, c.args.length, c.name, ...c.args);
    }
    // Batched with the other handlers' effects of this tick: one round trip for many.
    await runBatched(o.client, `apply effect of ${message.id}`, APPLY_ONCE, keys, args);
  };
}
