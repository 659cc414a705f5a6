/**
 * core: the cost of Keel's typed events against Node's `EventEmitter`, with 0, 1 and 3
 * listeners. Components emit on hot paths (every breaker call, every lock renewal), so the
 * no-listener case must be close to free.
 */
import { EventEmitter } from 'node:events';
import { EventChannel } from '../src/core/index.js';
import { defineSuite, type BenchTask } from './suite.js';

interface Change {
  readonly from: string;
  readonly to: string;
}

const payload: Change = { from: 'closed', to: 'open' };
let sink = 0;
const listener = (change: Change): void => {
  sink += change.to.length;
};

function pair(listeners: number): BenchTask[] {
  const channel = new EventChannel<Change>();
  const emitter = new EventEmitter();
  for (let i = 0; i < listeners; i++) {
    channel.subscribe(listener);
    emitter.on('change', listener);
  }
  const label = `${listeners} listener${listeners === 1 ? '' : 's'}`;
  const peer = `EventEmitter.emit, ${label}`;
  return [
    {
      name: `EventChannel.emit, ${label}`,
      kind: 'keel',
      compareTo: peer,
      batch: 1000,
      fn: () => {
        channel.emit(payload);
        return sink;
      },
    },
    {
      name: peer,
      kind: 'baseline',
      batch: 1000,
      fn: () => emitter.emit('change', payload),
    },
  ];
}

export const suite = defineSuite({
  name: 'core',
  description:
    "typed EventChannel vs node:events EventEmitter (Node's own emitter is the baseline)",
  tasks: [...pair(0), ...pair(1), ...pair(3)],
});
