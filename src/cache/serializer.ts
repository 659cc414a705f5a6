/**
 * How values become the text stored in Redis, and back. Pluggable; JSON by default.
 *
 * @packageDocumentation
 */

/**
 * Turns values into text for Redis and back. `deserialize` may throw on text it does not
 * accept: the cache then quarantines the entry (see `Cache.onQuarantine`) instead of serving it.
 */
export interface Serializer {
  /** The text stored for `value` (never called with `undefined`: absences are cached apart). */
  serialize(value: unknown): string;
  /** The value `text` stands for; throws when `text` is not something `serialize` wrote. */
  deserialize(text: string): unknown;
}

/**
 * `JSON.stringify` / `JSON.parse`. Values must survive a JSON round trip (no `Date`, `Map`,
 * `bigint`…): plug in another {@link Serializer} (superjson, msgpack as base64, …) for those.
 *
 * @example
 * ```ts
 * import { jsonSerializer } from 'keel/cache';
 *
 * console.log(jsonSerializer.deserialize(jsonSerializer.serialize({ a: 1 }))); // { a: 1 }
 * ```
 */
export const jsonSerializer: Serializer = /* @__PURE__ */ Object.freeze({
  serialize(value: unknown): string {
    const text = JSON.stringify(value) as string | undefined;
    // JSON.stringify gives undefined for functions and symbols: nothing that reads back.
    if (text === undefined) throw new TypeError(`${typeof value} is not JSON`);
    return text;
  },
  deserialize(text: string): unknown {
    return JSON.parse(text);
  },
});

/** True for anything shaped like a {@link Serializer}. @internal */
export function isSerializer(value: unknown): value is Serializer {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Serializer).serialize === 'function' &&
    typeof (value as Serializer).deserialize === 'function'
  );
}
