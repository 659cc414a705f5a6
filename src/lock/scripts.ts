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
 * `ARGV[2] == '1'` it also PUBLISHes on `<key>:released` for each deleted key, waking one
 * waiter (the message is a release id: 16 hex digits of the token's SHA-1, the same on every
 * node so the N copies count once, and revealing nothing of the token)
 * (a failed attempt's undo passes '0': nobody waits for a lock that was never granted).
 */
export const RELEASE = script(`
local deleted = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    deleted = deleted + 1
    if ARGV[2] == '1' then redis.call('PUBLISH', KEYS[i] .. ':released', string.sub(redis.sha1hex(ARGV[1]), 1, 16)) end
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

/*
 * Counting semaphore, one sorted set per node: members `<permits>:<token>`, scored with their
 * expiry in Redis server milliseconds (TIME inside the script — never a client clock, so
 * holders on machines with skewed clocks still agree on who expired). Members that do not
 * parse are moved to a quarantine set and counted in the reply instead of being trusted.
 * `redis.replicate_commands()` lets TIME precede writes on Redis 3.2–4 (a no-op from 5 on).
 * KEYS: the set, its quarantine. Returns `{1, used}` or `{0, used, ms until the first expiry}`,
 * with the number of quarantined members last.
 */
const SEM_PRELUDE = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

export const SEM_ACQUIRE = script(`${SEM_PRELUDE}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local used, soonest, quarantined = 0, -1, 0
for i = 1, #entries, 2 do
  local n = tonumber(string.match(entries[i], '^(%d+):.'))
  if n == nil then
    redis.call('SADD', KEYS[2], entries[i])
    redis.call('ZREM', KEYS[1], entries[i])
    quarantined = quarantined + 1
  else
    used = used + n
    local left = tonumber(entries[i + 1]) - now
    if soonest < 0 or left < soonest then soonest = left end
  end
end
local want, ttl, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if used + want > limit then return {0, used, soonest, quarantined} end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return {1, used + want, 0, quarantined}
`);

/** Extend a live member (not yet expired by server time) to now + ttl. Returns 1 or 0. */
export const SEM_EXTEND = script(`${SEM_PRELUDE}
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then return 0 end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
`);

/**
 * Remove a member; 1 if it was still live (then, with `ARGV[2] == '1'`, PUBLISH `*` on
 * `<set>:released` to wake every waiter: freed permits may serve several), 0 if it was gone or already expired.
 */
export const SEM_RELEASE = script(`${SEM_PRELUDE}
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(score) <= now then return 0 end
if ARGV[2] == '1' then redis.call('PUBLISH', KEYS[1] .. ':released', '*') end
return 1
`);
