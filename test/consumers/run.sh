#!/usr/bin/env bash
# Consumer setups from the packed tarball (issue 16): `npm pack` the built package, install the
# tarball into a temporary project the way a user would, and build and run three consumers —
#   esm/      "type": "module", tsc with module/moduleResolution "nodenext", then node;
#   cjs/      "type": "commonjs", tsc with "module": "commonjs" (require('keel/lock') …), then node;
#   bundler/  tsc with "moduleResolution": "bundler", esbuild bundles keel/hashring and
#             keel/breaker, then node runs the bundle.
# Each consumer imports every subpath it claims and calls one function from each.
#
# Needs `npm run build` first (CI runs it). The consumers' own tools (typescript, @types/node,
# esbuild, ioredis) are installed at the versions this repository has in node_modules, so the
# npm cache `npm ci` just filled answers them (--prefer-offline) and the registry is asked only
# for what the cache lacks. KEEL_CONSUMERS_KEEP=1 keeps the temporary directory for a look.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/test/consumers"
cd "$repo"

fail() {
  echo "consumers: FAILED — $*" >&2
  exit 1
}
started=$SECONDS
work="$(mktemp -d "${TMPDIR:-/tmp}/keel-consumers-XXXXXX")"
cleanup() {
  if [ "${KEEL_CONSUMERS_KEEP:-}" = 1 ]; then echo "consumers: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

[ -f dist/index.js ] || fail "dist/ is missing: run \`npm run build\` first"

# The version of a package installed in this repository (the consumers use the same).
installed() {
  node -p "require('$repo/node_modules/$1/package.json').version" 2>/dev/null ||
    fail "node_modules/$1 is missing: run \`npm ci\` first"
}
versions=()
for name in ioredis typescript @types/node esbuild; do versions+=("$name@$(installed "$name")"); done

echo "consumers: npm pack"
tarball="$(npm pack --silent --pack-destination "$work" | tail -n 1)"
[ -f "$work/$tarball" ] || fail "npm pack did not write a tarball"

echo "consumers: installing $tarball into a fresh project"
mkdir -p "$work/project"
printf '{ "name": "keel-consumers", "private": true }\n' >"$work/project/package.json"
(
  cd "$work/project"
  npm install --prefer-offline --no-audit --no-fund --loglevel=error \
    "$work/$tarball" "${versions[@]}"
) || fail "npm install of the tarball failed"
for name in esm cjs bundler; do cp -R "$here/$name" "$work/project/$name"; done

project="$work/project"
tsc="$project/node_modules/typescript/bin/tsc"
# esbuild's install script puts its native binary here (a JS shim when it could not).
esbuild="$project/node_modules/.bin/esbuild"

consumer() {
  local name="$1"
  shift
  echo "consumers: $name: ${*/#$project/…}"
  (cd "$project/$name" && "$@") || fail "the $name consumer (test/consumers/$name) failed; see above"
}

consumer esm node "$tsc" -p tsconfig.json
consumer esm node out/main.js

consumer cjs node "$tsc" -p tsconfig.json
for subpath in keel keel/hashring keel/lock keel/balancer keel/breaker keel/discovery; do
  grep -q "require(\"$subpath\")" "$project/cjs/out/main.js" ||
    fail "the cjs consumer's compiled main.js does not require(\"$subpath\")"
done
consumer cjs node out/main.js

consumer bundler node "$tsc" -p tsconfig.json
consumer bundler "$esbuild" main.ts --bundle --platform=node --format=esm \
  --outfile=out/bundle.mjs --log-level=warning
consumer bundler node out/bundle.mjs

echo "consumers: esm, cjs and bundler consumers built and ran from $tarball in $((SECONDS - started)) s"
