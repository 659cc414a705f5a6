import { readFile } from 'node:fs/promises';
import { defineConfig, type Options } from 'tsup';
import { compactLua } from './src/discovery/lua.js';

type Plugin = NonNullable<Options['esbuildPlugins']>[number];

/**
 * Ships the Redis backend's Lua without its comments and indentation (issue 16, item 2: they
 * were about 1 kB of `keel/discovery`). Every Lua text in `src/discovery/scripts.ts` is a
 * template literal given to `script(` or `readOnlyScript(`, or assigned to `PRELUDE`; each is replaced by its
 * compacted form (see src/discovery/lua.ts, which `script()` also runs, so the sources the tests
 * run send the same text). The build fails if the file no longer looks the way this expects.
 * esbuild's onLoad hook: https://esbuild.github.io/plugins/#on-load
 */
const compactLuaPlugin: Plugin = {
  name: 'keel-compact-lua',
  setup(build) {
    build.onLoad({ filter: /[\\/]src[\\/]discovery[\\/]scripts\.ts$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8');
      let count = 0;
      const contents = text.replace(
        /([sS]cript\(|const PRELUDE = )`([^`]*)`/g,
        (_match, head: string, lua: string) => {
          if (lua.includes('${') || lua.includes('\\')) {
            throw new Error(`${args.path}: a Lua template has a substitution or an escape`);
          }
          count++;
          return `${head}\`${compactLua(lua)}\``;
        },
      );
      if (count < 2) throw new Error(`${args.path}: no Lua templates found to compact`);
      return { contents, loader: 'ts' };
    });
  },
};

/**
 * The same for `keel/saga`'s scripts (src/saga/scripts.ts): every `const NAME = \`…\`` Lua text
 * (the shared prelude and function bodies; none has a substitution) and every `luaScript(\`…\`)`
 * without one. A script built as `${A}${B}…` is compacted whole again by `luaScript()` at load
 * time, and each part starts and ends at a line boundary, so compacting the parts first (line by
 * line, as {@link compactLua} works) changes nothing in the text Redis gets or its SHA-1.
 */
const compactSagaLuaPlugin: Plugin = {
  name: 'keel-compact-saga-lua',
  setup(build) {
    build.onLoad({ filter: /[\\/]src[\\/]saga[\\/]scripts\.ts$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8');
      let count = 0;
      const contents = text.replace(
        /(const [A-Z_]+ = |luaScript\()`([^`]*)`/g,
        (match, head: string, lua: string) => {
          if (lua.includes('\\')) throw new Error(`${args.path}: a Lua template has an escape`);
          if (lua.includes('${')) {
            if (head.startsWith('const')) {
              throw new Error(`${args.path}: a Lua const template has a substitution`);
            }
            return match; // a script made of parts: luaScript() compacts it whole
          }
          if (!lua.startsWith('\n') || !lua.endsWith('\n')) {
            throw new Error(`${args.path}: a Lua template does not start and end a line`);
          }
          count++;
          return `${head}\`${compactLua(lua)}\``;
        },
      );
      if (count < 3) throw new Error(`${args.path}: no Lua templates found to compact`);
      return { contents, loader: 'ts' };
    });
  },
};

/**
 * One entry per public subpath in package.json `exports`. ESM (`.js` + `.d.ts`) and CJS
 * (`.cjs` + `.d.cts`), so `import` and `require` users both get real types.
 */
export default defineConfig({
  entry: {
    index: 'src/index.ts',
    'hashring/index': 'src/hashring/index.ts',
    'lock/index': 'src/lock/index.ts',
    'balancer/index': 'src/balancer/index.ts',
    'breaker/index': 'src/breaker/index.ts',
    'discovery/index': 'src/discovery/index.ts',
    'otel/index': 'src/otel/index.ts',
    'queue/index': 'src/queue/index.ts',
    'saga/index': 'src/saga/index.ts',
    'cache/index': 'src/cache/index.ts',
    'resilience/index': 'src/resilience/index.ts',
  },
  format: ['esm', 'cjs'],
  target: 'node20',
  platform: 'node',
  dts: { compilerOptions: { composite: false } },
  tsconfig: 'tsconfig.build.json',
  sourcemap: true,
  clean: true,
  splitting: true,
  treeshake: true,
  outDir: 'dist',
  esbuildPlugins: [compactLuaPlugin, compactSagaLuaPlugin],
});
