/**
 * The orders in which row (a) of lock.bench.ts interleaves its three libraries (Keel,
 * node-redlock, RedlockMutex: indices 0, 1, 2), shared with bench/lock-tail.ts.
 */

/**
 * The orders of the interleaved rounds, six rounds over: every order of the three libraries
 * once, arranged so that each round begins with the library that ended the round before. Each
 * library then follows each library (itself included) in a third of its cycles.
 *
 * Why it matters: Keel and node-redlock both decide a round at a quorum (three of five
 * answers), so a cycle's last two answers land in the next cycle, whoever runs it; RedlockMutex
 * waits for all five (`Promise.all`) and leaves none. The plain rotation used until session 14
 * put node-redlock after Keel in two thirds of its cycles but Keel after node-redlock in only
 * one third (after RedlockMutex otherwise): counted per cycle, node-redlock's cycles took in
 * 1.52 late answers of another cycle, Keel's 0.74. In this order both take in ~1.57.
 */
export const ORDERS: readonly (readonly number[])[] = [
  [0, 1, 2],
  [2, 0, 1],
  [1, 2, 0],
  [0, 2, 1],
  [1, 0, 2],
  [2, 1, 0],
];
