/**
 * Cache observability (issue 15): one scripted scenario against a real redis-server, read off
 * the `keel:cache:*` diagnostics channels as an APM agent would — a malformed record
 * quarantined, a load overtaken by a delete refused its write-back, Redis paused (degraded) and
 * back (recovered), the last value served in grace when the loader fails. Each message carries
 * wall-clock time and the same payload the typed `on…` event gets.
 */
import { expect, it } from 'vitest';
import { recordChannels } from '../support/channels.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { useCaches } from '../support/cache.js';

const CHANNELS = [
  'keel:cache:quarantine',
  'keel:cache:stale-write-refused',
  'keel:cache:degraded',
  'keel:cache:recovered',
  'keel:cache:grace',
];

describeRedis('cache observability (real redis-server)', () => {
  const redis = useRedis();
  const { client, cacheOf } = useCaches(redis);

  it('publishes quarantine, stale-write-refused, degraded, recovered and grace for one scripted scenario', async () => {
    const channels = recordChannels(CHANNELS);
    const typed: string[] = [];
    try {
      const before = Date.now();
      const a = cacheOf({ redisTimeoutMs: 200, degradedRetryMs: 100, ttlMs: 100, graceMs: 60_000 });
      const b = cacheOf();
      a.onQuarantine(() => typed.push('quarantine'));
      a.onStaleWriteRefused(() => typed.push('stale-write-refused'));
      a.onDegraded(() => typed.push('degraded'));
      a.onRecovered(() => typed.push('recovered'));
      a.onGrace(() => typed.push('grace'));

      // 1. Malformed data in Redis: quarantined, the loader answers.
      await client().set('keel:cache:{default:bad}', 'not an envelope');
      await expect(a.getOrLoad('bad', () => 'loaded')).resolves.toBe('loaded');

      // 2. A load overtaken by a delete from another process: its write-back is refused.
      let release: (() => void) | undefined;
      const loading = a.getOrLoad('k', async () => {
        await new Promise<void>((resolve) => (release = resolve));
        return 'before the delete';
      });
      await until(() => expect(release).toBeDefined(), 5_000);
      await b.delete('k');
      release?.();
      await expect(loading).resolves.toBe('before the delete');

      // 3. Redis paused: degraded (the loader still answers); resumed: recovered.
      await a.getOrLoad('warm', () => 'w');
      redis().pause(0);
      await expect(a.getOrLoad('cold', () => 'from loader')).resolves.toBe('from loader');
      redis().resume(0);
      await until(async () => {
        await a.getOrLoad(`probe-${Math.random()}`, () => 1);
        expect(channels.of('keel:cache:recovered')).toHaveLength(1);
      }, 10_000);

      // 4. Past its ttl, the loader fails: the last value is served in grace.
      await new Promise((resolve) => setTimeout(resolve, 150));
      const boom = new Error('db down');
      await expect(
        a.getOrLoad('warm', () => {
          throw boom;
        }),
      ).resolves.toBe('w');

      const order = channels.published.map((p) => p.channel.slice('keel:cache:'.length));
      expect(order).toEqual([
        'quarantine',
        'stale-write-refused',
        'degraded',
        'recovered',
        'grace',
      ]);
      // The typed events and the channels are fed from one place: same events, same order.
      expect(typed).toEqual(order);
      const [quarantine, refused, degraded, recovered, grace] = channels.published.map(
        (p) => p.message,
      );
      expect(quarantine).toMatchObject({ key: 'default:bad', reason: 'no envelope header' });
      expect(refused).toMatchObject({ key: 'default:k' });
      expect(degraded?.error).toMatchObject({ kind: 'timed-out' });
      expect(recovered?.degradedMs as number).toBeGreaterThan(0);
      expect(grace).toMatchObject({ key: 'default:warm', error: boom });
      for (const { message } of channels.published) {
        expect(message.time as number).toBeGreaterThanOrEqual(before);
        expect(message.time as number).toBeLessThanOrEqual(Date.now());
      }
    } finally {
      channels.dispose();
    }
  });
});
