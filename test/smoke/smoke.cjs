// Smoke test of the built package as a CommonJS user receives it: every subpath require()s by
// the package's own name, with no top-level await anywhere in the build.
'use strict';
const assert = require('node:assert/strict');
const pkg = require('keel/package.json');

const subpaths = Object.keys(pkg.exports).filter((key) => key !== './package.json');
assert.ok(subpaths.length >= 6, 'expected the root and five component subpaths');
for (const subpath of subpaths) {
  const specifier = subpath === '.' ? 'keel' : `keel/${subpath.slice(2)}`;
  const mod = require(specifier);
  assert.equal(typeof mod, 'object', `${specifier} did not load`);
}

const keel = require('keel');
const error = new keel.InvalidOptionError('Smoke', 'size', 'an integer >= 1', 0);
assert.equal(keel.isKeelError(error), true);
assert.equal(keel.isInvalidOptionError(error), true);
assert.equal(error.code, 'KEEL_INVALID_OPTION');
console.log(`smoke (require): ${subpaths.length} subpaths OK`);
