/**
 * The pure part of the cache: what an entry is, how long it is fresh, stale and kept for
 * grace, how its TTL is jittered, when XFetch refreshes it early, and how it is written to
 * Redis as text (and read back, distrusting every byte). No I/O and no clock reads here: every
 * function is given the time.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * @packageDocumentation
 */

/** Lifetimes of an entry, as given by the caller (already resolved from the defaults). */
export interface Lifetimes {
  /** How long the value is fresh. */
  readonly ttlMs: number;
  /** How long after that a stale value is served while one caller refreshes it. */
  readonly staleMs: number;
  /** How long after that the last value is still served, only when the loader fails. */
  readonly graceMs: number;
}

/**
 * One cached value with its deadlines on some timeline (monotonic ms in L1, wall-clock epoch ms
 * in the Redis envelope).
 */
export interface Entry<V = unknown> {
  /** The value; `undefined` for a negative entry (the loader said the key does not exist). */
  readonly value: V | undefined;
  /** True when the entry records an absence (negative caching). */
  readonly negative: boolean;
  /** Fresh before this time. */
  readonly freshUntil: number;
  /** Servable as stale (while refreshing) before this time. */
  readonly staleUntil: number;
  /** Servable, when the loader fails, before this time. */
  readonly graceUntil: number;
  /** How long the load that produced it took (XFetch's δ), in ms. */
  readonly deltaMs: number;
  /**
   * XFetch's refresh time for this copy, drawn on the first hit near expiry (`undefined` until
   * then, which costs no number box per entry): one draw per entry per process, not per hit —
   * see {@link xfetchRefresh}.
   */
  refreshAt: number | undefined;
}

/** How an entry stands at a given time. */
export type Freshness = 'fresh' | 'stale' | 'grace' | 'expired';

/** Where `entry` stands at `now`. */
export function freshness(entry: Entry, now: number): Freshness {
  if (now < entry.freshUntil) return 'fresh';
  if (now < entry.staleUntil) return 'stale';
  if (now < entry.graceUntil) return 'grace';
  return 'expired';
}

/**
 * The TTL actually used for one write: `ttlMs` shortened by up to `jitter` of itself, drawn
 * from `random` in [0, 1). Keys written together then expire spread over a window instead of
 * all at once (cache avalanche). Jitter only *shortens*, so the ttl a caller gives stays an
 * upper bound on the age of a fresh value.
 */
export function jitteredTtl(ttlMs: number, jitter: number, random: () => number): number {
  if (jitter <= 0 || ttlMs <= 0) return ttlMs;
  return ttlMs * (1 - jitter * random());
}

/** An entry for `value` written at `now` with `lifetimes`. */
export function makeEntry<V>(
  value: V | undefined,
  negative: boolean,
  now: number,
  lifetimes: Lifetimes,
  deltaMs: number,
): Entry<V> {
  const freshUntil = now + lifetimes.ttlMs;
  const staleUntil = freshUntil + lifetimes.staleMs;
  return {
    value,
    negative,
    freshUntil,
    staleUntil,
    graceUntil: staleUntil + lifetimes.graceMs,
    deltaMs,
    refreshAt: undefined,
  };
}

/** Above the largest exponential draw `−ln(1 − random())` a double in [0, 1) can give. */
const XFETCH_MAX_DRAW = 37;

/**
 * XFetch (Vattani, Chierichetti, Lowenstein, "Optimal Probabilistic Cache Stampede
 * Prevention", VLDB 2015, Algorithm 1): refresh early when
 * `now − δ·β·ln(rand()) ≥ expiry`. `−ln(rand())` is an exponential draw, so the earlier before
 * expiry, the less likely a refresh; δ (the last load's duration) scales the window to how long
 * a refresh takes, and β > 1 favours earlier refreshes, β < 1 later ones. β = 0 turns it off.
 *
 * One draw per entry (per process), made on the first hit within reach of expiry and kept in
 * `entry.refreshAt`, rather than the paper's one per request: with a draw per request, a key
 * read r times a second is refreshed about δ·β·ln(r·δ) early — for a hot key on a loaded machine
 * most of its ttl, so several loads per expiry. Here the paper's per-request protection is not
 * needed (the lease and stale-while-revalidate already stop a stampede); the refresh still
 * lands about δ·β before expiry, and processes draw independently.
 */
export function xfetchRefresh(
  entry: Entry,
  now: number,
  beta: number,
  random: () => number,
): boolean {
  if (beta <= 0 || entry.deltaMs <= 0) return false;
  // −ln(1 − r) ≤ −ln(2⁻⁵³) < 37 for any double r in [0, 1): further from expiry than that
  // many δ·β, no draw can trigger a refresh, so none is made yet (the common case of a hit).
  if (entry.freshUntil - now >= XFETCH_MAX_DRAW * entry.deltaMs * beta) return false;
  let at = entry.refreshAt;
  if (at === undefined) {
    // 1 - random() is in (0, 1], so the logarithm is finite.
    at = entry.refreshAt = entry.freshUntil + entry.deltaMs * beta * Math.log(1 - random());
  }
  return now >= at;
}

/**
 * What an L1 entry's deadlines are read with, besides its fresh deadline: durations measured
 * from that deadline, and XFetch's state. Entries written with the same lifetimes share one
 * (`set`s and loads with the cache's defaults), so it costs an entry one pointer; an entry gets
 * a copy of its own only when XFetch draws its refresh time.
 */
export interface L1Life {
  /** Stale until this long after the fresh deadline. */
  readonly staleMs: number;
  /** Servable on a loader failure until this long after the fresh deadline. */
  readonly graceMs: number;
  /** True when the entry records an absence. */
  readonly negative: boolean;
  /** XFetch's δ: how long the load that produced the value took, in ms (0: no early refresh). */
  readonly deltaMs: number;
  /** XFetch's drawn refresh time (monotonic ms), on an entry's own copy; `undefined` before. */
  readonly refreshAt: number | undefined;
}

/**
 * One L1 entry, kept small because a cache holds many (three fields, one hidden class): the
 * value, the fresh deadline as whole ms after the cache's epoch — a small integer V8 stores
 * unboxed, where a fractional clock reading would be a 16-byte heap number per deadline — and
 * the (usually shared) {@link L1Life}. The deadline is rounded *down*, so an entry goes stale at
 * most 1 ms early and never late. (Past 2³¹ ms ≈ 24 days after the epoch the offset no longer
 * fits a small integer: V8 then boxes it — more bytes, same answers.)
 */
export interface L1Entry {
  readonly value: unknown;
  readonly fresh: number;
  life: L1Life;
}

/**
 * XFetch ({@link xfetchRefresh}) for an L1 entry whose fresh deadline is `freshUntil`: the same
 * rule and the same one draw per entry, kept on the entry's own copy of its life.
 */
export function xfetchRefreshL1(
  entry: L1Entry,
  freshUntil: number,
  now: number,
  beta: number,
  random: () => number,
): boolean {
  const life = entry.life;
  if (beta <= 0 || life.deltaMs <= 0) return false;
  if (freshUntil - now >= XFETCH_MAX_DRAW * life.deltaMs * beta) return false;
  let at = life.refreshAt;
  if (at === undefined) {
    at = freshUntil + life.deltaMs * beta * Math.log(1 - random());
    entry.life = {
      staleMs: life.staleMs,
      graceMs: life.graceMs,
      negative: life.negative,
      deltaMs: life.deltaMs,
      refreshAt: at,
    };
  }
  return now >= at;
}

/** The same entry on another timeline (Redis wall-clock ↔ local monotonic), shifted by `offset`. */
export function shiftEntry<V>(entry: Entry<V>, offset: number): Entry<V> {
  return {
    value: entry.value,
    negative: entry.negative,
    freshUntil: entry.freshUntil + offset,
    staleUntil: entry.staleUntil + offset,
    graceUntil: entry.graceUntil + offset,
    deltaMs: entry.deltaMs,
    refreshAt: undefined,
  };
}

/**
 * The text written to Redis: a header line `k1|fresh|stale|grace|delta|v` (wall-clock epoch ms
 * as integers, `v` for a value or `n` for an absence), a newline, and the serialized value.
 * A fixed, versioned header so a reader can refuse anything it did not write.
 */
export function encodeEnvelope(entry: Entry, payload: string): string {
  return (
    `k1|${Math.round(entry.freshUntil)}|${Math.round(entry.staleUntil)}|` +
    `${Math.round(entry.graceUntil)}|${Math.round(entry.deltaMs)}|${entry.negative ? 'n' : 'v'}\n` +
    payload
  );
}

/** A parsed envelope header (times on the wall clock) and the payload text after it. */
export interface Envelope {
  readonly negative: boolean;
  readonly freshUntil: number;
  readonly staleUntil: number;
  readonly graceUntil: number;
  readonly deltaMs: number;
  readonly payload: string;
}

/** Header fields of an envelope, written in place by {@link readHeader}. */
export interface HeaderFields {
  negative: boolean;
  freshUntil: number;
  staleUntil: number;
  graceUntil: number;
  deltaMs: number;
}

const UNKNOWN_HEADER = 'unknown envelope header';

/**
 * Reads the header of `raw` (`k1|fresh|stale|grace|delta|v` then a newline; 1–16 digits per
 * deadline, 1–12 for δ, `v` or `n`) into `out`, and checks it: deadlines in order, no payload
 * after an absence. Returns where the payload starts, or why the text cannot be trusted. Read
 * character by character, into fields the caller reuses: a read of Redis allocates nothing
 * here (a regular expression's match would allocate an array and a string per field).
 */
export function readHeader(raw: string, out: HeaderFields): number | string {
  const newline = raw.indexOf('\n');
  if (newline === -1) return 'no envelope header';
  // 'k', '1', '|'
  if (raw.charCodeAt(0) !== 107 || raw.charCodeAt(1) !== 49 || raw.charCodeAt(2) !== 124) {
    return UNKNOWN_HEADER;
  }
  let at = 3;
  for (let field = 0; field < 4; field++) {
    const start = at;
    let n = 0;
    for (; at < newline; at++) {
      const digit = raw.charCodeAt(at) - 48;
      if (digit < 0 || digit > 9) break;
      n = n * 10 + digit;
    }
    const digits = at - start;
    // '|' after each number (at the newline, charCodeAt gives 10).
    if (digits === 0 || digits > (field === 3 ? 12 : 16) || raw.charCodeAt(at) !== 124) {
      return UNKNOWN_HEADER;
    }
    // Up to 15 digits the sum is exact; past that, Number rounds as a parse of the text does.
    if (digits > 15) n = Number(raw.slice(start, at));
    at++;
    if (field === 0) out.freshUntil = n;
    else if (field === 1) out.staleUntil = n;
    else if (field === 2) out.graceUntil = n;
    else out.deltaMs = n;
  }
  const kind = raw.charCodeAt(at);
  // One character, 'v' or 'n', then the newline.
  if (at + 1 !== newline || (kind !== 118 && kind !== 110)) return UNKNOWN_HEADER;
  if (!(out.freshUntil <= out.staleUntil && out.staleUntil <= out.graceUntil)) {
    return 'envelope deadlines out of order';
  }
  out.negative = kind === 110;
  if (out.negative && newline + 1 !== raw.length) return 'negative entry with a payload';
  return newline + 1;
}

/**
 * Parses what Redis returned, or says why it cannot be trusted: an unknown header, deadlines
 * out of order, or a negative entry carrying a payload.
 */
export function decodeEnvelope(raw: string): Envelope | { readonly malformed: string } {
  const header: HeaderFields = {
    negative: false,
    freshUntil: 0,
    staleUntil: 0,
    graceUntil: 0,
    deltaMs: 0,
  };
  const start = readHeader(raw, header);
  if (typeof start === 'string') return { malformed: start };
  return { ...header, payload: raw.slice(start) };
}
