import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { NodeChannel, type LockClient } from '../../src/lock/channel.js';
import { BATCH, FENCE_STATUS } from '../../src/lock/scripts.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// When a node's calls go out: at once while every answer the node owes is late (a round
// decided without the node leaves it owing its answer, and the caller's next round must not wait
// for the end of the tick for that), batched at the end of the tick while it owes answers
// somebody waits for.

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

  it('sends a call to a node that owes only late answers at once, not at the end of the tick', async () => {
    const { client, sent } = recording(redis().clients()[0] as Redis);
    const channel = new NodeChannel(client, true);
    const first = call(channel);
    channel.late(); // its round was decided without it
    const second = call(channel);
    // Both were handed to the client synchronously: no tick went by.
    expect(sent).toEqual([FENCE_STATUS.sha, FENCE_STATUS.sha]);
    expect(await first).toEqual([true, 0]);
    channel.lateAnswered();
    expect(await second).toEqual([true, 0]);
    // Nothing owed now: the next call goes at once too.
    const third = call(channel);
    expect(sent).toHaveLength(3);
    expect(await third).toEqual([true, 0]);
  });

  it('batches the calls of one tick to a node owing an answer somebody waits for', async () => {
    const { client, sent } = recording(redis().clients()[0] as Redis);
    const channel = new NodeChannel(client, true);
    const calls = [call(channel), call(channel), call(channel), call(channel)];
    // The first went at once; the other three wait for the end of the tick, and go as one batch.
    expect(sent).toEqual([FENCE_STATUS.sha]);
    await new Promise((done) => process.nextTick(done));
    expect(sent).toEqual([FENCE_STATUS.sha, BATCH.sha]);
    for (const answer of await Promise.all(calls)) expect(answer).toEqual([true, 0]);
  });

  it('batches again once the late answers are in and an answer somebody waits for is owed', async () => {
    const { client, sent } = recording(redis().clients()[0] as Redis);
    const channel = new NodeChannel(client, true);
    const first = call(channel);
    channel.late();
    const second = call(channel); // at once: only a late answer was owed
    const third = call(channel); // held back: the second's answer is awaited
    expect(sent).toEqual([FENCE_STATUS.sha, FENCE_STATUS.sha]);
    await new Promise((done) => process.nextTick(done));
    expect(sent).toEqual([FENCE_STATUS.sha, FENCE_STATUS.sha, FENCE_STATUS.sha]);
    expect(await first).toEqual([true, 0]);
    channel.lateAnswered();
    expect(await Promise.all([second, third])).toEqual([
      [true, 0],
      [true, 0],
    ]);
  });
});
