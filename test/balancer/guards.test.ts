/**
 * The balancer's errors have `isXError()` guards like every other component's (issue 16,
 * papercuts): callers branch on "no endpoint" — e.g. to not count it as a breaker failure —
 * and a guard survives duplicate installs of Keel, where `instanceof` does not.
 */
import { describe, expect, it } from 'vitest';
import { KeelError, isKeelError } from '../../src/core/index.js';
import {
  DUPLICATE_ENDPOINT,
  LoadBalancer,
  NO_ENDPOINT,
  isDuplicateEndpointError,
  isNoEndpointError,
  roundRobin,
} from '../../src/balancer/index.js';

/** What `fn` threw. */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  return undefined;
}

describe('isNoEndpointError / isDuplicateEndpointError', () => {
  it('recognise the errors the balancer throws', () => {
    const empty = new LoadBalancer({ strategy: roundRobin(), name: 'payments' });
    const none = thrown(() => empty.acquireOrThrow());
    expect(isNoEndpointError(none)).toBe(true);
    expect(isKeelError(none, NO_ENDPOINT)).toBe(true);
    if (isNoEndpointError(none)) expect(none.service).toBe('payments'); // narrowed
    expect(isDuplicateEndpointError(none)).toBe(false);

    const duplicate = thrown(() => empty.update([{ id: 'a' }, { id: 'a' }]));
    expect(isDuplicateEndpointError(duplicate)).toBe(true);
    expect(isNoEndpointError(duplicate)).toBe(false);
  });

  it('recognise them from another copy of Keel (same brand and code), and nothing else', () => {
    // Another copy's class is another class: only the registry-wide brand and the code match.
    class OtherCopyError extends KeelError {}
    expect(isNoEndpointError(new OtherCopyError(NO_ENDPOINT, 'no endpoint'))).toBe(true);
    expect(isDuplicateEndpointError(new OtherCopyError(DUPLICATE_ENDPOINT, 'dup'))).toBe(true);
    for (const other of [new Error(NO_ENDPOINT), { code: NO_ENDPOINT }, undefined, null, 'x']) {
      expect(isNoEndpointError(other)).toBe(false);
      expect(isDuplicateEndpointError(other)).toBe(false);
    }
  });
});
