import { Redis } from 'ioredis';
import { LoadBalancer, leastRequest } from 'keel/balancer';
import { MemoryBackend, RedisBackend, Registry } from 'keel/discovery';

// One RedisBackend per process (it opens one extra connection, shared by every watch);
// without REDIS_URL everything stays in this process.
const client = process.env.REDIS_URL ? new Redis(process.env.REDIS_URL) : undefined;
const backend = client ? new RedisBackend({ client }) : new MemoryBackend();
const registry = new Registry({ backend, ttlMs: 10_000 });
registry.deregisterOnSignals({ drainMs: 5_000 }); // SIGTERM/SIGINT: drain, deregister, exit

// Register: jittered heartbeats, re-registration if the store lost it, deregistration on dispose.
const me = await registry.register({
  service: 'payments',
  id: 'payments-1',
  host: '10.0.0.7',
  port: 8080,
  zone: 'eu-1a',
});

// Watch: a live view with typed events (and `for await (const change of payments)`).
const payments = registry.watch('payments');
payments.onAdded(({ instance }) => console.log('up', instance.id));
payments.onUpdated(({ instance }) => console.log('now', instance.status, instance.id));
payments.onRemoved(({ instance, reason }) => console.log('gone', instance.id, reason));
payments.onStaleChange(({ stale }) => console.log(stale ? 'store unreachable' : 'fresh'));
await payments.ready;
console.log(registry.discover('payments', { zone: 'eu-1a' }).map((i) => `${i.host}:${i.port}`));

// Balance: endpoints follow a watch through update(), so per-endpoint state survives changes.
// The balancer owns the watch it follows: balancer.close() closes it.
const balancer = LoadBalancer.following(registry.watch('payments'), { strategy: leastRequest() });
const lease = balancer.acquire();
lease?.done({ ok: true, latencyMs: 12 }); // … after calling lease.endpoint.data (the Instance)

const seen = new Promise((resolve) => payments.onUpdated(resolve));
await me.setStatus('draining'); // watchers see `updated`; discover() and balancers drop it
await seen;
console.log(registry.discover('payments'), balancer.size); // [] 0
balancer.close();
payments.close();
await registry.close(); // deregisters what it registered
await backend.close();
await client?.quit(); // the client stays yours
