/**
 * A misspelt service on a non-strict registry (issue 16, papercuts): `discover('paymnets')`
 * returned `[]` forever and nothing said why. Now, once the first snapshot shows the store has
 * never had the service, the registry says so once through `onError`: an
 * `UnknownServiceError` (reason `never-registered`) naming the service and the ones it knows.
 * It keeps watching — an instance that registers later still shows up.
 */
import { describe, expect, it } from 'vitest';
import {
  MemoryBackend,
  Registry,
  isUnknownServiceError,
  type RegistryError,
  type UnknownServiceError,
} from '../../src/discovery/index.js';
import { until } from '../support/helpers.js';

const payments = { service: 'payments', id: 'p-1', host: '10.0.0.1', port: 80 };

describe('a service the store has never had', () => {
  it('is reported once through onError on a non-strict registry, and still watched', async () => {
    const backend = new MemoryBackend();
    await using peers = new Registry({ backend });
    await peers.register(payments);
    await using registry = new Registry({ backend, services: ['orders'] });
    const errors: RegistryError[] = [];
    registry.onError((e) => errors.push(e));
    await registry.register({ service: 'audit', host: '10.0.0.2', port: 81 });

    expect(registry.discover('paymnets')).toEqual([]);
    await registry.ready('paymnets');
    registry.discover('paymnets');
    await registry.ready('payments'); // exists: no report
    await registry.ready('orders'); // declared in `services`: no report
    await registry.ready('audit'); // registered here: no report
    expect(errors.map((e) => e.operation)).toEqual(['watch paymnets']);
    const error = errors[0]?.error;
    expect(isUnknownServiceError(error), String(error)).toBe(true);
    const unknown = error as UnknownServiceError;
    expect(unknown.service).toBe('paymnets');
    expect(unknown.reason).toBe('never-registered');
    expect(unknown.known).toEqual(['audit', 'orders']);
    expect(unknown.message).toContain('"paymnets"');
    expect(unknown.message).toContain('never');

    // Still watched: a late first instance appears, and no second report comes.
    await peers.register({ ...payments, service: 'paymnets' });
    await until(() => expect(registry.discover('paymnets')).toHaveLength(1), 5_000);
    expect(errors).toHaveLength(1);
  });

  it('a strict registry still refuses the name at once', () => {
    const registry = new Registry({ services: ['payments'], strict: true });
    let thrown: unknown;
    try {
      registry.discover('paymnets');
    } catch (error) {
      thrown = error;
    }
    expect(isUnknownServiceError(thrown)).toBe(true);
    expect((thrown as UnknownServiceError).reason).toBe('not-declared');
  });
});
