/**
 * Nothing acked stays in the stream after its consumer dies. Acked entries are deleted lazily
 * (in batches, see consumer.ts FORGET_BATCH), so a SIGKILLed consumer takes its list of acked
 * entries still to delete with it; the sweep of any other consumer of the group must trim
 * them (entries below the group's oldest pending one and its last delivered one), while every
 * pending or undelivered entry stays.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { Queue } from '../../src/queue/index.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const worker = fileURLToPath(new URL('./kill-worker.ts', import.meta.url));

describeRedis('keel/queue: a SIGKILLed consumer leaves nothing acked behind', () => {
  const redis = useRedis({ count: 1 });
  const opened: { close(): Promise<void> }[] = [];

  afterEach(async () => {
    for (const q of opened.splice(0)) await q.close();
    await redis().flushAll();
  });

  it('another consumer’s sweep trims the acked entries the dead one had not deleted yet', async () => {
    const client = redis().client(0);
    const queue = new Queue({ client });
    opened.push(queue);
    const stream = queue.keys('kill', 0).stream;
    const events: Record<string, unknown>[] = [];
    const child = fork(worker, [String(redis().port(0))], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let hang: string | undefined;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.on('message', (m: Record<string, unknown>) => events.push(m));
    try {
      await until(() => expect(events).toContainEqual({ ready: true }), 60_000);
      // Fewer than 16 acked: all of them wait in the worker's list of entries to delete.
      for (let n = 1; n <= 5; n++) await queue.send('kill', { n });
      await until(() => expect(events.filter((e) => 'handled' in e)).toHaveLength(5), 20_000);
      hang = String((await queue.send('kill', { n: 6, hang: true })).entryId);
      await until(() => expect(events).toContainEqual({ hanging: true }), 20_000);
      // All five acks reached Redis: only the hanging message is pending.
      await until(async () => expect((await client.xpending(stream, 'g'))[0]).toBe(1), 20_000);
      expect(await client.xlen(stream)).toBe(6);
      child.kill('SIGKILL');
      await exited;
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }

    // Another consumer, whose handler holds what it gets: the hanging message, once reclaimed,
    // stays pending (now its), and one more message sent now stays pending too.
    const held: string[] = [];
    queue.consume(
      'kill',
      'g',
      async (m) => {
        held.push(String((m.payload as { n: number }).n));
        await new Promise(() => undefined);
      },
      { visibilityMs: 400, sweepMs: 20, consumer: 'survivor', closeTimeoutMs: 10 },
    );
    const later = await queue.send('kill', { n: 7 });
    await until(() => expect(held).toContain('7'), 20_000);
    // Only the entries not acked stay: the dead consumer's hanging one and the new one.
    await until(async () => expect(await client.xlen(stream)).toBe(2), 20_000);
    const left = (await client.xrange(stream, '-', '+')).map(([id]) => id);
    expect(left).toEqual([hang, later.entryId]);
    expect((await client.xpending(stream, 'g'))[0]).toBe(2);
  }, 120_000);
});
