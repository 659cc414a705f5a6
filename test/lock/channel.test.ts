import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { NodeChannel, type LockClient } from '../../src/lock/channel.js';
import { BATCH, FENCE_STATUS } from '../../src/lock/scripts.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// When a node's calls go out: at once while the node owes at most one answer (a round decided
// without it leaves it owing its answer, and the caller's next round must not wait for the end
// of the tick for that), batched at the end of the tick while it owes more.

/** A real client whose EVALSHA calls are recorded (the SHA-1 of each, in order). */
function recording(client: Redis): { client: LockClient; sent: string[] } {
  const sent: string[] = [];
  return {
    sent,
    client: {
      evalsha: (sha, numKeys, ...args) => {
        sent.push(sha);
        return client.evalsha(sha, numKeys, ...args);
      },
      eval: (script, numKeys, ...args) => client.eval(script, numKeys, ...args),
    },
  };
}

/** Sends FENCE_STATUS on `channel`; resolves with `[ok, reply]`. */
const call = (channel: NodeChannel): Promise<[boolean, unknown]> =>
  new Promise((done) => {
    channel.send(FENCE_STATUS, 1, ['channel-test:marker'], (ok, value) => {
      done([ok, value]);
    });
  });

describeRedis('NodeChannel', () => {
  const redis = useRedis({ count: 1 });

  afterEach(async () => {
    await redis().flushAll();
  });

  it('sends a call to a node owing one answer at once, not at the end of the tick', async () => {
    const { client, sent } = recording(redis().clients()[0] as Redis);
    const channel = new NodeChannel(client, true);
    const first = call(channel); // the node owes this one's answer now
    const second = call(channel);
    // Both were handed to the client synchronously: no tick went by.
    expect(sent).toEqual([FENCE_STATUS.sha, FENCE_STATUS.sha]);
    expect(await first).toEqual([true, 0]);
    expect(await second).toEqual([true, 0]);
  });

  it('batches the calls of one tick to a node owing two answers or more', async () => {
    const { client, sent } = recording(redis().clients()[0] as Redis);
    const channel = new NodeChannel(client, true);
    const calls = [call(channel), call(channel), call(channel), call(channel)];
    // Two went at once; the other two wait for the end of the tick, and go as one batch.
    expect(sent).toEqual([FENCE_STATUS.sha, FENCE_STATUS.sha]);
    await new Promise((done) => process.nextTick(done));
    expect(sent).toEqual([FENCE_STATUS.sha, FENCE_STATUS.sha, BATCH.sha]);
    for (const answer of await Promise.all(calls)) expect(answer).toEqual([true, 0]);
  });
});
