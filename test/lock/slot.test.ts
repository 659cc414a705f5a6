import { expect, it } from 'vitest';
import { Redlock, isLockCrossSlotError, type LockClient } from '../../src/lock/index.js';
import { crc16, hashTag, keySlot } from '../../src/lock/slot.js';

it('CRC16 and key slots match the Redis Cluster specification', () => {
  // The check value of CRC16-XMODEM, given in the Redis Cluster spec.
  expect(crc16('123456789')).toBe(0x31c3);
  // Examples from the CLUSTER KEYSLOT command's documentation.
  expect(keySlot('somekey')).toBe(11058);
  expect(keySlot('foo{hash_tag}')).toBe(2515);
  // Hash tags: the first {...} with something inside; `{}` is no tag.
  expect(hashTag('a{user1000}.following')).toBe('user1000');
  expect(hashTag('foo{}{bar}')).toBeUndefined();
  expect(hashTag('foo{{bar}}zap')).toBe('{bar');
  expect(keySlot('{user1000}.following')).toBe(keySlot('{user1000}.followers'));
});

/**
 * A stand-in that says it is a cluster client and fails the test if anything reaches it: the
 * same-slot check must throw before a single command is sent. (Not a Redis mock: nothing
 * answers.)
 */
const clusterClient = (): LockClient & { isCluster: true; calls: number } => ({
  isCluster: true,
  calls: 0,
  evalsha() {
    this.calls++;
    return Promise.reject(new Error('no command may be sent'));
  },
  eval() {
    this.calls++;
    return Promise.reject(new Error('no command may be sent'));
  },
});

it('on a Redis Cluster client, multi-resource locks across slots fail with LockCrossSlotError before sending anything', async () => {
  const client = clusterClient();
  const redlock = new Redlock({ clients: [client], retryCount: 0 });
  const error = await redlock.acquire(['order:1', 'order:2']).catch((e: unknown) => e);
  expect(isLockCrossSlotError(error)).toBe(true);
  expect(error).toMatchObject({
    code: 'KEEL_LOCK_CROSS_SLOT',
    resources: ['order:1', 'order:2'],
    slots: [keySlot('order:1'), keySlot('order:2')],
  });
  expect((error as Error).message).toContain('hash tag');
  expect(client.calls).toBe(0);
});

it('keys carry a hash tag so a lock key and its fencing counter share a slot', () => {
  const redlock = new Redlock({ clients: [clusterClient()] });
  expect(redlock.keyOf('sku:1')).toBe('keel:lock:{sku:1}');
  expect(redlock.keyOf('{order:42}:stock')).toBe('keel:lock:{order:42}:stock:lock');
  expect(keySlot(redlock.keyOf('{order:42}:stock'))).toBe(
    keySlot(redlock.keyOf('{order:42}:payment')),
  );
  const tagged = new Redlock({ clients: [clusterClient()], keyPrefix: 'app:{locks}:' });
  expect(tagged.keyOf('a')).toBe('app:{locks}:a:lock');
});
