/**
 * How a Keel message sits in a Redis Stream entry, and the key names of a topic. Pure: no I/O.
 *
 * Entry fields (short names keep the per-message memory small):
 * `v` format (`1`), `i` message id, `k` ordering key (empty: none), `p` payload JSON, `h` headers
 * JSON (empty: none), `t` producer wall time (epoch ms), and on redelivered copies `a` attempts
 * already failed, `g` the one consumer group the copy is for (retries and replays), `c`
 * consumer names that handled it before, `e` the last error.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * @packageDocumentation
 */
import { murmur3String } from '../hashring/index.js';

/** The Redis keys of one partition of a topic. All share one hash tag, so one slot. */
export interface PartitionKeys {
  readonly stream: string;
  readonly delayed: string;
  readonly dlq: string;
  readonly tag: string;
}

/**
 * Keys of partition `p` of `topic`: `<prefix>:{<topic>:<p>}:s` (stream), `…:d` (delayed ZSET),
 * `…:dlq` (dead letters). The braces are a Redis Cluster hash tag
 * (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags): every
 * key of a partition — and its dedup and lease keys — lands in one slot, so one script can touch
 * them all.
 */
export function partitionKeys(prefix: string, topic: string, p: number): PartitionKeys {
  const tag = `{${topic}:${p}}`;
  return {
    stream: `${prefix}:${tag}:s`,
    delayed: `${prefix}:${tag}:d`,
    dlq: `${prefix}:${tag}:dlq`,
    tag,
  };
}

/** The dedup key of message `id` in a partition (same slot as its stream). */
export const dedupKey = (prefix: string, keys: PartitionKeys, id: string): string =>
  `${prefix}:${keys.tag}:id:${id}`;

/**
 * Where a group's dead-lettering of one entry is remembered for a while (see `DEAD` in
 * scripts.ts): the entry id is unique within its partition's stream, and the group is part of
 * the key because each group gives up on an entry on its own.
 */
export const deadMarkKey = (
  prefix: string,
  keys: PartitionKeys,
  group: string,
  entryId: string,
): string => `${prefix}:${keys.tag}:dead:${group}:${entryId}`;

/**
 * Ordered mode: what the lease holder's last `NEXT` call acked and delivered (see `NEXT` in
 * scripts.ts), one per partition and group.
 */
export const nextMarkKey = (prefix: string, keys: PartitionKeys, group: string): string =>
  `${prefix}:${keys.tag}:next:${group}`;

/** The per-group lease key of a partition, for per-key ordered consumers. */
export const leaseKey = (prefix: string, keys: PartitionKeys, group: string): string =>
  `${prefix}:${keys.tag}:lease:${group}`;

/** The live-member ZSET of an ordered consumer group (scores: server-time expiry, ms). */
export const membersKey = (prefix: string, topic: string, group: string): string =>
  `${prefix}:{${topic}}:members:${group}`;

/**
 * The partition of a message: murmur3 (keel/hashring) of its key, or of its id when it has no
 * key — so a retried send of one id reaches the same partition and its dedup record.
 */
export function partitionOf(keyOrId: string, partitions: number): number {
  return partitions === 1 ? 0 : murmur3String(keyOrId) % partitions;
}

/** What a producer puts in an entry. */
export interface OutgoingFields {
  readonly id: string;
  readonly key: string;
  readonly payload: string;
  readonly headers: string;
  readonly sentAt: number;
}

/** The field/value list of a fresh message. */
export function encodeFields(m: OutgoingFields): string[] {
  return ['v', '1', 'i', m.id, 'k', m.key, 'p', m.payload, 'h', m.headers, 't', String(m.sentAt)];
}

/** A stream entry read back as a Keel message. */
export interface DecodedEntry {
  readonly ok: true;
  readonly entryId: string;
  readonly id: string;
  readonly key: string | undefined;
  readonly payloadJson: string;
  /** The payload, parsed once from {@link DecodedEntry.payloadJson} (decoding checks it is JSON). */
  readonly payload: unknown;
  readonly headers: Readonly<Record<string, string>>;
  readonly sentAt: number;
  /** Attempts that failed before this copy was written. */
  readonly failed: number;
  /** The only group this copy is for, if any. */
  readonly group: string | undefined;
  /** Consumers that handled earlier attempts. */
  readonly consumers: readonly string[];
  /** Every field, as read (for dead-lettering and retries). */
  readonly fields: readonly string[];
}

/** A stream entry that is not a Keel message. */
export interface ForeignEntry {
  readonly ok: false;
  readonly entryId: string;
  readonly reason: string;
  readonly fields: readonly string[];
}

const COUNT = /^\d{1,9}$/;
const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({});
const NO_CONSUMERS: readonly string[] = Object.freeze([]);

/** The field/value list as strings: the reply itself when it already is (ioredis's default). */
function stringsOf(raw: readonly unknown[]): string[] {
  for (let i = 0; i < raw.length; i++) {
    if (typeof raw[i] !== 'string') {
      return raw.map((f) => (Buffer.isBuffer(f) ? f.toString() : String(f)));
    }
  }
  return raw as string[];
}

/**
 * Reads an entry's field/value list; anything not written by Keel is {@link ForeignEntry}.
 * One pass over the fields (a repeated field: the last one counts), one JSON parse of the payload.
 */
export function decodeEntry(entryId: string, raw: unknown): DecodedEntry | ForeignEntry {
  const fields = Array.isArray(raw) ? stringsOf(raw as unknown[]) : [];
  const bad = (reason: string): ForeignEntry => ({ ok: false, entryId, reason, fields });
  if (!Array.isArray(raw) || fields.length % 2 !== 0) return bad('fields are not pairs');
  let v: string | undefined;
  let id: string | undefined;
  let payloadJson: string | undefined;
  let group: string | undefined;
  let key = '';
  let h = '';
  let a = '0';
  let t = '0';
  let c = '';
  for (let i = 0; i < fields.length; i += 2) {
    const value = fields[i + 1] as string;
    switch (fields[i]) {
      case 'v':
        v = value;
        break;
      case 'i':
        id = value;
        break;
      case 'k':
        key = value;
        break;
      case 'p':
        payloadJson = value;
        break;
      case 'h':
        h = value;
        break;
      case 't':
        t = value;
        break;
      case 'a':
        a = value;
        break;
      case 'g':
        group = value;
        break;
      case 'c':
        c = value;
        break;
      default:
        break;
    }
  }
  if (v !== '1') return bad('no format field v=1');
  if (id === undefined || id === '') return bad('no message id (field i)');
  if (payloadJson === undefined) return bad('no payload (field p)');
  let payload: unknown;
  try {
    payload = JSON.parse(payloadJson);
  } catch {
    return bad('payload (field p) is not JSON');
  }
  let headers: Readonly<Record<string, string>> = NO_HEADERS;
  if (h !== '') {
    try {
      const parsed: unknown = JSON.parse(h);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
        return bad('headers (field h) are not a JSON object');
      }
      for (const value of Object.values(parsed)) {
        if (typeof value !== 'string') return bad('a header value is not a string');
      }
      headers = parsed as Record<string, string>;
    } catch {
      return bad('headers (field h) are not JSON');
    }
  }
  if (a !== '0' && !COUNT.test(a)) return bad('attempt count (field a) is not a count');
  const sentAt = Number(t);
  return {
    ok: true,
    entryId,
    id,
    key: key === '' ? undefined : key,
    payloadJson,
    payload,
    headers,
    sentAt: Number.isFinite(sentAt) ? sentAt : 0,
    failed: a === '0' ? 0 : Number(a),
    group: group === undefined || group === '' ? undefined : group,
    consumers: c === '' ? NO_CONSUMERS : c.split(','),
    fields,
  };
}

/**
 * The fields of a copy of `m` for a retry: the original message fields, with the attempts that
 * failed so far, the group it is for, the consumers so far and the last error.
 */
export function retryFields(
  m: DecodedEntry,
  failed: number,
  group: string,
  consumers: readonly string[],
  error: string,
): string[] {
  return [
    'v',
    '1',
    'i',
    m.id,
    'k',
    m.key ?? '',
    'p',
    m.payloadJson,
    'h',
    Object.keys(m.headers).length === 0 ? '' : JSON.stringify(m.headers),
    't',
    String(m.sentAt),
    'a',
    String(failed),
    'g',
    group,
    'c',
    consumers.join(','),
    'e',
    error.slice(0, 1000),
  ];
}

/** Stream ids compared numerically (`ms-seq`). Negative when a < b. */
export function compareStreamIds(a: string, b: string): number {
  const ai = a.indexOf('-');
  const bi = b.indexOf('-');
  const d = Number(ai < 0 ? a : a.slice(0, ai)) - Number(bi < 0 ? b : b.slice(0, bi));
  if (d !== 0) return d;
  return (ai < 0 ? 0 : Number(a.slice(ai + 1))) - (bi < 0 ? 0 : Number(b.slice(bi + 1)));
}
