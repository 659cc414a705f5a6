import { describe, expect, it } from 'vitest';
import { HashRing } from '../../src/hashring/index.js';
import { recordChannels } from '../support/channels.js';

const REBUILT = 'keel:hashring:rebuilt';

describe('hashring observability (issue 15)', () => {
  it('publishes every change of the node set, and nothing for lookups', () => {
    const ring = new HashRing({ nodes: [{ id: 'a' }, { id: 'b' }] });
    using channels = recordChannels([REBUILT]);
    const before = Date.now();
    ring.add({ id: 'c' });
    ring.get('user:1');
    ring.setWeight('a', 2);
    expect(ring.remove('b')).toBe(true);
    expect(ring.remove('b')).toBe(false); // no change, no message
    const messages = channels.of(REBUILT);
    expect(messages.map((m) => [m.change, m.id, m.nodes])).toEqual([
      ['add', 'c', 3],
      ['set-weight', 'a', 3],
      ['remove', 'b', 2],
    ]);
    expect(messages.at(-1)).toEqual({
      change: 'remove',
      id: 'b',
      mode: 'keel',
      nodes: 2,
      points: ring.pointCount,
      revision: ring.revision,
      time: expect.any(Number) as number,
    });
    for (const m of messages) expect(m.time).toBeGreaterThanOrEqual(before);
  });

  it('publishes once per change in the compatibility modes too (which rebuild)', () => {
    const ring = new HashRing({ mode: 'libketama', nodes: [{ id: '10.0.0.1:11211' }] });
    using channels = recordChannels([REBUILT]);
    ring.add({ id: '10.0.0.2:11211' });
    expect(channels.of(REBUILT)).toMatchObject([{ change: 'add', mode: 'libketama', nodes: 2 }]);
  });
});
