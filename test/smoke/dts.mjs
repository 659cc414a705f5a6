// Checks the built declaration files as a consumer receives them (run after `npm run build`):
// - no `@internal` member ships (tsconfig.build.json sets `stripInternal`);
// - no name renamed by the .d.ts bundler (`Subscription$1`: two modules' types of one name
//   meeting in one bundle), which is what editors show on hover;
// - every .d.ts / .d.cts type-checks with `skipLibCheck: false`, so nothing public refers to a
//   stripped declaration (test/smoke/tsconfig.dts.json; the consumer has @types/node);
// - the handles Keel makes itself (Lock, Permit, Semaphore, Registration, ServiceWatch,
//   FollowingBalancer) have no public constructor, and `instanceof` works on them
//   (test/smoke/no-constructors.mts, type-checked with the same settings).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const dist = new URL('../../dist/', import.meta.url);
const files = readdirSync(dist, { recursive: true, encoding: 'utf8' }).filter((name) =>
  /\.d\.c?ts$/.test(name),
);
assert.ok(files.length >= 12, `expected .d.ts and .d.cts files in dist/, found ${files.length}`);

const problems = [];
for (const name of files) {
  const lines = readFileSync(new URL(name, dist), 'utf8').split('\n');
  lines.forEach((line, index) => {
    if (line.includes('@internal')) problems.push(`dist/${name}:${index + 1}: @internal`);
    const renamed = /\b[A-Za-z_]\w*\$\d+\b/.exec(line);
    if (renamed) problems.push(`dist/${name}:${index + 1}: bundler-renamed ${renamed[0]}`);
  });
}
assert.deepEqual(problems, [], `declaration files:\n${problems.join('\n')}`);

const tsc = fileURLToPath(new URL('../../node_modules/typescript/bin/tsc', import.meta.url));
execFileSync(process.execPath, [tsc, '-p', 'test/smoke/tsconfig.dts.json'], {
  cwd: root,
  stdio: 'inherit',
});
console.log(`smoke (declarations): ${files.length} files, no @internal, type-check OK`);
