import { describe, expect, it } from 'vitest';
import { LoadBalancer, roundRobin } from '../../src/balancer/index.js';
import { CircuitBreaker } from '../../src/breaker/index.js';
import { pipeline, retry } from '../../src/resilience/index.js';

/** Runs `body` and returns the MaxListenersExceededWarnings Node emitted meanwhile. */
async function maxListenerWarnings(body: () => Promise<void>): Promise<Error[]> {
  const warnings: Error[] = [];
  const listen = (warning: Error): void => {
    if (warning.name === 'MaxListenersExceededWarning') warnings.push(warning);
  };
  process.on('warning', listen);
  try {
    await body();
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.off('warning', listen);
  }
  return warnings;
}

/** 20 concurrent calls whose function listens to its signal, as fetch(url, { signal }) does. */
async function concurrently(
  run: (fn: (signal: AbortSignal) => Promise<number>) => Promise<unknown>,
) {
  const resolvers: (() => void)[] = [];
  const calls = Array.from({ length: 20 }, () =>
    run(
      (signal) =>
        new Promise<number>((resolve) => {
          const onAbort = (): void => undefined;
          signal.addEventListener('abort', onAbort);
          resolvers.push(() => {
            signal.removeEventListener('abort', onAbort);
            resolve(1);
          });
        }),
    ),
  );
  await new Promise((resolve) => setImmediate(resolve));
  for (const resolve of resolvers) resolve();
  await Promise.all(calls);
}

describe('the signal a call gets when the caller gave none', () => {
  it('balancer.run: many concurrent listeners raise no MaxListenersExceededWarning', async () => {
    const balancer = new LoadBalancer({ strategy: roundRobin(), endpoints: [{ id: 'a' }] });
    const warnings = await maxListenerWarnings(() =>
      concurrently((fn) => balancer.run((_endpoint, signal) => fn(signal))),
    );
    expect(warnings).toEqual([]);
  });

  it('policies: many concurrent listeners raise no MaxListenersExceededWarning', async () => {
    const policy = pipeline(retry({ backoff: { type: 'none' } }));
    const warnings = await maxListenerWarnings(() => concurrently((fn) => policy.execute(fn)));
    expect(warnings).toEqual([]);
  });

  it('CircuitBreaker.execute: many concurrent listeners raise no MaxListenersExceededWarning', async () => {
    const breaker = new CircuitBreaker({ name: 'never' });
    const warnings = await maxListenerWarnings(() => concurrently((fn) => breaker.execute(fn)));
    expect(warnings).toEqual([]);
  });
});
