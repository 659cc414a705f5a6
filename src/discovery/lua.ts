/**
 * Lua source compaction, shared by the runtime and the build (issue 16, item 2).
 *
 * The scripts in `scripts.ts` are written with indentation and `--` comments for the reader.
 * `tsup.config.ts` runs {@link compactLua} over them at build time, so the bundle ships them
 * without either; `script()` runs it again at load time, which changes nothing in the built
 * package but makes the sources (what the tests run) send Redis exactly the text the package
 * sends, with the same SHA-1.
 *
 * Only whole-line comments and leading blanks go. Both are safe in Lua because newlines and
 * indentation carry no meaning outside long strings (`[[…]]`) and comments (Lua 5.1 reference
 * manual §2.1, https://www.lua.org/manual/5.1/manual.html#2.1), and Keel's scripts use no long
 * strings. A comment after code on the same line is left alone (it may sit behind a `--` inside
 * a string literal, which only a Lua lexer could tell apart).
 *
 * @internal
 * @packageDocumentation
 */

/** `text` without leading blanks on any line, and without lines that hold only a comment. */
export function compactLua(text: string): string {
  return text.replace(/^[ \t]+/gm, '').replace(/^(--.*)?\n/gm, '');
}
