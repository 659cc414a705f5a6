/**
 * vitest global setup: runs once per test run, in the main process, before any worker starts.
 *
 * - Finds redis-server (installing it with apt-get on a fresh root machine) once, so workers
 *   do not race to install it, and passes its path to them through the environment.
 * - Creates the run-wide pid directory and, at teardown, reaps any redis-server a crashed
 *   worker left behind — no process outlives the run.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { locateRedisServer } from './redis-binary.js';

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

export function setup(): () => void {
  if (process.env.KEEL_SKIP_REDIS === '1') {
    log(
      'KEEL_SKIP_REDIS=1: the Redis suites are SKIPPED in this run (no redis-server is started).',
    );
  } else {
    const found = locateRedisServer(log);
    if (found.ok) {
      process.env.KEEL_REDIS_SERVER_RESOLVED = found.path;
    } else {
      // Not thrown here: the other suites still run; every Redis suite fails with this message.
      process.env.KEEL_REDIS_ERROR = found.message;
      log(`Keel test harness: ${found.message}`);
    }
  }
  const pidDir = mkdtempSync(join(tmpdir(), 'keel-redis-pids-'));
  process.env.KEEL_REDIS_PID_DIR = pidDir;

  return function teardown(): void {
    let reaped = 0;
    for (const name of readdirSync(pidDir)) {
      const pid = Number(name);
      if (!Number.isInteger(pid)) continue;
      const port = readFileSync(join(pidDir, name), 'utf8').trim();
      let cmdline: string;
      try {
        cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      } catch {
        continue; // already gone
      }
      // Only a process we started: redis-server on the port we recorded for that pid. Once up,
      // redis-server retitles itself `redis-server 127.0.0.1:<port>` (plus ` [cluster]`), so
      // its command line no longer holds the `--port <port>` it was started with.
      const onPort = new RegExp(`(?:--port |:)${port}(?:\\s|$)`);
      if (!/^\S*redis-server/.test(cmdline) || !onPort.test(cmdline)) continue;
      try {
        process.kill(pid, 'SIGKILL');
        reaped++;
      } catch {
        // exited in the meantime
      }
    }
    rmSync(pidDir, { recursive: true, force: true });
    if (reaped > 0)
      log(
        `Keel test harness: reaped ${reaped} redis-server process(es) left behind by a crashed suite.`,
      );
  };
}
