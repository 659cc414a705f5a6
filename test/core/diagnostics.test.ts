import { describe, expect, it } from 'vitest';
import diagnostics from 'node:diagnostics_channel';
import {
  InvalidOptionError,
  KeelChannel,
  channelName,
  operationChannel,
  wallTime,
} from '../../src/core/index.js';

describe('core/diagnostics', () => {
  it('names channels keel:<component>:<event> and refuses names outside the scheme', () => {
    expect(channelName('lock', 'lost')).toBe('keel:lock:lost');
    expect(channelName('breaker', 'state-change')).toBe('keel:breaker:state-change');
    for (const bad of ['Lost', 'lost:x', '', 'a--b', '-a', 'a b']) {
      expect(() => channelName('lock', bad)).toThrow(InvalidOptionError);
    }
  });

  it('publishes only to subscribers, who subscribe by name', () => {
    const channel = new KeelChannel<{ n: number }>('lock', 'test-event');
    expect(channel.active).toBe(false);
    channel.publish({ n: 0 }); // nobody listens: nothing happens
    const seen: unknown[] = [];
    const listener = (message: unknown): void => void seen.push(message);
    diagnostics.subscribe('keel:lock:test-event', listener);
    try {
      expect(channel.active).toBe(true);
      channel.publish({ n: 1 });
    } finally {
      diagnostics.unsubscribe('keel:lock:test-event', listener);
    }
    expect(channel.active).toBe(false);
    channel.publish({ n: 2 });
    expect(seen).toEqual([{ n: 1 }]);
  });

  it("exposes Node's channel of its name for per-call guards", () => {
    const channel = new KeelChannel<{ n: number }>('lock', 'test-guard');
    expect(channel.channel).toBe(diagnostics.channel('keel:lock:test-guard'));
    const guard = channel.channel;
    expect(guard.hasSubscribers).toBe(false);
    const listener = (): void => undefined;
    diagnostics.subscribe('keel:lock:test-guard', listener);
    try {
      expect(guard.hasSubscribers).toBe(true);
    } finally {
      diagnostics.unsubscribe('keel:lock:test-guard', listener);
    }
    expect(guard.hasSubscribers).toBe(false);
  });

  it('gives operations a TracingChannel under the same name', async () => {
    const op = operationChannel<{ resource: string; result?: unknown }>('lock', 'test-op');
    const events: string[] = [];
    const handlers = {
      start: () => events.push('start'),
      end: () => events.push('end'),
      asyncStart: () => events.push('asyncStart'),
      asyncEnd: () => events.push('asyncEnd'),
      error: () => events.push('error'),
    };
    diagnostics.tracingChannel('keel:lock:test-op').subscribe(handlers);
    try {
      expect(op.hasSubscribers).toBe(true);
      expect(await op.tracePromise(() => Promise.resolve(7), { resource: 'r' })).toBe(7);
    } finally {
      diagnostics.tracingChannel('keel:lock:test-op').unsubscribe(handlers);
    }
    expect(events).toEqual(['start', 'end', 'asyncStart', 'asyncEnd']);
  });

  it('stamps wall-clock epoch milliseconds', () => {
    const before = Date.now();
    const t = wallTime();
    expect(t).toBeGreaterThanOrEqual(before);
    expect(t).toBeLessThanOrEqual(Date.now());
  });
});
