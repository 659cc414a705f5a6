/**
 * Redis Cluster key slots, for the same-slot check of multi-key lock scripts: a script's keys
 * must all live in one slot on a Redis Cluster, or the server answers CROSSSLOT. We check
 * before sending anything and throw a typed error naming the keys instead.
 *
 * Follows the Redis Cluster specification ("Keys distribution model" and "Hash tags"):
 * slot = CRC16(key) mod 16384, CRC16 being the XMODEM variant (polynomial 0x1021, initial value
 * 0, no reflection; CRC16("123456789") = 0x31C3), computed over the hash tag — the part between
 * the first `{` and the next `}` — when that part is non-empty.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */

const TABLE = (() => {
  const table = new Uint16Array(256);
  for (let byte = 0; byte < 256; byte++) {
    let crc = byte << 8;
    for (let bit = 0; bit < 8; bit++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    table[byte] = crc;
  }
  return table;
})();

/** CRC16-XMODEM of the UTF-8 bytes of `text`. */
export function crc16(text: string): number {
  const bytes = new TextEncoder().encode(text);
  let crc = 0;
  for (const byte of bytes)
    crc = ((crc << 8) & 0xffff) ^ (TABLE[((crc >> 8) ^ byte) & 0xff] as number);
  return crc;
}

/** The hash tag of a key (the non-empty text between the first `{` and the next `}`), if any. */
export function hashTag(key: string): string | undefined {
  const open = key.indexOf('{');
  if (open === -1) return undefined;
  const close = key.indexOf('}', open + 1);
  if (close === -1 || close === open + 1) return undefined;
  return key.slice(open + 1, close);
}

/** The cluster slot of a key. */
export function keySlot(key: string): number {
  return crc16(hashTag(key) ?? key) % 16384;
}
