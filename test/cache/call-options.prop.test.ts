/**
 * Per-call options (`getOrLoad(key, loader, { ttlMs, staleMs, graceMs, signal })`): the cache
 * resolves them on every call, so it has a fast path for the common case; it must accept and
 * return exactly what the general resolver does, and leave every refusal to it. A call that only
 * waits (it joins a load in flight) is checked without a copy: it must accept and refuse exactly
 * the same, and find the same signal.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { resolveOptions } from '../../src/core/options.js';
import { callSignal, callSpec, resolveCallOptions } from '../../src/cache/options.js';

const OWNER = 'Cache.getOrLoad';

/** What resolving `input` gives: the options, or the error's type and message. */
function outcome(resolve: () => unknown): unknown {
  try {
    const resolved = resolve();
    return { ok: resolved, frozen: Object.isFrozen(resolved) };
  } catch (error) {
    return { error: (error as Error).name, message: (error as Error).message };
  }
}

const number = fc.oneof(
  fc.double(),
  fc.constantFrom(0, -0, 1, 60_000, -1, Number.NaN, Infinity, -Infinity, 1e-300),
);
const value = fc.oneof(
  number,
  fc.constant(undefined),
  fc.constant(null),
  fc.string(),
  fc.boolean(),
  fc.constant(new AbortController().signal),
  fc.constant({ aborted: false }),
  fc.constant({ aborted: 'no' }),
);
const key = fc.constantFrom('ttlMs', 'staleMs', 'graceMs', 'signal', 'ttl', 'stale', '__proto__x');
const record = fc.dictionary(key, value, { maxKeys: 5 });
const input = fc.oneof(
  record,
  // The common shapes, often enough to reach the fast path's every branch.
  fc.record({ ttlMs: number, staleMs: number, graceMs: number }, { requiredKeys: [] }),
  record.map((r) => Object.assign(Object.create(null) as object, r)),
  // Not plain: its prototype is another object, not Object.prototype.
  record.map((r) => Object.assign(Object.create({}) as object, r)),
  fc.constantFrom(null, 0, 'ttlMs', [], [1]),
);

describe('per-call options', () => {
  it('resolve exactly as the general resolver does, every refusal included', () => {
    fc.assert(
      fc.property(input, (given) => {
        expect(outcome(() => resolveCallOptions(OWNER, given))).toEqual(
          outcome(() => resolveOptions(OWNER, given, callSpec)),
        );
      }),
      { numRuns: 2_000 },
    );
  });

  it('a waiting call is accepted and refused exactly as the general resolver does, same signal', () => {
    const signalOutcome = (resolve: () => unknown): unknown => {
      try {
        return { signal: resolve() };
      } catch (error) {
        return { error: (error as Error).name, message: (error as Error).message };
      }
    };
    fc.assert(
      fc.property(input, (given) => {
        expect(signalOutcome(() => callSignal(OWNER, given))).toEqual(
          signalOutcome(() => resolveOptions(OWNER, given, callSpec).signal),
        );
      }),
      { numRuns: 2_000 },
    );
  });

  it('an option given as a getter is read as the general resolver reads it', () => {
    const given = {
      get ttlMs() {
        return 5_000;
      },
    };
    expect(resolveCallOptions(OWNER, given)).toEqual(resolveOptions(OWNER, given, callSpec));
  });
});
