// @ts-check
import eslint from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'dist/',
      'docs/api/',
      'coverage/',
      'test-results/',
      '.scratch/',
      'bench/results/',
      'node_modules/',
      '.examples/',
      // A type-level test of dist/'s declarations (no public constructors), checked by
      // test/smoke/dts.mjs after a build; linting it would need the build too.
      'test/smoke/no-constructors.mts',
      // Consumer projects of the packed tarball, each with its own tsconfig and package.json
      // (test/consumers/run.sh type-checks and runs them against the installed package).
      'test/consumers/',
    ],
  },
  eslint.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: {
          allowDefaultProject: ['*.js', '*.mjs', 'test/smoke/*.mjs', 'test/smoke/*.cjs'],
        },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // Numbers in template literals are everywhere in error messages and bench output.
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true },
      ],
      // Abort paths reject with `signal.reason`, which is `unknown` by design (DESIGN.md, Cancellation).
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/consistent-type-exports': 'error',
      'no-restricted-syntax': [
        'error',
        {
          selector: 'ExportDefaultDeclaration',
          message: 'Named exports only (DESIGN.md, Packaging).',
        },
        { selector: 'TSEnumDeclaration', message: 'Use string-literal unions, not enums.' },
      ],
    },
  },
  {
    // `expect(() => call()).toThrow()` is the idiom in tests.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-confusing-void-expression': 'off' },
  },
  {
    // The README's examples (examples/readme/, byte-identical to its blocks) keep the short
    // forms a reader expects: `async () => console.log(…)` stands for real async work.
    files: ['examples/readme/**/*.ts'],
    rules: {
      '@typescript-eslint/no-confusing-void-expression': 'off',
      '@typescript-eslint/require-await': 'off',
    },
  },
  {
    // Config files must default-export for their tools; ambient declarations of CommonJS peers
    // describe their `export =` / default shape.
    files: ['*.config.ts', '*.config.js', 'test/types/*.d.ts'],
    rules: { 'no-restricted-syntax': 'off' },
  },
  {
    files: ['**/*.cjs', '**/*.mjs', '**/*.js'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    files: ['**/*.cjs', '**/*.mjs', '**/*.js'],
    languageOptions: {
      globals: { console: 'readonly', process: 'readonly', URL: 'readonly' },
    },
  },
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
