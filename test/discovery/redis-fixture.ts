/**
 * The {@link BackendFixture} for the Redis backend, shared by the standalone and the Redis
 * Cluster runs of the behavioural suite: only how clients are made and how data is lost differ.
 */
import { systemClock } from '../../src/core/index.js';
import { RedisBackend, type DiscoveryRedisClient } from '../../src/discovery/index.js';
import type { BackendFixture } from './shared-suite.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The admin commands the fixture uses on the store (an ioredis `Redis` or `Cluster`). */
export interface AdminClient extends DiscoveryRedisClient {
  hkeys(key: string): Promise<string[]>;
  hset(key: string, field: string, value: string): Promise<number>;
}

export interface RedisFixtureSetup {
  /** The admin client (checks the store's truth, plants records). */
  readonly admin: AdminClient;
  /** A fresh client for one more backend ("process"). */
  client(): DiscoveryRedisClient;
  /** Every key of the store is lost (a restart without persistence). */
  loseData(): Promise<void>;
}

/** A Redis fixture with short block and read timeouts, so the suite runs in real time quickly. */
export function redisFixture(setup: RedisFixtureSetup): BackendFixture {
  const backends: RedisBackend[] = [];
  const layout = new RedisBackend({ client: setup.admin });
  const keysOf = (service: string) => layout.keys(service);
  return {
    clock: systemClock,
    backend: () => {
      const backend = new RedisBackend({
        client: setup.client(),
        blockMs: 500,
        readTimeoutMs: 1000,
      });
      backends.push(backend);
      return backend;
    },
    advance: sleep,
    stepMs: 20,
    ttlMs: 600,
    reapIntervalMs: 150,
    slackMs: 300,
    truth: async (service: string) => (await setup.admin.hkeys(keysOf(service).records)).sort(),
    loseData: () => setup.loseData(),
    plant: async (service: string, id: string, raw: string) => {
      await setup.admin.hset(keysOf(service).records, id, raw);
    },
    cleanup: async () => {
      await Promise.all(backends.map((b) => b.close()));
    },
  };
}

/** Backend options of the fault tests: short blocks and timeouts, so faults show up quickly. */
export const faultBackendOptions = {
  blockMs: 300,
  readTimeoutMs: 400,
  outageThresholdMs: 900,
  outageGraceMs: 2500,
  retryBaseMs: 50,
  retryMaxMs: 400,
} as const;

/** Registry options of the fault tests (ttl 1 s, quick reaps, resyncs and retries). */
export const faultRegistryOptions = {
  ttlMs: 1000,
  reapIntervalMs: 150,
  resyncJitterMs: 50,
  retryBaseMs: 50,
  retryMaxMs: 400,
  operationTimeoutMs: 400,
} as const;
