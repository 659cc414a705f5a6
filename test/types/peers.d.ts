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

declare module 'redlock' {
  /**
   * npm `redlock` (node-redlock 5.0.0-beta.2). Its own `dist/index.d.ts` is not reachable
   * through its `exports` map under NodeNext resolution, so the calls we make are declared here.
   */
  import type { EventEmitter } from 'node:events';
  import type { Cluster, Redis } from 'ioredis';

  export interface Settings {
    readonly driftFactor: number;
    /** Further attempts after the first; -1 retries forever. */
    readonly retryCount: number;
    readonly retryDelay: number;
    /** The delay varies by ± this much. */
    readonly retryJitter: number;
    readonly automaticExtensionThreshold: number;
  }

  export class Lock {
    readonly resources: string[];
    readonly value: string;
    expiration: number;
    release(): Promise<unknown>;
    extend(duration: number): Promise<Lock>;
  }

  export class ResourceLockedError extends Error {}
  export class ExecutionError extends Error {}

  export default class Redlock extends EventEmitter {
    constructor(clients: Iterable<Redis | Cluster>, settings?: Partial<Settings>);
    readonly settings: Settings;
    acquire(resources: string[], duration: number, settings?: Partial<Settings>): Promise<Lock>;
    release(lock: Lock, settings?: Partial<Settings>): Promise<unknown>;
  }
}
