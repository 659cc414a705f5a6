/**
 * Lua source compaction, shared by the runtime and the build (issue 16, item 2); it lives in
 * `core/lua.ts` with the script runner every component shares, and is re-exported here for
 * `tsup.config.ts` and the discovery scripts.
 *
 * The scripts in `scripts.ts` are written with indentation and `--` comments for the reader.
 * `tsup.config.ts` runs {@link compactLua} over them at build time, so the bundle ships them
 * without either; `script()` runs it again at load time, which changes nothing in the built
 * package but makes the sources (what the tests run) send Redis exactly the text the package
 * sends, with the same SHA-1.
 *
 * @internal
 * @packageDocumentation
 */
export { compactLua } from '../core/lua.js';
