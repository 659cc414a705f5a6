/**
 * A view that cannot make progress says so: a store whose log keeps contradicting its own
 * snapshots (here a backend wrapper that answers every seek with an entry from the future)
 * turns the view stale with an error, and backs off, instead of resyncing silently forever.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  MemoryBackend,
  Registry,
  isRegistryUnavailableError,
  type ChangeFeed,
  type DiscoveryBackend,
  type FeedListener,
  type StaleChange,
  type WatchError,
} from '../../src/discovery/index.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function until(check: () => void, limitMs: number): Promise<void> {
  const deadline = performance.now() + limitMs;
  for (;;) {
    try {
      check();
      return;
    } catch (error) {
      if (performance.now() > deadline) throw error;
      await sleep(10);
    }
  }
}

/** A MemoryBackend whose feeds, while `lying`, answer each seek with a gap no snapshot closes. */
class LyingBackend implements DiscoveryBackend {
  readonly kind = 'lying';
  readonly inner = new MemoryBackend();
  lying = false;
  readonly register = this.inner.register.bind(this.inner);
  readonly heartbeat = this.inner.heartbeat.bind(this.inner);
  readonly deregister = this.inner.deregister.bind(this.inner);
  readonly snapshot = this.inner.snapshot.bind(this.inner);
  readonly reap = this.inner.reap.bind(this.inner);
  readonly close = this.inner.close.bind(this.inner);

  readonly #listeners = new Set<{ listener: FeedListener; epoch: string }>();

  follow(service: string, listener: FeedListener): ChangeFeed {
    const feed = this.inner.follow(service, listener);
    const me = { listener, epoch: '' };
    this.#listeners.add(me);
    return {
      seek: (epoch, revision, position) => {
        me.epoch = epoch;
        feed.seek(epoch, revision, position);
        if (this.lying) setTimeout(() => this.#lieTo(me), 1);
      },
      close: () => {
        this.#listeners.delete(me);
        feed.close();
      },
      [Symbol.dispose]: () => {
        this.#listeners.delete(me);
        feed.close();
      },
    };
  }

  /** Starts lying: every reader gets an entry from far in the future. */
  lie(): void {
    this.lying = true;
    for (const me of this.#listeners) this.#lieTo(me);
  }

  #lieTo(me: { listener: FeedListener; epoch: string }): void {
    if (!this.lying) return;
    me.listener.entries([
      { epoch: me.epoch, revision: 1_000_000, type: 'registered', id: 'ghost', data: '{}' },
    ]);
  }
}

describe('a view that cannot make progress', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    cleanups.length = 0;
  });

  it('turns stale and reports an error instead of resyncing silently forever, and recovers on progress', async () => {
    const backend = new LyingBackend();
    const registry = new Registry({
      backend,
      resyncJitterMs: 5,
      retryBaseMs: 5,
      retryMaxMs: 100,
      reapIntervalMs: 0,
    });
    cleanups.push(() => registry.close());
    const first = await registry.register({ service: 's', id: 'a', host: 'h', port: 1 });
    const watch = registry.watch('s');
    await watch.ready;
    const errors: WatchError[] = [];
    const stale: StaleChange[] = [];
    watch.onError((e) => errors.push(e));
    watch.onStaleChange((c) => stale.push(c));
    await first.setStatus('draining');
    await until(() => {
      expect(watch.get('a')?.status).toBe('draining');
    }, 3000);
    backend.lie(); // from now on every resync meets the lie again
    await until(() => {
      expect(watch.stale).toBe(true);
      expect(errors.length).toBeGreaterThanOrEqual(1);
    }, 3000);
    const error = errors[0]?.error;
    expect(isRegistryUnavailableError(error)).toBe(true);
    expect(error?.message).toContain('contradict');
    expect(stale[0]?.reason).toContain('contradict');
    expect(watch.get('ghost')).toBeUndefined();
    expect(watch.get('a')?.status).toBe('draining');
    // The store stops lying: the next change is followed and the view is fresh again.
    backend.lying = false;
    await first.setStatus('up');
    await until(() => {
      expect(watch.get('a')?.status).toBe('up');
      expect(watch.stale).toBe(false);
    }, 3000);
  });
});
