/**
 * MD5 (RFC 1321), used only for ketama compatibility: memcached clients place servers and
 * keys with MD5, so matching them means computing it. Written from the RFC; the tests check
 * it against `node:crypto`. It works on a reused scratch buffer, so hashing a key allocates
 * nothing — the reason not to call `crypto.createHash('md5')` on every lookup, which is what
 * makes npm `hashring` slow.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { encodeUtf8Into } from './utf8.js';

// K[i] = floor(|sin(i + 1)| × 2³²), RFC 1321 section 3.4.
// Built by one call marked pure, so bundles that never hash with MD5 drop the table.
const K = /* @__PURE__ */ Int32Array.from(
  { length: 64 },
  (_, i) => Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32) | 0,
);

// Per-round left-rotation amounts.
const S = /* @__PURE__ */ new Uint8Array([
  7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14,
  20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15, 21, 6,
  10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
]);

const words = /* @__PURE__ */ new Int32Array(16);
let scratch = /* @__PURE__ */ new Uint8Array(256);

/** The four little-endian 32-bit words of an MD5 digest, as unsigned integers. */
export type Md5Words = Uint32Array;

function processBlock(state: Int32Array, block: Uint8Array, offset: number): void {
  for (let i = 0; i < 16; i++) {
    const o = offset + i * 4;
    words[i] =
      (block[o] as number) |
      ((block[o + 1] as number) << 8) |
      ((block[o + 2] as number) << 16) |
      ((block[o + 3] as number) << 24);
  }
  let a = state[0] as number;
  let b = state[1] as number;
  let c = state[2] as number;
  let d = state[3] as number;
  for (let i = 0; i < 64; i++) {
    let f: number;
    let g: number;
    if (i < 16) {
      f = (b & c) | (~b & d);
      g = i;
    } else if (i < 32) {
      f = (d & b) | (~d & c);
      g = (5 * i + 1) & 15;
    } else if (i < 48) {
      f = b ^ c ^ d;
      g = (3 * i + 5) & 15;
    } else {
      f = c ^ (b | ~d);
      g = (7 * i) & 15;
    }
    const sum = (a + f + (K[i] as number) + (words[g] as number)) | 0;
    const s = S[i] as number;
    a = d;
    d = c;
    c = b;
    b = (b + ((sum << s) | (sum >>> (32 - s)))) | 0;
  }
  state[0] = ((state[0] as number) + a) | 0;
  state[1] = ((state[1] as number) + b) | 0;
  state[2] = ((state[2] as number) + c) | 0;
  state[3] = ((state[3] as number) + d) | 0;
}

const state = /* @__PURE__ */ new Int32Array(4);
const tail = /* @__PURE__ */ new Uint8Array(128);

/**
 * MD5 of `length` bytes of `bytes` from `offset`, written into `out` as four little-endian
 * words (word 0 = digest bytes 0–3). Returns `out`.
 */
export function md5Into(
  bytes: Uint8Array,
  offset: number,
  length: number,
  out: Md5Words,
): Md5Words {
  state[0] = 0x67452301;
  state[1] = 0xefcdab89 | 0;
  state[2] = 0x98badcfe | 0;
  state[3] = 0x10325476;
  const full = length - (length % 64);
  for (let i = 0; i < full; i += 64) processBlock(state, bytes, offset + i);
  // Padding: 0x80, zeros, then the bit length as a 64-bit little-endian integer.
  const rest = length - full;
  tail.fill(0);
  for (let i = 0; i < rest; i++) tail[i] = bytes[offset + full + i] as number;
  tail[rest] = 0x80;
  const tailLength = rest < 56 ? 64 : 128;
  const bitsLow = (length * 8) >>> 0;
  const bitsHigh = Math.floor(length / 0x20000000);
  for (let i = 0; i < 4; i++) {
    tail[tailLength - 8 + i] = (bitsLow >>> (8 * i)) & 0xff;
    tail[tailLength - 4 + i] = (bitsHigh >>> (8 * i)) & 0xff;
  }
  processBlock(state, tail, 0);
  if (tailLength === 128) processBlock(state, tail, 64);
  for (let i = 0; i < 4; i++) out[i] = (state[i] as number) >>> 0;
  return out;
}

/** MD5 of the UTF-8 bytes of `text` into `out` (no allocation once the scratch buffer fits). */
export function md5StringInto(text: string, out: Md5Words): Md5Words {
  if (scratch.length < text.length * 3) scratch = new Uint8Array(text.length * 3);
  return md5Into(scratch, 0, encodeUtf8Into(text, scratch), out);
}
