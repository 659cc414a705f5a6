/**
 * Alone in its file (its own worker process), so the count of live sockets and timers before
 * the cache is not disturbed by other tests' connections still closing.
 */
import { expect, it } from 'vitest';
import { Cache } from '../../src/cache/index.js';
import { until } from '../support/helpers.js';
import { describeRedis, liveHandles, useRedis } from '../support/vitest.js';

describeRedis('Cache handles', () => {
  const redis = useRedis();

  it('close leaves no socket or timer behind (the subscriber it opened is closed)', async () => {
    // Let the harness's own probe sockets (PING on start) finish closing first.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const before = liveHandles();
    const client = redis().client(0, { maxRetriesPerRequest: 1 });
    const cache = new Cache({ redis: client });
    await cache.getOrLoad('k', () => 1);
    await cache.set('k2', 2); // a round trip on the subscriber's channel
    await cache.close();
    await cache.close();
    client.disconnect();
    await until(() => {
      const after = liveHandles();
      expect(after.TCPSocketWrap ?? 0).toBeLessThanOrEqual(before.TCPSocketWrap ?? 0);
      expect(after.Timeout ?? 0).toBeLessThanOrEqual(before.Timeout ?? 0);
    }, 5_000);
  });
});
