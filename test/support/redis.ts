/**
 * The Redis test harness: real `redis-server` processes on free loopback ports, with the
 * fault injection Keel's specs need — pause (SIGSTOP), resume (SIGCONT), kill (SIGKILL),
 * restart and flush — and a guarantee that every process it started is reaped.
 *
 * Reaping happens in three layers: `stop()` (call it in `afterAll`, or use `await using`); a
 * process `exit` hook that SIGKILLs anything still alive if a worker dies mid-suite; and a pid
 * file per server in a run-wide directory that the vitest global teardown sweeps, for workers
 * that were killed outright.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis, type RedisOptions } from 'ioredis';
import { locateRedisServer } from './redis-binary.js';

export const REDIS_HOST = '127.0.0.1';

/** ioredis options for harness clients (host and port are the harness's). */
export type ClientOptions = Omit<RedisOptions, 'host' | 'port' | 'replyMapping'>;

/** Lifecycle of one server as the harness sees it. */
export type RedisState = 'running' | 'paused' | 'killed' | 'stopped';

/** Read-only view of one server. */
export interface RedisNode {
  readonly index: number;
  readonly host: string;
  readonly port: number;
  /** pid of the current process; `undefined` once killed or stopped. */
  readonly pid: number | undefined;
  readonly state: RedisState;
}

export interface RedisHarnessOptions {
  /** How many independent servers to start. @defaultValue 1 */
  readonly count?: number;
  /** Extra `redis-server` arguments, e.g. `['--maxmemory', '10mb']`. */
  readonly args?: readonly string[];
  /** Milliseconds to wait for a server to answer PING. @defaultValue 15000 */
  readonly startTimeoutMs?: number;
  /** Picks a port for a new server. @defaultValue {@link harnessPort} */
  readonly choosePort?: () => Promise<number>;
}

// ---------------------------------------------------------------------------------------------
// Process bookkeeping shared by every harness in this worker.

const alive = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of alive) child.kill('SIGKILL');
  });
}

/** Directory where each started server leaves `<pid>` → port, for the global teardown. */
function pidDirectory(): string | undefined {
  const dir = process.env.KEEL_REDIS_PID_DIR;
  if (dir === undefined || dir === '') return undefined;
  mkdirSync(dir, { recursive: true });
  return dir;
}

let cachedBinary: string | undefined;

/** The redis-server binary, from the global setup if it ran, else located here. */
export function redisServerPath(): string {
  if (cachedBinary !== undefined) return cachedBinary;
  if (process.env.KEEL_SKIP_REDIS === '1') {
    throw new Error('KEEL_SKIP_REDIS=1 is set, so no redis-server may be started');
  }
  const fromSetup = process.env.KEEL_REDIS_SERVER_RESOLVED;
  if (fromSetup !== undefined && fromSetup !== '') return (cachedBinary = fromSetup);
  const setupError = process.env.KEEL_REDIS_ERROR;
  if (setupError !== undefined && setupError !== '') throw new Error(setupError);
  const found = locateRedisServer();
  if (!found.ok) throw new Error(found.message);
  return (cachedBinary = found.path);
}

/** A free TCP port on the loopback interface (the OS picks it; we release it at once). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, REDIS_HOST, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => {
        resolve(port);
      });
    });
  });
}

/** Whether a server can listen on loopback `port` right now (it is closed again at once). */
export function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => {
      resolve(false);
    });
    server.listen(port, REDIS_HOST, () => {
      server.close(() => {
        resolve(true);
      });
    });
  });
}

/** Where the harness's ports start, and how many each vitest worker has (see harnessPort). */
const HARNESS_PORT_BASE = 10_000;
const HARNESS_PORT_BLOCK = 1250;
const HARNESS_PORT_BLOCKS = 8;
/** The next port to try in the block: from a random start, so that suites run one after
 * another in a worker rarely reuse ports. */
let harnessPortCursor = Math.floor(Math.random() * HARNESS_PORT_BLOCK);

/**
 * A free loopback port for a harness server (and, with `bus`, port + 10000 free as well: a
 * Cluster node's bus port). Not from the OS's ephemeral range (32768–60999 on Linux, where
 * `listen(0)` and every outgoing connection take theirs) but from a block of 1250 ports below it
 * for this vitest worker alone (`VITEST_POOL_ID`), taken in turn.
 *
 * Why: a test that kills a server leaves its clients reconnecting to that port until it ends.
 * A suite running meanwhile in the other worker that took the port would have those strangers
 * connect to its server and run their commands there (a lock's fencing check on reconnection,
 * say), and a test counting commands on that server would miscount: CI once saw
 * `test/lock/semaphore-noscript.test.ts` count 402 EVALSHA where its own calls made 400. Ports of
 * one worker's block come back only after the whole block went round, and suites in a worker
 * run one at a time, each closing its clients when it stops.
 */
export async function harnessPort(bus = false): Promise<number> {
  const pool = Number(process.env.VITEST_POOL_ID ?? process.pid);
  const block = (Number.isInteger(pool) && pool > 0 ? pool - 1 : 0) % HARNESS_PORT_BLOCKS;
  const first = HARNESS_PORT_BASE + block * HARNESS_PORT_BLOCK;
  for (let tried = 0; tried < HARNESS_PORT_BLOCK; tried++) {
    const port = first + (harnessPortCursor++ % HARNESS_PORT_BLOCK);
    if ((await canListen(port)) && (!bus || (await canListen(port + 10_000)))) return port;
  }
  throw new Error(
    `no free loopback port in ${first}–${first + HARNESS_PORT_BLOCK - 1}` +
      (bus ? ' with port + 10000 free (the cluster bus port)' : ''),
  );
}

/**
 * Sends one inline RESP command on a fresh socket and returns its reply as text: the status,
 * error or integer line as sent (`+PONG`, `-ERR …`, `:1`), or a bulk string's body (`CLUSTER
 * INFO`). Used for PING, FLUSHALL and the cluster checks so the harness needs no client state
 * of its own.
 */
export function rawCommand(port: number, command: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: REDIS_HOST, port });
    let buffer = '';
    const timer = setTimeout(() => {
      finish(new Error(`no reply to ${command} from 127.0.0.1:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    const finish = (error?: Error, reply?: string): void => {
      clearTimeout(timer);
      socket.destroy();
      if (error !== undefined) reject(error);
      else resolve(reply ?? '');
    };
    socket.setEncoding('utf8');
    socket.once('error', (error) => {
      finish(error);
    });
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      const end = buffer.indexOf('\r\n');
      if (end === -1) return;
      const head = buffer.slice(0, end);
      if (!head.startsWith('$')) {
        finish(undefined, head);
        return;
      }
      // RESP bulk string `$<length>\r\n<body>\r\n`; length counts bytes (these replies are ASCII).
      const length = Number(head.slice(1));
      if (length < 0) finish(undefined, '');
      else if (buffer.length >= end + 2 + length)
        finish(undefined, buffer.slice(end + 2, end + 2 + length));
    });
    socket.once('connect', () => socket.write(`${command}\r\n`));
  });
}

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------

class Instance implements RedisNode {
  readonly index: number;
  readonly host = REDIS_HOST;
  port = 0;
  state: RedisState = 'stopped';
  child: ChildProcess | undefined;
  exited: Promise<void> = Promise.resolve();
  log: string[] = [];

  constructor(index: number) {
    this.index = index;
  }

  get pid(): number | undefined {
    return this.state === 'running' || this.state === 'paused' ? this.child?.pid : undefined;
  }
}

/**
 * K independent Redis servers for one test suite.
 *
 * @example
 * ```ts
 * let redis: RedisHarness;
 * beforeAll(async () => (redis = await RedisHarness.start({ count: 3 })));
 * afterAll(() => redis.stop());
 * ```
 */
export class RedisHarness implements AsyncDisposable {
  readonly #binary: string;
  readonly #args: readonly string[];
  readonly #startTimeoutMs: number;
  readonly #choosePort: () => Promise<number>;
  readonly #dir: string;
  readonly #instances: Instance[];
  readonly #clients = new Set<Redis>();
  #stopped = false;

  private constructor(binary: string, count: number, options: RedisHarnessOptions) {
    this.#binary = binary;
    this.#args = options.args ?? [];
    this.#startTimeoutMs = options.startTimeoutMs ?? 15_000;
    this.#choosePort = options.choosePort ?? harnessPort;
    this.#dir = mkdtempSync(join(tmpdir(), 'keel-redis-'));
    this.#instances = Array.from({ length: count }, (_, i) => new Instance(i));
  }

  /** Starts `count` servers in parallel and resolves once every one answers PING. */
  static async start(options: RedisHarnessOptions = {}): Promise<RedisHarness> {
    const count = options.count ?? 1;
    if (!Number.isInteger(count) || count < 1)
      throw new RangeError(`count must be an integer >= 1, got ${count}`);
    const harness = new RedisHarness(redisServerPath(), count, options);
    try {
      await Promise.all(harness.#instances.map((instance) => harness.#launch(instance, undefined)));
    } catch (error) {
      await harness.stop();
      throw error;
    }
    return harness;
  }

  /** Every server, in index order. */
  get nodes(): readonly RedisNode[] {
    return this.#instances;
  }

  /** Number of servers. */
  get size(): number {
    return this.#instances.length;
  }

  /** One server by index. */
  node(index: number): RedisNode {
    return this.#instance(index);
  }

  /** Port of server `index`. */
  port(index: number): number {
    return this.#instance(index).port;
  }

  /**
   * A new ioredis client for server `index`, closed by `stop()`. Errors are swallowed by a
   * default listener (fault tests provoke plenty); add your own `error` listener to see them.
   */
  client(index: number, options: ClientOptions = {}): Redis {
    const instance = this.#instance(index);
    const client = new Redis({ host: REDIS_HOST, port: instance.port, ...options });
    client.on('error', () => undefined);
    this.#clients.add(client);
    client.once('end', () => this.#clients.delete(client));
    return client;
  }

  /** One client per server, in index order. */
  clients(options: ClientOptions = {}): Redis[] {
    return this.#instances.map((instance) => this.client(instance.index, options));
  }

  /**
   * Freezes server `index` with SIGSTOP: connections stay open, nothing answers. Returns once
   * the kernel reports the process stopped (signals are delivered asynchronously; on a busy
   * machine the server could otherwise still answer a command sent right after).
   */
  pause(index: number): void {
    const instance = this.#expect(index, 'running', 'pause');
    instance.child?.kill('SIGSTOP');
    waitForState(instance.child?.pid, (state) => state === 'T' || state === 't');
    instance.state = 'paused';
  }

  /** Thaws a paused server with SIGCONT; returns once the process is no longer stopped. */
  resume(index: number): void {
    const instance = this.#expect(index, 'paused', 'resume');
    instance.child?.kill('SIGCONT');
    waitForState(instance.child?.pid, (state) => state !== 'T' && state !== 't');
    instance.state = 'running';
  }

  /** SIGKILLs server `index` (running or paused) and waits until the process is gone. */
  async kill(index: number): Promise<void> {
    const instance = this.#instance(index);
    if (instance.state !== 'running' && instance.state !== 'paused') {
      throw new Error(`redis #${index} is ${instance.state}; cannot kill it`);
    }
    instance.child?.kill('SIGKILL');
    await instance.exited;
    instance.state = 'killed';
  }

  /**
   * Starts server `index` again on the same port (killing it first if it is still up). With no
   * persistence it comes back empty, as a real crashed master without AOF would.
   */
  async restart(index: number): Promise<void> {
    const instance = this.#instance(index);
    if (instance.state === 'running' || instance.state === 'paused') await this.kill(index);
    if (this.#stopped) throw new Error('harness is stopped');
    await this.#launch(instance, instance.port);
  }

  /** Deletes every key on server `index` (FLUSHALL). */
  async flush(index: number): Promise<void> {
    const instance = this.#expect(index, 'running', 'flush');
    const reply = await rawCommand(instance.port, 'FLUSHALL', 10_000);
    if (reply !== '+OK') throw new Error(`FLUSHALL on redis #${index} answered ${reply}`);
  }

  /** Deletes every key on every running server. */
  async flushAll(): Promise<void> {
    await Promise.all(
      this.#instances.filter((i) => i.state === 'running').map((i) => this.flush(i.index)),
    );
  }

  /** Whether server `index` answers PING right now. */
  async ping(index: number, timeoutMs = 500): Promise<boolean> {
    try {
      return (await rawCommand(this.#instance(index).port, 'PING', timeoutMs)) === '+PONG';
    } catch {
      return false;
    }
  }

  /** Closes every client and kills every server; safe to call more than once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    const clients = [...this.#clients];
    this.#clients.clear();
    // Clients and servers go down together: a client of a paused server only sees its
    // connection end once the server is gone (waiting first cost up to 2 s per paused node).
    const closed = Promise.all(clients.map(closeClient));
    await Promise.all(
      this.#instances.map(async (instance) => {
        if (
          instance.child !== undefined &&
          (instance.state === 'running' || instance.state === 'paused')
        ) {
          instance.child.kill('SIGKILL');
          await instance.exited;
        }
        instance.state = 'stopped';
      }),
    );
    await closed;
    rmSync(this.#dir, { recursive: true, force: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** The last lines server `index` logged (for failure messages). */
  logOf(index: number): string {
    return this.#instance(index).log.join('\n');
  }

  #instance(index: number): Instance {
    const instance = this.#instances[index];
    if (instance === undefined)
      throw new RangeError(`no redis #${index}; the harness has ${this.#instances.length}`);
    return instance;
  }

  #expect(index: number, state: RedisState, action: string): Instance {
    const instance = this.#instance(index);
    if (instance.state !== state)
      throw new Error(`redis #${index} is ${instance.state}; cannot ${action} it`);
    return instance;
  }

  /** Spawns a server (on `port`, or a fresh free one) and waits for PING. */
  async #launch(instance: Instance, port: number | undefined): Promise<void> {
    let lastError: unknown;
    // A free port can be taken by someone else between our probe and redis binding it; try a
    // few. A restart must reuse its port, so it retries the same one (it may be in TIME_WAIT).
    for (let attempt = 0; attempt < 5; attempt++) {
      const chosen = port ?? (await this.#choosePort());
      try {
        await this.#spawnOnce(instance, chosen);
        return;
      } catch (error) {
        lastError = error;
        if (port !== undefined) await delay(100);
      }
    }
    throw lastError;
  }

  async #spawnOnce(instance: Instance, port: number): Promise<void> {
    installExitHook();
    const dir = join(this.#dir, String(instance.index));
    mkdirSync(dir, { recursive: true });
    const child = spawn(
      this.#binary,
      [
        '--port',
        String(port),
        '--bind',
        REDIS_HOST,
        '--save',
        '',
        '--appendonly',
        'no',
        '--daemonize',
        'no',
        '--dir',
        dir,
        '--loglevel',
        'warning',
        ...this.#args,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    instance.log = [];
    const record = (chunk: Buffer): void => {
      instance.log.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      if (instance.log.length > 50) instance.log.splice(0, instance.log.length - 50);
    };
    child.stdout.on('data', record);
    child.stderr.on('data', record);
    const status = { exited: false };
    instance.exited = new Promise<void>((resolve) => {
      child.once('close', () => {
        status.exited = true;
        alive.delete(child);
        if (pidFile !== undefined) rmSync(pidFile, { force: true });
        resolve();
      });
    });
    const spawnError = new Promise<never>((_, reject) => child.once('error', reject));
    spawnError.catch(() => undefined);
    alive.add(child);
    const pids = pidDirectory();
    const pidFile =
      pids !== undefined && child.pid !== undefined ? join(pids, String(child.pid)) : undefined;
    if (pidFile !== undefined) writeFileSync(pidFile, String(port));
    instance.child = child;
    instance.port = port;

    const deadline = Date.now() + this.#startTimeoutMs;
    for (;;) {
      if (status.exited) {
        throw new Error(
          `redis-server on port ${port} exited during start-up:\n${instance.log.join('\n')}`,
        );
      }
      const pong = await Promise.race([
        rawCommand(port, 'PING', 500).then(
          (reply) => reply === '+PONG',
          () => false,
        ),
        spawnError,
      ]);
      if (pong) break;
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        await instance.exited;
        throw new Error(
          `redis-server on port ${port} did not answer PING within ${this.#startTimeoutMs} ms:\n${instance.log.join('\n')}`,
        );
      }
      await delay(25);
    }
    instance.state = 'running';
  }
}

/** The state letter of a process (`/proc/<pid>/stat` field 3), or undefined if unknown. */
function processStateOf(pid: number): string | undefined {
  try {
    return /\) (\S)/.exec(readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

/**
 * Waits (synchronously, sleeping 1 ms at a time, at most 2 s) until the process's state
 * satisfies `done`; gives up quietly where /proc is not available.
 */
function waitForState(pid: number | undefined, done: (state: string) => boolean): void {
  if (pid === undefined) return;
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < 2000; i++) {
    const state = processStateOf(pid);
    if (state === undefined || done(state)) return;
    Atomics.wait(sleeper, 0, 0, 1);
  }
}

/** What {@link closeClient} needs: an ioredis `Redis` or `Cluster`. */
export interface ClosableClient {
  readonly status: string;
  once(event: 'end', listener: () => void): unknown;
  disconnect(): void;
}

/**
 * Disconnects a client (`Redis` or `Cluster`) without waiting on its servers (which may be
 * paused) and waits for 'end', at most 2 s.
 */
export function closeClient(client: ClosableClient): Promise<void> {
  if (client.status === 'end') return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, 2000);
    client.once('end', () => {
      clearTimeout(timer);
      resolve();
    });
    client.disconnect();
  });
}

/** Reads the pid files a run left behind (used by the global teardown). */
export function readPidFile(path: string): number | undefined {
  const port = Number(readFileSync(path, 'utf8'));
  return Number.isInteger(port) ? port : undefined;
}
