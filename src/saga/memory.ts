/**
 * `MemorySagaBackend`: an in-process stand-in for the Redis server that `keel/saga`'s scripts run
 * on, for one process (tests, embedded runs, a demo without Redis). It answers `EVALSHA` / `EVAL`
 * for exactly the saga and idempotency scripts, each ported here line by line from its Lua with
 * the same keys, arguments and replies, over a small keyspace (hashes, lists, sorted sets, key
 * expiry). Each call runs synchronously, so it is atomic as a script on Redis is.
 *
 * Coordinators and `IdempotencyKeys` given the same backend share their sagas and keys, as
 * processes sharing one Redis do: a coordinator that stops (or whose owner id changes) is taken
 * over by another one within its lease. Nothing survives the process.
 *
 * Internal module: the public name is re-exported by `keel/saga`.
 * @packageDocumentation
 */
import { resolveOptions, type LuaScript } from '../core/index.js';
import { functionOption } from '../core/options.js';
import { ACQUIRE, COMPLETE, RELEASE, RENEW, UNDO_BEGIN, UNDO_END } from './idempotency.js';
import { CANCEL, CLAIM, LIST, READ, START, TRANSITION, TRANSITIONS } from './scripts.js';

type Value =
  | { readonly kind: 'hash'; readonly map: Map<string, string> }
  | { readonly kind: 'list'; items: string[] }
  | { readonly kind: 'zset'; readonly map: Map<string, number> };

interface Entry {
  value: Value;
  /** Epoch ms at which the key expires; 0: never. */
  expireAt: number;
}

/** The few Redis commands the scripts use, with Redis's semantics for them. */
class Keyspace {
  readonly #data = new Map<string, Entry>();
  readonly #clock: () => number;
  /** The instant a script call runs at (set for the length of the call). */
  #instant: number | undefined;

  constructor(now: () => number) {
    this.#clock = now;
  }

  /** The time now: within {@link Keyspace.atOneInstant}, the same all along (as in a script). */
  now(): number {
    return this.#instant ?? this.#clock();
  }

  /**
   * Runs `fn` at one instant: a script runs atomically, and a batch of transitions in one
   * script reads the server time once, so each of them sees the same time.
   */
  atOneInstant<T>(fn: () => T): T {
    this.#instant = this.#clock();
    try {
      return fn();
    } finally {
      this.#instant = undefined;
    }
  }

  #get(key: string): Entry | undefined {
    const entry = this.#data.get(key);
    if (entry !== undefined && entry.expireAt > 0 && entry.expireAt <= this.now()) {
      this.#data.delete(key);
      return undefined;
    }
    return entry;
  }

  #of<K extends Value['kind']>(
    key: string,
    kind: K,
    create: boolean,
  ): Extract<Value, { kind: K }> | undefined {
    const entry = this.#get(key);
    if (entry !== undefined) {
      if (entry.value.kind !== kind) {
        throw new Error('WRONGTYPE Operation against a key holding the wrong kind of value');
      }
      return entry.value as Extract<Value, { kind: K }>;
    }
    if (!create) return undefined;
    const value = (kind === 'list' ? { kind, items: [] } : { kind, map: new Map() }) as Extract<
      Value,
      { kind: K }
    >;
    this.#data.set(key, { value, expireAt: 0 });
    return value;
  }

  /** Drops a key whose collection became empty (Redis never keeps an empty one). */
  #tidy(key: string): void {
    const entry = this.#data.get(key);
    if (entry === undefined) return;
    const v = entry.value;
    if ((v.kind === 'list' ? v.items.length : v.map.size) === 0) this.#data.delete(key);
  }

  /** Forgets every expired key (the backend calls it now and then). */
  sweep(): void {
    const now = this.now();
    for (const [key, entry] of this.#data) {
      if (entry.expireAt > 0 && entry.expireAt <= now) this.#data.delete(key);
    }
  }

  get size(): number {
    return this.#data.size;
  }

  exists(key: string): boolean {
    return this.#get(key) !== undefined;
  }

  del(key: string): void {
    this.#data.delete(key);
  }

  pexpire(key: string, ms: number): void {
    const entry = this.#get(key);
    if (entry !== undefined) entry.expireAt = this.now() + ms;
  }

  hget(key: string, field: string): string | null {
    return this.#of(key, 'hash', false)?.map.get(field) ?? null;
  }

  hmget(key: string, fields: readonly string[]): (string | null)[] {
    const map = this.#of(key, 'hash', false)?.map;
    return fields.map((f) => map?.get(f) ?? null);
  }

  hset(key: string, fields: Readonly<Record<string, string | number>>): void {
    const map = (this.#of(key, 'hash', true) as { map: Map<string, string> }).map;
    for (const [f, v] of Object.entries(fields)) map.set(f, String(v));
  }

  hincrby(key: string, field: string, by: number): number {
    const next = Number(this.hget(key, field) ?? 0) + by;
    this.hset(key, { [field]: next });
    return next;
  }

  hdel(key: string, fields: readonly string[]): void {
    const hash = this.#of(key, 'hash', false);
    if (hash === undefined) return;
    for (const f of fields) hash.map.delete(f);
    this.#tidy(key);
  }

  hgetall(key: string): string[] {
    const map = this.#of(key, 'hash', false)?.map;
    return map === undefined ? [] : [...map].flat();
  }

  /** Appends `item`; answers the list's new length, as Redis does. */
  rpush(key: string, item: string): number {
    return (this.#of(key, 'list', true) as { items: string[] }).items.push(item);
  }

  /** Redis index rules: negative counts from the end; an empty range deletes the key. */
  #range(length: number, start: number, stop: number): [number, number] {
    const from = Math.max(0, start < 0 ? length + start : start);
    const to = Math.min(length - 1, stop < 0 ? length + stop : stop);
    return [from, to];
  }

  ltrim(key: string, start: number, stop: number): void {
    const list = this.#of(key, 'list', false);
    if (list === undefined) return;
    const [from, to] = this.#range(list.items.length, start, stop);
    list.items = from > to ? [] : list.items.slice(from, to + 1);
    this.#tidy(key);
  }

  lrange(key: string, start: number, stop: number): string[] {
    const items = this.#of(key, 'list', false)?.items ?? [];
    const [from, to] = this.#range(items.length, start, stop);
    return from > to ? [] : items.slice(from, to + 1);
  }

  zadd(key: string, score: number, member: string): void {
    (this.#of(key, 'zset', true) as { map: Map<string, number> }).map.set(member, score);
  }

  zrem(key: string, member: string): void {
    const zset = this.#of(key, 'zset', false);
    if (zset === undefined) return;
    zset.map.delete(member);
    this.#tidy(key);
  }

  /** Members by score, ties by member (byte order, as Redis sorts them). */
  #sorted(key: string): [string, number][] {
    const map = this.#of(key, 'zset', false)?.map;
    if (map === undefined) return [];
    return [...map].sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }

  zrangebyscore(key: string, max: number, limit: number): string[] {
    return this.#sorted(key)
      .filter(([, score]) => score <= max)
      .slice(0, limit)
      .map(([m]) => m);
  }

  zrange(key: string): string[] {
    return this.#sorted(key).map(([m]) => m);
  }

  zrevrange(key: string, stop: number): string[] {
    return this.#sorted(key)
      .reverse()
      .slice(0, stop + 1)
      .map(([m]) => m);
  }

  zremrangebyscore(key: string, max: number): void {
    const zset = this.#of(key, 'zset', false);
    if (zset === undefined) return;
    for (const [m, score] of zset.map) if (score <= max) zset.map.delete(m);
    this.#tidy(key);
  }
}

/** A script's port: keys and arguments as Redis passes them (strings), reply as Lua builds it. */
type Port = (ks: Keyspace, keys: readonly string[], argv: readonly string[]) => unknown;

const isLive = (st: string | null | undefined): boolean =>
  st === 'running' || st === 'compensating';

// ---- saga scripts (see scripts.ts for the Lua and the layout) --------------------------------

const transition: Port = (ks, keys, a) => {
  const now = ks.now();
  const [h, hist, live, finCompleted, finCompensated, finParked] = keys as string[];
  const id = a[0] as string;
  const fence = a[2] as string;
  const s = ks.hmget(h as string, [
    'st',
    'ow',
    'f',
    'v',
    'cur',
    'cj',
    'dl',
    'cx',
    'ns',
    'ph',
    'why',
    'ix',
  ]);
  const [st, ow, f, ver, cur, cjNow, dl, cx, ns, ph, whyNow, ixNow] = s;
  if (st === null) return '0|missing|0|0|';
  // Replies as the Lua builds them: one string (see TRANSITION in scripts.ts).
  const refuse = (why: string): string => `0|${why}|${f ?? ''}|${ver ?? ''}|${st}`;
  if (ow !== a[1] || f !== fence) return refuse('fenced');
  const op = a[8];
  const step = Number(a[9]);
  let detail = a[10] as string;
  const lease = now + Number(a[4]);
  if (!isLive(st)) return refuse('state');
  // A heartbeat checks the owner and fence only: it may cross a transition of the same owner.
  if (op !== 'renew' && ver !== a[3]) return refuse('version');
  /**
   * The index moves only when the lease moved past half its length from the indexed score (or
   * back, or the score is unknown): the index stays at or below the lease (see TRANSITION).
   */
  const reindex = (): boolean => {
    // The Lua compares same-length decimal texts, which order as their numbers do.
    const text = String(lease);
    const floor = String(lease - Math.floor(Number(a[4]) / 2));
    const held =
      typeof ixNow === 'string' &&
      ixNow.length === text.length &&
      floor.length === text.length &&
      ixNow >= floor &&
      ixNow <= text &&
      /^\d+$/.test(ixNow);
    if (held) return false;
    ks.zadd(live as string, lease, id);
    return true;
  };
  if (op === 'renew') {
    ks.hdel(h as string, ['ls']); // as the Lua (a write Redis allows out of memory): same order
    ks.hset(h as string, reindex() ? { ls: lease, ix: lease } : { ls: lease });
    return `1|${ver ?? ''}|${now}|${lease}|${cjNow ?? ''}|${st}`;
  }
  let v = Number(ver) + 1;
  // The fields this transition changes, written at its end in one HSET (in the Lua's order).
  const set: Record<string, string | number> = {};
  let cj: string | number = cjNow ?? '';
  let why = whyNow;
  const reply = (status: string, leaseNow: number): string =>
    `1|${v}|${now}|${leaseNow}|${cj}|${status}${typeof why === 'string' ? `|${why}` : ''}`;
  const log = (event: string): void => {
    const cap = Number(a[5]);
    const n = ks.rpush(hist as string, `${now}|${v}|${fence}|${event}|${step}|${detail}`);
    if (n > cap) ks.ltrim(hist as string, -cap, -1);
  };
  const finish = (status: string, event: string): string => {
    Object.assign(set, { st: status, v, up: now, ls: 0, ph: 'idle' });
    ks.hset(h as string, set);
    ks.zrem(live as string, id);
    log(event);
    const fin =
      status === 'compensated'
        ? finCompensated
        : status === 'needs-attention'
          ? finParked
          : finCompleted;
    ks.zadd(fin as string, now, id);
    if (status !== 'needs-attention') {
      const retention = Number(a[6]);
      ks.ltrim(hist as string, -Number(a[7]), -1);
      ks.pexpire(h as string, retention);
      ks.pexpire(hist as string, retention);
      ks.zremrangebyscore(fin as string, now - retention);
    }
    return reply(status, 0);
  };
  const advance = (status: string, event: string): string => {
    if (reindex()) set.ix = lease;
    Object.assign(set, { v, up: now, ls: lease });
    ks.hset(h as string, set);
    log(event);
    return reply(status, lease);
  };
  const compensate = (j: number, reason: string, event: string): string => {
    cj = j;
    why = reason;
    Object.assign(set, { cj: j, why: reason, ph: 'idle' });
    if (j < 0) return finish('compensated', event);
    set.st = 'compensating';
    return advance('compensating', event);
  };
  const begun = (): number => (ph === 'run' ? step : step - 1);
  if (op === 'begin' || op === 'done' || op === 'fail' || op === 'next') {
    if (st !== 'running' || Number(cur) !== step) return refuse('state');
  } else if (st !== 'compensating' || Number(cjNow) !== step) {
    return refuse('state');
  }
  const arg = a[11] as string;
  switch (op) {
    case 'begin': {
      let reason: string | undefined;
      if (cx === '1') reason = 'cancelled';
      else if (Number(dl) > 0 && now >= Number(dl)) reason = 'saga-timeout';
      if (reason !== undefined) return compensate(begun(), reason, 'fail');
      Object.assign(set, { ph: 'run', [`a:${step}`]: arg });
      return advance('running', 'begin');
    }
    case 'done':
      Object.assign(set, { [`o:${step}`]: arg, cur: step + 1 });
      if (step + 1 >= Number(ns)) return finish('completed', 'done');
      set.ph = 'idle';
      return advance('running', 'done');
    case 'next': {
      // A step's done (v) and the next step's begin (v + 1) at once (see TRANSITION's `next`).
      Object.assign(set, { [`o:${step}`]: arg, cur: step + 1 });
      if (step + 1 >= Number(ns)) {
        detail = ''; // a plain done, logged as one (the detail sent is the begin's)
        return finish('completed', 'done');
      }
      let reason: string | undefined;
      if (cx === '1') reason = 'cancelled';
      else if (Number(dl) > 0 && now >= Number(dl)) reason = 'saga-timeout';
      const cap = Number(a[5]);
      ks.rpush(hist as string, `${now}|${v}|${fence}|done|${step}|`);
      if (
        ks.rpush(
          hist as string,
          `${now}|${v + 1}|${fence}|${reason === undefined ? 'begin' : 'fail'}|${step + 1}|${detail}`,
        ) > cap
      ) {
        ks.ltrim(hist as string, -cap, -1);
      }
      v++;
      if (reason !== undefined) {
        cj = step;
        why = reason;
        Object.assign(set, { cj: step, why: reason, ph: 'idle', st: 'compensating' });
      } else {
        Object.assign(set, { ph: 'run', [`a:${step + 1}`]: '1' });
      }
      if (reindex()) set.ix = lease;
      Object.assign(set, { v, up: now, ls: lease });
      ks.hset(h as string, set);
      return reply(reason === undefined ? 'running' : 'compensating', lease);
    }
    case 'fail':
      return compensate(begun(), arg, 'fail');
    case 'cbegin':
      Object.assign(set, { ph: 'comp', [`c:${step}`]: arg });
      return advance('compensating', 'cbegin');
    case 'cdone':
      cj = step - 1;
      Object.assign(set, { cj, ph: 'idle' });
      if (step < 1) return finish('compensated', arg);
      return advance('compensating', arg);
    case 'park':
      why = arg;
      set.why = arg;
      return finish('needs-attention', 'park');
    default:
      throw new Error(`ERR keel saga: unknown transition ${String(op)}`);
  }
};

/**
 * Several transitions in one call (TRANSITIONS, same layout): each is {@link transition} (or
 * {@link start}, op `start`) on its own keys and arguments, answered separately; one that throws
 * is answered `[-1, message]`.
 */
const transitions: Port = (ks, keys, a) => {
  const out: unknown[] = [];
  const n = Number(a[0]);
  const m = Number(a[1]);
  const shared = a.slice(2, 6); // leaseMs, history cap, retentionMs, history kept
  // Every transition's own arguments in one text (see TRANSITIONS in scripts.ts): lengths in
  // UTF-8 bytes, as the Lua cuts them, so the text is read as bytes (latin1: one char a byte).
  const all = Buffer.from(a[7] as string, 'utf8');
  const bytes = all.toString('latin1');
  const head = /(\d+)\|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|(\d+)\|(\d+)\|(\d+)\|/y;
  for (let i = 0; i < n; i++) {
    const m8 = head.exec(bytes);
    if (m8 === null) throw new Error(`ERR keel saga: bad batch item ${i}`);
    const [, shard, fence, version, op, step, ol, dl, al] = m8 as unknown as string[];
    const p = head.lastIndex;
    const q = p + Number(ol) + 1;
    const e = q + Number(dl) + 1;
    const end = e + Number(al);
    head.lastIndex = end + 1;
    const who = all.subarray(p, q - 1).toString('utf8');
    const detail = all.subarray(q, e - 1).toString('utf8');
    const arg = all.subarray(e, end).toString('utf8');
    const g = 4 * (Number(shard) - 1);
    const owner = who === '' ? (a[6] as string) : who;
    const h = keys[4 * m + 2 * i] as string;
    // The id is the hash key's tail: <base>s:<id>, where the shard's live key is <base>live.
    const id = h.slice((keys[g] as string).length - 2);
    const mine = [h, keys[4 * m + 2 * i + 1] as string, ...keys.slice(g, g + 4)];
    try {
      // A start rides in a transition's slots (see TRANSITIONS in scripts.ts).
      if (op === 'start') {
        const startArgs = [id, owner, detail, arg, a[2], a[3], version, step] as string[];
        out.push(start(ks, mine.slice(0, 3), startArgs));
      } else {
        const args = [id, owner, fence, version, ...shared, op, step, detail, arg] as string[];
        out.push(transition(ks, mine, args));
      }
    } catch (error) {
      // Redis answers an error of `redis.call` as its message, and `redis.error_reply(text)`
      // (an unknown op) as `text` alone, with no `ERR ` code in front.
      const message = error instanceof Error ? error.message : String(error);
      out.push([-1, message.replace(/^ERR (keel saga: )/, '$1')]);
    }
  }
  return out;
};

const start: Port = (ks, keys, a) => {
  const now = ks.now();
  const [h, hist, live] = keys as [string, string, string];
  const id = a[0] as string;
  const lease = now + Number(a[4]);
  const log = (v: number, f: number, event: string, detail: string): void => {
    ks.rpush(hist, `${now}|${v}|${f}|${event}|-1|${detail}`);
    ks.ltrim(hist, -Number(a[5]), -1);
  };
  if (!ks.exists(h)) {
    const dl = Number(a[6]) > 0 ? now + Number(a[6]) : 0;
    ks.hset(h, {
      n: a[2] as string,
      in: a[3] as string,
      st: 'running',
      cur: 0,
      cj: -1,
      ph: 'idle',
      v: 1,
      f: 1,
      ow: a[1] as string,
      ls: lease,
      dl,
      t0: now,
      up: now,
      ns: a[7] as string,
      ix: lease,
    });
    ks.zadd(live, lease, id);
    log(1, 1, 'start', a[1] as string);
    return [1, 'created', now, lease, dl];
  }
  if (ks.hget(h, 'in') !== a[3]) return [0, 'conflict'];
  const [st, ls] = ks.hmget(h, ['st', 'ls']);
  if (isLive(st) && Number(ls) <= now) {
    const f = ks.hincrby(h, 'f', 1);
    const v = ks.hincrby(h, 'v', 1);
    ks.hset(h, { ow: a[1] as string, ls: lease, up: now, ix: lease });
    ks.zadd(live, lease, id);
    log(v, f, 'claim', a[1] as string);
    return [1, 'claimed', now, ks.hgetall(h)];
  }
  return [1, 'exists', now, ks.hgetall(h)];
};

const claim: Port = (ks, keys, a) => {
  const now = ks.now();
  const live = keys[0] as string;
  const base = a[4] as string;
  const out: unknown[] = [];
  for (const id of ks.zrangebyscore(live, now, Number(a[3]))) {
    const h = `${base}s:${id}`;
    const [st, ls] = ks.hmget(h, ['st', 'ls']);
    if (!isLive(st)) {
      ks.zrem(live, id);
    } else if (Number(ls) > now) {
      ks.zadd(live, Number(ls), id);
      ks.hset(h, { ix: ls as string });
    } else {
      const f = ks.hincrby(h, 'f', 1);
      const v = ks.hincrby(h, 'v', 1);
      const lease = now + Number(a[1]);
      ks.hset(h, { ow: a[0] as string, ls: lease, up: now, ix: lease });
      ks.zadd(live, lease, id);
      const hist = `${base}h:${id}`;
      ks.rpush(hist, `${now}|${v}|${f}|claim|-1|${a[0] as string}`);
      ks.ltrim(hist, -Number(a[2]), -1);
      out.push(id, ks.hgetall(h));
    }
  }
  return [now, out];
};

const read: Port = (ks, keys, a) => [
  ks.hgetall(keys[0] as string),
  ks.lrange(keys[1] as string, a[0] === undefined ? 0 : -Number(a[0]), -1),
];

const cancel: Port = (ks, keys) => {
  const h = keys[0] as string;
  if (ks.hget(h, 'st') !== 'running') return 0;
  ks.hset(h, { cx: '1' });
  return 1;
};

const list: Port = (ks, keys, a) => {
  const want = a[0] as string;
  const limit = Number(a[1]);
  const out: string[] = [];
  const add = (id: string, st: string): void => {
    if (out.length < limit * 2) out.push(id, st);
  };
  if (want === 'running' || want === 'compensating' || want === '') {
    for (const id of ks.zrange(keys[0] as string)) {
      const st = ks.hget(`${a[2] as string}s:${id}`, 'st');
      if (st !== null && (want === '' || st === want)) add(id, st);
    }
  }
  const names = ['completed', 'compensated', 'needs-attention'];
  for (let i = 1; i <= 3; i++) {
    const name = names[i - 1] as string;
    if (want === '' || want === name) {
      for (const id of ks.zrevrange(keys[i] as string, limit - 1)) add(id, name);
    }
  }
  return out;
};

// ---- idempotency scripts (see idempotency.ts) -------------------------------------------------

const acquire: Port = (ks, keys, a) => {
  const now = ks.now();
  const k = keys[0] as string;
  const [s, fp, r, l, holder] = ks.hmget(k, ['s', 'fp', 'r', 'l', 'h']);
  if (s === null) {
    ks.hset(k, { s: 'run', fp: a[1] as string, h: a[0] as string, l: now + Number(a[2]) });
    ks.pexpire(k, Number(a[3]));
    return ['run', 0];
  }
  if (a[1] !== '' && fp !== '' && fp !== a[1]) return ['conflict', 0];
  if (s === 'done') return ['hit', r];
  if (s !== 'run') return ['cancelled', 0];
  if (holder === a[0]) {
    ks.hset(k, { l: now + Number(a[2]) });
    return ['run', 0];
  }
  if (Number(l) > now) return ['wait', Number(l) - now];
  ks.hset(k, { h: a[0] as string, l: now + Number(a[2]) });
  return ['run', 1];
};

const complete: Port = (ks, keys, a) => {
  const k = keys[0] as string;
  const [s, holder] = ks.hmget(k, ['s', 'h']);
  if (s === 'done' && holder === a[0]) return 1;
  if (s !== 'run' || holder !== a[0]) return 0;
  ks.hset(k, { s: 'done', r: a[1] as string });
  ks.hdel(k, ['l']);
  ks.pexpire(k, Number(a[2]));
  return 1;
};

const release: Port = (ks, keys, a) => {
  const k = keys[0] as string;
  const [s, holder] = ks.hmget(k, ['s', 'h']);
  if (s !== 'run' || holder !== a[0]) return 0;
  ks.del(k);
  return 1;
};

const renew: Port = (ks, keys, a) => {
  const k = keys[0] as string;
  const [s, holder] = ks.hmget(k, ['s', 'h']);
  if (s !== a[2] || holder !== a[0]) return 0;
  ks.hset(k, { l: ks.now() + Number(a[1]) });
  return 1;
};

const undoBegin: Port = (ks, keys, a) => {
  const now = ks.now();
  const k = keys[0] as string;
  const [s, r, l, holder] = ks.hmget(k, ['s', 'r', 'l', 'h']);
  if (s === null) {
    ks.hset(k, { s: 'cancelled', fp: '' });
    ks.pexpire(k, Number(a[2]));
    return ['empty', '', 0, 0];
  }
  if (s === 'cancelled') return ['already', '', 0, 0];
  const mine = s === 'undoing' && holder === a[0];
  if (s !== 'done' && !mine && Number(l) > now) return ['wait', '', 0, Number(l) - now];
  ks.hset(k, { s: 'undoing', h: a[0] as string, l: now + Number(a[1]) });
  return r !== null ? ['undo', r, 1, 0] : ['undo', '', 0, 0];
};

const undoEnd: Port = (ks, keys, a) => {
  const k = keys[0] as string;
  const [s, holder] = ks.hmget(k, ['s', 'h']);
  if (s === 'cancelled' && holder === a[0]) return 1;
  if (s !== 'undoing' || holder !== a[0]) return 0;
  ks.hset(k, { s: 'cancelled' });
  ks.hdel(k, ['l']);
  ks.pexpire(k, Number(a[1]));
  return 1;
};

let tables: { ports: ReadonlyMap<string, Port>; sources: ReadonlyMap<string, string> } | undefined;

/**
 * The ports by script SHA-1, and the SHA-1s by script source. Built on first use, so a bundle
 * that never constructs a backend keeps nothing of it (no module-level work to preserve).
 */
function scriptTables(): {
  ports: ReadonlyMap<string, Port>;
  sources: ReadonlyMap<string, string>;
} {
  if (tables !== undefined) return tables;
  const all: [LuaScript, Port][] = [
    [TRANSITION, transition],
    [TRANSITIONS, transitions],
    [START, start],
    [CLAIM, claim],
    [READ, read],
    [CANCEL, cancel],
    [LIST, list],
    [ACQUIRE, acquire],
    [COMPLETE, complete],
    [RELEASE, release],
    [RENEW, renew],
    [UNDO_BEGIN, undoBegin],
    [UNDO_END, undoEnd],
  ];
  tables = {
    ports: new Map(all.map(([script, port]) => [script.sha, port])),
    sources: new Map(all.map(([script]) => [script.source, script.sha])),
  };
  return tables;
}

/**
 * A reply as Redis turns a Lua value into one: numbers to integers, `false`/`nil` to a null
 * reply, and a table ends at its first `nil`.
 */
function toReply(value: unknown): unknown {
  if (typeof value === 'number') return Math.trunc(value);
  if (value === undefined || value === false) return null;
  if (value === true) return 1;
  if (Array.isArray(value)) {
    const end = value.indexOf(undefined);
    return (end < 0 ? value : value.slice(0, end)).map(toReply);
  }
  return value;
}

/** Options of {@link MemorySagaBackend}. */
export interface MemorySagaBackendOptions {
  /**
   * The "server time" the scripts read (Redis's `TIME`), epoch ms: leases, deadlines and
   * expiry compare it. @defaultValue `Date.now`
   */
  readonly now?: () => number;
}

/**
 * An in-process stand-in for the Redis server `keel/saga` runs on: pass it as `redis` to
 * {@link SagaCoordinator} and {@link IdempotencyKeys}. Everything given the same backend shares
 * its sagas and keys, as processes sharing one Redis do — with the same scripts' logic (each
 * ported from its Lua), so ownership, fencing, recovery and idempotency behave alike. For one
 * process: tests, embedded runs, a demo without Redis. Nothing survives the process.
 *
 * It runs `keel/saga`'s own scripts only; any other script is refused.
 *
 * @example
 * ```ts
 * import { IdempotencyKeys, MemorySagaBackend, SagaCoordinator, defineSaga } from 'keel/saga';
 *
 * const backend = new MemorySagaBackend();
 * const saga = defineSaga('hello', [{ name: 'greet', run: () => 'hi' }]);
 * await using sagas = new SagaCoordinator({ redis: backend, sagas: [saga] });
 * const outcome = await sagas.run(saga, 'h-1', {});
 * console.log(outcome.status); // 'completed'
 * const { idempotent } = new IdempotencyKeys({ redis: backend });
 * console.log(await idempotent('k-1', () => 42)); // 42
 * ```
 */
export class MemorySagaBackend {
  readonly #keys: Keyspace;
  #calls = 0;

  constructor(options: MemorySagaBackendOptions = {}) {
    const o = resolveOptions('MemorySagaBackend', options, {
      now: functionOption<() => number>({ default: Date.now }),
    });
    this.#keys = new Keyspace(o.now);
  }

  /** Keys held (expired ones included until they are next looked at). */
  get size(): number {
    return this.#keys.size;
  }

  #call(sha: string, numKeys: number, args: readonly (string | number | Buffer)[]): unknown {
    const port = scriptTables().ports.get(sha);
    if (port === undefined) throw new Error('NOSCRIPT No matching script (MemorySagaBackend)');
    if (++this.#calls % 1024 === 0) this.#keys.sweep();
    const all = args.map(String);
    const keys = this.#keys;
    return toReply(keys.atOneInstant(() => port(keys, all.slice(0, numKeys), all.slice(numKeys))));
  }

  /** Runs one of `keel/saga`'s scripts by its SHA-1 (as Redis's `EVALSHA`). */
  evalsha(sha: string, numKeys: number, ...args: (string | number | Buffer)[]): Promise<unknown> {
    try {
      return Promise.resolve(this.#call(sha, numKeys, args));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Runs one of `keel/saga`'s scripts from its source (as Redis's `EVAL`). */
  eval(source: string, numKeys: number, ...args: (string | number | Buffer)[]): Promise<unknown> {
    const sha = scriptTables().sources.get(source);
    if (sha === undefined) {
      return Promise.reject(new Error('ERR MemorySagaBackend runs keel/saga scripts only'));
    }
    return this.evalsha(sha, numKeys, ...args);
  }
}
