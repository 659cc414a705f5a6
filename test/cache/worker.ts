/**
 * A child process of the cache's multi-process tests (forked by multiprocess.test.ts, run by
 * tsx). It opens its own connection and `Cache` on the given Redis, says `ready`, and on each
 * `go` runs `callers` concurrent `getOrLoad`s of that message's key (or of the configured one),
 * until `stop`. The loader counts itself in Redis
 * (`INCR loads:<key>`, shared by every process), then takes `loaderMs` — or, with `hang`, says
 * `loading` and never returns (the test SIGKILLs it there). It reports every value it got.
 */
import { Redis } from 'ioredis';
import { Cache } from '../../src/cache/index.js';

export interface CacheWorkerConfig {
  readonly port: number;
  readonly key: string;
  readonly callers: number;
  readonly loaderMs: number;
  readonly hang: boolean;
  readonly leaseTtlMs: number;
}

export type CacheWorkerMessage =
  | { readonly t: 'ready' }
  | { readonly t: 'loading' }
  | {
      readonly t: 'done';
      readonly key: string;
      readonly values: readonly unknown[];
      readonly errors: readonly string[];
    };

const config = JSON.parse(process.argv[2] ?? '{}') as CacheWorkerConfig;
const send = (message: CacheWorkerMessage): void => {
  process.send?.(message);
};

const redis = new Redis({ host: '127.0.0.1', port: config.port, maxRetriesPerRequest: 1 });
redis.on('error', () => undefined);
const cache = new Cache({
  redis,
  leaseTtlMs: config.leaseTtlMs,
  maxWaitMs: 60_000,
  redisTimeoutMs: 5_000,
});

const loader = async ({ key }: { key: string }): Promise<{ by: number }> => {
  await redis.incr(`loads:${key}`);
  if (config.hang) {
    send({ t: 'loading' });
    await new Promise<never>(() => undefined);
  }
  await new Promise((resolve) => setTimeout(resolve, config.loaderMs));
  return { by: process.pid };
};

process.on('message', (message: { t: string; key?: string }) => {
  if (message.t === 'stop') {
    void cache.close().then(() => {
      redis.disconnect();
      process.disconnect();
    });
    return;
  }
  if (message.t !== 'go') return;
  const key = message.key ?? config.key;
  void Promise.allSettled(
    Array.from({ length: config.callers }, () => cache.getOrLoad(key, loader)),
  ).then((results) => {
    send({
      t: 'done',
      key,
      values: results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : [])),
      errors: results.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : [])),
    });
  });
});

await redis.ping();
send({ t: 'ready' });
