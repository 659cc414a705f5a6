// A CommonJS consumer ("type": "commonjs", TypeScript "module": "commonjs"): tsc turns these
// imports into `require('keel/lock')` and friends (run.sh checks it did), which node resolves
// through package.json "exports" to the .cjs build.
import { isKeelError } from 'keel';
import { jumpConsistentHash } from 'keel/hashring';
import { MemoryLock, isLockTakenError } from 'keel/lock';
import { LoadBalancer, roundRobin } from 'keel/balancer';
import { BreakerRegistry } from 'keel/breaker';
import { MemoryBackend, Registry } from 'keel/discovery';

async function main(): Promise<void> {
  if (isKeelError(new Error('plain'))) throw new Error('keel: isKeelError');
  const shard = jumpConsistentHash(0, 12345, 10); // the 64-bit key 0:12345, 10 buckets
  if (shard < 0 || shard >= 10) throw new Error('keel/hashring: shard out of range');

  const locks = new MemoryLock();
  const held = await locks.acquire('sku:1');
  try {
    await locks.acquire('sku:1', { retryCount: 0 });
    throw new Error('keel/lock: acquired a held lock');
  } catch (error) {
    if (!isLockTakenError(error)) throw error;
  }
  await held.release();

  const balancer = new LoadBalancer({ strategy: roundRobin(), endpoints: [{ id: 'e1' }] });
  if (balancer.pick()?.id !== 'e1') throw new Error('keel/balancer: no pick');

  const breakers = new BreakerRegistry();
  if ((await breakers.breakerFor('payments').execute(() => Promise.resolve('ok'))) !== 'ok') {
    throw new Error('keel/breaker');
  }

  const registry = new Registry({ backend: new MemoryBackend() });
  await registry.register({ service: 'orders', id: 'o1', host: '127.0.0.1', port: 8080 });
  await registry.ready('orders'); // discover() answers from a cache filled by the first snapshot
  if (registry.discover('orders').length !== 1) throw new Error('keel/discovery: not found');
  await registry.close();

  console.log('cjs consumer: 6 entry points OK');
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
