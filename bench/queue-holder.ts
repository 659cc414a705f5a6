/**
 * A consumer process for the queue benchmark's crash row (forked by queue.bench.ts, run by tsx):
 * consumes the `crash` topic with a handler that never resolves, and tells its parent how many
 * messages it holds, so the parent can SIGKILL it with exactly those in flight.
 *
 * @packageDocumentation
 */
import { Redis } from 'ioredis';
import { Queue } from '../src/queue/index.js';

const [port, visibilityMs, concurrency] = (process.argv[2] ?? '').split(',').map(Number);
const client = new Redis({ host: '127.0.0.1', port: port ?? 6379 });
client.on('error', () => undefined);
const queue = new Queue({ client });
let held = 0;
queue.consume(
  'crash',
  'g',
  () => {
    held++;
    process.send?.({ held });
    return new Promise<void>(() => undefined);
  },
  { concurrency: concurrency ?? 10, visibilityMs: visibilityMs ?? 5000, consumer: 'doomed' },
);
process.send?.({ ready: true });
