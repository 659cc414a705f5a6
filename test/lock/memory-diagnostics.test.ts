/**
 * MemoryLock publishes on the same channels as Redlock (issue 15): an acquisition is traced on
 * `keel:lock:acquire` and one that finds the resource held publishes `keel:lock:contended`, so
 * an application (or the trading demo in embedded mode) sees its locks in `keel/otel` too.
 */
import { describe, expect, it } from 'vitest';
import { MemoryLock } from '../../src/lock/index.js';
import { recordChannels, tracingNames } from '../support/channels.js';

describe('MemoryLock diagnostics channels', () => {
  it('traces a contended acquisition: contended once, then asyncEnd with waits, attempts and the fencing token', async () => {
    const locks = new MemoryLock({ ttlMs: 5000, retryDelayMs: 5, retryJitterMs: 0 });
    const channels = recordChannels([...tracingNames('keel:lock:acquire'), 'keel:lock:contended']);
    try {
      const first = await locks.acquire('sku:1');
      const second = locks.acquire('sku:1', { waitMs: 2000 });
      await new Promise((resolve) => setTimeout(resolve, 30));
      await first.release();
      const lock = await second;
      await lock.release();

      const starts = channels.of('tracing:keel:lock:acquire:start');
      const ends = channels.of('tracing:keel:lock:acquire:asyncEnd');
      expect(starts).toHaveLength(2);
      expect(ends).toHaveLength(2);
      expect(ends[0]).toMatchObject({ resources: ['sku:1'], nodes: ['memory'], quorum: 1 });
      expect(ends[0]?.fencingToken).toBe(first.fencingToken);
      const waited = ends[1] as Record<string, unknown>;
      expect(waited.fencingToken).toBe(lock.fencingToken);
      expect(waited.attempts as number).toBeGreaterThan(1);
      expect(waited.waitMs as number).toBeGreaterThan(0);
      expect(typeof waited.time).toBe('number');
      const contended = channels.of('keel:lock:contended');
      expect(contended).toHaveLength(1);
      expect(contended[0]).toMatchObject({ resources: ['sku:1'], takenBy: 'another', attempt: 1 });
      expect(contended[0]?.freesInMs as number).toBeGreaterThan(0);
    } finally {
      channels.dispose();
      await locks.close();
    }
  });

  it('traces a failed acquisition with its error', async () => {
    const locks = new MemoryLock({ ttlMs: 5000, retryDelayMs: 5, retryJitterMs: 0 });
    const channels = recordChannels(tracingNames('keel:lock:acquire'));
    try {
      const held = await locks.acquire('sku:2');
      await expect(locks.acquire('sku:2', { retryCount: 1 })).rejects.toThrow();
      const ends = channels.of('tracing:keel:lock:acquire:asyncEnd');
      expect(ends).toHaveLength(2);
      expect(ends[1]?.error).toBeDefined();
      expect(ends[1]?.attempts).toBe(2);
      await held.release();
    } finally {
      channels.dispose();
      await locks.close();
    }
  });
});
