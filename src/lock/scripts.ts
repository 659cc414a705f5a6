/**
 * The Lua scripts of the lock, one round trip each, atomic on a node. Keys of a multi-resource
 * lock are passed as `KEYS`: lock keys first, then their fencing counters (then, on standalone
 * nodes, the node's incarnation key; see fencing.ts).
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { createHash } from 'node:crypto';

/** A script with its SHA-1, for EVALSHA with an EVAL fallback on NOSCRIPT. */
export interface Script {
  readonly source: string;
  readonly sha: string;
  /** Its number in {@link BATCH}. */
  readonly id: number;
  /** Its body, as the body of a Lua function of (KEYS, ARGV). */
  readonly body: string;
}

const all: Script[] = [];

/**
 * Added to a fencing counter known to be intact (see {@link ACQUIRE}): a counter above it holds
 * `FENCE_TAG + its fence`. Tokens stay far below it (one acquisition per microsecond would
 * take 35 years to reach it), and every value, tagged or not, is an integer Lua's doubles hold
 * exactly (below 2^53).
 */
export const FENCE_TAG = 2 ** 50;
const TAG = String(FENCE_TAG);

const sha1 = (text: string): string => createHash('sha1').update(text).digest('hex');

function script(body: string): Script {
  const made = { source: body, sha: sha1(body), id: all.length + 1, body };
  all.push(made);
  return made;
}

/**
 * Appended to a holder's token on a node when an acquisition refused there asked to be woken by
 * the release (see {@link ACQUIRE}); not a hex digit, so a marked token never equals a token.
 */
export const WAITING_MARK = '+w';
const MARK = WAITING_MARK;

/** The token a lock key's value stands for: the value without its {@link WAITING_MARK}. */
export const unmarked = (value: string): string =>
  value.endsWith(MARK) ? value.slice(0, -MARK.length) : value;

/**
 * Acquire every resource or none: fail with the index of a taken key, its remaining ttl (so a
 * waiter knows when it frees up by expiry) and its holder's id (16 hex digits of the SHA-1 of
 * the value it holds, as {@link RELEASE} publishes; '' for a value that is not a string), so a
 * client can tell a lock held by one holder on a quorum from contenders that split the vote,
 * and from a release still landing — else SET each key `PX ttl` to the token and INCR its
 * fencing counter.
 *
 * KEYS: the lock keys, their fencing counters, and (standalone nodes) the node's incarnation
 * key last — an odd key count means it is there. A node without its incarnation key lost its
 * data since the fencing counters were last known good there (a restart without persistence, a
 * flush): its counters must not be counted (see fencing.ts), so the reply says so. One resource
 * may be sent without the incarnation key (two keys): a tagged counter (below) is answered as
 * intact, as with the key, and an untagged one — which only the key could vouch for — as not
 * counted (`-fence`, the answer of a node without its key). A standalone client sends the two
 * keys once the resource's counter was tagged on every node that granted its last acquisition
 * (`AcquireKeys.tagged` in redlock.ts), and the three again after a node answered `-fence`;
 * each node then takes in one key less per acquisition — measured with
 * `bench/lock-redis-count.ts`, see bench/README.md. On Redis Cluster (always two keys, no
 * incarnation key there) the client counts every grant. ARGV: the
 * token, the ttl, and (optional) how long (ms) a refused acquirer may take before its next
 * attempt — without it a refusal marks nothing (a lock's first round goes without; see
 * `AcquirePlan.firstRoundUnmarked`).
 * Returns `{1, fence…}` (or `{2, fence…}` from such a node), or for one resource just its
 * fence (an integer ≥ 1, negated from such a node or for an unchecked counter), or
 * `{0, index, pttl, holder}`.
 *
 * Tagged counters: the incarnation check is made once per counter, not once per grant. A
 * counter that passed it holds its fence plus {@link FENCE_TAG} ("tagged"); the INCR of a
 * tagged counter answers above the tag, and the script returns it, less the tag, as intact
 * without reading the incarnation key. An untagged counter (new, an old-format counter of
 * Keel ≤ 0.1, or one written while the node lacked its incarnation key) is checked: key there
 * → intact, and tagged now (INCRBY, atomic with the check) unless this was its first grant;
 * key gone → answered as not intact and left untagged. (A counter is tagged from its second
 * grant on: measured with a new resource name per cycle — a lock per entity — tagging at once
 * cost each node ~6k instructions more per cycle than the EXISTS it was to save; a resource
 * locked again pays one INCRBY, once.) Why a tag may stand for the check: only two writes make a counter tagged
 * — this script and {@link SETTLE_FENCE}, each atomically with finding the incarnation key —
 * and every other write keeps a counter's tag as it was (the repair's copy step, the catch-up
 * of an emptied node, an undone attempt's INCR: all leave an untagged counter untagged, and
 * only raise a tagged one). So a tagged counter on a node means: the node had its incarnation
 * key when the counter was tagged, and has not lost its data since — a loss takes the tag
 * with the counter, exactly as it takes the incarnation key. That is all the proof in
 * redlock.ts uses of "intact" (step 2: a node counted after a loss was repaired after it), so
 * counting a tagged counter is counting a counter of an intact node. (What it gives up: the
 * incarnation key deleted by hand, without a loss, no longer stops that node's tagged
 * counters from counting — which is right, they were not lost.) Every reader decodes: the
 * scripts here, the repair's scan; the client only ever sees fences.
 * Mixed versions: a Keel ≤ 0.1 client reading a tagged counter would issue tokens near 2^50,
 * above every token of this format — do not run both on the same counters.
 *
 * A refusal with ARGV[3] also marks interest in the taken key's release, in the key itself: the
 * holder's token gets {@link WAITING_MARK} appended, its ttl kept (see {@link RELEASE}, which
 * publishes only when it finds the mark, and {@link EXTEND}, which accepts the marked token). The
 * mark is made on the node, atomically with the refusal, so a release that runs there later finds
 * it; it lives exactly as long as the holder's key. Only a value shaped like a Keel token (40 hex
 * digits) is marked — a foreign value is never rewritten — and the holder id is taken from the
 * unmarked token. (Until 0.1 the mark was a separate `<key>:waiting` key: one more EXISTS in
 * every release, about 6% of the Redis-side instructions of an uncontended acquire + release.)
 * ARGV[3] is no longer a duration; any value asks for the mark.
 *
 * One resource (the common case) takes one `SET NX PX` instead of a check and a SET, and
 * answers a plain integer: this script runs on every node for every acquisition, and measured
 * over five local nodes an array reply (parsed by the client) cost about 6% of an uncontended
 * acquire + release, a separate check about 4%. The refusal details are read only on refusal
 * (inline: a local function would be a new closure on every call); the incarnation check is
 * one EXISTS inside the script, no extra round trip, made only when the script grants (its
 * answer matters only then; atomic with the grant all the same).
 *
 * Sent twice. ioredis sends a command again when its connection drops before the reply was read
 * (`autoResendUnfulfilledCommands`, on by default); the first copy may have run. So a key that
 * already holds this very token (marked or not) is no refusal: the call granted it, and the copy
 * answers as a grant — it INCRs the counter again and leaves the key (and its ttl, set by the
 * first copy, after the round began) as it is. Without this, a quorum of such nodes failed the
 * attempt, and its undo skipped them (a refusal lands nothing), so the next attempts found the
 * resource held by the lost attempt's token until its ttl. The second INCR skips one value on
 * that node (as an undone attempt's INCR does); a fresh INCR, not a read of the counter, is what
 * the fencing proof in redlock.ts counts on (a repair between the two copies may have raised the
 * counter to another lock's token). Tokens are 160 random bits, so no other call has this one.
 *
 * What the fencing costs a node, measured (valgrind callgrind on five local redis-servers 7.0,
 * user-space instructions per node per uncontended acquire + release): session 12, with the
 * EXISTS in every grant, 63.2k–64.7k against node-redlock's 55.5k–56.3k; with tagged counters
 * (`bench/lock-redis-count.ts`, 2000 cycles, the same run) 3.5k–3.9k less per node, and the
 * same as before with a new resource per cycle (see bench/README.md). A node-wide hash (`HINCRBY <prefix>fences <lock key> 1`) came to
 * 63.8k–64.7k with the EXISTS: HINCRBY on a hash field costs more than INCR on a key. The
 * EXISTS cannot be skipped merely for a counter that already exists: an emptied node's counters
 * are created by INCRs, catch-ups and repair copies while it lacks its key, so existing says
 * nothing about having been checked — the tag does.
 */
export const ACQUIRE = script(`
local nk = #KEYS
local taken = 0
local holder = nil
if nk < 4 then
  local won = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
  if not won then
    holder = redis.pcall('GET', KEYS[1])
    won = holder == ARGV[1] or holder == ARGV[1] .. '${MARK}'
  end
  if won then
    local fence = redis.call('INCR', KEYS[2])
    if fence > ${TAG} then return fence - ${TAG} end
    if nk == 2 then return -fence end
    if redis.call('EXISTS', KEYS[3]) == 0 then return -fence end
    if fence > 1 then redis.call('INCRBY', KEYS[2], '${TAG}') end
    return fence
  end
  taken = 1
else
  local n = math.floor(nk / 2)
  local own = ARGV[1] .. '${MARK}'
  local mine = nil
  for i = 1, n do
    local value = redis.pcall('GET', KEYS[i])
    if value == ARGV[1] or value == own then
      mine = mine or {}
      mine[i] = true
    elseif value then
      taken = i
      holder = value
      break
    end
  end
  if taken == 0 then
    local out = {1}
    local known = nil
    for i = 1, n do
      if mine == nil or not mine[i] then redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2]) end
      local fence = redis.call('INCR', KEYS[n + i])
      if fence > ${TAG} then
        fence = fence - ${TAG}
      elseif nk % 2 == 1 then
        if known == nil then known = redis.call('EXISTS', KEYS[nk]) end
        if known == 0 then
          out[1] = 2
        elseif fence > 1 then
          redis.call('INCRBY', KEYS[n + i], '${TAG}')
        end
      end
      out[i + 1] = fence
    end
    return out
  end
end
local key = KEYS[taken]
local pttl = redis.call('PTTL', key)
if type(holder) == 'string' then
  local marked = string.sub(holder, 41) == '${MARK}'
  if marked then holder = string.sub(holder, 1, 40) end
  if ARGV[3] and not marked and pttl > 0 and #holder == 40 and not string.find(holder, '[^0-9a-f]') then
    redis.call('SET', key, holder .. '${MARK}', 'PX', pttl)
  end
  holder = string.sub(redis.sha1hex(holder), 1, 16)
else
  holder = ''
end
return {0, taken, pttl, holder}
`);

/**
 * Settle fencing tokens when the granting nodes did not agree: raise each counter to its
 * wanted token where it is below it. KEYS: the n counters, then (standalone) the incarnation
 * key. ARGV: n, the n wanted tokens. Returns `{intact, covered, c…}`: intact is 0 when the
 * incarnation key is missing (see {@link ACQUIRE}), covered how many counters were strictly
 * below their token (and now hold it), c each counter as it was before (decoded, see
 * {@link FENCE_TAG}). A raised counter is written tagged when the incarnation key is there or it
 * was tagged already, else untagged (see {@link ACQUIRE}).
 */
export const SETTLE_FENCE = script(`
local n = tonumber(ARGV[1])
local intact = 1
if #KEYS > n and redis.call('EXISTS', KEYS[#KEYS]) == 0 then intact = 0 end
local tag = #KEYS > n and intact == 1
local out = {intact, 0}
for i = 1, n do
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  local tagged = current > ${TAG}
  if tagged then current = current - ${TAG} end
  local wanted = tonumber(ARGV[i + 1])
  if current < wanted then
    if tagged or tag then wanted = wanted + ${TAG} end
    redis.call('SET', KEYS[i], string.format('%.0f', wanted))
    out[2] = out[2] + 1
  end
  out[i + 2] = current
end
return out
`);

/** Is the node's incarnation key there (KEYS[1])? 1 or 0. */
export const FENCE_STATUS = script(`
return redis.call('EXISTS', KEYS[1])
`);

/**
 * One page of the fencing counters on a node, for a repair. KEYS: the incarnation key, the
 * repair-session set. ARGV: cursor, MATCH pattern, COUNT, session id. Returns `{intact,
 * in session, next cursor, key, value, key, value…}` (values decoded, see {@link FENCE_TAG};
 * values that are not integers are left out; SCAN returns every key present for the whole
 * scan, and counters are never deleted).
 */
export const FENCE_SCAN = script(`
local intact = redis.call('EXISTS', KEYS[1])
local member = redis.call('SISMEMBER', KEYS[2], ARGV[4])
local page = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local out = {intact, member, page[2] and page[1] or '0'}
for _, key in ipairs(page[2] or {}) do
  local value = redis.pcall('GET', key)
  if type(value) == 'string' and tonumber(value) then
    value = tonumber(value)
    if value > ${TAG} then value = value - ${TAG} end
    out[#out + 1] = key
    out[#out + 1] = value
  end
end
return out
`);

/**
 * Repair a node's fencing counters, in steps of one repair session (ARGV[1], a random id kept
 * in the session set KEYS[2] — gone if the node restarts meanwhile, so a repair never marks a
 * node it did not fully write). ARGV[2] is the step:
 * - `begin` (ARGV[3] = session ttl ms): 2 if the incarnation key KEYS[1] is already there,
 *   else join the session set and return 1;
 * - `copy` (KEYS[3…] counters, ARGV[3] = session ttl, ARGV[4…] values): raise each counter
 *   to its value (a key that holds no integer, not ours, is left alone), keeping it tagged
 *   or untagged as it was — the node lacks its incarnation key, so nothing here tags a counter
 *   (see {@link ACQUIRE}); 1, or 0 if the session is gone;
 * - `end` (ARGV[3] = the new incarnation id): set the incarnation key, leave the session;
 *   1, or 0 if the session is gone.
 */
export const FENCE_REPAIR = script(`
local step = ARGV[2]
if step == 'begin' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 2 end
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then return 0 end
if step == 'copy' then
  for i = 3, #KEYS do
    local raw = redis.pcall('GET', KEYS[i])
    local current = nil
    if raw == false then current = 0 elseif type(raw) == 'string' then current = tonumber(raw) end
    local wanted = tonumber(ARGV[i + 1])
    if current ~= nil and current > ${TAG} then
      if current - ${TAG} < wanted then
        redis.call('SET', KEYS[i], string.format('%.0f', wanted + ${TAG}))
      end
    elseif current ~= nil and current < wanted then
      redis.call('SET', KEYS[i], wanted)
    end
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
`);

/**
 * Compare-and-delete: delete the keys that still hold the token (`ARGV[1]`); returns how many.
 * A key may hold the token with {@link WAITING_MARK} appended (an acquisition refused there
 * asked to be woken, see {@link ACQUIRE}); it is the holder's all the same. A release (no
 * `ARGV[2]`, or '1') that deletes a marked key PUBLISHes the holder's id on `<key>:released`,
 * waking one waiter: 16 hex digits of the SHA-1 of the token, the same on every node, so that
 * the N copies of one release count once, and the id {@link ACQUIRE} names a holder by. A
 * failed attempt's undo (`ARGV[2]` = '0': nobody waits for a lock that was never granted)
 * never publishes.
 *
 * Publishing only where someone waits: with nobody waiting (the uncontended cycle) a release
 * is a GET and a DEL per node, as in the Redlock paper's release — no PUBLISH, no SHA-1 on the
 * client, one argument less — and the subscribers of other channels on the node are not
 * involved either. The mark goes with the key, so waiters a release did not wake must be known
 * to the next release some other way: a waiter woken but refused again marks the next holder's
 * token on that round; one that was not woken waits in a process that wakes one waiter per
 * release and channel (see notifier.ts), so the next holder is likely its neighbour — a release
 * with `ARGV[2]` = '1' (its Redlock has acquisitions subscribed to the channel) publishes
 * whether marked or not.
 *
 * One key without `ARGV[2]` (the uncontended release) takes a straight path — the same steps
 * without the loop and its bookkeeping, measured with `bench/lock-redis-count.ts`.
 */
export const RELEASE = script(`
if #KEYS == 1 and not ARGV[2] then
  local value = redis.call('GET', KEYS[1])
  if value == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
  end
  if value and value == ARGV[1] .. '${MARK}' then
    redis.call('DEL', KEYS[1])
    redis.call('PUBLISH', KEYS[1] .. ':released', string.sub(redis.sha1hex(ARGV[1]), 1, 16))
    return 1
  end
  return 0
end
local deleted = 0
local id = nil
for i = 1, #KEYS do
  local value = redis.call('GET', KEYS[i])
  local publish = false
  if value == ARGV[1] then
    redis.call('DEL', KEYS[i])
    deleted = deleted + 1
    publish = ARGV[2] == '1'
  elseif value and value == ARGV[1] .. '${MARK}' then
    redis.call('DEL', KEYS[i])
    deleted = deleted + 1
    publish = ARGV[2] ~= '0'
  end
  if publish then
    if id == nil then id = string.sub(redis.sha1hex(ARGV[1]), 1, 16) end
    redis.call('PUBLISH', KEYS[i] .. ':released', id)
  end
end
return deleted
`);

export const EXTEND = script(`
local marked = nil
for i = 1, #KEYS do
  local value = redis.call('GET', KEYS[i])
  if value ~= ARGV[1] then
    if marked == nil then marked = ARGV[1] .. '${MARK}' end
    if value ~= marked then return 0 end
  end
end
for i = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 1
`);

/*
 * Counting semaphore, one sorted set per node, as `limit` numbered slots: a permit is a member
 * `<slot>:<token>`, scored with its expiry in Redis server milliseconds (TIME inside the
 * script — never a client clock, so holders on machines with skewed clocks still agree on who
 * expired). The client asks for specific slots; a node grants only if every one of them is
 * free there. Each slot is then a Redlock mutex of its own (two quorums intersect, and the
 * common node refuses a slot it already holds), so at most `limit` permits are out — counting
 * members per node instead would not be safe: four holders granted by different quorums of
 * five nodes can each fit under a per-node count of three.
 *
 * Members that do not parse, or name a slot outside 0 … limit − 1, are moved to a quarantine
 * set and counted in the reply instead of being trusted. `redis.replicate_commands()` lets
 * TIME precede writes on Redis 3.2–4 (a no-op from 5 on).
 * A member of this very token is not counted as taken: the call may run twice (ioredis sends a
 * command again after a dropped connection; see {@link ACQUIRE}), and the second copy finds the
 * first one's slots — it grants them again (re-scored from now: a later expiry only keeps the
 * slot longer than its holder counts on). Only this call has the token, so no slot gets a second
 * holder.
 * KEYS: the set, its quarantine. ARGV: token, ttl, limit, slots… Returns `{1, {}, 0, q}` or
 * `{0, {taken slots}, ms until the first expiry, q}`, q = members quarantined.
 */
const SEM_PRELUDE = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

export const SEM_ACQUIRE = script(`${SEM_PRELUDE}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local limit, ttl = tonumber(ARGV[3]), tonumber(ARGV[2])
local taken, list, soonest, quarantined = {}, {}, -1, 0
for i = 1, #entries, 2 do
  local slot, holder = string.match(entries[i], '^(%d+):(.+)$')
  slot = tonumber(slot)
  if slot == nil or slot >= limit then
    redis.call('SADD', KEYS[2], entries[i])
    redis.call('ZREM', KEYS[1], entries[i])
    quarantined = quarantined + 1
  elseif holder ~= ARGV[1] then
    if not taken[slot] then list[#list + 1] = slot end
    taken[slot] = true
    local left = tonumber(entries[i + 1]) - now
    if soonest < 0 or left < soonest then soonest = left end
  end
end
for i = 4, #ARGV do
  if taken[tonumber(ARGV[i])] then return {0, list, soonest, quarantined} end
end
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i] .. ':' .. ARGV[1])
end
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return {1, {}, 0, quarantined}
`);

/** Extend live slots (not yet expired by server time) to now + ttl. ARGV: token, ttl, slots… */
export const SEM_EXTEND = script(`${SEM_PRELUDE}
for i = 3, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i] .. ':' .. ARGV[1])
  if not score or tonumber(score) <= now then return 0 end
end
local ttl = tonumber(ARGV[2])
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i] .. ':' .. ARGV[1])
end
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
`);

/**
 * Remove a holder's slots (ARGV: token, publish flag, slots…); 1 if every one was still live,
 * else 0. With `ARGV[2] == '1'` and something live removed, PUBLISH `*` on `<set>:released` to
 * wake every waiter: freed permits may serve several.
 */
export const SEM_RELEASE = script(`${SEM_PRELUDE}
local live, removed = 1, 0
for i = 3, #ARGV do
  local member = ARGV[i] .. ':' .. ARGV[1]
  local score = redis.call('ZSCORE', KEYS[1], member)
  if not score then
    live = 0
  else
    redis.call('ZREM', KEYS[1], member)
    if tonumber(score) <= now then live = 0 else removed = removed + 1 end
  end
end
if removed > 0 and ARGV[2] == '1' then redis.call('PUBLISH', KEYS[1] .. ':released', '*') end
return live
`);

/**
 * Several script calls in one: `ARGV` = count, then per call its script number, key count,
 * argument count and arguments; `KEYS` = every call's keys in order. Runs each call's script
 * as a function of its own keys and arguments (a failing call is caught with `pcall` and
 * reported, the others still run) and returns `{1, reply}` or `{0, error}` per call. The
 * channel uses it to send the calls a tick issues to one node as one command (see channel.ts);
 * each call is exactly the script it would have run alone, and the batch as a whole is atomic
 * on the node — never weaker than the calls one by one.
 */
export const BATCH: Script = ((): Script => {
  const functions = all.map((s) => `[${s.id}] = function(KEYS, ARGV)\n${s.body}\nend`).join(',\n');
  const source = `
if redis.replicate_commands then redis.replicate_commands() end
local scripts = {
${functions}
}
local out = {}
local k, a = 1, 2
for i = 1, tonumber(ARGV[1]) do
  local id, nk, na = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local keys, args = {}, {}
  for j = 1, nk do keys[j] = KEYS[k]; k = k + 1 end
  for j = 1, na do args[j] = ARGV[a]; a = a + 1 end
  local ok, reply = pcall(scripts[id], keys, args)
  if ok then
    out[i] = {1, reply}
  else
    if type(reply) == 'table' and reply.err then reply = reply.err end
    out[i] = {0, tostring(reply)}
  end
end
return out
`;
  return { source, sha: sha1(source), id: 0, body: source };
})();
