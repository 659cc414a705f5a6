/**
 * The README's TypeScript blocks as files: every ```ts block in README.md is kept, byte for
 * byte, as `examples/readme/<section>.ts` (the slug of the nearest heading above it; a second
 * block in one section is `<section>-2.ts`). The files are what `tsc` type-checks and what
 * test/readme/readme-examples.test.ts runs; this module says which file each block belongs to
 * and what differs, so a README edit without its file (or the reverse) fails the typecheck and
 * the tests. `npm run examples:sync` rewrites the files from the README.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** One ```ts block of README.md and the file that holds it. */
export interface ReadmeExample {
  /** File name under `examples/readme/`, e.g. `lock.ts`. */
  readonly file: string;
  /** The heading the block sits under, as written. */
  readonly section: string;
  /** 1-based line of the block's opening fence in README.md. */
  readonly line: number;
  /** The block's text between the fences, ending in a newline. */
  readonly code: string;
}

/** The directory of the README example files, relative to the repository root. */
export const README_EXAMPLES_DIR = join('examples', 'readme');

/**
 * `## lock (`keel/lock`)` → `lock`; `## Shared pieces (`keel`)` → `shared-pieces`: the
 * heading without its parenthesised part, lower case, runs of anything else than a-z0-9 as `-`.
 */
export function sectionSlug(heading: string): string {
  const slug = heading
    .replace(/\(.*?\)/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  return slug === '' ? 'readme' : slug;
}

/** The ```ts / ```typescript blocks of a Markdown text, each with its file name. */
export function readmeExamples(markdown: string): ReadmeExample[] {
  const examples: ReadmeExample[] = [];
  const perSlug = new Map<string, number>();
  const lines = markdown.split('\n');
  let section = '';
  let fence: { line: number; body: string[] } | undefined;
  let otherFence = false;
  lines.forEach((text, index) => {
    if (fence !== undefined) {
      if (/^```\s*$/.test(text)) {
        const slug = sectionSlug(section);
        const count = (perSlug.get(slug) ?? 0) + 1;
        perSlug.set(slug, count);
        examples.push({
          file: `${slug}${count === 1 ? '' : `-${count}`}.ts`,
          section,
          line: fence.line,
          code: fence.body.map((body) => `${body}\n`).join(''),
        });
        fence = undefined;
      } else {
        fence.body.push(text);
      }
      return;
    }
    if (otherFence) {
      if (/^```\s*$/.test(text)) otherFence = false;
      return;
    }
    if (/^```(?:ts|typescript)\s*$/.test(text)) fence = { line: index + 1, body: [] };
    else if (text.startsWith('```')) otherFence = true;
    else {
      const heading = /^#{1,6}\s+(.*)$/.exec(text);
      if (heading !== null) section = heading[1] ?? '';
    }
  });
  if (fence !== undefined) throw new Error(`README.md:${fence.line}: unclosed code block`);
  return examples;
}

/** The README's examples, read from `<root>/README.md`. */
export function readReadmeExamples(root: string): ReadmeExample[] {
  return readmeExamples(readFileSync(join(root, 'README.md'), 'utf8'));
}

/**
 * Where `examples/readme/` and README.md disagree, one line each: a block without its file, a
 * file whose text differs from its block, a file no block has. Empty when they agree.
 */
export function readmeDrift(root: string): string[] {
  const dir = join(root, README_EXAMPLES_DIR);
  const examples = readReadmeExamples(root);
  const problems: string[] = [];
  for (const example of examples) {
    const path = join(dir, example.file);
    const where = `README.md:${example.line} (${example.section})`;
    if (!existsSync(path)) {
      problems.push(`${where}: no file ${README_EXAMPLES_DIR}/${example.file}`);
    } else if (readFileSync(path, 'utf8') !== example.code) {
      problems.push(`${where}: ${README_EXAMPLES_DIR}/${example.file} differs from the block`);
    }
  }
  const expected = new Set(examples.map((example) => example.file));
  const present = existsSync(dir) ? readdirSync(dir).filter((name) => name.endsWith('.ts')) : [];
  for (const name of present) {
    if (!expected.has(name)) {
      problems.push(`${README_EXAMPLES_DIR}/${name}: no README block is this file any more`);
    }
  }
  return problems;
}

/** Rewrites `examples/readme/` from README.md (removing files no block has). */
export function writeReadmeExamples(root: string): ReadmeExample[] {
  const dir = join(root, README_EXAMPLES_DIR);
  const examples = readReadmeExamples(root);
  mkdirSync(dir, { recursive: true });
  const expected = new Set(examples.map((example) => example.file));
  for (const name of readdirSync(dir)) {
    if (name.endsWith('.ts') && !expected.has(name)) rmSync(join(dir, name));
  }
  for (const example of examples) writeFileSync(join(dir, example.file), example.code);
  return examples;
}
