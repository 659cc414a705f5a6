/**
 * Finds `redis-server` for the test harness — and, on a fresh machine where we run as root
 * with apt-get, installs Debian's package, saying so. Where it can do neither it returns a
 * message that tells the user how to get Redis; the Redis suites then fail with that message.
 * They never skip silently: only `KEEL_SKIP_REDIS=1` skips them.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, rmSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';

export type RedisBinary =
  | { readonly ok: true; readonly path: string; readonly version: string }
  | { readonly ok: false; readonly message: string };

const EXTRA_DIRS = ['/usr/bin', '/usr/sbin', '/usr/local/bin', '/opt/homebrew/bin'];

/** Whether `path` is a file this process may execute. */
export function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function which(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

function versionOf(path: string): string | undefined {
  const result = spawnSync(path, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (result.status !== 0) return undefined;
  return /v=(\S+)/.exec(result.stdout)?.[1] ?? result.stdout.trim();
}

const HOW_TO_GET_IT =
  'Install Redis (Debian/Ubuntu: `sudo apt-get install redis-server`; macOS: `brew install redis`), ' +
  'or point KEEL_REDIS_SERVER at a redis-server binary. To skip the Redis suites on purpose, run ' +
  'with KEEL_SKIP_REDIS=1.';

function run(command: string, args: string[], log: (line: string) => void): boolean {
  log(`$ ${command} ${args.join(' ')}`);
  const result = spawnSync(command, args, {
    encoding: 'utf8',
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    timeout: 15 * 60_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (result.status !== 0) {
    log(
      `  failed (${result.error?.message ?? `exit ${String(result.status)}`}): ${(result.stderr || '').trim().split('\n').slice(-5).join(' | ')}`,
    );
    return false;
  }
  return true;
}

/**
 * Locates redis-server, installing Debian's package with apt-get when it is missing and we may
 * (root, apt-get present, `KEEL_NO_INSTALL` unset).
 */
export function locateRedisServer(
  log: (line: string) => void = (line) => {
    console.error(line);
  },
): RedisBinary {
  const override = process.env.KEEL_REDIS_SERVER;
  if (override !== undefined && override !== '') {
    const version = isExecutable(override) ? versionOf(override) : undefined;
    return version === undefined
      ? {
          ok: false,
          message: `KEEL_REDIS_SERVER=${override} is not a working redis-server binary. ${HOW_TO_GET_IT}`,
        }
      : { ok: true, path: override, version };
  }
  const found = which('redis-server');
  if (found !== undefined) {
    const version = versionOf(found);
    if (version !== undefined) return { ok: true, path: found, version };
  }
  const aptGet = which('apt-get');
  const isRoot = process.getuid?.() === 0;
  if (aptGet === undefined || !isRoot || process.env.KEEL_NO_INSTALL === '1') {
    const why =
      aptGet === undefined
        ? 'apt-get is not available'
        : !isRoot
          ? 'not running as root, so it cannot install it without asking'
          : 'KEEL_NO_INSTALL=1 forbids installing it';
    return {
      ok: false,
      message: `redis-server was not found on PATH and the test harness cannot install it (${why}). ${HOW_TO_GET_IT}`,
    };
  }
  log(
    "Keel test harness: redis-server is not on PATH; installing Debian's redis-server with apt-get (once per machine)...",
  );
  // The package's post-install script would start a system Redis on port 6379 that nobody
  // asked for; Debian's policy-rc.d hook (exit 101 = "action forbidden") stops that. It is only
  // written when the machine has none, and removed again straight after.
  const policy = '/usr/sbin/policy-rc.d';
  const ownPolicy = !existsSync(policy);
  if (ownPolicy) writeFileSync(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  let installed: boolean;
  try {
    installed =
      run(aptGet, ['update', '-qq'], log) &&
      run(aptGet, ['install', '-y', '-qq', '--no-install-recommends', 'redis-server'], log);
  } finally {
    if (ownPolicy) rmSync(policy, { force: true });
  }
  const path = which('redis-server');
  const version = path === undefined ? undefined : versionOf(path);
  if (!installed || path === undefined || version === undefined) {
    return {
      ok: false,
      message: `Installing redis-server with apt-get failed (see the log above). ${HOW_TO_GET_IT}`,
    };
  }
  log(`Keel test harness: installed redis-server ${version} at ${path}.`);
  return { ok: true, path, version };
}
