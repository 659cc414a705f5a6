import { afterEach, expect, it } from 'vitest';
import { systemClock } from '../../src/core/index.js';
import { isRegistryUnavailableError } from '../../src/discovery/index.js';
import { bounded } from '../../src/discovery/ops.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// Operation timeouts under event-loop lag. A timeout is a timer; after a long synchronous
// stretch (a busy process), Node's event loop runs expired timers *before* it polls the
// sockets, so a reply that arrived during the stretch would lose to a timeout that expired
// during it — heartbeats and lock rounds failing for seconds while Redis answers at once. A
// reply already waiting in the socket must win; a node that really does not answer must still
// time out. (Event loop phases: https://nodejs.org/en/learn/asynchronous-work/event-loop-timers-and-nexttick)

/** Blocks the event loop for `ms` (what a CPU-bound stretch of a loaded service does). */
function busyWait(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // spin: nothing else runs, not even a timer or a socket read
  }
}

describeRedis('timeouts of Redis calls under event-loop lag', () => {
  const redis = useRedis({ count: 1 });

  afterEach(() => {
    if (redis().node(0).state === 'paused') redis().resume(0);
  });

  it('bounded(): a reply that arrived while the loop was blocked past the timeout wins', async () => {
    const client = redis().client(0);
    await client.ping(); // connected: the next command is written at once
    const call = bounded('test', systemClock, 100, undefined, () => client.echo('here'));
    busyWait(300); // the reply arrives meanwhile; the 100 ms timer expires meanwhile too
    await expect(call).resolves.toBe('here');
  });

  it('bounded(): a node that does not answer still times out', async () => {
    const client = redis().client(0);
    await client.ping();
    redis().pause(0);
    const error = await bounded('test', systemClock, 100, undefined, () =>
      client.echo('never'),
    ).catch((e: unknown) => e);
    expect(isRegistryUnavailableError(error)).toBe(true);
    expect((error as Error).message).toContain('no answer within 100 ms');
  });
});
