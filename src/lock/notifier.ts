/**
 * Release notifications: a waiter for a held lock subscribes to the lock's release channel, so
 * the holder's release (which PUBLISHes from the release script) wakes it at once instead of
 * after a polling delay. Polling stays as the fallback — notifications only make retries
 * earlier, never decide anything: every wake-up still runs a full quorum attempt.
 *
 * One subscriber connection per node, opened lazily (`client.duplicate()`), shared by every
 * waiter of the Redlock, with per-channel reference counts; closed after a short linger once
 * nobody waits, and by `Redlock.close()`.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { wakeableSleep, type Clock, type Timer } from '../core/index.js';

/** What a subscriber connection must offer. An ioredis `Redis` fits as is. */
export interface SubscriberClient {
  /** `SUBSCRIBE` to release channels. */
  subscribe(...channels: string[]): Promise<unknown>;
  /** `UNSUBSCRIBE` from channels nobody waits on any more. */
  unsubscribe(...channels: string[]): Promise<unknown>;
  /** A release published on a channel: wakes that channel's waiters. */
  on(event: 'message', listener: (channel: string, message: string) => void): unknown;
  /** Connection errors: listened to so none is unhandled; waiters keep their retry timers. */
  on(event: 'error', listener: (error: Error) => void): unknown;
  /** Connected: after a reconnect, Keel subscribes the connection's channels again. */
  on(event: 'ready', listener: () => void): unknown;
  /** Closes the connection: after a short linger once nobody waits, or on `Redlock.close()`. */
  disconnect(): void;
}

/** Options a subscriber connection is opened with (a subset of ioredis's). */
export interface SubscriberOptions {
  readonly autoResubscribe?: boolean;
}

/** A client that can open its own subscriber connection (ioredis: `duplicate()`). */
export interface DuplicableClient {
  duplicate(options?: SubscriberOptions): SubscriberClient;
}

/**
 * Subscriber connections re-subscribe themselves (see `#open`), not through ioredis's
 * `autoResubscribe`, which sends its SUBSCRIBE without catching it: a re-subscription that
 * fails (the connection drops again first, or Redis refuses it) is an unhandled rejection,
 * which by default ends the process.
 */
const OWN_RESUBSCRIBE: SubscriberOptions = Object.freeze({ autoResubscribe: false });

export const canDuplicate = (client: unknown): client is DuplicableClient =>
  typeof client === 'object' &&
  client !== null &&
  typeof (client as Partial<DuplicableClient>).duplicate === 'function';

/** A waiter's view of its channels: a counter of wake-ups and a way to wait for the next. */
export interface ReleaseSubscription extends Disposable {
  /** Wake-ups delivered so far on any of the channels. */
  readonly count: number;
  /**
   * Hands a wake-up this waiter will not use (it gives up) to the next waiter on each of its
   * channels, so a release is never swallowed by a waiter that leaves.
   */
  passOn(): void;
  /**
   * Resolves when a message arrives after `seen` messages, or after `ms`, or when `signal`
   * aborts (then it rejects with the reason). Clears its timer and listener either way.
   */
  wait(seen: number, ms: number, signal: AbortSignal | undefined): Promise<void>;
}

/** How long idle subscriber connections stay open before closing. */
const LINGER_MS = 1000;

/** Recent message ids remembered per channel, to count one release published by N nodes once. */
const RECENT_IDS = 16;

/**
 * A message `'*'` wakes every waiter of the channel (a semaphore release may free permits for
 * several); any other message is a release id, and wakes only the longest-waiting waiter — a
 * lock has one holder at a time, and waking all of them would make every waiter run a quorum
 * round to find that one of them won (a thundering herd). The id is the same on every node, so
 * the N copies of one release wake one waiter, not N.
 */
export const WAKE_ALL = '*';

interface Listener {
  /** Delivers one wake-up. */
  readonly wake: () => void;
  /** How many channels the listener waits on (a multi-resource lock waits on several). */
  readonly channels: number;
}

export class ReleaseNotifier {
  readonly #clients: readonly DuplicableClient[];
  readonly #clock: Clock;
  readonly #ackTimeoutMs: number;
  #subscribers: SubscriberClient[] | undefined;
  /** Channel → the subscriptions listening to it, longest-waiting first. */
  readonly #listeners = new Map<string, Set<Listener>>();
  /** Channel → ids of the releases it delivered lately. */
  readonly #recent = new Map<string, string[]>();
  /** Channel → sequence number of its latest release (channels subscribed and confirmed). */
  readonly #latest = new Map<string, number>();
  #sequence = 0;
  #linger: Timer | undefined;
  /** Set by {@link end}: no connection is opened again. */
  #ended = false;

  constructor(clients: readonly DuplicableClient[], clock: Clock, ackTimeoutMs: number) {
    this.#clients = clients;
    this.#clock = clock;
    this.#ackTimeoutMs = ackTimeoutMs;
  }

  /** Whether any channel is subscribed (else no {@link mark} can be made). */
  get listening(): boolean {
    return this.#latest.size > 0;
  }

  /**
   * Whether an acquisition of this Redlock is subscribed to `channel`, waiting for a release:
   * then a release of the lock publishes even where no refusal marked it (see RELEASE).
   */
  awaits(channel: string): boolean {
    return this.#listeners.has(channel);
  }

  /**
   * A mark of the releases seen so far on `channels`, when every one of them is subscribed
   * already (else `undefined`: releases may go unseen). Two equal marks mean no release came
   * in between.
   */
  mark(channels: readonly string[]): number | undefined {
    let mark = 0;
    for (const channel of channels) {
      const latest = this.#latest.get(channel);
      if (latest === undefined) return undefined;
      mark = Math.max(mark, latest);
    }
    return mark;
  }

  /** Whether a release with this id was delivered lately on one of `channels`. */
  released(channels: readonly string[], id: string): boolean {
    for (const channel of channels)
      if (this.#recent.get(channel)?.includes(id) === true) return true;
    return false;
  }

  /**
   * Subscribes to `channels` and resolves once at least one node confirmed the subscription,
   * or every node failed, or the ack timeout passed — a hung node never holds a waiter up; it
   * just falls back to polling.
   */
  async subscribe(channels: readonly string[]): Promise<ReleaseSubscription> {
    if (this.#ended) return this.#polling();
    this.#linger?.cancel();
    this.#linger = undefined;
    const subscribers = this.#open();
    let count = 0;
    let wake: (() => void) | undefined;
    const listener: Listener = {
      wake: () => {
        count++;
        wake?.();
      },
      channels: channels.length,
    };
    const fresh: string[] = [];
    for (const channel of channels) {
      let set = this.#listeners.get(channel);
      if (set === undefined) {
        set = new Set();
        this.#listeners.set(channel, set);
        fresh.push(channel);
      }
      set.add(listener);
    }
    if (fresh.length > 0) {
      await this.#confirm(subscribers, fresh);
      // From now on a release on these channels is seen (if they are still wanted).
      for (const channel of fresh) {
        if (this.#listeners.has(channel) && !this.#latest.has(channel)) {
          this.#latest.set(channel, 0);
        }
      }
    }
    let disposed = false;
    const subscription: ReleaseSubscription = {
      get count() {
        return count;
      },
      passOn: () => {
        for (const channel of channels) this.#deliver(channel, listener);
      },
      wait: (seen, ms, signal) => {
        if (signal?.aborted === true) return Promise.reject(signal.reason as Error);
        if (count !== seen || disposed) return Promise.resolve();
        const sleeping = wakeableSleep(ms, { signal, clock: this.#clock });
        wake = sleeping.wake;
        return sleeping.done.finally(() => {
          if (wake === sleeping.wake) wake = undefined;
        });
      },
      [Symbol.dispose]: () => {
        if (disposed) return;
        disposed = true;
        wake?.();
        const gone: string[] = [];
        for (const channel of channels) {
          const set = this.#listeners.get(channel);
          if (set?.delete(listener) !== true) continue; // inert since a close()
          if (set.size === 0) {
            this.#listeners.delete(channel);
            this.#recent.delete(channel);
            this.#latest.delete(channel);
            gone.push(channel);
          }
        }
        if (gone.length > 0 && this.#subscribers !== undefined) {
          for (const s of this.#subscribers) s.unsubscribe(...gone).catch(() => undefined);
        }
        if (this.#listeners.size === 0) this.#scheduleClose();
      },
    };
    return subscription;
  }

  /**
   * Closes the subscriber connections now. Waiters in progress fall back to polling; the next
   * waiter opens fresh connections.
   */
  close(): void {
    this.#linger?.cancel();
    this.#linger = undefined;
    const subscribers = this.#subscribers;
    this.#subscribers = undefined;
    // Forget every channel: subscriptions still open become inert (they time out into polling),
    // and a new subscription to the same channel subscribes again on the new connections.
    this.#listeners.clear();
    this.#recent.clear();
    this.#latest.clear();
    if (subscribers !== undefined) for (const s of subscribers) s.disconnect();
  }

  /**
   * Closes the subscriber connections for good (`Redlock.close()`): acquisitions still waiting
   * fall back to polling and never open connections again.
   */
  end(): void {
    this.#ended = true;
    this.close();
  }

  /** What a waiter gets once the notifier has ended: wake-ups by its retry timer only. */
  #polling(): ReleaseSubscription {
    return {
      count: 0,
      passOn: () => undefined,
      wait: (_seen, ms, signal) => wakeableSleep(ms, { signal, clock: this.#clock }).done,
      [Symbol.dispose]: () => undefined,
    };
  }

  #open(): SubscriberClient[] {
    if (this.#subscribers !== undefined) return this.#subscribers;
    const subscribers = this.#clients.map((client) => {
      // A Cluster client's duplicate() takes other arguments (and subscribes through its own
      // subscriber): it keeps its own re-subscription.
      const cluster = (client as { isCluster?: unknown }).isCluster === true;
      const subscriber = cluster ? client.duplicate() : client.duplicate(OWN_RESUBSCRIBE);
      // Connection errors are expected under faults (a paused or killed node); polling covers
      // them. A listener keeps ioredis from reporting them as unhandled.
      subscriber.on('error', () => undefined);
      if (!cluster) {
        let connected = false;
        subscriber.on('ready', () => {
          if (connected) this.#resubscribe(subscriber);
          connected = true;
        });
      }
      subscriber.on('message', (channel: string, message: string) => {
        this.#onMessage(channel, message);
      });
      return subscriber;
    });
    this.#subscribers = subscribers;
    return subscribers;
  }

  /**
   * A subscriber connection is back after a reconnect: subscribe it to every channel waited on
   * again (errors handled — polling covers a node that refuses), then wake those channels'
   * waiters once, since a release published while it was away reached nobody here.
   */
  #resubscribe(subscriber: SubscriberClient): void {
    if (this.#subscribers?.includes(subscriber) !== true) return;
    const channels = [...this.#listeners.keys()];
    if (channels.length === 0) return;
    subscriber.subscribe(...channels).then(
      () => {
        for (const channel of channels) {
          if (this.#latest.has(channel)) this.#latest.set(channel, ++this.#sequence);
          this.#wakeAll(channel);
        }
      },
      () => undefined,
    );
  }

  #onMessage(channel: string, message: string): void {
    const set = this.#listeners.get(channel);
    if (set === undefined) return;
    if (this.#latest.has(channel)) this.#latest.set(channel, ++this.#sequence);
    if (message === WAKE_ALL) {
      this.#wakeAll(channel);
      return;
    }
    let recent = this.#recent.get(channel);
    if (recent === undefined) this.#recent.set(channel, (recent = []));
    if (recent.includes(message)) return;
    recent.push(message);
    if (recent.length > RECENT_IDS) recent.shift();
    this.#deliver(channel, undefined);
  }

  /**
   * Wakes the longest-waiting listener of `channel` other than `except`; a listener that waits
   * on several channels may still find another of its resources held, so the next one is woken
   * too, until a single-channel listener got it.
   */
  #deliver(channel: string, except: Listener | undefined): void {
    const set = this.#listeners.get(channel);
    if (set === undefined) return;
    for (const listener of [...set]) {
      if (listener === except) continue;
      listener.wake();
      if (listener.channels === 1) return;
    }
  }

  /**
   * Resolves when the first node confirms the subscription to `channels`, or every node
   * failed, or the ack timeout passed. A confirmation that comes only after the timeout (new
   * connections on a busy machine) wakes every waiter of the channels once: they went on
   * without a live subscription, and a release published before it was live went unseen.
   */
  #confirm(subscribers: readonly SubscriberClient[], channels: readonly string[]): Promise<void> {
    return new Promise<void>((resolve) => {
      let pending = subscribers.length;
      let settled = false;
      let timedOut = false;
      const finish = (): void => {
        if (settled) return;
        settled = true;
        timer.cancel();
        resolve();
      };
      const timer = this.#clock.setTimer(() => {
        timedOut = true;
        finish();
      }, this.#ackTimeoutMs);
      timer.unref();
      const confirmed = (): void => {
        if (timedOut) {
          timedOut = false; // once
          for (const channel of channels) {
            if (this.#latest.has(channel)) this.#latest.set(channel, ++this.#sequence);
            this.#wakeAll(channel);
          }
        }
        finish();
      };
      for (const s of subscribers) {
        s.subscribe(...channels).then(confirmed, () => {
          if (--pending === 0) finish();
        });
      }
    });
  }

  /** Wakes every waiter of `channel`. */
  #wakeAll(channel: string): void {
    const set = this.#listeners.get(channel);
    if (set !== undefined) for (const listener of [...set]) listener.wake();
  }

  #scheduleClose(): void {
    if (this.#subscribers === undefined) return;
    this.#linger?.cancel();
    this.#linger = this.#clock.setTimer(() => {
      this.#linger = undefined;
      if (this.#listeners.size === 0) this.close();
    }, LINGER_MS);
    this.#linger.unref();
  }
}
