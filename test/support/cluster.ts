/**
 * A real Redis Cluster for the test suites: N masters (3 by default, no replicas) on free
 * loopback ports, each a `redis-server --cluster-enabled yes` started by {@link RedisHarness}
 * (so the same reaping guarantees hold: `stop()`, the exit hook, pid files for the global
 * teardown), joined with `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`.
 *
 * See https://redis.io/docs/latest/operate/oss_and_stack/management/scaling/ ("Create a Redis
 * Cluster") for the procedure, and https://redis.io/docs/latest/commands/cluster-info/ for the
 * `cluster_state:ok` readiness signal this harness waits for on every node.
 */
import { spawn } from 'node:child_process';
import { delimiter, dirname, join } from 'node:path';
import { Cluster, type Redis } from 'ioredis';
import {
  REDIS_HOST,
  RedisHarness,
  closeClient,
  harnessPort,
  rawCommand,
  redisServerPath,
  type ClientOptions,
  type RedisNode,
} from './redis.js';
import { isExecutable } from './redis-binary.js';

export interface RedisClusterOptions {
  /** Masters to start (Redis Cluster needs at least 3). @defaultValue 3 */
  readonly masters?: number;
  /** Extra `redis-server` arguments for every node. */
  readonly args?: readonly string[];
  /**
   * Milliseconds for the whole start: servers answering PING, `redis-cli --cluster create`,
   * and `cluster_state:ok` on every node. Generous: a loaded 2-core machine can take several
   * seconds to form a cluster. @defaultValue 60000
   */
  readonly startTimeoutMs?: number;
}

/** Options of a harness Cluster client (ioredis `ClusterOptions`; startup nodes are the harness's). */
export type ClusterClientOptions = NonNullable<ConstructorParameters<typeof Cluster>[1]>;

const HOW_TO_GET_CLI =
  "Install it (Debian/Ubuntu: `apt-get install redis-tools`, which Debian's redis-server " +
  'package depends on; macOS: `brew install redis`), or point KEEL_REDIS_CLI at a redis-cli binary.';

/**
 * The redis-cli binary: `KEEL_REDIS_CLI`, else the one next to the redis-server in use, else the
 * first on PATH. Throws a message saying how to get one when there is none.
 */
export function redisCliPath(): string {
  const override = process.env.KEEL_REDIS_CLI;
  if (override !== undefined && override !== '') {
    if (isExecutable(override)) return override;
    throw new Error(`KEEL_REDIS_CLI=${override} is not an executable file. ${HOW_TO_GET_CLI}`);
  }
  const server = redisServerPath();
  const dirs = [dirname(server), ...(process.env.PATH ?? '').split(delimiter).filter(Boolean)];
  for (const dir of dirs) {
    const candidate = join(dir, 'redis-cli');
    if (isExecutable(candidate)) return candidate;
  }
  throw new Error(
    `redis-cli was not found next to ${server} or on PATH; the Redis Cluster suites need it to ` +
      `create the cluster. ${HOW_TO_GET_CLI}`,
  );
}

/** `CLUSTER INFO` of one node as key → value. */
export async function clusterInfo(port: number, timeoutMs = 2000): Promise<Record<string, string>> {
  const text = await rawCommand(port, 'CLUSTER INFO', timeoutMs);
  const info: Record<string, string> = {};
  for (const line of text.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) info[line.slice(0, colon)] = line.slice(colon + 1);
  }
  return info;
}

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A free loopback port for a cluster node: its cluster bus listens on port + 10000, so that
 * must be free too (see {@link harnessPort}; redis-server refuses ports above 55535).
 */
export function freeClusterPort(): Promise<number> {
  return harnessPort(true);
}

/** Runs `redis-cli --cluster create` for `ports`, failing with its output on error or timeout. */
function createCluster(cli: string, ports: readonly number[], timeoutMs: number): Promise<void> {
  const args = [
    '--cluster',
    'create',
    ...ports.map((port) => `${REDIS_HOST}:${port}`),
    '--cluster-replicas',
    '0',
    '--cluster-yes',
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(cli, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const collect = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-4000);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(`redis-cli --cluster create did not finish within ${timeoutMs} ms:\n${output}`),
      );
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`could not run ${cli}: ${error.message}. ${HOW_TO_GET_CLI}`));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      // redis-cli prints "[OK] All 16384 slots covered." once the cluster is configured.
      if (code === 0 && output.includes('All 16384 slots covered')) resolve();
      else
        reject(new Error(`redis-cli ${args.join(' ')} failed (exit ${String(code)}):\n${output}`));
    });
  });
}

/**
 * A real Redis Cluster of N masters for one suite. Node-level faults (pause, resume, kill,
 * restart) act on one master; a restarted master keeps its cluster identity and slots
 * (its `nodes.conf` survives) but, with no persistence, comes back with no keys.
 *
 * @example
 * ```ts
 * let cluster: RedisClusterHarness;
 * beforeAll(async () => (cluster = await RedisClusterHarness.start()));
 * afterAll(() => cluster.stop());
 * const client = cluster.client();
 * ```
 */
export class RedisClusterHarness implements AsyncDisposable {
  readonly #servers: RedisHarness;
  readonly #startTimeoutMs: number;
  readonly #clients = new Set<Cluster>();
  #stopped = false;

  private constructor(servers: RedisHarness, startTimeoutMs: number) {
    this.#servers = servers;
    this.#startTimeoutMs = startTimeoutMs;
  }

  /** Starts the masters, creates the cluster and resolves once every node says cluster_state:ok. */
  static async start(options: RedisClusterOptions = {}): Promise<RedisClusterHarness> {
    const masters = options.masters ?? 3;
    if (!Number.isInteger(masters) || masters < 3)
      throw new Error(`masters must be an integer >= 3 (Redis Cluster needs 3), got ${masters}`);
    const startTimeoutMs = options.startTimeoutMs ?? 60_000;
    const cli = redisCliPath(); // before starting anything: fail fast when it is missing
    const deadline = Date.now() + startTimeoutMs;
    const servers = await RedisHarness.start({
      count: masters,
      startTimeoutMs,
      choosePort: freeClusterPort,
      args: [
        '--cluster-enabled',
        'yes',
        // Relative to each server's own --dir, so every node has its own file.
        '--cluster-config-file',
        'nodes.conf',
        ...(options.args ?? []),
      ],
    });
    const harness = new RedisClusterHarness(servers, startTimeoutMs);
    try {
      await createCluster(
        cli,
        servers.nodes.map((node) => node.port),
        Math.max(1000, deadline - Date.now()),
      );
      await harness.waitHealthy(Math.max(1000, deadline - Date.now()));
    } catch (error) {
      await harness.stop();
      throw error;
    }
    return harness;
  }

  /** The masters' processes and their faults (pause, resume, kill, restart, logOf). */
  get servers(): RedisHarness {
    return this.#servers;
  }

  /** Every master, in index order. */
  get nodes(): readonly RedisNode[] {
    return this.#servers.nodes;
  }

  /** Number of masters. */
  get size(): number {
    return this.#servers.size;
  }

  /** Startup nodes for an ioredis `Cluster`. */
  startupNodes(): { host: string; port: number }[] {
    return this.#servers.nodes.map((node) => ({ host: node.host, port: node.port }));
  }

  /**
   * A new ioredis `Cluster` client for this cluster, closed by `stop()`. Errors are swallowed by a
   * default listener (add your own to see them). `redisOptions` go to every node connection.
   */
  client(options: ClusterClientOptions = {}): Cluster {
    if (this.#stopped) throw new Error('cluster harness is stopped');
    const client = new Cluster(this.startupNodes(), options);
    client.on('error', () => undefined);
    this.#clients.add(client);
    client.once('end', () => this.#clients.delete(client));
    return client;
  }

  /** A plain (non-cluster) client of master `index`, closed by `stop()`. */
  nodeClient(index: number, options: ClientOptions = {}): Redis {
    return this.#servers.client(index, options);
  }

  /** The hash slot of `key` (CLUSTER KEYSLOT, asked of the first running master). */
  async slotOf(key: string): Promise<number> {
    if (/\s/.test(key)) throw new Error(`slotOf: keys with whitespace are not supported: ${key}`);
    const node = this.#servers.nodes.find((n) => n.state === 'running');
    if (node === undefined) throw new Error('no running master to ask');
    const reply = await rawCommand(node.port, `CLUSTER KEYSLOT ${key}`);
    const slot = Number(reply.replace(/^:/, ''));
    if (!Number.isInteger(slot)) throw new Error(`CLUSTER KEYSLOT ${key} answered ${reply}`);
    return slot;
  }

  /** Index of the master that serves `key`'s slot (it answers the key without redirecting). */
  async masterOf(key: string): Promise<number> {
    for (const node of this.#servers.nodes) {
      if (node.state !== 'running') continue;
      // EXISTS on the owner answers `:0`/`:1`; any other master answers `-MOVED …`.
      const reply = await rawCommand(node.port, `EXISTS ${key}`);
      if (reply.startsWith(':')) return node.index;
    }
    throw new Error(`no running master serves ${key}`);
  }

  /**
   * Waits until every running master reports cluster_state:ok with all 16384 slots ok and every
   * master known; fails with the last CLUSTER INFO seen after `timeoutMs`.
   */
  async waitHealthy(timeoutMs = this.#startTimeoutMs): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const running = this.#servers.nodes.filter((node) => node.state === 'running');
      const infos = await Promise.all(
        running.map((node) => clusterInfo(node.port, 1000).catch(() => undefined)),
      );
      const healthy =
        running.length === this.size &&
        infos.every(
          (info) =>
            info?.cluster_state === 'ok' &&
            info.cluster_slots_ok === '16384' &&
            info.cluster_known_nodes === String(this.size),
        );
      if (healthy) return;
      const last = infos
        .map(
          (info, i) =>
            `#${String(running[i]?.index)}: ${info === undefined ? 'no answer' : `state=${info.cluster_state} slots_ok=${info.cluster_slots_ok} known=${info.cluster_known_nodes}`}`,
        )
        .join('; ');
      if (Date.now() > deadline)
        throw new Error(`Redis Cluster not healthy within ${timeoutMs} ms (${last})`);
      await delay(50);
    }
  }

  /** SIGSTOPs master `index` (see {@link RedisHarness.pause}). */
  pause(index: number): void {
    this.#servers.pause(index);
  }

  /** SIGCONTs master `index`. */
  resume(index: number): void {
    this.#servers.resume(index);
  }

  /** SIGKILLs master `index`; the cluster reports fail once the others notice. */
  async kill(index: number): Promise<void> {
    await this.#servers.kill(index);
  }

  /** Restarts master `index` on its port (same identity and slots, no keys). */
  async restart(index: number): Promise<void> {
    await this.#servers.restart(index);
  }

  /** Deletes every key on every running master. */
  async flushAll(): Promise<void> {
    await this.#servers.flushAll();
  }

  /** Closes every client and kills every master; safe to call more than once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    const clients = [...this.#clients];
    this.#clients.clear();
    await Promise.all([...clients.map(closeClient), this.#servers.stop()]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
