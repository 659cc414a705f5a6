/**
 * Starts the demo's own `redis-server` processes (Redis mode without `--redis`) and stops them.
 *
 * Each server runs under a two-line `sh` watchdog that holds a pipe from this process: when the
 * demo ends — normally, by an exception, or killed outright — the pipe closes and the watchdog
 * SIGKILLs its server, so no redis-server outlives the demo. Their working directories are
 * named `keel-redis-demo-…`, which CI's leftover check looks for.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { Redis } from 'ioredis';
import { HOST, sleep } from './http.js';

/** The redis-server binary: `$KEEL_REDIS_SERVER`, else the first on PATH or in the usual places. */
export function findRedisServer(): string | undefined {
  const override = process.env.KEEL_REDIS_SERVER;
  const dirs = [
    ...(process.env.PATH ?? '').split(delimiter),
    '/usr/bin',
    '/usr/local/bin',
    '/usr/sbin',
    '/opt/homebrew/bin',
  ];
  const candidates = override
    ? [override]
    : dirs.filter(Boolean).map((d) => join(d, 'redis-server'));
  for (const path of candidates) {
    try {
      accessSync(path, constants.X_OK);
    } catch {
      continue;
    }
    if (spawnSync(path, ['--version'], { timeout: 5000 }).status === 0) return path;
  }
  return undefined;
}

function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, HOST, () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => {
        resolve(port);
      });
    });
  });
}

/** Waits until the server at `port` answers PING, or throws after `timeoutMs`. */
async function untilPong(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && child.exitCode === null) {
    const client = new Redis({
      host: HOST,
      port,
      lazyConnect: true,
      retryStrategy: () => null,
      maxRetriesPerRequest: 0,
    });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.ping();
      return;
    } catch {
      // not up yet
    } finally {
      client.disconnect();
    }
    await sleep(30);
  }
  throw new Error(`redis-server on port ${port} did not start`);
}

// $0 is the binary, "$@" its arguments; `read` returns when our end of stdin closes.
const WATCHDOG =
  '"$0" "$@" & pid=$!; read -r _; kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; exit 0';

/** Running servers: their URLs and a stop that waits until every one is gone. */
export interface RedisServers {
  readonly urls: readonly string[];
  stop(): Promise<void>;
}

/** Starts `count` throwaway servers (no persistence) on free loopback ports. */
export async function startRedisServers(binary: string, count: number): Promise<RedisServers> {
  const dir = mkdtempSync(join(tmpdir(), 'keel-redis-demo-'));
  const children: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) {
              resolve();
              return;
            }
            child.once('close', () => {
              resolve();
            });
            child.stdin?.end();
          }),
      ),
    );
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const urls = await Promise.all(
      Array.from({ length: count }, async (_, i) => {
        const port = await freeLoopbackPort();
        const args = ['--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no'];
        args.push('--dir', dir, '--dbfilename', `demo-${i}.rdb`, '--loglevel', 'warning');
        const child = spawn('sh', ['-c', WATCHDOG, binary, ...args], {
          stdio: ['pipe', 'ignore', 'ignore'],
        });
        children.push(child);
        await untilPong(port, child, 10_000);
        return `redis://${HOST}:${port}`;
      }),
    );
    return { urls, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
