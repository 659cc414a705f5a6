// @ts-check
// TypeDoc configuration for `npm run docs` (API reference in docs/api/, generated, not committed).
// One entry point per public subpath in package.json "exports", derived from that map so the two
// cannot drift apart: `./lock` is documented from src/lock/index.ts, `.` from src/index.ts.
// Options: https://typedoc.org/documents/Options.html
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8'));
const entryPoints = Object.keys(pkg.exports)
  .filter((subpath) => subpath !== './package.json')
  .map((subpath) => (subpath === '.' ? 'src/index.ts' : `src/${subpath.slice(2)}/index.ts`));

/** @type {Partial<import('typedoc').TypeDocOptions>} */
const config = {
  entryPoints,
  // tsconfig.build.json sets `stripInternal`, so TypeDoc's `excludeInternal` follows it; it is
  // spelt out here too, so the reference and the .d.ts files agree on what is public.
  tsconfig: 'tsconfig.build.json',
  excludeInternal: true,
  excludePrivate: true,
  out: 'docs/api',
  name: 'Keel',
  readme: 'none',
  // The lint: every public export (and each of its members) must carry a doc comment, every
  // {@link} must resolve, and nothing public may refer to a type that is not exported. Any
  // warning fails the run, so `npm run docs` is the check.
  validation: {
    notExported: true,
    invalidLink: true,
    rewrittenLink: true,
    notDocumented: true,
    unusedMergeModuleWith: true,
  },
  treatWarningsAsErrors: true,
  treatValidationWarningsAsErrors: true,
};

export default config;
