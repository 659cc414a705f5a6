import { defineConfig } from 'tsup';

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
});
