/**
 * Bad input to the queue's public methods: each is refused with a typed error naming what was
 * wrong (an `InvalidOptionError` with `option` set), before anything is written — never a plain
 * TypeError from deep inside, never a silent change of meaning.
 */
import { afterEach, expect, it } from 'vitest';
import { isInvalidOptionError } from '../../src/core/index.js';
import { Queue } from '../../src/queue/index.js';
import { invalidOption } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

/** What `promise` rejected with; fails the test if it resolved. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

/** The `option` an awaited call was refused for (fails the test if it was not an InvalidOptionError). */
async function refusedOption(promise: Promise<unknown>): Promise<string> {
  const error = await rejection(promise);
  expect(isInvalidOptionError(error), String(error)).toBe(true);
  return (error as { option: string }).option;
}

describeRedis('keel/queue refuses bad input with typed errors', () => {
  const redis = useRedis({ count: 1 });
  const opened: { close(): Promise<void> }[] = [];

  afterEach(async () => {
    for (const q of opened.splice(0)) await q.close();
    await redis().flushAll();
  });

  const queueOf = (): Queue => {
    const queue = new Queue({ client: redis().client(0) });
    opened.push(queue);
    return queue;
  };

  it('sendMany: an item that is not an object is refused naming its index, and nothing is sent', async () => {
    const queue = queueOf();
    const ok = { payload: 1 };
    // eslint-disable-next-line no-sparse-arrays
    const sparse = [ok, , ok] as never[];
    for (const [items, option] of [
      [[ok, undefined], 'items[1]'],
      [[null, ok], 'items[0]'],
      [[ok, ok, 42], 'items[2]'],
      [sparse, 'items[1]'],
    ] as const) {
      expect(await refusedOption(queue.sendMany('orders', items as never))).toBe(option);
    }
    expect(await redis().client(0).exists(queue.keys('orders', 0).stream)).toBe(0);
  });

  it('sendMany: bad call options are refused naming them, and nothing is sent', async () => {
    const queue = queueOf();
    const items = [{ payload: 1 }, { payload: 2 }];
    expect(await refusedOption(queue.sendMany('orders', items, 'x' as never))).toBe('options');
    expect(await refusedOption(queue.sendMany('orders', items, { signal: 'x' as never }))).toBe(
      'signal',
    );
    expect(await refusedOption(queue.sendMany('orders', items, { sigal: 1 } as never))).toBe(
      'sigal',
    );
    expect(await redis().client(0).exists(queue.keys('orders', 0).stream)).toBe(0);
  });

  it('names that Redis cannot tell apart (a lone UTF-16 surrogate becomes U+FFFD) are refused: a second id is not taken for a duplicate of the first', async () => {
    const queue = queueOf();
    const lone = 'a\uD800';
    expect(await refusedOption(queue.send('orders', 1, { id: lone }))).toBe('id');
    expect(await refusedOption(queue.send('orders', 1, { key: lone }))).toBe('key');
    expect(await refusedOption(queue.sendMany('orders', [{ payload: 1, id: lone }]))).toBe('id');
    expect(await refusedOption(queue.send(lone, 1))).toBe('topic');
    expect(invalidOption(() => queue.consume(lone, 'g', () => undefined)).option).toBe('topic');
    expect(invalidOption(() => queue.consume('orders', lone, () => undefined)).option).toBe(
      'group',
    );
    expect(
      invalidOption(() => queue.consume('orders', 'g', () => undefined, { consumer: lone })).option,
    ).toBe('consumer');
    expect(invalidOption(() => queue.hashTag('orders', lone)).option).toBe('keyOrId');
    expect(
      invalidOption(() => new Queue({ client: redis().client(0), prefix: `q${lone}` })).option,
    ).toBe('prefix');
    expect(await redis().client(0).dbsize()).toBe(0);
    // Well-formed ids that differ are two messages.
    expect((await queue.send('orders', 1, { id: 'a\uD83D\uDE00' })).status).toBe('sent');
    expect((await queue.send('orders', 1, { id: 'a\uD83D\uDE01' })).status).toBe('sent');
  });

  it('consume: durations longer than a Node timer can wait (2^31 − 1 ms) are refused naming the option', () => {
    const queue = queueOf();
    const over = 2 ** 31;
    for (const option of ['visibilityMs', 'sweepMs', 'pollMs', 'closeTimeoutMs', 'blockMs']) {
      expect(
        invalidOption(() => queue.consume('orders', 'g', () => undefined, { [option]: over }))
          .option,
      ).toBe(option);
    }
    for (const option of ['initialMs', 'maxMs']) {
      expect(
        invalidOption(() =>
          queue.consume('orders', 'g', () => undefined, { backoff: { [option]: over } }),
        ).option,
      ).toBe(`backoff.${option}`);
    }
  });

  it('retention: a maxAgeMs longer than the epoch (meaning "keep everything") trims nothing and fails nothing', async () => {
    const queue = new Queue({
      client: redis().client(0),
      retention: { maxAgeMs: Number.MAX_SAFE_INTEGER },
    });
    opened.push(queue);
    await queue.send('orders', 1);
    expect(await queue.trim('orders')).toBe(0);
    expect(await redis().client(0).xlen(queue.keys('orders', 0).stream)).toBe(1);
  });
});
