/**
 * A child process of idle-timeout.test.ts (forked, run by tsx): a `Cache` on the Redis at the
 * given port, with a 100 ms Redis timeout. It says `ready` once listening; on `go` it reads a
 * key and reports how the read ended. The parent has paused Redis by then and sends nothing
 * more: nothing but the cache's own timer can wake this process.
 */
import { Redis } from 'ioredis';
import { Cache } from '../../src/cache/index.js';

export type IdleWorkerMessage =
  { readonly t: 'ready' } | { readonly t: 'done'; readonly outcome: string };

const port = Number(process.argv[2]);
const redis = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1 });
redis.on('error', () => undefined);
const cache = new Cache({ redis, redisTimeoutMs: 100 });

const send = (message: IdleWorkerMessage): void => {
  process.send?.(message);
};

const waitListening = (): void => {
  if (cache.listening) send({ t: 'ready' });
  else setTimeout(waitListening, 10);
};
waitListening();

process.on('message', (message: unknown) => {
  if (message !== 'go') return;
  cache.get('k').then(
    (value) => {
      send({ t: 'done', outcome: `value ${String(value)}` });
    },
    (error: unknown) => {
      send({ t: 'done', outcome: `error ${String(error)}` });
    },
  );
});
