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
 * Acquire every resource or none: fail with the index of a taken key, else SET each key
 * `NX PX ttl` to the token and INCR its fencing counter. Returns `{1, fence…}` or `{0, index}`.
 */
export const ACQUIRE = script(`
local n = #KEYS / 2
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then return {0, i} end
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

/** Compare-and-delete: delete the keys that still hold the token; returns how many. */
export const RELEASE = script(`
local deleted = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    deleted = deleted + 1
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
