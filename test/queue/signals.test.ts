/**
 * `queue.closeOnSignals()`: SIGTERM stops reading, lets in-flight handlers finish (up to
 * `closeTimeoutMs`) and acks them, hands back what outlives it, and then lets the process end.
 * The consumer runs in a forked process (tsx) that the test signals for real.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Queue } from '../../src/queue/index.js';
import { invalidOption, until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const worker = fileURLToPath(new URL('./signal-worker.ts', import.meta.url));

describeRedis('keel/queue closeOnSignals', () => {
  const redis = useRedis({ count: 1 });
  const opened: { close(): Promise<void> }[] = [];

  afterEach(async () => {
    for (const q of opened.splice(0)) await q.close();
    await redis().flushAll();
  });

  async function signalled(handlerMs: number, closeTimeoutMs: number) {
    const client: Redis = redis().client(0);
    const queue = new Queue({ client });
    opened.push(queue);
    const events: Record<string, unknown>[] = [];
    const child = fork(worker, [`${redis().port(0)},${handlerMs},${closeTimeoutMs}`], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const exited = new Promise<string>((resolve) =>
      child.once('exit', (code, signal) => resolve(String(signal ?? code))),
    );
    child.on('message', (m: Record<string, unknown>) => events.push(m));
    try {
      await until(() => expect(events).toContainEqual({ ready: true }), 60_000);
      await queue.send('sig', { n: 1 });
      await until(() => expect(events).toContainEqual({ started: 1 }), 20_000);
      child.kill('SIGTERM');
      const how = await exited;
      return { how, events, client, stream: queue.keys('sig', 0).stream, queue };
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }

  it('SIGTERM: the in-flight handler finishes and is acked, then the process ends by the signal', async () => {
    const { how, events, client, stream } = await signalled(300, 5000);
    expect(how).toBe('SIGTERM');
    expect(events).toContainEqual({ finished: true });
    expect(events).not.toContainEqual({ aborted: true });
    expect(await client.xlen(stream)).toBe(0);
    expect((await client.xpending(stream, 'g'))[0]).toBe(0);
  }, 90_000);

  it('SIGTERM: a handler that outlives closeTimeoutMs is aborted and handed back; another consumer gets it at once', async () => {
    const { how, events, client, stream, queue } = await signalled(60_000, 100);
    expect(how).toBe('SIGTERM');
    expect(events).toContainEqual({ aborted: true });
    expect((await client.xpending(stream, 'g'))[0]).toBe(1);
    const attempts: number[] = [];
    queue.consume('sig', 'g', (m) => void attempts.push(m.attempt), {
      visibilityMs: 60_000,
      sweepMs: 50,
    });
    await until(() => expect(attempts).toEqual([2]), 10_000);
  }, 90_000);

  it('rejects bad options with a typed error; the returned subscription removes the handlers', () => {
    const queue = new Queue({ client: redis().client(0) });
    opened.push(queue);
    expect(invalidOption(() => queue.closeOnSignals({ signals: ['TERM' as never] })).option).toBe(
      'signals',
    );
    const before = process.listenerCount('SIGTERM');
    const sub = queue.closeOnSignals();
    expect(process.listenerCount('SIGTERM')).toBe(before + 1);
    sub.dispose();
    expect(process.listenerCount('SIGTERM')).toBe(before);
  });
});
