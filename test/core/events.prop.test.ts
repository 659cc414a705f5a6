import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EventChannel, type Subscription } from '../../src/core/index.js';

// Invariant: an EventChannel behaves like the obvious model — an ordered multiset of live
// subscriptions — under any interleaving of subscribe, dispose and emit.
describe('EventChannel (property)', () => {
  it('matches a list model under any sequence of operations', () => {
    type Op =
      { kind: 'sub' } | { kind: 'dispose'; which: number } | { kind: 'emit'; value: number };
    const op = fc.oneof(
      fc.constant<Op>({ kind: 'sub' }),
      fc.nat(20).map<Op>((which) => ({ kind: 'dispose', which })),
      fc.integer().map<Op>((value) => ({ kind: 'emit', value })),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const channel = new EventChannel<number>();
        const subscriptions: Subscription[] = [];
        const live: boolean[] = [];
        const received: [number, number][] = [];
        const expected: [number, number][] = [];
        for (const o of ops) {
          if (o.kind === 'sub') {
            const id = subscriptions.length;
            subscriptions.push(channel.subscribe((v) => received.push([id, v])));
            live.push(true);
          } else if (o.kind === 'dispose') {
            if (subscriptions.length === 0) continue;
            const id = o.which % subscriptions.length;
            subscriptions[id]?.dispose();
            live[id] = false;
          } else {
            channel.emit(o.value);
            live.forEach((isLive, id) => {
              if (isLive) expected.push([id, o.value]);
            });
          }
          expect(channel.listenerCount).toBe(live.filter(Boolean).length);
        }
        expect(received).toEqual(expected);
      }),
    );
  });
});
