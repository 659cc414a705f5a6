/**
 * The cache's Lua scripts. Every script touches one entry's keys, which share a hash tag
 * (`<prefix>{<namespace>:<key>}` and the same with `:lease`), so each runs on one Redis Cluster
 * slot. A value and its lease change together, atomically, which is what makes a lease token
 * able to refuse a stale write-back (Nishtala et al., "Scaling Memcache at Facebook", NSDI 2013,
 * §3.2.1: a delete invalidates the lease, and a set carrying the old token is refused).
 *
 * A script may run twice for one call: ioredis sends again every command written but not
 * answered when its connection drops (`autoResendUnfulfilledCommands`, on by default), so the
 * first copy may have run, its reply lost, and the second copy's answer is the one the cache
 * sees. Each script therefore answers its second copy as it answered its first: a lease held by
 * the caller's own token counts as taken, a write-back that finds its own envelope in place
 * counts as written, and so on (see each script). The checks sit on the paths a first copy
 * rarely takes (a lease held, a write-back refused), so the common paths cost what they did.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * @packageDocumentation
 */
import { luaScript, type LuaScript } from '../core/index.js';

/**
 * KEYS: value, lease. ARGV: token, lease ttl ms, acquire ('1' | '0'), and optionally bare
 * ('1': a value found is answered as the integer 1, not sent).
 * Returns { value or nil, 1 if this call took the lease else 0, the lease's PTTL }.
 * A lease already holding the token counts as taken: only this call's first copy, sent again
 * after a dropped connection, can have taken it (tokens are unique per load). Without that, the
 * call would wait for its own lease to run out (no heartbeat extends it, and other processes
 * wait on it too). The lease is read before it is written, and written only when free: a Redis
 * out of memory (`maxmemory` under `noeviction`) refuses any write — `SET … NX` on a held lease
 * too — so a waiter that tried to take it would get an error, take Redis for down and load
 * beside the holder; reading first, it sees the lease held and waits.
 * With acquire = '1' the lease is taken only when there is no value: one round trip for a
 * read that misses and becomes the loader. Bare is for the lease read sent along with a GET
 * (see `Probe` in cache.ts): it is used only if that GET misses, so a value it would carry is
 * almost always thrown away — on a warm key read by several callers at once it would cross the
 * network and be decoded twice.
 */
export const READ = luaScript(`
local v = redis.call('GET', KEYS[1])
local took = 0
if ARGV[3] == '1' and not v then
  local holder = redis.call('GET', KEYS[2])
  if not holder then
    redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
    took = 1
  elseif holder == ARGV[1] then took = 1 end
end
if v and ARGV[4] == '1' then v = 1 end
return {v, took, redis.call('PTTL', KEYS[2])}
`);

/**
 * KEYS: value, lease. ARGV: token, lease ttl ms, a wall-clock time T. Takes the lease if free,
 * to reload a copy that is fresh until about T (a stale value, an XFetch early refresh, a value
 * past its stale window) — unless the value in Redis is fresh past T: another process reloaded
 * it already, so that value is returned instead of the lease (its envelope header starts
 * `k1|<freshUntil>|`). Returns { 1 } when taken, { 0, newer value } or { 0 }. A lease already
 * holding the token counts as taken (this call's first copy took it; see {@link READ}). As in
 * {@link READ}, the lease is written only when free (a held one is not refused as out of memory).
 */
export const TAKE_LEASE = luaScript(`
local v = redis.call('GET', KEYS[1])
if v then
  local fresh = tonumber(string.match(v, '^k1|(%d+)|'))
  if fresh and fresh > tonumber(ARGV[3]) then return {0, v} end
end
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] then return {1} end
if holder then return {0} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {1}
`);

/**
 * KEYS: lease. ARGV: token, lease ttl ms. Extends the lease while its holder still loads.
 * Returns 1 when the token still holds it, else 0.
 */
export const EXTEND_LEASE = luaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`);

/**
 * KEYS: value, lease. ARGV: token, envelope, px, channel, message.
 * The loader's write-back: stored only if the token still holds the lease (no delete or set
 * came in between); then the lease goes and waiters are told. Returns 1 if written, else 0.
 * Without the lease, the write-back still counts as written when the value is this very envelope:
 * this call's first copy wrote it and let the lease go (another writer's envelope carries its
 * own deadlines, so it is almost always another text — and where it is not, Redis holds this
 * value all the same). Without that, the loader's value was reported refused
 * (`onStaleWriteRefused`) and kept out of L1. The extra `GET` runs only on that refusal path.
 */
export const FILL = luaScript(`
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  if redis.call('GET', KEYS[1]) == ARGV[2] then return 1 end
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
`);

/**
 * KEYS: lease. ARGV: token, channel, message. A holder whose loader failed gives the lease up
 * and wakes the waiters (one of them takes over). Returns 1 if it still held it.
 */
export const RELEASE = luaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
`);

/**
 * KEYS: value, lease. ARGV: envelope, px, channel, message. An explicit set: the value is
 * written, any lease is voided (a load that started before it must not overwrite it), and
 * other processes drop their L1 copy.
 */
export const WRITE = luaScript(`
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
`);

/**
 * KEYS: value, lease, deleted. ARGV: channel, message, token, marker ttl ms. Delete: the value
 * and any lease go (voiding an in-flight load's write-back), and other processes drop their L1
 * copy. Returns 1 if a value was there.
 *
 * A delete that removed a value leaves the call's token under the `deleted` key for as long as
 * the caller waits for the answer (its Redis timeout): a copy sent again after a dropped
 * connection finds the value gone — by its own first copy — and the token tells it so, where it
 * would answer "no value was there". One more command per delete, none per read.
 */
export const DELETE = luaScript(`
local n = redis.call('DEL', KEYS[1])
if n == 1 then
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
elseif redis.pcall('GET', KEYS[3]) == ARGV[3] then
  n = 1
end
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
`);

/**
 * KEYS: value, quarantine. ARGV: the raw text read, quarantine ttl ms. Moves a malformed value
 * aside (for inspection, with a ttl) — only if it is still the text that was read, so a good
 * value written meanwhile is never moved. Returns 1 if moved — or if that text is already in
 * quarantine (a copy of this call sent again after a dropped connection, whose first copy moved
 * it; or another reader of the same text): the report then names where it is. The extra `GET`
 * runs only when the value is no longer the text read.
 */
export const QUARANTINE = luaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if redis.call('GET', KEYS[2]) == ARGV[1] then return 1 end
  return 0
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[1])
return 1
`);

/**
 * KEYS: value, lease, and a quarantine key for each. ARGV: quarantine ttl ms. Moves the value or
 * lease key aside when it holds another type than a string (foreign data: a hash, a list, …),
 * on which every command the cache sends fails `WRONGTYPE` — the key would never be read, filled
 * or leased again, and every process would load it on its own. Returns `{ 'value' or 'lease',
 * its type }` per key moved. `RENAME` and `PEXPIRE` grow no memory: a Redis out of memory runs
 * them. Run only after a command failed `WRONGTYPE` (so not loaded with the others when a cache
 * is built: `EVAL` covers a first run); a copy sent again after a dropped connection finds
 * nothing to move and reports nothing.
 */
export const FOREIGN = luaScript(`
local moved = {}
for i = 1, 2 do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= 'none' and t ~= 'string' then
    redis.call('RENAME', KEYS[i], KEYS[i + 2])
    redis.call('PEXPIRE', KEYS[i + 2], ARGV[1])
    moved[#moved + 1] = i == 1 and 'value' or 'lease'
    moved[#moved + 1] = t
  end
end
return moved
`);

/** Every script of the cache on its common paths, loaded into Redis when a cache is built. */
export const ALL: readonly LuaScript[] = [
  READ,
  TAKE_LEASE,
  EXTEND_LEASE,
  FILL,
  RELEASE,
  WRITE,
  DELETE,
  QUARANTINE,
];
