import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Redlock } from '../../src/lock/index.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// Redlock.close() and the node calls still in flight when it is called. A release resolves as
// soon as a quorum answered; the slower nodes' calls go on — including the EVAL a node that has
// not cached the script (NOSCRIPT) needs after its EVALSHA. A user who quits the clients after
// close() must not have Keel write to them afterwards (the README lock example once printed
// `write EPIPE` that way: an EVAL written after the client's QUIT).

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Records, for every `EVAL` the client is asked to send from now on, whether `closed()` was
 * already true: the calls Keel made on the client after its Redlock said it was closed.
 */
function recordEvals(client: Redis, closed: () => boolean): boolean[] {
  const afterClose: boolean[] = [];
  const send = client.eval.bind(client);
  client.eval = ((...args: Parameters<typeof send>) => {
    afterClose.push(closed());
    return send(...args);
  }) as typeof client.eval;
  return afterClose;
}

describeRedis('Redlock.close() with node calls in flight', () => {
  const redis = useRedis({ count: 3 });

  afterEach(async () => {
    for (let i = 0; i < 3; i++) if (redis().node(i).state === 'paused') redis().resume(i);
    await redis().flushAll();
  });

  it("waits for a slow node's NOSCRIPT → EVAL fallback, so nothing is sent after it resolves", async () => {
    const clients = redis().clients();
    const slow = clients[2] as Redis;
    // Generous: the slow node answers long before this; the test is about order, not time.
    const redlock = new Redlock({ clients, nodeTimeoutMs: 5_000 });
    const lock = await redlock.acquire('close:eval');
    // Node 2 forgets the scripts (its release needs EVAL after EVALSHA) and answers late.
    await slow.script('FLUSH');
    let closed = false;
    const evals = recordEvals(slow, () => closed);
    redis().pause(2);
    await lock.release(); // decided by nodes 0 and 1; node 2's EVALSHA is still in flight
    const closing = redlock.close().then(() => {
      closed = true;
    });
    await sleep(100);
    redis().resume(2); // NOSCRIPT now, then the EVAL
    await closing;
    await sleep(200); // time for a late EVAL (the old behaviour) to show
    expect(evals, 'EVALs sent to node 2 (true: after close() had resolved)').toEqual([false]);

    // And the user's quit() after close() meets no write on a closed connection.
    const errors: unknown[] = [];
    for (const client of clients) client.on('error', (error: unknown) => errors.push(error));
    await Promise.all(clients.map((client) => client.quit()));
    expect(errors).toEqual([]);
    // The release really reached node 2 (through the EVAL): the lock's key is gone there too.
    expect(await redis().client(2).exists(redlock.keyOf('close:eval'))).toBe(0);
  });

  it('does not wait for a node that never answers longer than its bound (2 × nodeTimeoutMs)', async () => {
    const clients = redis().clients();
    const redlock = new Redlock({ clients, nodeTimeoutMs: 200 });
    const lock = await redlock.acquire('close:hung');
    redis().pause(2);
    await lock.release();
    // Bounded "how long until", with a wide margin: a hang would fail here, not time out the test.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      redlock.close().then(() => 'closed'),
      new Promise((resolve) => (timer = setTimeout(resolve, 10_000, 'still waiting'))),
    ]);
    clearTimeout(timer);
    expect(outcome).toBe('closed');
  });
});

describeRedis('Redlock listeners on your clients', () => {
  const redis = useRedis({ count: 3 });

  it("adds one 'ready' listener per client, whatever it uses them for, and close() removes it", async () => {
    const clients = redis().clients();
    const before = clients.map((c) => c.listenerCount('ready'));
    // Several Redlocks on the same clients (one per module, say): each adds one listener per
    // client — resent-copy detection and the fencing check on reconnect share it — so Node's
    // MaxListenersExceededWarning (at 11) comes no sooner than it must.
    const redlocks = [0, 1, 2, 3].map(() => new Redlock({ clients }));
    // The first acquisition starts the fencing checks on reconnect: no listener more for it.
    for (const redlock of redlocks) await (await redlock.acquire('listeners')).release();
    expect(clients.map((c, i) => c.listenerCount('ready') - (before[i] as number))).toEqual([
      4, 4, 4,
    ]);
    for (const redlock of redlocks) await redlock.close();
    expect(clients.map((c) => c.listenerCount('ready'))).toEqual(before);
  });
});
