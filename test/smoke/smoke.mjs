// Smoke test of the built package as an ESM user receives it: every subpath imports by the
// package's own name (Node resolves the self-reference through package.json "exports").
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8'));
const subpaths = Object.keys(pkg.exports).filter((key) => key !== './package.json');
assert.ok(subpaths.length >= 6, 'expected the root and five component subpaths');

for (const subpath of subpaths) {
  const specifier = subpath === '.' ? 'keel' : `keel/${subpath.slice(2)}`;
  const mod = await import(specifier);
  assert.equal(typeof mod, 'object', `${specifier} did not import`);
  assert.equal('default' in mod, false, `${specifier} must have named exports only`);
}

const keel = await import('keel');
const error = new keel.KeelError('KEEL_SMOKE', 'smoke');
assert.equal(keel.isKeelError(error), true);
assert.equal(error.name, 'KeelError');
const clock = new keel.ManualClock();
clock.advance(5);
assert.equal(clock.now(), 5);
const self = await import('keel/package.json', { with: { type: 'json' } });
assert.equal(self.default.name, 'keel');
console.log(`smoke (import): ${subpaths.length} subpaths OK`);
