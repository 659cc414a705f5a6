/**
 * Semaphore chaos: the lock chaos run (see lock.chaos.test.ts) with `Redlock.semaphore(name,
 * { permits })` instead of locks — worker processes × clients take one or two permits of a few
 * semaphores while a seeded scheduler pauses, kills and restarts a minority of the five nodes
 * (with their data, or empty after twice the ttl, one at a time), fills them up, flushes their
 * script cache and drops their connections. The checker sweeps the
 * recorded history: never more than `permits` permits validly held at once.
 *
 * Bounded by default (6 s of chaos); `KEEL_CHAOS_S` and `KEEL_CHAOS_SEED` as in config.ts.
 * Check names for `KEEL_CHAOS_KNOWN_BUGS`: `semaphore-overcommit`, `unhandled-rejections`.
 */
import { it } from 'vitest';
import { describeRedis, useRedis } from '../support/vitest.js';
import { chaosSeconds, chaosSeed, faultMix } from './config.js';
import { DEFAULT_LOCK_MIX, LOCK_FAULTS } from './faults.js';
import { expectClean, runLockChaos } from './lock-run.js';

const seconds = chaosSeconds(6);

describeRedis('semaphore chaos (five nodes, faults inside the envelope)', () => {
  const redis = useRedis({ count: 5, args: ['--appendonly', 'yes', '--appendfsync', 'always'] });

  it(
    'never more than `permits` permits validly held at once',
    async () => {
      const seed = chaosSeed();
      const report = await runLockChaos(redis(), {
        mode: 'semaphore',
        seconds,
        seed,
        workers: 3,
        clientsPerWorker: 2,
        resources: ['chaos-sem-a', 'chaos-sem-b'],
        ttlMs: 600,
        permits: 2,
        mix: faultMix('KEEL_CHAOS_FAULTS', LOCK_FAULTS, DEFAULT_LOCK_MIX),
      });
      expectClean(report, 'test/chaos/semaphore.chaos.test.ts', seed, seconds);
    },
    seconds * 1000 + 180_000,
  );
});
