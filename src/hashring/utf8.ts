/**
 * UTF-8 encoding into a caller's buffer without allocating — `TextEncoder.encodeInto` returns
 * a fresh `{ read, written }` object per call, which would make every non-ASCII lookup
 * allocate. Follows the WHATWG Encoding Standard's UTF-8 encoder: lone surrogates become
 * U+FFFD, exactly as `TextEncoder` does.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */

/**
 * Writes the UTF-8 bytes of `text` into `buffer` from index 0 and returns how many were
 * written. `buffer` must hold at least `3 × text.length` bytes (the worst case).
 */
export function encodeUtf8Into(text: string, buffer: Uint8Array): number {
  let at = 0;
  const length = text.length;
  for (let i = 0; i < length; i++) {
    let code = text.charCodeAt(i);
    if (code < 0x80) {
      buffer[at++] = code;
      continue;
    }
    if (code < 0x800) {
      buffer[at++] = 0xc0 | (code >>> 6);
      buffer[at++] = 0x80 | (code & 0x3f);
      continue;
    }
    if (code >= 0xd800 && code <= 0xdfff) {
      const next = i + 1 < length ? text.charCodeAt(i + 1) : 0;
      if (code <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        // A surrogate pair: one code point above U+FFFF, four bytes.
        code = 0x10000 + ((code - 0xd800) << 10) + (next - 0xdc00);
        i++;
        buffer[at++] = 0xf0 | (code >>> 18);
        buffer[at++] = 0x80 | ((code >>> 12) & 0x3f);
        buffer[at++] = 0x80 | ((code >>> 6) & 0x3f);
        buffer[at++] = 0x80 | (code & 0x3f);
        continue;
      }
      code = 0xfffd; // a lone surrogate
    }
    buffer[at++] = 0xe0 | (code >>> 12);
    buffer[at++] = 0x80 | ((code >>> 6) & 0x3f);
    buffer[at++] = 0x80 | (code & 0x3f);
  }
  return at;
}
