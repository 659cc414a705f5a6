/**
 * The queue's Lua scripts. Each runs atomically on the node that holds one partition (all its
 * keys share a hash tag), which is what makes the guarantees hold: an ack, a retry and a
 * dead-letter each check — in the same step that acts — that this consumer still holds the
 * message (its pending-entries-list entry, and in ordered mode the partition lease), so a late
 * ack from a consumer whose message was reclaimed is refused rather than applied twice.
 *
 * Stream commands: https://redis.io/docs/latest/develop/data-types/streams/ (XPENDING's
 * extended form with IDLE and a consumer filter, XCLAIM, XINFO GROUPS' `pending` and
 * `last-delivered-id`, XTRIM MINID). Scripts read replies in RESP2 form (Lua's default), so
 * XINFO answers flat name/value lists whatever protocol the client speaks.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * @packageDocumentation
 */
import { luaScript, type LuaScript } from '../core/index.js';

/**
 * Helpers every script starts with. `done_cut(stream)`: where every group of a stream is done
 * (see {@link TRIM_DONE}) — for one group, its oldest pending entry (and `true`: something is
 * still pending), else just past its last delivered one; with several groups the lowest of
 * those over the groups (and `false`: an acked id above it may still be needed by another
 * group, so it is never deleted one by one); nil with no group. `groups_of(stream)`: `XINFO
 * GROUPS`, but no groups (not an error) when the stream does not exist — a partition never sent
 * to, or lost with a Redis restart; any other error is raised as it was.
 */
const PRELUDE = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function owns(stream, group, id, consumer, deliveries)
  local p = redis.call('XPENDING', stream, group, id, id, 1, consumer)[1]
  return p ~= nil and (deliveries == nil or deliveries == '' or p[4] == tonumber(deliveries))
end
local function lease_ok(key, token)
  return token == '' or redis.call('GET', key) == token
end
local function settle(stream, group, id)
  redis.call('XACK', stream, group, id)
  if #redis.call('XINFO', 'GROUPS', stream) == 1 then redis.call('XDEL', stream, id) end
end
local function id_before(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local function group_cut(stream, g)
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if tonumber(info['pending']) > 0 then return redis.call('XPENDING', stream, info['name'])[2], true end
  local last = info['last-delivered-id']
  local ms, seq = string.match(last, '^(%d+)-(%d+)$')
  if ms == nil or #seq > 15 then return last, true end
  return ms .. '-' .. string.format('%d', tonumber(seq) + 1), false
end
local function groups_of(stream)
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if type(groups) == 'table' and groups.err ~= nil then
    if string.find(groups.err, 'no such key', 1, true) then return {} end
    error(groups)
  end
  return groups
end
local function done_cut(stream)
  local groups = groups_of(stream)
  if #groups == 1 then return group_cut(stream, groups[1]) end
  local cut = nil
  for _, g in ipairs(groups) do
    local c = group_cut(stream, g)
    if cut == nil or id_before(c, cut) then cut = c end
  end
  return cut, false
end
local function tail(from)
  local out = {}
  for i = from, #ARGV do out[#out + 1] = ARGV[i] end
  return out
end
`;

const script = (body: string): LuaScript => luaScript(PRELUDE + body);

/**
 * Most messages one {@link SEND} call writes: a longer batch is sent in calls of this many
 * (each all-or-nothing), so that one call neither blocks Redis for long (a script runs alone)
 * nor passes more arguments than a JavaScript call can spread.
 */
export const SEND_MAX = 1000;

/**
 * Send with dedup and/or delay, of one message or a batch, all or nothing. KEYS: the batch's
 * distinct keys (streams, delayed sets, dedup keys). ARGV, per message: the KEYS index of its
 * stream, of its delayed set and of its dedup key (0: none), dedup window ms (0: none), delay
 * ms, how many fields follow, the fields. Returns per message `code, value`: `0, ''` duplicate,
 * `1, entry id` added, `2, due ms` delayed (the due time is on the Redis server's clock).
 *
 * Only a dedup record (`'1'`, with an expiry: every record is written with one) makes a
 * duplicate: a dedup key holding anything else — foreign data, of any type, or a `'1'` that never
 * expires — is replaced and the message sent (`SET NX` alone fails on any existing key, and the
 * message would be answered `duplicate` and never enqueued). Checked only when the key exists:
 * a first send costs what it did.
 *
 * Nothing of the batch is written unless all of it is. Out of memory (`maxmemory` under
 * `noeviction`), Redis refuses a script without flags at its first write that may grow memory
 * when it was out of memory as the script began — and only then, while nothing was written:
 * every write here (SET, XADD, ZADD) is such a write, and nothing is written before the first,
 * so the whole batch is refused or none of it (a batch sent command by command, as in a
 * pipeline, was refused from the message that found memory full on, the part before it landed,
 * and a caller's retry duplicated that part). A key this batch writes that holds foreign data of
 * another type would fail its write part-way (`WRONGTYPE`): the types are checked first, and
 * the batch refused whole, naming the key (a dedup record taken before a message write that
 * failed so would have answered the caller's retry `duplicate`, the message never enqueued).
 */
export const SEND = script(`
local n, checked, i = #ARGV, {}, 1
while i <= n do
  local k, want = tonumber(ARGV[i]), 'stream'
  if ARGV[i + 4] ~= '0' then k, want = tonumber(ARGV[i + 1]), 'zset' end
  if not checked[k] then
    local t = redis.call('TYPE', KEYS[k])['ok']
    if t ~= 'none' and t ~= want then
      return redis.error_reply('WRONGTYPE ' .. KEYS[k] .. ' holds foreign data (a ' .. t ..
        ', not a ' .. want .. '): nothing of the batch was sent')
    end
    checked[k] = true
  end
  i = i + 6 + tonumber(ARGV[i + 5])
end
local out, o, now = {}, 0, nil
i = 1
while i <= n do
  local window, to = ARGV[i + 3], i + 5 + tonumber(ARGV[i + 5])
  local fresh = true
  if window ~= '0' then
    local u = KEYS[tonumber(ARGV[i + 2])]
    if not redis.call('SET', u, '1', 'NX', 'PX', window) then
      if redis.pcall('GET', u) == '1' and redis.call('PTTL', u) ~= -1 then fresh = false
      else redis.call('SET', u, '1', 'PX', window) end
    end
  end
  if not fresh then
    out[o + 1], out[o + 2] = 0, ''
  elseif ARGV[i + 4] ~= '0' then
    now = now or now_ms()
    local due = now + tonumber(ARGV[i + 4])
    redis.call('ZADD', KEYS[tonumber(ARGV[i + 1])], due, cjson.encode({unpack(ARGV, i + 6, to)}))
    out[o + 1], out[o + 2] = 2, tostring(due)
  else
    out[o + 1], out[o + 2] = 1, redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', unpack(ARGV, i + 6, to))
  end
  o = o + 2
  i = to + 1
end
return out
`);

/**
 * {@link SEND} as `Outbox.stage` queues it in a caller's `MULTI`: the same script, declared with
 * a `#!lua` line (Redis 7.0 script flags; none given). Without it Redis checks a script against the
 * memory limit only when it runs (at its first write), inside `EXEC`, after the transaction's
 * other commands ran: when memory ran out between queueing and `EXEC`, a business write that needs no memory
 * (a `DEL`, an `HDEL`) was applied and the message refused — the state kept, the event lost. A
 * script with a `#!lua` line is a command that may grow memory (`denyoom`) as `SET` is, so
 * Redis refuses the whole `EXEC` then, as it does for any transaction holding such a command:
 * https://redis.io/docs/latest/develop/interact/programmability/eval-intro/#eval-flags
 */
export const STAGED_SEND = luaScript(`#!lua
${SEND.source}`);

/**
 * Most fields a delayed entry may have to be moved into the stream: a Keel message has at most
 * 20 (a retry copy), and `unpack` of a much longer list fails the script (Lua's stack limit).
 */
export const PROMOTE_MAX_FIELDS = 1000;

/**
 * Moves due delayed messages into the stream, by Redis server time. KEYS: stream, delayed, dlq.
 * ARGV: at most how many, then for a quarantined entry its group, consumer and wall time
 * (epoch ms). Returns `{moved, failure, dlq id, why, dlq id, why, …}`.
 *
 * A delayed entry is the message's fields as a JSON array of strings (see {@link SEND}). One
 * that is not — foreign data, or corrupted: not JSON, not an array, an odd count of fields, a
 * value that is not a string, more than {@link PROMOTE_MAX_FIELDS} — is quarantined: added to the
 * DLQ as the consumer quarantines a foreign stream entry (`x:reason invalid`, the raw member in
 * `x:raw`, at most 100 000 bytes of it) and removed from the delayed set, and the reply lists it
 * (DLQ id, why) for the consumer to report. It was dropped unreported before; and an odd count
 * or a nested value failed the `XADD` and with it the whole script, every sweep, so no delayed
 * message due after it was ever delivered. A DLQ key holding foreign data of another type is
 * replaced, as {@link DEAD} does. A DLQ write refused for another reason (an ACL, memory) leaves
 * the entry where it is for a later sweep and goes on with the others; `failure` is then the
 * refusal, naming the key ('' when none).
 */
export const PROMOTE = script(`
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms(), 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local out = {0, ''}
for i = 1, #due, 2 do
  local m = due[i]
  local ok, fields = pcall(cjson.decode, m)
  local why = nil
  if not ok then why = 'not JSON'
  elseif type(fields) ~= 'table' then why = 'not a JSON array'
  else
    local n = #fields
    if n < 2 or n % 2 ~= 0 or n > ${PROMOTE_MAX_FIELDS} then
      why = 'not an array of field/value pairs (' .. n .. ' items)'
    else
      for j = 1, n do
        if type(fields[j]) ~= 'string' then why = 'item ' .. j .. ' is not a string'; break end
      end
    end
  end
  if why == nil then
    redis.call('XADD', KEYS[1], '*', unpack(fields))
    redis.call('ZREM', KEYS[2], m)
    out[1] = out[1] + 1
  else
    why = 'not a Keel message: delayed entry (due ' .. due[i + 1] .. ') is ' .. why
    local entry = {'x:reason', 'invalid', 'x:error', why, 'x:raw', string.sub(m, 1, 100000),
      'x:attempts', '0', 'x:consumers', ARGV[3], 'x:group', ARGV[2], 'x:at', ARGV[4]}
    local d = redis.pcall('XADD', KEYS[3], '*', unpack(entry))
    if type(d) == 'table' and string.sub(d.err, 1, 9) == 'WRONGTYPE' then
      redis.call('DEL', KEYS[3])
      d = redis.pcall('XADD', KEYS[3], '*', unpack(entry))
    end
    if type(d) == 'table' then
      out[2] = d.err .. ' (XADD ' .. KEYS[3] .. ')'
    else
      redis.call('ZREM', KEYS[2], m)
      out[#out + 1] = d
      out[#out + 1] = why
    end
  end
end
return out
`);

/**
 * Ack. KEYS: stream, lease. ARGV: group, entry id, consumer, lease token ('' in unordered mode),
 * delivery count of the delivery being settled ('' not to check it). Returns 1 acked, 0 refused
 * (no longer this consumer's, or delivered again since — see {@link ACK_MANY}), -1 refused
 * (lease lost).
 */
export const ACK = script(`
if not lease_ok(KEYS[2], ARGV[4]) then return -1 end
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[5]) then return 0 end
settle(KEYS[1], ARGV[1], ARGV[2])
return 1
`);

/**
 * Batch ack (unordered mode, no lease). KEYS: stream. ARGV: group, consumer, XPENDING bound,
 * the batch's lowest and highest entry id, delete flag (1: delete now), how many earlier acked
 * ids follow, those ids, then per delivery to ack its entry id and its delivery count.
 * Ownership is checked for the whole batch by one XPENDING over the batch's id range filtered
 * to this consumer (its own pending-entries list, so the cost is the entries it returns); when
 * that reply reaches the bound (it may be cut short), each id is checked alone. A delivery is
 * acked only while its entry is still this consumer's AND still at that delivery count: an
 * entry reclaimed by another consumer after its visibility timeout is refused, and so is the
 * late ack of an older delivery of an entry that was since reclaimed back to this same
 * consumer (XCLAIM counts one more delivery: https://redis.io/docs/latest/commands/xclaim/) —
 * the newer delivery settles it. With the delete flag, the acked entries and the earlier acked
 * ids are removed when the stream has one group (as {@link ACK} does at once); without it the
 * consumer remembers what it acked and removes it with a later call. They are removed as
 * {@link TRIM_DONE} trims — `XTRIM MINID` at the group's oldest pending entry (or, with none
 * pending, just past its last delivered one), which drops whole stream nodes at once: every
 * entry below that was delivered and is not pending, so it was acked — and only while some
 * older message is still pending are they also deleted with `XDEL` (which looks each id up in
 * its node: the costly way, for the acked ids that pending one keeps above the cut). Returns
 * per delivery 1 acked / 0 refused.
 */
export const ACK_MANY = script(`
local g, me = ARGV[1], ARGV[2]
local bound = tonumber(ARGV[3])
local first = 8 + tonumber(ARGV[7])
local count = {}
if first < #ARGV then
  local pend = redis.call('XPENDING', KEYS[1], g, ARGV[4], ARGV[5], bound, me)
  if #pend >= bound then
    for i = first, #ARGV, 2 do
      local p = redis.call('XPENDING', KEYS[1], g, ARGV[i], ARGV[i], 1, me)[1]
      if p ~= nil then count[ARGV[i]] = p[4] end
    end
  else
    for _, p in ipairs(pend) do count[p[1]] = p[4] end
  end
end
local flags, ids = {}, {}
for i = first, #ARGV, 2 do
  if count[ARGV[i]] ~= nil and count[ARGV[i]] == tonumber(ARGV[i + 1]) then
    count[ARGV[i]] = nil
    ids[#ids + 1] = ARGV[i]
    flags[#flags + 1] = 1
  else
    flags[#flags + 1] = 0
  end
end
if #ids > 0 then redis.call('XACK', KEYS[1], g, unpack(ids)) end
if ARGV[6] == '1' then
  for i = 8, first - 1 do ids[#ids + 1] = ARGV[i] end
  if #ids > 0 then
    local cut, pending = done_cut(KEYS[1])
    if cut ~= nil then
      redis.call('XTRIM', KEYS[1], 'MINID', cut)
      if pending then redis.call('XDEL', KEYS[1], unpack(ids)) end
    end
  end
end
return flags
`);

/**
 * Retry later: ack this copy and schedule a new one (for this group only) after a delay.
 * KEYS: stream, delayed, lease. ARGV: group, entry id, consumer, lease token, delivery count
 * (as {@link ACK}), delay ms, fields. Returns 1, or 0 / -1 as {@link ACK}, or `{2, error}` when
 * the delayed set refused the copy and it went to the stream at once instead; `error` is the
 * refusal as Redis gave it (`WRONGTYPE` for a key holding foreign data, or an ACL refusal, …),
 * with the command and key. The ack has been written by then (scripts are not rolled
 * back): raised, that error would lose the message. The ack goes first on purpose: it never
 * needs memory, and once a script has written, Redis refuses none of its later writes for
 * memory, so a retry is never refused half-way when Redis is out of memory (`noeviction`).
 */
export const RETRY = script(`
if not lease_ok(KEYS[3], ARGV[4]) then return -1 end
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[5]) then return 0 end
settle(KEYS[1], ARGV[1], ARGV[2])
local fields = tail(7)
local delay = tonumber(ARGV[6])
if delay > 0 then
  local r = redis.pcall('ZADD', KEYS[2], now_ms() + delay, cjson.encode(fields))
  if type(r) ~= 'table' then return 1 end
  redis.call('XADD', KEYS[1], '*', unpack(fields))
  return {2, r.err .. ' (ZADD ' .. KEYS[2] .. ')'}
end
redis.call('XADD', KEYS[1], '*', unpack(fields))
return 1
`);

/**
 * How long a dead-lettering ({@link DEAD}) or an ordered read ({@link NEXT}) is remembered for
 * its own call's copy sent again.
 */
export const DEAD_MARK_MS = 600_000;

/**
 * Dead-letter: add the entry to the DLQ stream and ack it, in one step. KEYS: stream, dlq,
 * lease, mark. ARGV: group, entry id, consumer, lease token, delivery count (as {@link ACK}),
 * then the DLQ entry's fields. Returns the DLQ entry id, or 0 / -1 as {@link ACK}.
 *
 * The same call may run twice: ioredis sends a command again when its connection dropped before
 * the answer came (`autoResendUnfulfilledCommands`), and the copy sent again finds the entry no
 * longer pending, as if another consumer had settled it. So the step also leaves a mark (DLQ id,
 * delivery count, consumer) for {@link DEAD_MARK_MS}, and a refused call whose own delivery the
 * mark names answers that DLQ id: the message was dead-lettered once, and its consumer reports it
 * once. The mark is looked at before the lease (ordered mode): the copy sent again may come after
 * the lease ran out — a slow reconnect, a Redis pause — and answered -1 then, the dead letter was
 * never reported. Answering it changes nothing in Redis, so it needs no lease. Another consumer's
 * call (or an older delivery's) is still refused. Only a copy sent again after the mark expired
 * answers 0 (the message is in the DLQ, unreported). A mark that is not a string (something else
 * wrote the key) is ignored.
 *
 * Out of memory (`maxmemory` reached under `noeviction`), Redis refuses the DLQ entry: it
 * refuses a script's first write that may grow memory, and only while the script has written
 * nothing yet (a script is never stopped half-way). The ack then goes first — it frees the
 * stream entry the DLQ entry copies — and the DLQ entry after it is not refused: a message that
 * used up its attempts is dead-lettered even then, rather than left pending and delivered again
 * past `maxAttempts` while memory is short. A DLQ key holding foreign data of another type (not
 * a stream: it holds no dead letter) is replaced, rather than refusing every dead letter of the
 * partition, each message then delivered again without end. Any other error fails the script
 * before it has written anything: the message stays pending.
 */
export const DEAD = script(`
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[5]) then
  local m = redis.pcall('GET', KEYS[4])
  if type(m) == 'string' then
    local id, deliveries, consumer = string.match(m, '^(%S+) (%d*) (.*)$')
    if consumer == ARGV[3] and deliveries == ARGV[5] then return id end
  end
  if not lease_ok(KEYS[3], ARGV[4]) then return -1 end
  return 0
end
if not lease_ok(KEYS[3], ARGV[4]) then return -1 end
local fields = tail(6)
local dlq = redis.pcall('XADD', KEYS[2], '*', unpack(fields))
if type(dlq) == 'table' then
  if string.sub(dlq.err, 1, 9) == 'WRONGTYPE' then
    redis.call('DEL', KEYS[2])
  elseif string.sub(dlq.err, 1, 3) ~= 'OOM' then
    return dlq
  end
  settle(KEYS[1], ARGV[1], ARGV[2])
  dlq = redis.call('XADD', KEYS[2], '*', unpack(fields))
else
  settle(KEYS[1], ARGV[1], ARGV[2])
end
redis.call('SET', KEYS[4], dlq .. ' ' .. ARGV[5] .. ' ' .. ARGV[3], 'PX', ${DEAD_MARK_MS})
return dlq
`);

/**
 * Reclaims messages idle for at least `minIdle` ms (their consumer died or stalled) to this
 * consumer. XPENDING first, so the previous owner's name and the delivery count are known.
 * Entries this consumer is still handling (listed after the count) are left alone: reclaiming
 * them from itself would only reset their idle time and hide them from the others.
 * KEYS: stream. ARGV: group, consumer, min idle ms, count, own idle bound ms, in-flight entry
 * ids. Returns `{{entry id, fields, previous owner, deliveries}, …}`; `fields` is nil for a
 * pending entry no longer in the stream (deleted by another program's `XDEL` or `XTRIM`: Keel
 * deletes only acked entries), which is acked here — nothing is left to deliver — and listed
 * so the consumer reports it.
 *
 * An entry pending to this consumer that it is not handling, delivered less than `own idle
 * bound` ago — since this consumer instance started — was never handed to it: the reply of the
 * read that delivered it was lost with its connection (ioredis sends the read again, and `>`
 * then reads past it). Its delivery is not counted again (XCLAIM's RETRYCOUNT keeps the
 * count): counted, a message with `maxAttempts: 1` would be dead-lettered without any handler
 * seeing it. An entry delivered to the same name before this instance started (a process
 * restarted under a fixed name) counts one more delivery, as any reclaim does, so a message
 * that crashes its process still reaches `maxAttempts`.
 */
export const RECLAIM = script(`
local mine = {}
for i = 6, #ARGV do mine[ARGV[i]] = true end
local fresh = tonumber(ARGV[5])
local pend = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', ARGV[4] + #ARGV - 5)
local out = {}
for _, p in ipairs(pend) do
  if not (mine[p[1]] and p[2] == ARGV[2]) then
    local own = p[2] == ARGV[2] and p[3] < fresh
    local got
    if own then
      got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], p[1], 'RETRYCOUNT', p[4])
    else
      got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], p[1])
    end
    local e = got[1]
    if type(e) == 'table' and type(e[2]) == 'table' then
      out[#out + 1] = {p[1], e[2], p[2], own and p[4] or p[4] + 1}
    elseif type(e) ~= 'table' then
      redis.call('XACK', KEYS[1], ARGV[1], p[1])
      out[#out + 1] = {p[1], false, p[2], p[4]}
    end
  end
end
return out
`);

/**
 * Ordered mode: the partition's next message, while holding the lease — its oldest pending
 * entry (left by a previous owner that died or timed out) claimed to this consumer, or else one
 * new entry (`XREADGROUP … COUNT 1`, allowed in scripts without BLOCK). One at a time, so an
 * owner that dies has been delivered only the message it was handling: the others' delivery
 * counts stay true. When ARGV[4] names an entry, it is acked first, in the same step (the
 * previous message's handler resolved): one script call per message. KEYS: stream, lease, mark.
 * ARGV: group, consumer, lease token, entry id to ack ('' for none), call id (unique per call;
 * a call the client saw fail is sent again under its own id, as it may have run).
 * Returns `-1` without the lease, `0` when the entry to ack is no longer this consumer's, when
 * there is nothing next the id of the stream's last entry (`'0-0'` when it is empty) — nothing
 * was delivered, so every entry the group has not read yet comes after it: the consumer waits
 * for one with `XREAD` from that id — else `{{entry id, fields, previous owner or '',
 * deliveries}}`.
 *
 * The same call may run twice (ioredis sends it again when its connection dropped before the
 * answer came). Its second copy would find the entry it acked gone (answer 0: the consumer gives
 * the partition up) or the entry it delivered pending to itself (claimed again: one delivery
 * counted twice, so with `maxAttempts: 1` dead-lettered unseen). So every call that acks or
 * delivers leaves its call id and what it delivered in the partition's mark (one key per group,
 * kept for {@link DEAD_MARK_MS}: only the lease holder calls this), and a copy that finds its
 * own call id there answers what the first copy delivered, unclaimed again, or that nothing was
 * there. A mark that is not a string (something else wrote the key) is ignored and replaced.
 */
export const NEXT = script(`
if not lease_ok(KEYS[2], ARGV[3]) then return -1 end
local mark = redis.pcall('GET', KEYS[3])
if type(mark) == 'string' then
  local call, id, prev = string.match(mark, '^(%S+) (%S*) (.*)$')
  if call == ARGV[5] then
    if id ~= '' then
      local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])[1]
      local e = redis.call('XRANGE', KEYS[1], id, id)[1]
      if p ~= nil and e ~= nil then return {{id, e[2], prev, p[4]}} end
    end
    ARGV[4] = ''
  end
end
if ARGV[4] ~= '' then
  if not owns(KEYS[1], ARGV[1], ARGV[4], ARGV[2]) then return 0 end
  settle(KEYS[1], ARGV[1], ARGV[4])
end
local pend = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1)
while #pend == 1 do
  local p = pend[1]
  local got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, p[1])
  local e = got[1]
  if type(e) == 'table' and type(e[2]) == 'table' then
    redis.call('SET', KEYS[3], ARGV[5] .. ' ' .. p[1] .. ' ' .. p[2], 'PX', ${DEAD_MARK_MS})
    return {{p[1], e[2], p[2], p[4] + 1}}
  end
  redis.call('XACK', KEYS[1], ARGV[1], p[1])
  pend = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1)
end
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
if not r then
  if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[5] .. '  ', 'PX', ${DEAD_MARK_MS}) end
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
  if last then return last[1] end
  return '0-0'
end
local e = r[1][2][1]
redis.call('SET', KEYS[3], ARGV[5] .. ' ' .. e[1] .. ' ', 'PX', ${DEAD_MARK_MS})
return {{e[1], e[2], '', 1}}
`);

/**
 * Ordered mode: counts one more delivery of an entry being retried in place (XCLAIM to itself
 * increments the delivery counter, so a new owner sees the attempts). KEYS: stream, lease.
 * ARGV: group, entry id, consumer, lease token, the delivery count before this call. Returns 1,
 * or 0 / -1 as {@link ACK}. A copy of the call sent again after its connection dropped finds
 * the count already one higher and answers 1 without counting again.
 */
export const REDELIVER = script(`
if not lease_ok(KEYS[2], ARGV[4]) then return -1 end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3])[1]
if p == nil then return 0 end
if p[4] == tonumber(ARGV[5]) + 1 then return 1 end
if p[4] ~= tonumber(ARGV[5]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2])
return 1
`);

/**
 * Hands a message back on close: still pending, but idle as if for `idle` ms, so another
 * consumer's next reclaim takes it at once (JUSTID: the delivery count stays). KEYS: stream.
 * ARGV: group, entry id, consumer, idle ms, delivery count (as {@link ACK}). Returns 1, or 0
 * when it is no longer this consumer's delivery.
 */
export const HAND_BACK = script(`
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[5]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'IDLE', ARGV[4], 'JUSTID')
return 1
`);

/**
 * Retention: trims entries older than `maxAgeMs` (by their id's time) or beyond the newest
 * `maxLen`, but never at or past the oldest entry some group still needs — its oldest pending
 * entry, or (with none pending) its last delivered one, past which nothing was read yet. So a
 * pending or undelivered message is never dropped. KEYS: stream. ARGV: max length (0: none),
 * max age ms (0: none). Returns how many entries were trimmed (0 when the stream does not exist:
 * a partition never sent to, or lost with a Redis restart). A max age reaching back before the
 * epoch trims nothing by age (its cut was a negative id, which `XTRIM` refused: every trim failed).
 */
export const TRIM = script(`
local max_len, max_age = tonumber(ARGV[1]), tonumber(ARGV[2])
local cut = nil
if max_len > 0 then
  local len = redis.call('XLEN', KEYS[1])
  if len > max_len then
    local r = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(len - max_len + 1, 10000))
    cut = r[#r][1]
  end
end
local before = now_ms() - max_age
if max_age > 0 and before > 0 then
  local a = string.format('%d', before) .. '-0'
  if cut == nil or id_before(cut, a) then cut = a end
end
if cut == nil then return 0 end
for _, g in ipairs(groups_of(KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local floor = info['last-delivered-id']
  if tonumber(info['pending']) > 0 then floor = redis.call('XPENDING', KEYS[1], info['name'])[2] end
  if id_before(floor, cut) then cut = floor end
end
return redis.call('XTRIM', KEYS[1], 'MINID', cut)
`);

/**
 * Trims what every group is done with: every entry below each group's oldest pending entry,
 * or — with none pending — at or below its last delivered one (with several groups, below the
 * lowest of those, so an entry stays until every group has acked it). Such an entry
 * was delivered (the group was created at id 0 and reads in id order) and is not pending, so
 * it was acked; its consumer may have died before deleting it (acked entries are deleted in
 * batches). Delayed and retried messages are added with new (higher) ids, so they are above
 * the cut until delivered. `XTRIM … MINID`
 * (Redis 6.2+) removes the entries whose id is lower than the given one:
 * https://redis.io/docs/latest/commands/xtrim/. KEYS: stream. Returns how many were trimmed (0
 * when the stream does not exist, as {@link TRIM}).
 */
export const TRIM_DONE = script(`
local cut = done_cut(KEYS[1])
if cut == nil then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', cut)
`);

/**
 * Replays one dead letter: removes it from the DLQ and adds the given fields to the stream, in
 * one step. KEYS: dlq, stream. ARGV: DLQ entry id, fields. Returns the new entry id, or 0 when
 * the dead letter is gone (replayed by someone else). A stream key holding foreign data of
 * another type fails the call before anything is written, naming the key: found only by the
 * XADD, after the XDEL, it lost the dead letter. The XDEL goes first (it frees memory): out of
 * memory under `noeviction`, Redis refuses none of a script's writes after its first.
 */
export const REPLAY = script(`
local t = redis.call('TYPE', KEYS[2])['ok']
if t ~= 'none' and t ~= 'stream' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' holds foreign data (a ' .. t .. ', not a stream)')
end
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
return redis.call('XADD', KEYS[2], '*', unpack(tail(2)))
`);

/**
 * Lease: take or renew. KEYS: lease. ARGV: token, ttl ms. Returns 1 held, 0 someone else's. A
 * lease key holding something that is not a string (foreign data) is no one's lease: it is
 * replaced, rather than refusing (WRONGTYPE) the partition to every consumer for good. So is a
 * string without an expiry: every lease Keel writes expires (`SET … PX`, renewed by `PEXPIRE`),
 * and one that never does kept the partition from every consumer for good. Asked (`PTTL`) only
 * of a lease that is not the caller's.
 *
 * A renewal only moves the key's expiry (`PEXPIRE`, which never needs memory), so a holder keeps
 * its lease while Redis is out of memory under `noeviction` — where a `SET` is refused — rather
 * than losing the partition mid-message, the message then delivered again. Taking a free lease
 * writes the key (`SET`): refused then, as any new write is.
 */
export const LEASE = script(`
local cur = redis.pcall('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur == false or type(cur) == 'table' or redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`);

/** Lease: give up if still ours. KEYS: lease. ARGV: token. */
export const UNLEASE = script(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

/**
 * Group membership heartbeat for ordered consumers: KEYS: members ZSET. ARGV: member, ttl ms,
 * leave ('1' to leave). Returns the live members.
 *
 * Expired members go first: a removal never needs memory, and once a script has written, Redis
 * refuses none of its later writes for memory, so the heartbeat goes on while Redis is out of
 * memory under `noeviction` (a member entry is a few bytes; without it every consumer would see
 * the group change). A key holding something that is not a sorted set (foreign data) is
 * replaced: refused (WRONGTYPE), every consumer of the group would be kept off every partition.
 * Only then: any other refusal (an ACL that denies the command, say) is raised with nothing
 * written, naming the command and key (Redis's own text for an ACL refusal names neither), since
 * the key holds the group's real membership.
 */
export const MEMBERS = script(`
local now = now_ms()
local swept = redis.pcall('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if type(swept) == 'table' then
  if string.sub(swept.err, 1, 9) ~= 'WRONGTYPE' then
    return redis.error_reply(swept.err .. ' (ZREMRANGEBYSCORE ' .. KEYS[1] .. ')')
  end
  redis.call('DEL', KEYS[1])
end
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 4)
return redis.call('ZRANGE', KEYS[1], 0, -1)
`);

/**
 * Idempotent effect: applies a list of commands and records the message as processed, unless
 * it already was. The record is taken first (`SET NX`: one command does the check and the
 * write); a command that fails gives it back and fails the script, so the message is not
 * recorded as processed and its retry applies the effect (scripts are not rolled back: the
 * commands before the failing one stay applied, as they did when the record was written last).
 * `redis.pcall` returns a command's error instead of raising it:
 * https://redis.io/docs/latest/develop/interact/programmability/lua-api/#redis.pcall
 * KEYS: processed-record key, then every command's keys in order. ARGV: record ttl ms, command
 * count, then per command: key count, arg count, name, args. Returns 1 applied, 0 already
 * processed.
 */
export const APPLY_ONCE = luaScript(`
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local ki, ai = 2, 3
for _ = 1, tonumber(ARGV[2]) do
  local nk, na = tonumber(ARGV[ai]), tonumber(ARGV[ai + 1])
  local cmd = {ARGV[ai + 2]}
  ai = ai + 3
  for _ = 1, nk do cmd[#cmd + 1] = KEYS[ki]; ki = ki + 1 end
  for _ = 1, na do cmd[#cmd + 1] = ARGV[ai]; ai = ai + 1 end
  local r = redis.pcall(unpack(cmd))
  if type(r) == 'table' and r.err ~= nil then
    redis.call('DEL', KEYS[1])
    return redis.error_reply(r.err)
  end
end
return 1
`);
