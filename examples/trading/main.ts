/**
 * `npm run demo` — the flash-sale trading system assembled from Keel (issue 8).
 *
 * Not built yet: the components it is assembled from land first (hashring, balancer, breaker,
 * lock, discovery). Until then this says so plainly rather than pretending.
 */
console.log(
  [
    'Keel trading demo: not built yet.',
    '',
    'The flash-sale trading system (gateway, orders, inventory shards, payments) is assembled',
    'from Keel components that are still landing; see README.md for what exists today and',
    'CHANGELOG.md for progress. Run the test suite with `npm test`.',
  ].join('\n'),
);
