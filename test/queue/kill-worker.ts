/**
 * A consumer process for the SIGKILL test (forked by killed.test.ts, run by tsx): consumes
 * `kill` with a handler that resolves at once, except for a message whose payload has `hang`,
 * which it never finishes. Its own sweep runs once at start and then not for a minute, so the
 * entries it acks stay in its in-memory list of acked entries still to delete until it dies.
 */
import { Redis } from 'ioredis';
import { Queue } from '../../src/queue/index.js';

const port = Number(process.argv[2] ?? 6379);
const client = new Redis({ host: '127.0.0.1', port });
client.on('error', () => undefined);
const queue = new Queue({ client });
queue.consume(
  'kill',
  'g',
  async (m) => {
    if ((m.payload as { hang?: boolean }).hang === true) {
      process.send?.({ hanging: true });
      await new Promise(() => undefined);
    }
    process.send?.({ handled: (m.payload as { n: number }).n });
  },
  { visibilityMs: 240_000, sweepMs: 60_000, consumer: 'doomed' },
);
// Ready once its first sweep (at start) is surely over, so that sweep deletes nothing it acks.
setTimeout(() => process.send?.({ ready: true }), 1000);
