/**
 * xxHash key hashers (XXH32 and XXH64, via the `xxhash-wasm` package). WebAssembly needs an
 * asynchronous instantiation, so these are available only after `await loadXxhash()`; the
 * default murmur3 path never waits for anything.
 *
 * @packageDocumentation
 */
import type { KeyHasher } from './types.js';

/** The xxHash hashers, as returned by {@link loadXxhash}. */
export interface XxHashers {
  /** XXH32, seed 0. */
  readonly xxh32: KeyHasher;
  /**
   * XXH64, seed 0, reduced to its low 32 bits (rings place points in a 32-bit space). Each
   * call allocates a BigInt; prefer `xxh32` unless you must match a 64-bit placement.
   */
  readonly xxh64: KeyHasher;
}

let loading: Promise<XxHashers> | undefined;

/**
 * Instantiates xxhash-wasm once per process and returns its hashers. Safe to call many times.
 *
 * @example
 * ```ts
 * import { HashRing, loadXxhash } from 'keel/hashring';
 *
 * const { xxh32 } = await loadXxhash();
 * const ring = new HashRing({ hash: xxh32, nodes: [{ id: 'a' }, { id: 'b' }] });
 * console.log(ring.hashName); // 'xxh32'
 * ```
 */
export function loadXxhash(): Promise<XxHashers> {
  loading ??= (async () => {
    const { default: init } = await import('xxhash-wasm');
    const api = await init();
    const low32 = (value: bigint): number => Number(value & 0xffffffffn);
    return Object.freeze({
      xxh32: Object.freeze({
        name: 'xxh32',
        string: (key: string) => api.h32(key),
        bytes: (bytes: Uint8Array) => api.h32Raw(bytes),
      }),
      xxh64: Object.freeze({
        name: 'xxh64',
        string: (key: string) => low32(api.h64(key)),
        bytes: (bytes: Uint8Array) => low32(api.h64Raw(bytes)),
      }),
    });
  })();
  // A failed load (no WebAssembly) may be retried.
  loading.catch(() => {
    loading = undefined;
  });
  return loading;
}
