import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { compactLua, luaScript, runScript, isNoScriptError } from '../../src/core/index.js';
import { RedisHarness, closeClient } from '../support/redis.js';

describe('core/lua', () => {
  let redis: RedisHarness;
  let client: Redis;
  beforeAll(async () => {
    redis = await RedisHarness.start({ count: 1 });
    client = redis.client(0);
  });
  afterAll(async () => {
    await closeClient(client);
    await redis[Symbol.asyncDispose]();
  });

  it('compacts comments and indentation only', () => {
    expect(compactLua('  -- note\n  local x = 1\n\treturn x -- keep\n')).toBe(
      'local x = 1\nreturn x -- keep\n',
    );
  });

  it('runs a script the server has not cached (NOSCRIPT → EVAL), then by its SHA', async () => {
    const script = luaScript(`
      -- echoes its key and argument
      return {KEYS[1], ARGV[1]}
    `);
    await client.script('FLUSH');
    expect(await runScript(client, script, ['k'], ['v'])).toEqual(['k', 'v']);
    expect(await client.script('EXISTS', script.sha)).toEqual([1]);
    expect(await runScript(client, script, ['k2'], [7])).toEqual(['k2', '7']);
  });

  it("passes the script's own errors through unchanged", async () => {
    const script = luaScript(`return redis.error_reply('BOOM bad things')`);
    const error = await runScript(client, script, []).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toContain('BOOM bad things');
    expect(isNoScriptError(error)).toBe(false);
  });
});
