import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Starts nothing by itself: it finds (or installs) redis-server once for the whole run,
    // hands its path to the suites, and reaps any redis-server a crashed suite left behind.
    globalSetup: ['test/support/global-setup.ts'],
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Redis suites start their own servers; two cores do not benefit from more parallelism.
    maxWorkers: 2,
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results/vitest.json' },
    allowOnly: false,
  },
});
