/**
 * The Lua scripts behind every saga state change. Each transition is ONE script call (one round
 * trip): it reads the instance's owner, fence and version, refuses the write unless all three
 * are the caller's (so a coordinator whose lease was taken over can change nothing — the
 * fencing-token rule of Kleppmann's "How to do distributed locking", 2016), and otherwise writes
 * the new state, renews the lease, moves the instance in its shard's index and appends one
 * history entry, atomically (a script runs in isolation: https://redis.io/docs/latest/develop/interact/programmability/eval-intro/).
 *
 * Time is the Redis server's (`TIME`; scripts are replicated by effects since Redis 5, so the
 * call is allowed), so leases and deadlines compare one clock, whatever the coordinators' clocks
 * say.
 *
 * Keys of one instance share a hash tag `{<saga>:<shard>}` with its shard's index, so every
 * script touches one Redis Cluster slot. Layout under `<prefix>{<saga>:<shard>}:`:
 * `s:<id>` the instance hash, `h:<id>` its history list, `live` a sorted set of the running and
 * compensating instances scored by lease expiry (the recovery loop's work list),
 * `fin:<status>` sorted sets of finished instances scored by finish time (for `list`).
 *
 * Instance hash fields: `n` saga, `in` input JSON, `st` status, `cur` current step, `cj` next
 * step to compensate, `ph` phase (`idle` | `run` | `comp`), `v` version, `f` fence, `ow` owner,
 * `ls` lease expiry, `dl` deadline (0: none), `t0` created, `up` updated, `ns` step count,
 * `why` reason for compensating or parking, `cx` cancel requested, `ix` the instance's score in
 * `live` (see {@link TRANSITION}), `o:<i>` output of step i,
 * `a:<i>` attempts of step i, `c:<i>` compensation attempts of step i.
 *
 * History entries: `time|version|fence|event|step|detail`.
 *
 * Internal module.
 * @packageDocumentation
 */
import { luaScript } from '../core/index.js';

const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/**
 * Writes to the lists and sorted sets next to an instance's hash — its history, its shard's
 * `live` and `fin:` indexes — that replace a key holding foreign data of another type (something
 * else wrote it) instead of failing with WRONGTYPE. Such a failure comes after the hash was
 * written (scripts are not rolled back): a start left a `running` instance its caller was told
 * had failed, a finish one left out of its index and never expiring, and a claim by the
 * recovery loop failed for every instance of the shard, every time. Keys only Keel writes: what
 * a foreign value held cannot be a saga's (a list or sorted set of Keel's would be of the right
 * type). The same commands as `redis.call` when the key is fine (`pcall` answers the error
 * instead of raising it).
 *
 * Only WRONGTYPE means foreign data: any other error is raised as `redis.call` would. A
 * transition's first write may be its `ZADD` to `live` (a heartbeat that reindexes), which Redis
 * out of memory refuses (`OOM`): taken for foreign data, that refusal deleted the shard's whole
 * index — the `DEL` is allowed, and lets the writes after it through — and every other instance
 * of the shard went out of recovery's sight.
 */
const FOREIGN = `
local function foreign(r)
  if type(r) == 'table' then
    if not string.find(r.err, '^WRONGTYPE') then error(r) end
    return true
  end
end
local function push(key, ...)
  local n = redis.pcall('RPUSH', key, ...)
  if foreign(n) then
    redis.call('DEL', key)
    n = redis.call('RPUSH', key, ...)
  end
  return n
end
local function zadd(key, score, member)
  if foreign(redis.pcall('ZADD', key, score, member)) then
    redis.call('DEL', key)
    redis.call('ZADD', key, score, member)
  end
end
`;

/**
 * The check of an instance about to be claimed, and its parking when it fails. Only a claim
 * (the recovery loop's, or a start's of an instance whose lease ran out) reads fields no write of
 * the owner checks: the lease, fence, version, step indexes and step count. One that is not what
 * Keel writes (a foreign write) failed the claim script — `tonumber` of it compared with a
 * number, or `HINCRBY` of it, raises — after the instances of the shard before it were claimed
 * (a script is not rolled back): they went to an owner that never heard it had them, and the
 * shard's recovery failed at the same instance on every poll, all of its abandoned sagas stuck.
 * Or the claim went through and its owner, finding no step at `cur`, drove nothing and let the
 * lease run out: the instance was claimed again every lease, and a `run()` of it never returned.
 *
 * `malformed(s)` answers which of the fields `st, ls, f, v, cur, cj, ns` (as `HMGET` answers
 * them, by index) is wrong, or nil; `park(h, hist, live, fin, id, i, s, nows)` parks the instance as
 * `needs-attention` with the reason, out of `live` and into `fin:needs-attention` (a person's
 * list, never expired, with its history), so it is neither trusted nor lost.
 */
const MALFORMED = `
local F = {'st', 'ls', 'f', 'v', 'cur', 'cj', 'ns'}
local function malformed(s)
  if s[1] ~= 'running' and s[1] ~= 'compensating' then return 1 end
  for i = 2, 7 do
    if type(s[i]) ~= 'string' or #s[i] > 15 or not string.find(s[i], '^%-?%d+$') then return i end
  end
  local ns = tonumber(s[7])
  if ns < 1 then return 7 end
  if tonumber(s[5]) < 0 or tonumber(s[5]) > ns then return 5 end
  if tonumber(s[6]) < -1 or tonumber(s[6]) >= ns then return 6 end
end
local function park(h, hist, live, fin, id, i, s, nows)
  local why = 'malformed instance: ' .. F[i] .. ' = ' .. string.sub(tostring(s[i] or 'nil'), 1, 40)
  redis.call('HSET', h, 'st', 'needs-attention', 'why', why, 'ls', '0', 'ph', 'idle', 'up', nows)
  if foreign(redis.pcall('ZREM', live, id)) then redis.call('DEL', live) end
  zadd(fin, nows, id)
  push(hist, nows .. '|0|0|park|-1|' .. why)
end
`;

/**
 * The logic of one transition, as a Lua function of its keys, arguments and the server time, shared
 * by {@link TRANSITION} (one transition) and {@link TRANSITIONS} (several in one script call).
 *
 * Written for the cost per transition (most of what Redis spends on a saga):
 * - Numbers go to Redis as strings made once: `now` and the lease (the same for every
 *   transition of a call) by the caller, the version with `%d`. Redis 7.0 turns each Lua number
 *   given to `redis.call` into text with `%.17g`, and Lua's own `..` with `%.14g`: a floating
 *   point conversion each (the largest single cost in a callgrind profile of the server, ~14 %
 *   of its instructions). The step goes as its argument's own text.
 * - No closure is made per call: the helpers below are the chunk's, and get what they need as
 *   arguments; a transition's own fields go in one table, after the common ones in one `HSET`
 *   (a field given twice takes its last value: the same in both places here).
 * - `HMGET` reads only the fields the op needs (each field is a scan of the hash's listpack, an
 *   absent one — `cx` and `why` while a saga runs — a scan of all of it): every op the eight it
 *   checks or answers with, `begin` also `dl` and `cx`, `done` also `ns`, `next` all three. The
 *   phase, needed only when compensation begins, is read there with `HGET` (nothing was written
 *   before it: it is what the script found).
 */
const TRANSITION_FUNCTION = `
local function record(KEYS, ARGV, nows, vs, event)
  local n = push(KEYS[2],
    nows .. '|' .. vs .. '|' .. ARGV[3] .. '|' .. event .. '|' .. ARGV[10] .. '|' .. ARGV[11])
  if n > tonumber(ARGV[6]) then redis.call('LTRIM', KEYS[2], '-' .. ARGV[6], '-1') end
end
local function finish(KEYS, ARGV, set, status, event, now, nows, vs, cjs, why)
  redis.call('HSET', KEYS[1], 'st', status, 'v', vs, 'up', nows, 'ls', '0', 'ph', 'idle', unpack(set))
  if foreign(redis.pcall('ZREM', KEYS[3], ARGV[1])) then redis.call('DEL', KEYS[3]) end
  record(KEYS, ARGV, nows, vs, event)
  local fin = KEYS[4]
  if status == 'compensated' then fin = KEYS[5] elseif status == 'needs-attention' then fin = KEYS[6] end
  zadd(fin, nows, ARGV[1])
  if status ~= 'needs-attention' then
    redis.call('LTRIM', KEYS[2], '-' .. ARGV[8], '-1')
    redis.call('PEXPIRE', KEYS[1], ARGV[7])
    redis.call('PEXPIRE', KEYS[2], ARGV[7])
    redis.call('ZREMRANGEBYSCORE', fin, '-inf', string.format('%d', now - tonumber(ARGV[7])))
  end
  if why then return '1|' .. vs .. '|' .. nows .. '|0|' .. cjs .. '|' .. status .. '|' .. why end
  return '1|' .. vs .. '|' .. nows .. '|0|' .. cjs .. '|' .. status
end
local function reindex(KEYS, ARGV, ix, leases, floors)
  if ix and #ix == #leases and #floors == #leases and ix >= floors and ix <= leases
    and not string.find(ix, '%D') then
    return false
  end
  zadd(KEYS[3], leases, ARGV[1])
  return true
end
local function advance(KEYS, ARGV, set, status, event, nows, leases, vs, cjs, why, ix, floors)
  if reindex(KEYS, ARGV, ix, leases, floors) then set[#set + 1] = 'ix'; set[#set + 1] = leases end
  redis.call('HSET', KEYS[1], 'v', vs, 'up', nows, 'ls', leases, unpack(set))
  record(KEYS, ARGV, nows, vs, event)
  if why then return '1|' .. vs .. '|' .. nows .. '|' .. leases .. '|' .. cjs .. '|' .. status .. '|' .. why end
  return '1|' .. vs .. '|' .. nows .. '|' .. leases .. '|' .. cjs .. '|' .. status
end
-- A step's done (version v) and the next step's begin (v + 1), op 'next': the two state changes
-- the two calls would have made back to back, written at once (one HSET, one RPUSH of both
-- history entries). The begin turns into compensation from the step just done, for a cancel or
-- the saga's deadline, as a 'begin' with a reason does from the idle phase a done leaves.
local function proceed(KEYS, ARGV, set, nx, reason, nows, leases, v, cjs, why, ix, floors)
  local vs, vs2 = string.format('%d', v), string.format('%d', v + 1)
  local event, status = 'begin', 'running'
  if reason then
    event, status, cjs, why = 'fail', 'compensating', ARGV[10], reason
    set[5] = 'cj'; set[6] = cjs; set[7] = 'why'; set[8] = reason
    set[9] = 'ph'; set[10] = 'idle'; set[11] = 'st'; set[12] = 'compensating'
  else
    set[5] = 'ph'; set[6] = 'run'; set[7] = 'a:' .. nx; set[8] = '1'
  end
  if reindex(KEYS, ARGV, ix, leases, floors) then set[#set + 1] = 'ix'; set[#set + 1] = leases end
  redis.call('HSET', KEYS[1], 'v', vs2, 'up', nows, 'ls', leases, unpack(set))
  local n = push(KEYS[2],
    nows .. '|' .. vs .. '|' .. ARGV[3] .. '|done|' .. ARGV[10] .. '|',
    nows .. '|' .. vs2 .. '|' .. ARGV[3] .. '|' .. event .. '|' .. nx .. '|' .. ARGV[11])
  if n > tonumber(ARGV[6]) then redis.call('LTRIM', KEYS[2], '-' .. ARGV[6], '-1') end
  if why then return '1|' .. vs2 .. '|' .. nows .. '|' .. leases .. '|' .. cjs .. '|' .. status .. '|' .. why end
  return '1|' .. vs2 .. '|' .. nows .. '|' .. leases .. '|' .. cjs .. '|' .. status
end
local function refuse(why, s)
  return '0|' .. why .. '|' .. (s[3] or '') .. '|' .. (s[4] or '') .. '|' .. s[1]
end
local MORE = {begin = {'dl', 'cx'}, done = {'ns'}, next = {'dl', 'cx', 'ns'}}
local function transition(KEYS, ARGV, now, nows, leases, floors)
local h = KEYS[1]
local op = ARGV[9]
local s = redis.call('HMGET', h, 'st', 'ow', 'f', 'v', 'cur', 'cj', 'why', 'ix', unpack(MORE[op] or {}))
local ix = s[8]
if not s[1] then return '0|missing|0|0|' end
if s[2] ~= ARGV[2] or s[3] ~= ARGV[3] then return refuse('fenced', s) end
local st = s[1]
if st ~= 'running' and st ~= 'compensating' then return refuse('state', s) end
if op ~= 'renew' and s[4] ~= ARGV[4] then return refuse('version', s) end
local cjs = s[6] or ''
if op == 'renew' then
  redis.call('HDEL', h, 'ls')
  if reindex(KEYS, ARGV, ix, leases, floors) then
    redis.call('HSET', h, 'ls', leases, 'ix', leases)
  else
    redis.call('HSET', h, 'ls', leases)
  end
  return '1|' .. (s[4] or '') .. '|' .. nows .. '|' .. leases .. '|' .. cjs .. '|' .. st
end
local step = tonumber(ARGV[10])
if op == 'begin' or op == 'done' or op == 'fail' or op == 'next' then
  if st ~= 'running' or tonumber(s[5]) ~= step then return refuse('state', s) end
else
  if st ~= 'compensating' or tonumber(s[6]) ~= step then return refuse('state', s) end
end
local v = tonumber(s[4]) + 1
local vs = string.format('%d', v)
local why = s[7]
local arg = ARGV[12]
-- Compensation begins from step j (nothing to compensate: j < 0), for a reason.
local j, reason, event
if op == 'begin' then
  if s[10] == '1' then reason = 'cancelled'
  elseif tonumber(s[9]) > 0 and now >= tonumber(s[9]) then reason = 'saga-timeout' end
  if not reason then
    return advance(KEYS, ARGV, {'ph', 'run', 'a:' .. ARGV[10], arg}, 'running', 'begin',
      nows, leases, vs, cjs, why, ix, floors)
  end
  event = 'fail'
elseif op == 'done' then
  local set = {'o:' .. ARGV[10], arg, 'cur', string.format('%d', step + 1)}
  if step + 1 >= tonumber(s[9]) then
    return finish(KEYS, ARGV, set, 'completed', 'done', now, nows, vs, cjs, why)
  end
  set[5] = 'ph'; set[6] = 'idle'
  return advance(KEYS, ARGV, set, 'running', 'done', nows, leases, vs, cjs, why, ix, floors)
elseif op == 'next' then
  local nx = string.format('%d', step + 1)
  local set = {'o:' .. ARGV[10], arg, 'cur', nx}
  if step + 1 >= tonumber(s[11]) then
    -- No step follows (the stored count is smaller than the caller's): a plain done, logged as
    -- one (no detail: the detail sent is the begin's).
    local a = {unpack(ARGV)}
    a[11] = ''
    return finish(KEYS, a, set, 'completed', 'done', now, nows, vs, cjs, why)
  end
  if s[10] == '1' then reason = 'cancelled'
  elseif tonumber(s[9]) > 0 and now >= tonumber(s[9]) then reason = 'saga-timeout' end
  return proceed(KEYS, ARGV, set, nx, reason, nows, leases, v, cjs, why, ix, floors)
elseif op == 'fail' then
  reason = arg
  event = 'fail'
elseif op == 'cbegin' then
  return advance(KEYS, ARGV, {'ph', 'comp', 'c:' .. ARGV[10], arg}, 'compensating', 'cbegin',
    nows, leases, vs, cjs, why, ix, floors)
elseif op == 'cdone' then
  cjs = string.format('%d', step - 1)
  local set = {'cj', cjs, 'ph', 'idle'}
  if step < 1 then return finish(KEYS, ARGV, set, 'compensated', arg, now, nows, vs, cjs, why) end
  return advance(KEYS, ARGV, set, 'compensating', arg, nows, leases, vs, cjs, why, ix, floors)
elseif op == 'park' then
  return finish(KEYS, ARGV, {'why', arg}, 'needs-attention', 'park', now, nows, vs, cjs, arg)
else
  return redis.error_reply('keel saga: unknown transition ' .. op)
end
-- A failed step, a cancel or the saga's deadline: compensate from the last step begun.
j = step - 1
if redis.call('HGET', h, 'ph') == 'run' then j = step end
local js = string.format('%d', j)
local set = {'cj', js, 'why', reason, 'ph', 'idle'}
if j < 0 then return finish(KEYS, ARGV, set, 'compensated', event, now, nows, vs, js, reason) end
set[7] = 'st'; set[8] = 'compensating'
return advance(KEYS, ARGV, set, 'compensating', event, nows, leases, vs, js, reason, ix, floors)
end
`;

/**
 * The logic of a start, as a Lua function of its keys, arguments and the server time (`now`, and
 * as text `nows` and the new lease `leases`), shared by {@link START} (one start) and
 * {@link TRANSITIONS} (starts batched with other writes). As in {@link TRANSITION_FUNCTION},
 * every number goes to Redis as text made once (the same bytes Redis's `%.17g` and Lua's `%.14g`
 * made of these whole numbers, without a floating-point conversion each: a start passed twelve),
 * no closure is made per call, and the history is trimmed only past its cap. A fractional
 * deadline (a fractional timeoutMs) still goes as a Lua number, formatted by Redis as always.
 */
const START_FUNCTION = `
local function log(KEYS, ARGV, nows, v, f, event, detail)
  local n = push(KEYS[2], nows .. '|' .. v .. '|' .. f .. '|' .. event .. '|-1|' .. detail)
  if n > tonumber(ARGV[6]) then redis.call('LTRIM', KEYS[2], '-' .. ARGV[6], '-1') end
end
local function start(KEYS, ARGV, now, nows, leases)
local h = KEYS[1]
local id = ARGV[1]
if redis.call('EXISTS', h) == 0 then
  local dl = 0
  if tonumber(ARGV[7]) > 0 then dl = now + tonumber(ARGV[7]) end
  local dls = dl
  if dl == math.floor(dl) then dls = string.format('%d', dl) end
  redis.call('HSET', h, 'n', ARGV[3], 'in', ARGV[4], 'st', 'running', 'cur', '0', 'cj', '-1',
    'ph', 'idle', 'v', '1', 'f', '1', 'ow', ARGV[2], 'ls', leases, 'dl', dls, 't0', nows,
    'up', nows, 'ns', ARGV[8], 'ix', leases)
  zadd(KEYS[3], leases, id)
  log(KEYS, ARGV, nows, '1', '1', 'start', ARGV[2])
  return {1, 'created', now, tonumber(leases), dl}
end
if redis.call('HGET', h, 'in') ~= ARGV[4] then return {0, 'conflict'} end
local s = redis.call('HMGET', h, 'st', 'ls', 'f', 'v', 'cur', 'cj', 'ns')
if s[1] == 'running' or s[1] == 'compensating' then
  local what = malformed(s)
  if what then
    park(h, KEYS[2], KEYS[3], string.sub(KEYS[3], 1, -5) .. 'fin:needs-attention', id, what, s, nows)
    return {1, 'exists', now, redis.call('HGETALL', h)}
  end
end
if (s[1] == 'running' or s[1] == 'compensating') and tonumber(s[2]) <= now then
  local f = redis.call('HINCRBY', h, 'f', 1)
  local v = redis.call('HINCRBY', h, 'v', 1)
  redis.call('HSET', h, 'ow', ARGV[2], 'ls', leases, 'up', nows, 'ix', leases)
  zadd(KEYS[3], leases, id)
  log(KEYS, ARGV, nows, v, f, 'claim', ARGV[2])
  return {1, 'claimed', now, redis.call('HGETALL', h)}
end
return {1, 'exists', now, redis.call('HGETALL', h)}
end
`;

/**
 * Starts an instance, or finds it: creates it when absent (owned by the caller), claims it when
 * it is live and its lease ran out, else leaves it; parks it when it is live and malformed (see
 * {@link MALFORMED}: answered `exists`, the caller's run then answers `needs-attention` instead of
 * driving what it cannot read). A different input under the same id is a conflict. KEYS as {@link TRANSITION} (1–3 used). ARGV: 1 id, 2 owner, 3 saga, 4 input JSON,
 * 5 leaseMs, 6 history cap, 7 timeoutMs (0: none), 8 step count.
 * Replies `{1, 'created', now, lease, deadline}` (the caller knows every other field of what it
 * created: no `HGETALL` to send back), `{1, 'claimed' | 'exists', now, HGETALL}` or
 * `{0, 'conflict'}`.
 */
export const START = luaScript(`${NOW}${FOREIGN}${MALFORMED}${START_FUNCTION}
return start(KEYS, ARGV, now, string.format('%d', now), string.format('%d', now + tonumber(ARGV[5])))
`);

/**
 * A transition of an instance the caller owns.
 * KEYS: 1 hash, 2 history, 3 live, 4 fin:completed, 5 fin:compensated, 6 fin:needs-attention.
 * ARGV: 1 id, 2 owner, 3 fence, 4 version, 5 leaseMs, 6 history cap, 7 retentionMs,
 * 8 history kept when finished, 9 op, 10 step, 11 detail, 12 op argument.
 * Replies one string: `1|version|now|lease|cj|status`, then `|why` when the instance has a
 * reason (it is last: it may hold any text), or `0|why|fence|version|status` for a refusal (the
 * stored status last, whatever it holds). One bulk string rather than a seven-element array: the
 * client decodes one value per transition instead of seven (decoding the arrays was ~15 % of a
 * coordinator's CPU with 100 sagas in flight), and Redis writes one. Its numbers are the texts
 * the script already made for the hash, so nothing is formatted for the reply alone.
 * A heartbeat (`renew`) checks the owner and fence only: it may cross a transition of the same
 * owner. It deletes the lease field before writing it again: `HDEL` is a write Redis allows out of
 * memory (`noeviction`), and once a script has written Redis lets its later writes through — a
 * renewal whose first write was its `HSET` was refused, the owner's lease ran out while its step
 * still ran, and another coordinator claimed the saga and ran the step again beside it as soon as
 * memory came back (the same field back: no memory grows).
 *
 * Op `next` is a step's `done` and the next step's `begin` (attempt 1) in one call, as a
 * coordinator sends them when a step succeeds and another follows: nothing happens between the
 * two (the next step is called only once its begin is durable), so they need not cost two round
 * trips. They stay two state changes — versions v + 1 and v + 2, two history entries (`done`,
 * then `begin`, or `fail` when the begin turned into compensation for a cancel or the saga's
 * deadline) — exactly what the two calls would have written back to back; a crash leaves the
 * instance either before both or after both. Its detail is the begin's; its argument the done's
 * output. On the last step it is a plain `done`. ARGV 12 for `next`: the step's output.
 *
 * Cost: the fields a transition changes go into ONE `HSET` at its end, `cj` and `why` for the
 * reply come from the first `HMGET` (not read again after the write), and the history is trimmed
 * only when `RPUSH` answers a length past its cap — four commands for a transition that neither
 * finishes nor trims (`TIME`, `HMGET`, `HSET`, `RPUSH`), three inside a {@link TRANSITIONS} call
 * (which reads `TIME` once for all).
 *
 * The recovery index (`live`, scored by lease expiry) moves only when the new lease is more than
 * half a lease past the score it holds, or before it (a server clock set back), or that score is
 * unknown (`ix`, written with every `ZADD` to `live` by every script, is missing in data written
 * before it existed): a `ZADD` to a sorted set (parse, format and re-insert the score) was the
 * largest command a transition ran after `HMGET`. Why a takeover still finds every instance whose
 * lease ran out: every script that writes the instance's score in `live` writes the same value to
 * `ix`, so the score is always `ix`; a transition leaves it only when `ix <= lease`, so the score
 * never passes the instance's lease `ls` — an instance whose lease ran out has a score at or
 * before now, where {@link CLAIM} looks. A live owner's score stays more than a sixth of a lease
 * ahead (its heartbeat renews within a third of a lease), so a claim does not scan it.
 */
export const TRANSITION = luaScript(`${NOW}${FOREIGN}${TRANSITION_FUNCTION}
local lease = now + tonumber(ARGV[5])
return transition(KEYS, ARGV, now, string.format('%d', now), string.format('%d', lease),
  string.format('%d', lease - math.floor(tonumber(ARGV[5]) / 2)))
`);

/**
 * Several transitions in ONE script call: the transitions a coordinator issued in the same tick
 * (see `TransitionBatcher` in store.ts). Each runs {@link TRANSITION}'s own logic, with its own
 * owner, fence and version checks, on its own keys, and is answered separately: a refused or
 * failing transition leaves the others exactly as they would be alone (a Lua error is caught
 * with `pcall` and answered as that transition's error; its writes before the error stay, as
 * they would after the same error in a script of its own). The server time is read once (the
 * script is atomic: every transition in it happens at the same instant anyway).
 *
 * What is the same for many transitions is sent once (bytes a client writes and Redis reads per
 * transition: about 360 → 150 for the bench's sagas): the four keys of each shard (`live`, the
 * three `fin:` sets), the store's settings, and the owner most transitions carry.
 * KEYS: per shard used, its `live`, `fin:completed`, `fin:compensated`, `fin:needs-attention`;
 * then per transition its hash and history. ARGV: 1 transitions n, 2 shards m, 3 leaseMs,
 * 4 history cap, 5 retentionMs, 6 history kept when finished, 7 owner, 8 every transition's
 * own arguments in ONE text: per transition
 * `shard|fence|version|op|step|<owner bytes>|<detail bytes>|<argument bytes>|<owner>|<detail>|<op argument>`,
 * the transitions joined by `|` (shard 1..m; the short fields split by one anchored
 * `string.match` from where the previous transition ended — their digits read by arithmetic,
 * which converts a string once where `tonumber` converts it twice — then owner, detail and op argument
 * cut by their byte lengths, so they may hold any text; owner `''`: ARGV[7], see `encodeBatch`
 * in store.ts). The id is not sent: it is the tail of the instance's hash key (`<base>s:<id>`,
 * where the shard's `live` is `<base>live`) — read from a declared key's name, no key derived.
 * One argument for the whole batch: the client encodes (and Redis parses) one bulk string
 * instead of one per transition (ioredis builds each bulk string of a command as a chain of
 * small strings, ~0.15 kB per argument). Replies a list with each transition's
 * {@link TRANSITION} reply, or `{-1, message}` for one that raised an error.
 *
 * A start ({@link START}'s logic, op `start`) rides in the same batch: a coordinator given many
 * sagas at once starts them in one call. It reuses the fields: fence unused, timeoutMs in the
 * version field, the step count in the step field, the saga name as the detail, the input JSON as
 * the op argument; it uses its hash, history and shard `live`.
 *
 * On Redis Cluster every transition of one call must be in one slot: the store groups them by
 * hash tag.
 */
export const TRANSITIONS =
  luaScript(`${NOW}${FOREIGN}${MALFORMED}${TRANSITION_FUNCTION}${START_FUNCTION}
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local lease, cap, retention, keep, owner = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
-- The same instant and lease for every transition of the call, as text once.
local nows, until_ = string.format('%d', now), now + tonumber(lease)
local untils = string.format('%d', until_)
local floors = string.format('%d', until_ - math.floor(tonumber(lease) / 2))
local out = {}
local all = ARGV[8]
local k, at = 4 * m, 1
for i = 1, n do
  local gs, fence, version, op, step, ol, dl, al, p = string.match(all,
    '^(%d+)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(%d+)|(%d+)|(%d+)|()', at)
  local q = p + ol + 1
  local e = q + dl + 1
  at = e + al + 1
  local who, detail, arg =
    string.sub(all, p, q - 2), string.sub(all, q, e - 2), string.sub(all, e, at - 2)
  local g = 4 * (gs - 1)
  local h = KEYS[k + 1]
  -- The id is the hash key's tail: <base>s:<id>, where the shard's live key is <base>live.
  local id = string.sub(h, #KEYS[g + 1] - 1)
  if who == '' then who = owner end
  local ok, r
  if op == 'start' then
    ok, r = pcall(start, {h, KEYS[k + 2], KEYS[g + 1]},
      {id, who, detail, arg, lease, cap, version, step}, now, nows, untils)
  else
    ok, r = pcall(transition,
      {h, KEYS[k + 2], KEYS[g + 1], KEYS[g + 2], KEYS[g + 3], KEYS[g + 4]},
      {id, who, fence, version, lease, cap, retention, keep, op, step, detail, arg},
      now, nows, untils, floors)
  end
  if not ok then
    if type(r) == 'table' and r.err then r = r.err end
    r = {-1, tostring(r)}
  elseif type(r) == 'table' and r.err then
    r = {-1, r.err}
  end
  out[i] = r
  k = k + 2
end
return out
`);

/**
 * The recovery loop's claim on one shard: every live instance whose lease ran out (up to a
 * limit) gets the caller as owner and a fence one higher, so its old owner's writes are refused.
 * KEYS: 1 live. ARGV: 1 owner, 2 leaseMs, 3 history cap, 4 limit, 5 key base
 * (`<prefix>{<saga>:<shard>}:`, the same slot as KEYS[1]).
 * Replies `{now, {id, HGETALL, id, HGETALL, …}}`: the instances claimed, and those found
 * malformed and parked (status `needs-attention`, see {@link MALFORMED}) or whose key holds
 * another type (an empty HGETALL: not an instance any more, taken out of `live`, the foreign key
 * left as it is; the coordinator reports it).
 */
export const CLAIM = luaScript(`${NOW}${FOREIGN}${MALFORMED}
local base = ARGV[5]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  local h = base .. 's:' .. id
  local s = redis.pcall('HMGET', h, 'st', 'ls', 'f', 'v', 'cur', 'cj', 'ns')
  local wrongtype = s.err ~= nil and foreign(s)
  local what = not wrongtype and s[1] and malformed(s)
  if wrongtype then
    redis.call('ZREM', KEYS[1], id)
    out[#out + 1] = id
    out[#out + 1] = {}
  elseif not s[1] or s[1] == 'completed' or s[1] == 'compensated' or s[1] == 'needs-attention' then
    redis.call('ZREM', KEYS[1], id)
  elseif what then
    park(h, base .. 'h:' .. id, KEYS[1], base .. 'fin:needs-attention', id, what, s, now)
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGETALL', h)
  elseif tonumber(s[2]) > now then
    redis.call('ZADD', KEYS[1], s[2], id)
    redis.call('HSET', h, 'ix', s[2])
  else
    local f = redis.call('HINCRBY', h, 'f', 1)
    local v = redis.call('HINCRBY', h, 'v', 1)
    local lease = now + tonumber(ARGV[2])
    redis.call('HSET', h, 'ow', ARGV[1], 'ls', lease, 'up', now, 'ix', lease)
    redis.call('ZADD', KEYS[1], lease, id)
    local hist = base .. 'h:' .. id
    push(hist, now .. '|' .. v .. '|' .. f .. '|claim|-1|' .. ARGV[1])
    redis.call('LTRIM', hist, -tonumber(ARGV[3]), -1)
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGETALL', h)
  end
end
return {now, out}
`);

/**
 * An instance's hash and history. KEYS: 1 hash, 2 history. ARGV: 1 history cap (optional: the
 * newest entries up to it; Keel trims the list at each transition, but a finished instance has no
 * more, and a foreign write of the right type may hold any length). Replies `{HGETALL, LRANGE}`.
 */
export const READ = luaScript(`
local from = 0
if ARGV[1] then from = -tonumber(ARGV[1]) end
local h = redis.pcall('LRANGE', KEYS[2], from, -1)
if h.err then h = {} end
return {redis.call('HGETALL', KEYS[1]), h}
`);

/**
 * Asks a running instance to compensate: its next `begin`, by whichever coordinator owns it,
 * turns into compensation. KEYS: 1 hash. Replies 1 when set, 0 when the instance is missing or
 * no longer running forward.
 */
export const CANCEL = luaScript(`
if redis.call('HGET', KEYS[1], 'st') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'cx', '1')
return 1
`);

/**
 * Ids in one shard by status, newest first. KEYS: 1 live, 2 fin:completed, 3 fin:compensated,
 * 4 fin:needs-attention. ARGV: 1 status, 2 limit, 3 key base. Replies a flat `{id, status, …}`.
 * An id in `live` whose key holds another type (a foreign write, until the recovery loop's
 * claim takes it out) is left out, not an error for the whole list.
 */
export const LIST = luaScript(`
local want = ARGV[1]
local limit = tonumber(ARGV[2])
local out = {}
local function add(id, st)
  if #out < limit * 2 then out[#out + 1] = id; out[#out + 1] = st end
end
if want == 'running' or want == 'compensating' or want == '' then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    local st = redis.pcall('HGET', ARGV[3] .. 's:' .. id, 'st')
    if type(st) == 'string' and (want == '' or st == want) then add(id, st) end
  end
end
local names = {'completed', 'compensated', 'needs-attention'}
for i = 2, 4 do
  if want == '' or want == names[i - 1] then
    for _, id in ipairs(redis.call('ZREVRANGE', KEYS[i], 0, limit - 1)) do add(id, names[i - 1]) end
  end
end
return out
`);
