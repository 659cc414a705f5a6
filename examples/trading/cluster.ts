/**
 * Starting, crashing and stopping service instances: child processes in Redis mode, objects in
 * this process in embedded mode. The scenario runner sees the same handles either way and
 * talks to every instance over HTTP.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { PaymentSettings } from './config.js';
import { SharedMemoryInfra, redisClient } from './platform.js';
import type { Store } from './store.js';
import { RedisStore, purgePrefix } from './store-redis.js';
import { starters } from './services/index.js';
import type { Role, RunningService } from './services/service.js';

/** How long a child process may take to start and report ready. */
const START_LIMIT_MS = 120_000;

/** A running instance as the scenario sees it. */
export interface InstanceHandle {
  readonly id: string;
  readonly role: Role;
  readonly port: number;
  readonly pid: number;
  /** Port of the instance's own Prometheus exporter (Redis mode with `--metrics-port`). */
  readonly metricsPort?: number | undefined;
  /** Crash without warning: SIGKILL in Redis mode. */
  kill(): Promise<void>;
  /** Graceful shutdown: deregister, finish requests, exit. */
  stop(): Promise<void>;
}

/** What every instance is started with, besides its role and id. */
export interface ClusterSettings {
  readonly seed: number;
  readonly payments: PaymentSettings;
  readonly skus: readonly string[];
  /** Each instance process records its Keel metrics and serves them (`--metrics-port`). */
  readonly metrics?: boolean | undefined;
}

export interface Cluster {
  readonly mode: 'redis' | 'memory';
  /** The shared store, for setting up stock and for the audit. */
  readonly store: Store;
  start(role: Role, id: string): Promise<InstanceHandle>;
  /** Pids of every child process started (none in embedded mode). */
  readonly pids: readonly number[];
  /** Stops every instance still running and closes the store. */
  close(): Promise<void>;
}

/** Embedded mode: every instance in this process, over one MemoryLock, MemoryBackend and store. */
export function memoryCluster(settings: ClusterSettings): Cluster {
  const infra = new SharedMemoryInfra();
  const running = new Set<RunningService>();
  return {
    mode: 'memory',
    store: infra.store,
    pids: [],
    async start(role, id) {
      const service = await starters[role]({ id, platform: infra.platform(), ...settings });
      running.add(service);
      return {
        id,
        role,
        port: service.port,
        pid: process.pid,
        kill: () => {
          running.delete(service);
          service.crash();
          return Promise.resolve();
        },
        stop: async () => {
          running.delete(service);
          await service.stop();
        },
      };
    },
    async close() {
      await Promise.all([...running].map((s) => s.stop()));
      running.clear();
    },
  };
}

/** The message a service process sends once it serves and is registered. */
export interface ReadyMessage {
  readonly type: 'ready';
  readonly port: number;
  /** Where the instance serves its Prometheus text, when metrics are on. */
  readonly metricsPort?: number | undefined;
}

/** Environment variable carrying a service process's settings (JSON). */
export const SPEC_ENV = 'KEEL_TRADING_SERVICE';

/** What a service process is told in {@link SPEC_ENV}. */
export interface ProcessSpec extends ClusterSettings {
  readonly role: Role;
  readonly id: string;
  readonly urls: readonly string[];
  readonly prefix: string;
}

const entry = fileURLToPath(new URL('./service-process.ts', import.meta.url));
const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) =>
    child.once('exit', () => {
      resolve();
    }),
  );
}

/**
 * Redis mode: one child process per instance (Node with tsx, from the repository root so the
 * `keel` mapping in tsconfig.json applies), each with its own Redis connections. With `purge`,
 * `close()` deletes every key of the run afterwards (servers that are not the demo's own).
 */
export function redisCluster(
  settings: ClusterSettings,
  urls: readonly string[],
  prefix: string,
  purge: boolean,
): Cluster {
  const client = redisClient(urls[0] as string);
  const store = new RedisStore(client, prefix);
  const children = new Set<ChildProcess>();
  const pids: number[] = [];
  const stopChild = async (child: ChildProcess): Promise<void> => {
    if (child.connected) child.send({ type: 'stop' });
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited(child);
    clearTimeout(timer);
    children.delete(child);
  };
  return {
    mode: 'redis',
    store,
    pids,
    async start(role, id) {
      const spec: ProcessSpec = { role, id, urls, prefix, ...settings };
      const child = fork(entry, [], {
        cwd: repoRoot,
        execArgv: ['--import', 'tsx'],
        env: { ...process.env, [SPEC_ENV]: JSON.stringify(spec) },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      children.add(child);
      if (child.pid !== undefined) pids.push(child.pid);
      const ready = await new Promise<ReadyMessage>((resolve, reject) => {
        // Each child compiles its TypeScript with tsx as it starts: well under a second on an
        // idle machine, but it took longer than 30 s at load ~27. A bound for a child that hangs.
        const timer = setTimeout(() => {
          reject(
            new Error(
              `${id} did not start within ${START_LIMIT_MS / 1000} s (each child compiles with tsx as it starts: is the machine overloaded?)`,
            ),
          );
        }, START_LIMIT_MS);
        child.once('message', (message: ReadyMessage) => {
          clearTimeout(timer);
          resolve(message);
        });
        child.once('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`${id} exited during start-up (code ${String(code)})`));
        });
      }).catch((error: unknown) => {
        child.kill('SIGKILL');
        children.delete(child);
        throw error;
      });
      return {
        id,
        role,
        port: ready.port,
        metricsPort: ready.metricsPort,
        pid: child.pid ?? 0,
        kill: async () => {
          child.kill('SIGKILL');
          await exited(child);
          children.delete(child);
        },
        stop: () => stopChild(child),
      };
    },
    async close() {
      await Promise.all([...children].map(stopChild));
      if (purge) {
        // Lock keys live on every server; registry and store keys on the first.
        const others = urls.slice(1).map(redisClient);
        await Promise.all(
          [client, ...others].map((c) => purgePrefix(c, prefix).catch(() => undefined)),
        );
        await Promise.all(others.map((c) => c.quit().catch(() => undefined)));
      }
      await client.quit().catch(() => undefined);
    },
  };
}
