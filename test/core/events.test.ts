import { describe, expect, it } from 'vitest';
import { EventChannel } from '../../src/core/index.js';

describe('EventChannel', () => {
  it('delivers events to listeners in subscription order', () => {
    const channel = new EventChannel<number>();
    const seen: string[] = [];
    channel.subscribe((n) => seen.push(`a${n}`));
    channel.subscribe((n) => seen.push(`b${n}`));
    channel.emit(1);
    channel.emit(2);
    expect(seen).toEqual(['a1', 'b1', 'a2', 'b2']);
  });

  it('reports whether anyone listens', () => {
    const channel = new EventChannel<string>();
    expect(channel.active).toBe(false);
    expect(channel.listenerCount).toBe(0);
    const subscription = channel.subscribe(() => undefined);
    expect(channel.active).toBe(true);
    expect(channel.listenerCount).toBe(1);
    subscription.dispose();
    expect(channel.active).toBe(false);
    channel.emit('nobody hears this');
  });

  it('disposing is idempotent and removes exactly one of two identical subscriptions', () => {
    const channel = new EventChannel<number>();
    let calls = 0;
    const listener = (): void => {
      calls++;
    };
    const first = channel.subscribe(listener);
    channel.subscribe(listener);
    channel.emit(0);
    expect(calls).toBe(2);
    first.dispose();
    first.dispose();
    channel.emit(0);
    expect(calls).toBe(3);
    expect(channel.listenerCount).toBe(1);
  });

  it('works with `using`', () => {
    const channel = new EventChannel<number>();
    const seen: number[] = [];
    {
      using subscription = channel.subscribe((n) => seen.push(n));
      expect(subscription).toBeDefined();
      channel.emit(1);
    }
    channel.emit(2);
    expect(seen).toEqual([1]);
  });

  it('once() delivers a single event', () => {
    const channel = new EventChannel<number>();
    const seen: number[] = [];
    channel.once((n) => seen.push(n));
    channel.emit(1);
    channel.emit(2);
    expect(seen).toEqual([1]);
    expect(channel.active).toBe(false);
  });

  it('changes made during an emit take effect from the next emit', () => {
    const channel = new EventChannel<number>();
    const seen: string[] = [];
    const late = (n: number): void => {
      seen.push(`late${n}`);
    };
    const second = channel.subscribe((n) => seen.push(`second${n}`));
    channel.subscribe((n) => {
      seen.push(`first${n}`);
    });
    channel.subscribe((n) => {
      if (n === 1) {
        second.dispose();
        channel.subscribe(late);
      }
    });
    channel.emit(1);
    channel.emit(2);
    expect(seen).toEqual(['second1', 'first1', 'first2', 'late2']);
  });

  it('a throwing listener neither stops the others nor is swallowed', async () => {
    const channel = new EventChannel<number>();
    const seen: number[] = [];
    const boom = new Error('listener bug');
    channel.subscribe(() => {
      throw boom;
    });
    channel.subscribe((n) => seen.push(n));
    const uncaught = new Promise<unknown>((resolve) => {
      const listeners = process.listeners('uncaughtException');
      process.removeAllListeners('uncaughtException');
      process.once('uncaughtException', (error) => {
        for (const l of listeners) process.on('uncaughtException', l);
        resolve(error);
      });
    });
    expect(() => channel.emit(7)).not.toThrow();
    expect(seen).toEqual([7]);
    await expect(uncaught).resolves.toBe(boom);
  });

  it('clear() removes every listener', () => {
    const channel = new EventChannel<number>();
    let calls = 0;
    channel.subscribe(() => calls++);
    channel.subscribe(() => calls++);
    channel.clear();
    channel.emit(1);
    expect(calls).toBe(0);
  });

  it('rejects a listener that is not a function', () => {
    const channel = new EventChannel<number>();
    expect(() => channel.subscribe(42 as unknown as () => void)).toThrow(
      expect.objectContaining({ code: 'KEEL_INVALID_OPTION', option: 'listener' }),
    );
  });
});
