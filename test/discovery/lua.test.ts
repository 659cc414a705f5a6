/**
 * The Redis backend's Lua ships compacted (issue 16, item 2): no comment lines, no indentation.
 * The build compacts the template literals in src/discovery/scripts.ts (tsup.config.ts) and
 * `script()` compacts again at load time, so the scripts the sources send — the ones every Redis
 * test runs — are the text the package ships.
 */
import { describe, expect, it } from 'vitest';
import { compactLua } from '../../src/discovery/lua.js';
import * as scripts from '../../src/discovery/scripts.js';

const all = Object.entries(scripts).filter(
  (entry): entry is [string, scripts.Script] =>
    typeof entry[1] === 'object' && 'source' in entry[1],
);

describe('compactLua', () => {
  it('drops comment lines, blank lines and indentation, and keeps code and trailing text', () => {
    const lua =
      "\nlocal a = 1\n  -- a comment\n\n  if a then\n    return '-- not a comment'\n  end\n";
    expect(compactLua(lua)).toBe("local a = 1\nif a then\nreturn '-- not a comment'\nend\n");
  });

  it('is idempotent, so compacting already-compacted (built) text changes nothing', () => {
    for (const [, script] of all) expect(compactLua(script.source)).toBe(script.source);
  });

  it('leaves every script without comment lines or indentation', () => {
    expect(all.map(([name]) => name).sort()).toEqual(
      ['DEREGISTER', 'HEARTBEAT', 'PROBE', 'REAP', 'REGISTER', 'SNAPSHOT'].sort(),
    );
    for (const [, script] of all) {
      expect(script.source).not.toMatch(/^\s*--/m);
      expect(script.source).not.toMatch(/^[ \t]/m);
    }
  });
});
