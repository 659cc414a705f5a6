/**
 * The Lua scripts of the Redis backend. Each runs atomically on the server, so a visible change
 * and its change-log entry are one step: no reader can see one without the other.
 *
 * Every script gets the same six keys, all sharing the service's hash tag (one Redis Cluster
 * slot): `KEYS[1]` records (hash id → JSON), `KEYS[2]` leases (hash id → owner token, or a
 * deregistration's mark), `KEYS[3]` expiry index (sorted set id → expiry in server
 * milliseconds), `KEYS[4]` meta (hash: `epoch`, `rev`, `seen`, …), `KEYS[5]` change log
 * (stream), `KEYS[6]` graced (set of ids given an outage grace period).
 *
 * Time is the server's (`TIME`, allowed in scripts since Redis 5 with effects replication, the
 * only mode since 7.0), so client clock skew never shortens or stretches a ttl.
 *
 * A script Redis refuses must change nothing. The scripts declare no flags, so Redis (7.0) takes
 * the out-of-memory state once, when the script starts, and refuses the script's first command
 * that may grow memory if no write came before it — after that, writes go through. The first
 * write of every writing script is `HSET meta seen` (in `preserve`), so a full store under
 * `noeviction` refuses them whole. ACL checks apply to every command; `append` therefore raises
 * any refusal of its `XADD` that is not about the id or the key's type before it could drop the
 * log.
 *
 * Change-log entries carry their epoch and revision in fields (`e`, `v`), and are given the
 * explicit id `<epoch>-<revision>` whenever the stream takes it. The epoch — the server time at
 * which the service's data was first written — is larger after the store lost its data, so a
 * reader blocked on the old epoch is woken by the first entry of the new one. The stream is
 * shared with whoever else can write to Redis, so ids are only positions: after a foreign entry
 * (`XADD <log> * …` takes the server's time, past every Keel id) the next id is left to the
 * stream (`*`), and a stream that cannot take another id at all (a foreign entry at the last
 * possible id, or a key of another type) is dropped and started again — readers notice the
 * vanished entries by comparing revisions (`PROBE`). Meta field `lid` is the id of the entry of
 * revision `rev`, where a reader resumes after a snapshot.
 *
 * The log is bounded in entries (`MAXLEN ~ maxLogLength`) and in bytes: each entry's size (its
 * fields plus a fixed 64 for the id and field names) is tracked as the largest over two windows
 * of `2 × maxLogLength + 100` appends (meta `lw` window start, `lm` this window's largest, `lp`
 * the previous one's) — every entry still in the log was appended within those windows, since
 * the log never holds more than `maxLogLength` plus one macro node — and the log is trimmed to
 * `maxLogBytes / largest` entries, so it holds about `maxLogBytes` of entries at most (plus one
 * macro node: one entry when entries are larger than `stream-node-max-bytes`, 4 KiB by default).
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { createHash } from 'node:crypto';
import { compactLua } from './lua.js';

/** A script with its SHA-1, for EVALSHA with an EVAL fallback on NOSCRIPT. */
export interface Script {
  readonly source: string;
  readonly sha: string;
}

function script(body: string, readOnly = false): Script {
  // A no-op on the built package, whose Lua the build compacted already (see lua.ts).
  const source = compactLua((readOnly ? '#!lua flags=no-writes\n' : '') + PRELUDE + body);
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

/**
 * A script declared `no-writes` (a Redis 7 shebang, which must be its first line): Redis runs it
 * during a write pause (`CLIENT PAUSE … WRITE`, as a failover does), on a replica and when out of
 * memory, where a script without flags counts as a writer and waits out the pause. It may call
 * the prelude's helpers that only read; a write in it fails.
 */
function readOnlyScript(body: string): Script {
  return script(body, true);
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
local function digits(v)
  return type(v) == 'string' and string.match(v, '^%d+$') ~= nil and #v <= 15
end
local function epoch()
  local m = redis.call('HMGET', KEYS[4], 'epoch', 'rev')
  local e = m[1]
  -- No epoch yet, or meta that Keel did not write (not a number of at most 15 digits): a new
  -- epoch, as after a data loss, rather than arithmetic on whatever is there.
  if not (digits(e) and digits(m[2])) then
    -- A new epoch starts a new log: drop any leftover stream so its ids cannot collide.
    e = string.format('%.0f', now)
    redis.call('DEL', KEYS[5])
    redis.call('HDEL', KEYS[4], 'lid', 'lw', 'lm', 'lp')
    redis.call('HSET', KEYS[4], 'epoch', e, 'rev', 0)
  end
  return e
end
local function preserve(silence, grace)
  -- A 'seen' that is not a number (not Keel's) counts as never seen, not as a script error.
  local seen = tonumber(redis.call('HGET', KEYS[4], 'seen')) or 0
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
-- Whether an XADD was refused for its id (at or below the stream's last, or past the last
-- possible one) or because the key is no stream: the cases append() works around. Any other
-- error (an ACL that denies XADD, say) is raised as it is, before the script changed anything
-- else, rather than taken for a broken stream and answered by deleting the log.
local function refused(added)
  if type(added) ~= 'table' or not added.err then return false end
  local e = tostring(added.err)
  if string.find(e, 'WRONGTYPE', 1, true) or string.find(e, ' ID', 1, true) then return true end
  error(added)
end
local function append(maxlen, maxbytes, kind, id, data)
  local e = epoch()
  local m = redis.call('HMGET', KEYS[4], 'rev', 'lid', 'lw', 'lm', 'lp')
  local rev = tonumber(m[1]) + 1
  local r = string.format('%.0f', rev)
  -- The byte budget: the largest entry over the last two windows of appends bounds every
  -- entry still in the log.
  local window = 2 * maxlen + 100
  local lw, lm, lp = tonumber(m[3]) or 0, tonumber(m[4]) or 0, tonumber(m[5]) or 0
  if rev - lw >= window then
    lp, lm, lw = lm, 0, rev
  end
  local size = #kind + #id + #e + #r + (data and #data or 0) + 64
  if size > lm then lm = size end
  local cap = math.max(1, math.min(maxlen, math.floor(maxbytes / math.max(lm, lp))))
  local fields = { 't', kind, 'i', id, 'e', e, 'v', r }
  if data then
    fields[9] = 'd'
    fields[10] = data
  end
  local explicit = e .. '-' .. r
  local want = explicit
  -- Once a foreign entry pushed the stream past the explicit ids, the stream picks them.
  if m[2] and m[2] ~= e .. '-' .. string.format('%.0f', rev - 1) then want = '*' end
  local added = redis.pcall('XADD', KEYS[5], 'MAXLEN', '~', cap, want, unpack(fields))
  if refused(added) then
    added = redis.pcall('XADD', KEYS[5], 'MAXLEN', '~', cap, '*', unpack(fields))
  end
  if refused(added) then
    -- The stream takes no id at all (exhausted by a foreign entry, or not a stream).
    redis.call('DEL', KEYS[5])
    added = redis.call('XADD', KEYS[5], 'MAXLEN', '~', cap, explicit, unpack(fields))
  end
  redis.call('HSET', KEYS[4], 'rev', r, 'lid', added, 'lw', lw, 'lm', lm, 'lp', lp)
  return rev
end
local function forget(id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('SREM', KEYS[6], id)
end
-- The type each key must hold, by position in KEYS.
local KINDS = { 'hash', 'hash', 'zset', 'hash', 'stream', 'set' }
-- Drops every key of the service that holds another type than Keel's (someone else's data),
-- which then heals as if it had been deleted: a lost record or lease makes its registration
-- re-register at the next heartbeat, records without an expiry get one at the next reap (see
-- REAP), lost meta starts a new epoch, a lost log is noticed by readers (PROBE).
local function repair()
  for i, kind in ipairs(KINDS) do
    local t = redis.call('TYPE', KEYS[i])
    if type(t) == 'table' then t = t.ok end
    if t ~= 'none' and t ~= kind then redis.call('DEL', KEYS[i]) end
  end
end
-- Runs a script's body; if a key held another type (WRONGTYPE), repairs and runs it once more,
-- rather than fail every call on the service for as long as the foreign key stays. A Lua pcall
-- costs no Redis command, so the usual path sends exactly what it did without it.
local function guarded(body)
  local ok, result = pcall(body)
  if ok then return result end
  local message = type(result) == 'table' and result.err or tostring(result)
  if not string.find(tostring(message), 'WRONGTYPE', 1, true) then error(result) end
  repair()
  return body()
end
`;

/**
 * ARGV: id, data, token, ttlMs, silenceMs, graceMs, maxLogLength, maxLogBytes, call. Writes the
 * record (logged as `r` registered or `u` updated unless unchanged), takes ownership, sets the
 * expiry.
 * Returns `created`, `updated` or `unchanged`.
 *
 * A copy of the call sent again after a dropped connection (see DEREGISTER) finds the record its
 * first copy wrote and would answer `unchanged`: a write that changed the record notes
 * `<call> <outcome>` in meta `reg`, and a copy of it that changes nothing answers that outcome.
 * (Another write to the service between the two copies replaces the note: the copy then answers
 * `unchanged`, as before.)
 */
export const REGISTER = script(`
return guarded(function()
  preserve(tonumber(ARGV[5]), tonumber(ARGV[6]))
  local id = ARGV[1]
  local call = ARGV[9] .. ' '
  local old = redis.call('HGET', KEYS[1], id)
  local outcome = 'unchanged'
  if old ~= ARGV[2] then
    if old then outcome = 'updated' else outcome = 'created' end
    append(tonumber(ARGV[7]), tonumber(ARGV[8]), old and 'u' or 'r', id, ARGV[2])
    redis.call('HSET', KEYS[1], id, ARGV[2])
    redis.call('HSET', KEYS[4], 'reg', call .. outcome)
  else
    local memo = redis.call('HGET', KEYS[4], 'reg')
    if memo and string.sub(memo, 1, #call) == call then outcome = string.sub(memo, #call + 1) end
  end
  redis.call('HSET', KEYS[2], id, ARGV[3])
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), id)
  redis.call('SREM', KEYS[6], id)
  return outcome
end)
`);

/**
 * ARGV: id, token, ttlMs, silenceMs, graceMs. Pushes the expiry of a record this token owns —
 * no log entry, no revision. Returns `ok`, `missing` (no record, or no lease: re-register) or
 * `replaced` (another token owns it).
 */
export const HEARTBEAT = script(`
return guarded(function()
  preserve(tonumber(ARGV[4]), tonumber(ARGV[5]))
  local id = ARGV[1]
  if redis.call('HEXISTS', KEYS[1], id) == 0 then return 'missing' end
  local owner = redis.call('HGET', KEYS[2], id)
  -- No lease at all (its key deleted or evicted, or dropped by repair()): the store lost who owns
  -- the record, not someone else took it — re-register (which takes it back) rather than stop.
  if not owner then return 'missing' end
  if owner ~= ARGV[2] then return 'replaced' end
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), id)
  redis.call('SREM', KEYS[6], id)
  return 'ok'
end)
`);

/**
 * ARGV: id, token, silenceMs, graceMs, maxLogLength, maxLogBytes, call, markMs. Removes a record
 * this token owns; 1 or 0.
 *
 * A call may run twice: ioredis sends a command again when its connection dropped before the
 * reply was read (`autoResendUnfulfilledCommands`), after the first copy ran. So the removal
 * leaves a mark — the lease becomes `deregistered <call>` (`call` unique to the call), expiring
 * `markMs` from now like a record, so the reaper drops it without a log entry — and a copy that
 * finds its own call's mark answers 1, as the first copy did. Another call (same token or not)
 * finds no lease of its token and answers 0.
 *
 * The lease decides, not the record: a lease holding the token with its record gone (the field
 * deleted by someone else, or the records key evicted) is still this registration's instance —
 * views show it, and the reaper would expire it at its ttl. Its deregistration removes it all
 * the same, logged, so every view drops it at once as deregistered; answering 0 left the
 * views to drop it as lost data, after a resync and the data-loss grace.
 */
export const DEREGISTER = script(`
return guarded(function()
  preserve(tonumber(ARGV[3]), tonumber(ARGV[4]))
  local id = ARGV[1]
  local mark = 'deregistered ' .. ARGV[7]
  local lease = redis.call('HGET', KEYS[2], id)
  if lease == mark then return 1 end
  if lease ~= ARGV[2] then return 0 end
  append(tonumber(ARGV[5]), tonumber(ARGV[6]), 'd', id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('HSET', KEYS[2], id, mark)
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[8]), id)
  redis.call('SREM', KEYS[6], id)
  return 1
end)
`);

/**
 * ARGV: silenceMs, graceMs, maxLogLength, limit, maxLogBytes, call. Removes up to `limit`
 * records whose expiry passed (logged as `x` expired), and drops expired index entries without
 * a record (a deregistration's mark, see DEREGISTER) unlogged — except one whose lease is still
 * a token: its record vanished without an entry (the records key deleted or evicted), so it is
 * logged as expired too, or views would keep it forever. Records and leases without an expiry
 * entry (the expiry key deleted or evicted) first get one `graceMs` away. Idempotent: a second run finds
 * nothing. Returns how many records it removed.
 *
 * A copy of the same call sent again after a dropped connection (see DEREGISTER) would find
 * nothing and answer 0 for records the first copy removed: a call that removed some notes
 * `<call> <count>` in meta `reap`, and a copy of it adds that count to its own. (Another reap
 * that removes something between the two copies replaces the note: the copy then counts only
 * its own, as before.)
 */
export const REAP = script(`
return guarded(function()
  preserve(tonumber(ARGV[1]), tonumber(ARGV[2]))
  local call = ARGV[6] .. ' '
  local earlier = 0
  local memo = redis.call('HGET', KEYS[4], 'reap')
  if memo and string.sub(memo, 1, #call) == call then
    earlier = tonumber(string.sub(memo, #call + 1)) or 0
  end
  -- Every lease (a record's, or a deregistration's mark) has an expiry entry, and every record
  -- a lease: fewer entries than leases or records means the expiry key was deleted or evicted
  -- (or dropped by repair()), and what has no entry would never be reaped. (Records alone do
  -- not tell: marks written since the loss make up their count.) Each gets an expiry a grace
  -- away: the live heartbeat before it, the dead go, a mark is dropped.
  local entries = redis.call('ZCARD', KEYS[3])
  if redis.call('HLEN', KEYS[2]) > entries or redis.call('HLEN', KEYS[1]) > entries then
    for i = 1, 2 do
      for _, id in ipairs(redis.call('HKEYS', KEYS[i])) do
        redis.call('ZADD', KEYS[3], 'NX', now + tonumber(ARGV[2]), id)
      end
    end
  end
  local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
  local removed = 0
  for _, id in ipairs(ids) do
    local logged = redis.call('HEXISTS', KEYS[1], id) == 1
    if not logged then
      -- No record, and a lease that is not a deregistration's mark: the record vanished
      -- without an entry (the records key deleted or evicted) while views still hold it.
      local lease = redis.call('HGET', KEYS[2], id)
      logged = lease and string.sub(lease, 1, 13) ~= 'deregistered '
    end
    if logged then
      append(tonumber(ARGV[3]), tonumber(ARGV[5]), 'x', id)
      removed = removed + 1
    end
    forget(id)
  end
  if removed > 0 then
    redis.call('HSET', KEYS[4], 'reap', call .. string.format('%.0f', earlier + removed))
  end
  return earlier + removed
end)
`);

/**
 * ARGV: none, or the epoch a reader's view is in, the revision it applied, and how many log
 * entries to read at most. Returns `{epoch or '', rev or '0', {id, data, …}, lid or '', since}`,
 * read atomically (after starting a new epoch if meta is not Keel's, or gone while records or a
 * log remain). `since` is `{t, i, e, v, …}` (type, id, epoch, revision; '' where an entry lacks
 * one) of the log entries after that revision — every stream id past `<epoch>-<revision>`, so
 * entries the stream numbered itself after a foreign one are among them — when the service is
 * still in that epoch and at or past that revision and the log is a stream; else `false` (nil). The
 * reader tells from them which records the log removed since (see `removalsSince`).
 */
export const SNAPSHOT = script(`
return guarded(function()
  local meta = redis.call('HMGET', KEYS[4], 'epoch', 'rev', 'lid')
  local damaged = meta[1] and not (digits(meta[1]) and digits(meta[2]))
  -- Records or a log without an epoch: meta was deleted or evicted. Start the new epoch now
  -- rather than at the next write, so readers do not take the old log for the current one.
  local orphaned = not meta[1] and redis.call('EXISTS', KEYS[1], KEYS[5]) > 0
  if damaged or orphaned then
    epoch()
    meta = redis.call('HMGET', KEYS[4], 'epoch', 'rev', 'lid')
  end
  local since = false
  if ARGV[1] and ARGV[1] == meta[1] and digits(ARGV[2]) and tonumber(meta[2]) >= tonumber(ARGV[2]) then
    local list = redis.pcall('XRANGE', KEYS[5], '(' .. ARGV[1] .. '-' .. ARGV[2], '+', 'COUNT', tonumber(ARGV[3]))
    if type(list) == 'table' and not list.err then
      since = {}
      for _, entry in ipairs(list) do
        local f = entry[2]
        local got = {t = '', i = '', e = '', v = ''}
        for k = 1, #f - 1, 2 do
          if got[f[k]] == '' then got[f[k]] = f[k + 1] end
        end
        since[#since + 1] = got.t
        since[#since + 1] = got.i
        since[#since + 1] = got.e
        since[#since + 1] = got.v
      end
    end
  end
  return {meta[1] or '', meta[2] or '0', redis.call('HGETALL', KEYS[1]), meta[3] or '', since}
end)
`);

/**
 * ARGV: a log position (stream id) a reader has read up to. Returns `{epoch or '', rev or '0',
 * 1 or 0, records}`: the service's epoch and revision, whether the log holds anything after that
 * position, and how many records the service holds (-1 when the records key is not a hash) —
 * read atomically, so a revision ahead of what was read with nothing after the position means
 * the entries were lost (trimmed, deleted, evicted), not that they are on the way; and a reader
 * that applied every entry up to that revision knows exactly how many records there are, so
 * another count means records vanished (or appeared) without an entry.
 *
 * Declared read-only (`no-writes`): the reader runs it after every idle read, and a probe held
 * by a write pause would time out and take the views for disconnected.
 */
export const PROBE = readOnlyScript(`
local meta = redis.pcall('HMGET', KEYS[4], 'epoch', 'rev')
-- Meta of another type: report no epoch, so the reader resyncs and the snapshot repairs it
-- (rather than fail the read of every service on the connection).
if meta.err then meta = {} end
local following = redis.pcall('XRANGE', KEYS[5], '(' .. ARGV[1], '+', 'COUNT', 1)
local after = 0
if type(following) == 'table' and not following.err and #following > 0 then after = 1 end
local records = redis.pcall('HLEN', KEYS[1])
if type(records) ~= 'number' then records = -1 end
return {meta[1] or '', meta[2] or '0', after, records}
`);
