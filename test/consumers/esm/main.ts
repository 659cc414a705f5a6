// An ESM consumer ("type": "module", TypeScript "module"/"moduleResolution": "nodenext"): every
// subpath by the package's own name, one call each, run by node after tsc.
import { InvalidOptionError, isKeelError } from 'keel';
import { HashRing } from 'keel/hashring';
import { MemoryLock, Redlock } from 'keel/lock';
import { LoadBalancer, p2c } from 'keel/balancer';
import { CircuitBreaker } from 'keel/breaker';
import { MemoryBackend, Registry } from 'keel/discovery';
import { Redis } from 'ioredis';

const error = new InvalidOptionError('Consumer', 'size', 'an integer >= 1', 0);
if (!isKeelError(error)) throw new Error('keel: isKeelError');

const ring = new HashRing({ nodes: [{ id: 'a' }, { id: 'b' }] });
if (ring.get('order:1')?.id === undefined) throw new Error('keel/hashring: no owner');

// Redlock takes an ioredis client as the consumer's ioredis types describe it; nothing connects.
const client = new Redis({ lazyConnect: true });
const redlock = new Redlock({ clients: [client] });
await redlock.close();
client.disconnect();
const lock = await new MemoryLock().acquire('sku:1');
await lock.release();

const balancer = new LoadBalancer({ strategy: p2c(), endpoints: [{ id: 'e1', data: 'x' }] });
if (balancer.pick()?.id !== 'e1') throw new Error('keel/balancer: no pick');

const breaker = new CircuitBreaker();
if ((await breaker.execute(() => Promise.resolve(42))) !== 42) throw new Error('keel/breaker');

const registry = new Registry({ backend: new MemoryBackend() });
await registry.register({ service: 'orders', id: 'o1', host: '127.0.0.1', port: 8080 });
await registry.ready('orders'); // discover() answers from a cache filled by the first snapshot
if (registry.discover('orders').length !== 1) throw new Error('keel/discovery: not found');
await registry.close();

console.log('esm consumer: 6 entry points OK');
