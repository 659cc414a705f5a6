/**
 * Checks the code examples users read.
 *
 * - README.md: every ```ts block must be its file under `examples/readme/`, byte for byte
 *   (scripts/readme-examples.ts). Those files are type-checked with everything else by
 *   `tsc -p tsconfig.json` and run by test/readme/readme-examples.test.ts. With `--write`
 *   (`npm run examples:sync`) the files are rewritten from the README instead.
 * - TSDoc: every `@example` block in src/ (skipping `@internal` docs) becomes a module under
 *   `.examples/`, compiled by tsconfig.examples.json, where `keel` and `keel/<component>`
 *   resolve to the sources — so an example that drifts from the API fails `npm run typecheck`.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { readmeDrift, writeReadmeExamples } from './readme-examples.js';

const root = join(import.meta.dirname, '..');
const outDir = join(root, '.examples');

interface Example {
  readonly source: string;
  readonly code: string;
}

function fencedBlocks(text: string): string[] {
  const blocks: string[] = [];
  const fence = /^```(?:ts|typescript)\s*\n([\s\S]*?)^```/gm;
  for (let match = fence.exec(text); match !== null; match = fence.exec(text)) {
    blocks.push(match[1] ?? '');
  }
  return blocks;
}

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : path.endsWith('.ts') ? [path] : [];
  });
}

if (process.argv.includes('--write')) {
  const written = writeReadmeExamples(root);
  console.log(`examples: wrote ${written.length} README blocks to examples/readme/`);
} else {
  const drift = readmeDrift(root);
  if (drift.length > 0) {
    console.error(
      `examples: README.md and examples/readme/ disagree (run \`npm run examples:sync\` after editing a README block):\n  ${drift.join('\n  ')}`,
    );
    process.exit(1);
  }
}

const examples: Example[] = [];
for (const file of walk(join(root, 'src'))) {
  const text = readFileSync(file, 'utf8');
  for (const comment of text.match(/\/\*\*[\s\S]*?\*\//g) ?? []) {
    if (!comment.includes('@example') || comment.includes('@internal')) continue;
    const body = comment
      .split('\n')
      .map((line) => line.replace(/^\s*\/?\*+\/?\s?/, ''))
      .join('\n');
    for (const [i, code] of fencedBlocks(body.slice(body.indexOf('@example'))).entries()) {
      examples.push({ source: `${relative(root, file)} example #${i + 1}`, code });
    }
  }
}

rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });
const index: string[] = [];
for (const [i, example] of examples.entries()) {
  const name = `example-${String(i + 1).padStart(3, '0')}.ts`;
  writeFileSync(join(outDir, name), `// ${example.source}\n${example.code}\nexport {};\n`);
  index.push(`${name}: ${example.source}`);
}
const tsc = spawnSync(
  process.execPath,
  [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.examples.json'],
  {
    cwd: root,
    encoding: 'utf8',
  },
);
if (tsc.status !== 0) {
  console.error(tsc.stdout + tsc.stderr);
  console.error(`examples: type errors (files in .examples/ map to:\n  ${index.join('\n  ')})`);
  process.exit(1);
}
console.log(
  `examples: README.md matches examples/readme/; ${examples.length} TSDoc examples type-check`,
);
