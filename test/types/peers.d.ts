// Minimal types for the peer libraries the tests and benchmarks compare against. Only the
// calls we make are declared.

declare module 'hashring' {
  /** npm `hashring` (3.x): a ketama-style ring keyed by "host:port" strings. */
  class HashRing {
    constructor(
      servers?: string[] | Record<string, number | { weight?: number; vnodes?: number }>,
      algorithm?: string,
      options?: Record<string, unknown>,
    );
    get(key: string): string;
    range(key: string, size?: number, unique?: boolean): string[];
    add(servers: string | string[] | Record<string, number>): this;
    remove(server: string): this;
    has(server: string): boolean;
    reset(): this;
    end(): this;
  }
  export = HashRing;
}

declare module 'consistent-hash' {
  /** npm `consistent-hash`: a ring of string nodes with a configurable vnode count. */
  class ConsistentHash {
    constructor(options?: { range?: number; weight?: number; distribution?: 'random' | 'uniform' });
    add(node: string, weight?: number, points?: number[]): this;
    remove(node: string): this;
    get(key: string, count?: number): string | string[] | null;
    getPoints(node: string): number[];
  }
  export = ConsistentHash;
}

declare module 'murmurhash3js-revisited' {
  const murmur: {
    x86: {
      hash32(bytes: Uint8Array, seed?: number): number;
    };
  };
  export default murmur;
}

declare module 'opossum' {
  /** npm `opossum` (9.x): a circuit breaker wrapping one async function. */
  class CircuitBreaker<A extends unknown[] = unknown[], R = unknown> {
    constructor(action: (...args: A) => Promise<R>, options?: Record<string, unknown>);
    fire(...args: A): Promise<R>;
    open(): void;
    close(): void;
    shutdown(): void;
    readonly opened: boolean;
  }
  export = CircuitBreaker;
}
