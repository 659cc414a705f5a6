import { expect, it } from 'vitest';
import { Redlock } from '../../src/lock/index.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// A lock round's per-node timeout under event-loop lag (see test/discovery/lag.test.ts for the
// mechanism): replies that arrived while the process was busy past the timeout decide the
// round, rather than a timer the event loop runs before it reads them.

/** Blocks the event loop for `ms` (what a CPU-bound stretch of a loaded service does). */
function busyWait(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // spin: nothing else runs, not even a timer or a socket read
  }
}

describeRedis('Redlock rounds under event-loop lag', () => {
  const redis = useRedis({ count: 3 });

  it('a round whose replies arrived while the loop was blocked is decided by them', async () => {
    const clients = redis().clients();
    await Promise.all(clients.map((client) => client.ping()));
    const redlock = new Redlock({ clients, nodeTimeoutMs: 100, retryCount: 0 });
    try {
      // Scripts cached first (Redis's script cache is the server's), so the lagged round is one
      // EVALSHA per node; by another Redlock with a generous node timeout, since on a loaded
      // machine the warm-up's first calls can take longer than the 100 ms under test.
      const warm = new Redlock({ clients, nodeTimeoutMs: 5_000 });
      await (await warm.acquire('lag:warm')).release();
      await warm.close();
      const acquiring = redlock.acquire('lag:1');
      busyWait(300);
      const lock = await acquiring;
      expect(lock.resources).toEqual(['lag:1']);
      await lock.release();
    } finally {
      await redlock.close();
    }
  });
});
