import { Redis } from 'ioredis';
import { Redlock, isLockLostError, isLockTakenError, isQuorumUnavailableError } from 'keel/lock';

const ports = [6379, 6380, 6381, 6382, 6383];
const clients = ports.map((port) => new Redis({ port, lazyConnect: true }));
// `await using`: when this scope ends, the Redlock closes the connections it opened itself.
await using redlock = new Redlock({ clients, ttlMs: 5_000 });

// using(): acquire, extend automatically while the routine runs, always release.
// The options are optional: redlock.using('sku:1234', async (signal, lock) => { … }).
await redlock.using('sku:1234', { maxHoldMs: 30_000 }, async (signal, lock) => {
  // Pass the fencing token with every write: the store refuses tokens older than the last
  // one it accepted, so a holder that stalled past its lease cannot write (see below).
  if (!signal.aborted) console.log('decrement stock with fencing token', lock.fencingToken);
});

// Or hold a handle yourself.
try {
  await using lock = await redlock.acquire(['order:77', 'payment:77'], { retryCount: 3 });
  // Aborts with LockLostError if the lock is lost; with LockReleasedError when released.
  lock.signal.addEventListener('abort', () => {
    if (isLockLostError(lock.signal.reason)) console.log('lost:', lock.signal.reason.message);
  });
  await lock.extend(10_000);
} catch (error) {
  if (isLockTakenError(error)) console.log('someone else holds it', error.votes);
  else if (isQuorumUnavailableError(error)) console.log('too many Redis nodes down', error.votes);
  else throw error;
}

// A counting semaphore on the same nodes: at most 10 concurrent calls to the card processor.
const processor = redlock.semaphore('card-processor', { permits: 10 });
await processor.using({ ttlMs: 5_000 }, async () => console.log('charging'));

// Your clients stay yours: close the Redlock (it waits for its calls still under way), then
// quit them, or they keep the process alive.
await redlock.close();
await Promise.all(clients.map((client) => client.quit()));
