/**
 * The Lua scripts of the Redis backend. Each runs atomically on the server, so a visible change
 * and its change-log entry are one step: no reader can see one without the other.
 *
 * Every script gets the same six keys, all sharing the service's hash tag (one Redis Cluster
 * slot): `KEYS[1]` records (hash id → JSON), `KEYS[2]` leases (hash id → owner token),
 * `KEYS[3]` expiry index (sorted set id → expiry in server milliseconds), `KEYS[4]` meta (hash:
 * `epoch`, `rev`, `seen`), `KEYS[5]` change log (stream), `KEYS[6]` graced (set of ids given an
 * outage grace period).
 *
 * Time is the server's (`TIME`, allowed in scripts since Redis 5 with effects replication, the
 * only mode since 7.0), so client clock skew never shortens or stretches a ttl.
 *
 * Change-log entries have explicit ids `<epoch>-<revision>`: entry ids then are revisions, a
 * reader resumes with `XREAD … <epoch>-<revision>`, and the epoch — the server time at which the
 * service's data was first written — is larger after the store lost its data, so a reader blocked
 * on the old epoch is woken by the first entry of the new one.
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

function script(body: string): Script {
  const source = PRELUDE + body;
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

/**
 * Shared helpers. `preserve(silence, grace)` is the server side of self-preservation: when no
 * script has touched the service for longer than `silence` ms (Redis was down or paused, or no
 * client could reach it), every instance that was alive when the silence began gets its expiry
 * pushed to `now + grace` — once, until it heartbeats again — so the first reap after an outage
 * does not evict instances whose heartbeats simply could not get through.
 */
const PRELUDE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function epoch()
  local e = redis.call('HGET', KEYS[4], 'epoch')
  if not e then
    -- A new epoch starts a new log: drop any leftover stream so its ids cannot collide.
    e = string.format('%.0f', now)
    redis.call('DEL', KEYS[5])
    redis.call('HSET', KEYS[4], 'epoch', e, 'rev', 0)
  end
  return e
end
local function preserve(silence, grace)
  local seen = tonumber(redis.call('HGET', KEYS[4], 'seen') or '0')
  if seen > 0 and now - seen > silence then
    local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. seen, now + grace)
    for _, id in ipairs(ids) do
      if redis.call('SISMEMBER', KEYS[6], id) == 0 then
        redis.call('ZADD', KEYS[3], 'XX', 'GT', now + grace, id)
        redis.call('SADD', KEYS[6], id)
      end
    end
  end
  redis.call('HSET', KEYS[4], 'seen', string.format('%.0f', now))
end
local function append(maxlen, kind, id, data)
  local e = epoch()
  local rev = tonumber(redis.call('HGET', KEYS[4], 'rev') or '0') + 1
  local entry = e .. '-' .. string.format('%.0f', rev)
  if data then
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, entry, 't', kind, 'i', id, 'd', data)
  else
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, entry, 't', kind, 'i', id)
  end
  redis.call('HSET', KEYS[4], 'rev', rev)
  return rev
end
local function forget(id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('SREM', KEYS[6], id)
end
`;

/**
 * ARGV: id, data, token, ttlMs, silenceMs, graceMs, maxLogLength. Writes the record (logged as
 * `r` registered or `u` updated unless unchanged), takes ownership, sets the expiry.
 * Returns `created`, `updated` or `unchanged`.
 */
export const REGISTER = script(`
preserve(tonumber(ARGV[5]), tonumber(ARGV[6]))
local id = ARGV[1]
local old = redis.call('HGET', KEYS[1], id)
local outcome = 'unchanged'
if old ~= ARGV[2] then
  if old then outcome = 'updated' else outcome = 'created' end
  append(ARGV[7], old and 'u' or 'r', id, ARGV[2])
  redis.call('HSET', KEYS[1], id, ARGV[2])
end
redis.call('HSET', KEYS[2], id, ARGV[3])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), id)
redis.call('SREM', KEYS[6], id)
return outcome
`);

/**
 * ARGV: id, token, ttlMs, silenceMs, graceMs. Pushes the expiry of a record this token owns —
 * no log entry, no revision. Returns `ok`, `missing` or `replaced`.
 */
export const HEARTBEAT = script(`
preserve(tonumber(ARGV[4]), tonumber(ARGV[5]))
local id = ARGV[1]
if redis.call('HEXISTS', KEYS[1], id) == 0 then return 'missing' end
local owner = redis.call('HGET', KEYS[2], id)
if owner ~= ARGV[2] then return 'replaced' end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), id)
redis.call('SREM', KEYS[6], id)
return 'ok'
`);

/** ARGV: id, token, silenceMs, graceMs, maxLogLength. Removes a record this token owns; 1 or 0. */
export const DEREGISTER = script(`
preserve(tonumber(ARGV[3]), tonumber(ARGV[4]))
local id = ARGV[1]
if redis.call('HEXISTS', KEYS[1], id) == 0 then return 0 end
if redis.call('HGET', KEYS[2], id) ~= ARGV[2] then return 0 end
append(ARGV[5], 'd', id)
forget(id)
return 1
`);

/**
 * ARGV: silenceMs, graceMs, maxLogLength, limit. Removes up to `limit` records whose expiry
 * passed (logged as `x` expired). Idempotent: a second run finds nothing. Returns the count.
 */
export const REAP = script(`
preserve(tonumber(ARGV[1]), tonumber(ARGV[2]))
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do
  if redis.call('HEXISTS', KEYS[1], id) == 1 then append(ARGV[3], 'x', id) end
  forget(id)
end
return #ids
`);

/** No ARGV. Returns `{epoch or '', rev or '0', {id, data, …}}`, read atomically. */
export const SNAPSHOT = script(`
local meta = redis.call('HMGET', KEYS[4], 'epoch', 'rev')
return {meta[1] or '', meta[2] or '0', redis.call('HGETALL', KEYS[1])}
`);
