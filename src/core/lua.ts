/**
 * Lua scripts on Redis, once for every component: a script with its SHA-1, run with `EVALSHA`
 * and, when the server answers `NOSCRIPT` (a restarted, flushed or new node has not cached it),
 * again from source with `EVAL` — the fallback the Redis docs prescribe for script caching
 * (https://redis.io/docs/latest/develop/interact/programmability/eval-intro/#script-cache).
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * @packageDocumentation
 */
import { createHash } from 'node:crypto';

/**
 * `text` without leading blanks on any line, and without lines that hold only a comment.
 *
 * Only whole-line comments and leading blanks go. Both are safe in Lua because newlines and
 * indentation carry no meaning outside long strings (`[[…]]`) and comments (Lua 5.1 reference
 * manual §2.1, https://www.lua.org/manual/5.1/manual.html#2.1), and Keel's scripts use no long
 * strings. A comment after code on the same line is left alone (it may sit behind a `--` inside
 * a string literal, which only a Lua lexer could tell apart).
 */
export function compactLua(text: string): string {
  return text.replace(/^[ \t]+/gm, '').replace(/^(--.*)?\n/gm, '');
}

/** A Lua script with its SHA-1, for `EVALSHA` with an `EVAL` fallback on `NOSCRIPT`. */
export interface LuaScript {
  /** The text sent with `EVAL` (compacted: see {@link compactLua}). */
  readonly source: string;
  /** Hex SHA-1 of {@link LuaScript.source}, what `EVALSHA` names. */
  readonly sha: string;
}

/** A script from its Lua text (compacted, so the tests and the package send the same bytes). */
export function luaScript(text: string): LuaScript {
  const source = compactLua(text);
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

/**
 * The two calls a client needs to run scripts (ioredis's `evalsha` and `eval` fit).
 * @inline
 */
export interface ScriptClient {
  /** Runs a cached Lua script by its SHA1 (`EVALSHA`). */
  evalsha(sha: string, numKeys: number, ...args: (string | number | Buffer)[]): Promise<unknown>;
  /** Runs a Lua script from its source (`EVAL`). */
  eval(source: string, numKeys: number, ...args: (string | number | Buffer)[]): Promise<unknown>;
}

/** True for the error a server gives `EVALSHA` for a script it has not cached. */
export function isNoScriptError(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('NOSCRIPT');
}

/**
 * Runs `script` with `keys` and `args`: `EVALSHA`, then `EVAL` from source if the server does not
 * have it cached. Any other error (including the script's own `redis.error_reply`) is thrown as
 * the client gave it.
 */
export async function runScript(
  client: ScriptClient,
  script: LuaScript,
  keys: readonly (string | Buffer)[],
  args: readonly (string | number | Buffer)[] = [],
): Promise<unknown> {
  try {
    return await client.evalsha(script.sha, keys.length, ...keys, ...args);
  } catch (error) {
    if (!isNoScriptError(error)) throw error;
    return await client.eval(script.source, keys.length, ...keys, ...args);
  }
}
