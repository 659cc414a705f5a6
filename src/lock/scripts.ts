/**
 * The Lua scripts of the lock, one round trip each, atomic on a node. Keys of a multi-resource
 * lock are passed as `KEYS`: lock keys first, then their fencing counters.
 *
 * @internal
 * @packageDocumentation
 */
import { createHash } from 'node:crypto';

/** A script with its SHA-1, for EVALSHA with an EVAL fallback on NOSCRIPT. */
export interface Script {
  readonly source: string;
  readonly sha: string;
}

function script(source: string): Script {
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

/**
 * Acquire every resource or none: fail with the index of a taken key and its remaining ttl
 * (so a waiter knows when it frees up by expiry), else SET each key `PX ttl` to the token and
 * INCR its fencing counter. Returns `{1, fence…}` or `{0, index, pttl}`.
 */
export const ACQUIRE = script(`
local n = #KEYS / 2
for i = 1, n do
  local pttl = redis.call('PTTL', KEYS[i])
  if pttl ~= -2 then return {0, i, pttl} end
end
local out = {1}
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  out[i + 1] = redis.call('INCR', KEYS[n + i])
end
return out
`);

/**
 * Raise each fencing counter to at least the token the client settled on, but only where this
 * client's lock key still holds its token. Returns how many counters it covered.
 */
export const SYNC_FENCE = script(`
local n = #KEYS / 2
local covered = 0
for i = 1, n do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    local current = tonumber(redis.call('GET', KEYS[n + i]) or '0')
    local wanted = tonumber(ARGV[i + 1])
    if current < wanted then redis.call('SET', KEYS[n + i], wanted) end
    covered = covered + 1
  end
end
return covered
`);

/**
 * Compare-and-delete: delete the keys that still hold the token; returns how many. With
 * `ARGV[2] == '1'` it also PUBLISHes on `<key>:released` for each deleted key, waking waiters
 * (a failed attempt's undo passes '0': nobody waits for a lock that was never granted).
 */
export const RELEASE = script(`
local deleted = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    deleted = deleted + 1
    if ARGV[2] == '1' then redis.call('PUBLISH', KEYS[i] .. ':released', '1') end
  end
end
return deleted
`);

/** Compare-and-pexpire: extend the keys only if every one still holds the token. */
export const EXTEND = script(`
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then return 0 end
end
for i = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 1
`);
