/**
 * A consumer process for the SIGTERM test (forked by signals.test.ts, run by tsx): consumes
 * `sig` with a handler that takes `handlerMs`, with `queue.closeOnSignals()` installed, and
 * reports each start and finish to its parent.
 */
import { Redis } from 'ioredis';
import { Queue } from '../../src/queue/index.js';

const [port, handlerMs, closeTimeoutMs] = (process.argv[2] ?? '').split(',').map(Number);
const client = new Redis({ host: '127.0.0.1', port: port ?? 6379 });
client.on('error', () => undefined);
const queue = new Queue({ client });
queue.consume(
  'sig',
  'g',
  async (m) => {
    process.send?.({ started: m.attempt });
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, handlerMs);
      m.signal.addEventListener('abort', () => {
        clearTimeout(timer);
        process.send?.({ aborted: true });
        resolve();
      });
    });
    m.signal.throwIfAborted();
    process.send?.({ finished: true });
  },
  { closeTimeoutMs, visibilityMs: 60_000, consumer: 'worker' },
);
queue.closeOnSignals();
process.send?.({ ready: true });
