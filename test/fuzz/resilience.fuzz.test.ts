// Public-API fuzz suite for keel/resilience and keel/otel's instrument() options, in the style
// of breaker.fuzz.test.ts. Every exported factory — retry, RetryBudget, timeout, bulkhead,
// hedge, fallback, pipeline, resilientCall (and its call/callWithReport options) and
// instrument — gets arbitrary option values: fc.anything(), special numbers (NaN, ±Infinity,
// −0, 1e300), odd strings, `__proto__` keys, getters and Proxy traps that throw, revoked
// Proxies. Each call must end in one of:
//
//   - the documented result (the policy runs `fn` and resolves with its value), or
//   - a typed InvalidOptionError naming an option (or argument) that was given, or
//   - the very error the caller's own code threw (a throwing getter, trap, `fn` or handler),
//     or another of Keel's typed errors where the documentation says so (TimeoutError,
//     BulkheadRejectedError, ResilientCallError …),
//
// and never a plain TypeError/RangeError of Keel's making, never a synchronous throw from
// execute()/call(), and never a promise that does not settle: every clock is a ManualClock,
// advanced past the longest allowed wait until the call settles (bounded number of steps).
import { metrics, trace } from '@opentelemetry/api';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { ManualClock, isInvalidOptionError, isKeelError } from '../../src/core/index.js';
import { LoadBalancer, roundRobin } from '../../src/balancer/index.js';
import { CircuitBreaker } from '../../src/breaker/index.js';
import {
  RetryBudget,
  bulkhead,
  fallback,
  hedge,
  pipeline,
  resilientCall,
  retry,
  timeout,
  type Policy,
} from '../../src/resilience/index.js';
import { instrument } from '../../src/otel/index.js';

/** Runs per property: shallow edges found, the whole file a few seconds. */
const RUNS = Number(process.env.KEEL_FUZZ_RUNS ?? 200);
const MAX_MS = 86_400_000;

/** An error the test's own hostile input threw; Keel must pass it on unchanged. */
class Planted extends Error {
  constructor(readonly source: string) {
    super(`planted by ${source}`);
  }
}

const cases = new Map<string, number>();
function count(property: string): void {
  cases.set(property, (cases.get(property) ?? 0) + 1);
}
afterAll(() => {
  const total = [...cases.values()].reduce((a, b) => a + b, 0);
  console.log(
    `resilience fuzz: ${total} cases (${[...cases].map(([k, v]) => `${k} ${v}`).join(', ')})`,
  );
});

// ----------------------------------------------------------------------------- arbitraries

const specialNumber = fc.constantFrom(
  Number.NaN,
  Infinity,
  -Infinity,
  -0,
  0,
  1,
  -1,
  0.5,
  1e-300,
  1e300,
  Number.MAX_VALUE,
  Number.MIN_VALUE,
  Number.MAX_SAFE_INTEGER,
  2 ** 53 + 2,
  MAX_MS,
  MAX_MS + 1,
);

const oddString = fc.oneof(
  fc.string({ maxLength: 8 }),
  fc.constantFrom('\uD800', '__proto__', 'constructor', '', 'none', 'aggressive', 'NaN'),
);

/**
 * A hostile value to build at the call (fast-check probes generated values, which a throwing
 * or revoked Proxy would break, so the arbitrary yields the kind and {@link realize} builds it).
 */
class Hostile {
  constructor(readonly kind: string) {}
  toString(): string {
    return `<${this.kind}>`;
  }
  build(): unknown {
    const boom = (): never => {
      throw new Planted('input');
    };
    switch (this.kind) {
      case 'throwing-getter':
        return Object.defineProperty({}, 'type', { enumerable: true, get: boom });
      case 'throwing-proxy':
        return new Proxy(
          {},
          {
            get: boom,
            ownKeys: boom,
            getPrototypeOf: boom,
            has: boom,
            getOwnPropertyDescriptor: boom,
          },
        );
      case 'revoked-proxy': {
        const { proxy, revoke } = Proxy.revocable({}, {});
        revoke();
        return proxy;
      }
      case 'throwing-primitive':
        return { [Symbol.toPrimitive]: boom, valueOf: boom };
      case 'throwing-fn':
        return boom;
      case 'proto-key':
        return JSON.parse('{"__proto__": {"polluted": true}, "constructor": 1}') as unknown;
      case 'null-proto':
        return Object.create(null) as object;
      case 'bigint':
        return 5n;
      default:
        return Symbol('s');
    }
  }
}

const hostile: fc.Arbitrary<unknown> = fc
  .constantFrom(
    'throwing-getter',
    'throwing-proxy',
    'revoked-proxy',
    'throwing-primitive',
    'throwing-fn',
    'proto-key',
    'null-proto',
    'bigint',
    'symbol',
  )
  .map((kind) => new Hostile(kind));

const weird: fc.Arbitrary<unknown> = fc.oneof(
  fc.anything({ withBigInt: true, withBoxedValues: true, withNullPrototype: true, maxDepth: 2 }),
  specialNumber,
  oddString,
  hostile,
  fc.boolean(),
  fc.constant(undefined),
  fc.constant(null),
);

function isRecord(value: unknown): value is Record<PropertyKey, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  try {
    if (value instanceof Hostile) return false;
    const proto: unknown = Object.getPrototypeOf(value);
    return proto === Object.prototype || proto === null;
  } catch {
    return false; // a Proxy whose trap throws, or a revoked one: not ours to copy
  }
}

/** A copy of `value` with every Hostile (three levels deep) built; getters are kept. */
function realize(value: unknown, depth = 3): unknown {
  if (value instanceof Hostile) return value.build();
  if (depth === 0 || !isRecord(value)) return value;
  const out = Object.create(Object.getPrototypeOf(value) as object | null) as object;
  for (const key of Reflect.ownKeys(value)) {
    const d = Object.getOwnPropertyDescriptor(value, key) as PropertyDescriptor;
    if ('value' in d) d.value = realize(d.value, depth - 1);
    Object.defineProperty(out, key, d);
  }
  return out;
}

/** Puts the test's ManualClock into a plain record that has no clock (nested too). */
function withClock(value: unknown, clock: ManualClock, nested: readonly string[] = []): unknown {
  if (!isRecord(value)) return value;
  const d = Object.getOwnPropertyDescriptor(value, 'clock');
  if (d === undefined || ('value' in d && d.value === undefined))
    Object.defineProperty(value, 'clock', {
      value: clock,
      enumerable: true,
      configurable: true,
      writable: true,
    });
  for (const key of nested) {
    const inner = Object.getOwnPropertyDescriptor(value, key);
    if (inner !== undefined && 'value' in inner) withClock(inner.value, clock);
  }
  return value;
}

type Valid = Readonly<Record<string, fc.Arbitrary<unknown>>>;

/** Options where each key is absent, valid or weird, plus maybe an unknown key. */
function fuzzed(valid: Valid): fc.Arbitrary<unknown> {
  const keys = Object.keys(valid);
  const record = fc
    .tuple(
      fc.dictionary(
        fc.constantFrom(...keys),
        fc.constantFrom('valid', 'valid', 'valid', 'valid', 'valid', 'weird'),
      ),
      fc.oneof(
        { weight: 7, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: fc.tuple(oddString, weird) },
      ), // an unknown key, now and then,
    )
    .chain(([plan, unknown]) => {
      const entries = Object.entries(plan).map(([key, how]) =>
        (how === 'valid' ? (valid[key] as fc.Arbitrary<unknown>) : weird).map(
          (v) => [key, v] as const,
        ),
      );
      return fc.tuple(...entries).map((pairs) => {
        const out: Record<string, unknown> = {};
        for (const [k, v] of pairs) out[k] = v;
        if (unknown !== undefined)
          Object.defineProperty(out, unknown[0], {
            value: unknown[1],
            enumerable: true,
            configurable: true,
            writable: true,
          });
        return out;
      });
    });
  return fc.oneof({ weight: 8, arbitrary: record }, { weight: 1, arbitrary: weird });
}

const errorFilter = fc.oneof(
  fc.func(fc.boolean()),
  fc.constant([Planted]),
  fc.constant([TypeError, Planted]),
);

const backoff = fc.oneof(
  fc.constant({ type: 'none' }),
  fc.record({ type: fc.constant('constant'), delayMs: fc.integer({ min: 0, max: MAX_MS }) }),
  fc.record(
    {
      type: fc.constant('exponential'),
      initialMs: fc.integer({ min: 0, max: 1000 }),
      maxMs: fc.integer({ min: 1000, max: MAX_MS }),
      factor: fc.double({ min: 1, max: 100, noNaN: true }),
      jitter: fc.oneof(fc.constant('full'), fc.double({ min: 0, max: 1, noNaN: true })),
    },
    { requiredKeys: ['type'] },
  ),
  fc.record(
    {
      type: fc.constant('decorrelated'),
      baseMs: fc.integer({ min: 0, max: 1000 }),
      capMs: fc.integer({ min: 1000, max: MAX_MS }),
    },
    { requiredKeys: ['type'] },
  ),
  // A valid type with a weird member.
  fc
    .tuple(
      fc.constantFrom('constant', 'exponential', 'decorrelated'),
      fc.constantFrom('delayMs', 'initialMs', 'maxMs', 'factor', 'jitter', 'baseMs', 'capMs'),
      weird,
    )
    .map(([type, key, v]) => ({ type, [key]: v })),
);

const retryValid: Valid = {
  maxAttempts: fc.integer({ min: 1, max: 5 }),
  maxPushbackMs: fc.integer({ min: 0, max: MAX_MS }),
  clock: fc.constant(undefined),
  // A random source is any function: one returning NaN, ±Infinity or 1e300 is still valid.
  random: fc.oneof(fc.constant(Math.random), fc.func(specialNumber)),
  backoff,
  retryOn: fc.oneof(
    errorFilter,
    fc.record(
      { error: fc.oneof(errorFilter, weird), result: fc.oneof(fc.func(fc.boolean()), weird) },
      { requiredKeys: [] },
    ),
  ),
  budget: fc.constant('budget'), // replaced by a fresh RetryBudget in the test
};

const budgetValid: Valid = {
  percent: fc.double({ min: 0, max: 10, noNaN: true }),
  minRetriesPerSecond: fc.integer({ min: 0, max: 1_000_000 }),
  ttlMs: fc.integer({ min: 1000, max: 600_000 }),
  clock: fc.constant(undefined),
};

const timeoutValid: Valid = {
  ms: fc.oneof(fc.integer({ min: 1, max: MAX_MS }), fc.constant(Number.MIN_VALUE)),
  strategy: fc.constantFrom('cooperative', 'aggressive'),
  clock: fc.constant(undefined),
};

const bulkheadValid: Valid = {
  maxConcurrent: fc.integer({ min: 1, max: 1_000_000 }),
  maxQueue: fc.integer({ min: 0, max: 1_000_000 }),
  queueTimeoutMs: fc.oneof(fc.integer({ min: 0, max: MAX_MS }), fc.constant(Infinity)),
  clock: fc.constant(undefined),
};

const hedgeValid: Valid = {
  afterMs: fc.integer({ min: 0, max: MAX_MS }),
  afterPercentile: fc.double({ min: 0.001, max: 99.999, noNaN: true }),
  minSamples: fc.integer({ min: 1, max: 10_000 }),
  maxHedges: fc.integer({ min: 1, max: 10 }),
  clock: fc.constant(undefined),
};

const callValid: Valid = {
  idempotent: fc.boolean(),
  key: fc.oneof(fc.string({ maxLength: 6 }), fc.constant(new Uint8Array([1, 2]))),
  signal: fc.constantFrom('live-signal', 'aborted-signal'), // replaced in the test
};

const resilientValid: Valid = {
  breakers: fc.oneof(
    fc.record({ minimumCalls: fc.integer({ min: 1, max: 10 }) }, { requiredKeys: [] }),
    fc.record({ failureRateThreshold: weird }),
  ),
  retry: fuzzed(retryValid),
  hedge: fuzzed(hedgeValid),
  attemptTimeoutMs: fc.integer({ min: 1, max: MAX_MS }),
  clock: fc.constant(undefined),
};

const instrumentValid: Valid = {
  meterProvider: fc.constant(metrics.getMeterProvider()),
  tracerProvider: fc.constant(trace.getTracerProvider()),
  picks: fc.boolean(),
};

/** What the function under a policy does. */
const behaviour = fc.constantFrom('value', 'async-value', 'throw', 'reject', 'signal-value');
type Behaviour = 'value' | 'async-value' | 'throw' | 'reject' | 'signal-value';

function attemptOf(how: Behaviour): (signal: AbortSignal) => unknown {
  switch (how) {
    case 'value':
      return () => 42;
    case 'async-value':
      return () => Promise.resolve(42);
    case 'throw':
      return () => {
        throw new Planted('fn');
      };
    case 'reject':
      return () => Promise.reject(new Planted('fn'));
    default:
      // Declares its signal, so cooperative timeouts and hedges give it one of its own.
      return (signal: AbortSignal) => (signal.aborted ? 42 : Promise.resolve(42));
  }
}

// ---------------------------------------------------------------------------------- checks

/** An error thrown by reading the caller's own value (our trap, or a revoked Proxy's). */
function callersOwn(error: unknown): boolean {
  return (
    error instanceof Planted ||
    (error instanceof TypeError && /proxy that has been revoked/.test(error.message))
  );
}

/**
 * Keys given (read safely), and those of the records nested under `nested`: the options an
 * error may name. (An unknown key given as `undefined` may be named too: fallback() refuses
 * it, where core's resolveOptions ignores it — a difference, but a typed error naming it.)
 */
function givenKeys(options: unknown, nested: readonly string[] = []): string[] {
  if (typeof options !== 'object' || options === null) return [];
  try {
    const keys = Object.keys(options);
    for (const key of nested) {
      if (keys.includes(key)) keys.push(...givenKeys((options as Record<string, unknown>)[key]));
    }
    return keys;
  } catch {
    return [];
  }
}

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** A refusal: the caller's own error, or an InvalidOptionError naming one of `paths`. */
function expectTyped(error: unknown, paths: readonly string[], label: string): void {
  if (callersOwn(error)) return;
  if (!isInvalidOptionError(error))
    expect.fail(`${label}: expected an InvalidOptionError, got ${describeError(error)}`);
  const option = error.option;
  const named = paths.some(
    (p) => option === p || option.startsWith(`${p}.`) || option.startsWith(`${p}[`),
  );
  if (!named)
    expect.fail(`${label}: the error names "${option}", expected one of ${paths.join(', ')}`);
}

/** An outcome of running a call: the caller's own error or one of Keel's typed errors. */
function expectAllowedRejection(error: unknown, label: string): void {
  if (callersOwn(error) || isKeelError(error)) return;
  expect.fail(`${label}: rejected with ${describeError(error)}`);
}

function attempt(fn: () => unknown): { ok: true; value: unknown } | { ok: false; error: unknown } {
  try {
    return { ok: true, value: fn() };
  } catch (error) {
    return { ok: false, error };
  }
}

const drain = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/**
 * Awaits `promise`, advancing `clock` past the longest allowed wait between drains; fails if
 * it has not settled after a bounded number of steps (a promise that never settles).
 */
async function settle(promise: unknown, clock: ManualClock, label: string): Promise<Outcome> {
  expect(promise, `${label}: returns a promise`).toBeInstanceOf(Promise);
  // Read through a function: the callbacks below set it, which flow analysis does not see.
  const box: { outcome?: Outcome } = {};
  const pending = (): boolean => box.outcome === undefined;
  (promise as Promise<unknown>).then(
    (value) => (box.outcome = { ok: true, value }),
    (error: unknown) => (box.outcome = { ok: false, error }),
  );
  for (let step = 0; step < 50 && pending(); step++) {
    await drain();
    if (pending()) clock.advance(MAX_MS + 1);
  }
  if (pending()) {
    // Options that are not a plain record get no ManualClock (retry() with no options runs on
    // the system clock: its default backoff waits at most 250 ms). A generous real bound.
    for (let waited = 0; waited < 5000 && pending(); waited += 50)
      await new Promise((resolve) => setTimeout(resolve, 50));
  }
  if (box.outcome === undefined) expect.fail(`${label}: the promise did not settle`);
  return box.outcome;
}

function signalFor(value: unknown): unknown {
  if (value === 'live-signal') return new AbortController().signal;
  if (value === 'aborted-signal') return AbortSignal.abort(new Planted('signal'));
  return value;
}

/** Replaces the test's placeholders (budget, signal) inside generated options. */
function placeholders(options: unknown, clock: ManualClock): unknown {
  if (!isRecord(options)) return options;
  const d = Object.getOwnPropertyDescriptor(options, 'budget');
  if (d !== undefined && 'value' in d && d.value === 'budget')
    options.budget = new RetryBudget({ clock });
  const s = Object.getOwnPropertyDescriptor(options, 'signal');
  if (s !== undefined && 'value' in s) options.signal = signalFor(s.value);
  return options;
}

/** Fuzzed `execute` options: absent, `{ signal }` (live, aborted or weird), or weird. */
const executeOptions = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  {
    weight: 2,
    arbitrary: fc.record({
      signal: fc.oneof(fc.constantFrom('live-signal', 'aborted-signal'), weird),
    }),
  },
  { weight: 1, arbitrary: weird },
);

/** Builds a policy from fuzzed options, then runs a fuzzed function through it. */
async function checkPolicy(
  label: string,
  make: (options: unknown, clock: ManualClock) => Policy,
  raw: unknown,
  how: Behaviour,
  rawCall: unknown,
  required: readonly string[] = [],
): Promise<void> {
  count(label);
  const clock = new ManualClock();
  const options = placeholders(withClock(realize(raw), clock), clock);
  const made = attempt(() => make(options, clock));
  if (!made.ok) {
    // A required option may be named when it is missing.
    expectTyped(
      made.error,
      [...givenKeys(options, ['backoff', 'retryOn']), ...required, 'options'],
      label,
    );
    return;
  }
  const policy = made.value as Policy;
  const callOptions = placeholders(realize(rawCall), clock);
  const started = attempt(() =>
    policy.execute(attemptOf(how), callOptions as { signal?: AbortSignal }),
  );
  if (!started.ok) expect.fail(`${label}: execute threw ${describeError(started.error)}`);
  const outcome = await settle(started.value, clock, label);
  if (outcome.ok) {
    count(`${label} resolved`);
    expect(outcome.value, label).toBe(42);
    return;
  }
  expectAllowedRejection(outcome.error, label);
  if (isInvalidOptionError(outcome.error))
    expectTyped(outcome.error, ['options', 'signal', ...givenKeys(callOptions)], label);
  // A call that ran to completion (no refusal, no abort) with a succeeding fn resolves.
  if (how !== 'throw' && how !== 'reject' && callOptions === undefined && label !== 'bulkhead')
    expect.fail(`${label}: a succeeding fn was rejected with ${describeError(outcome.error)}`);
}

// ---------------------------------------------------------------------------------- suites

describe('keel/resilience fuzz', () => {
  it('retry(options).execute: the value, the caller’s error, or a typed error', async () => {
    await fc.assert(
      fc.asyncProperty(fuzzed(retryValid), behaviour, executeOptions, (raw, how, call) =>
        checkPolicy('retry', (o) => retry(o as never), raw, how, call),
      ),
      { numRuns: RUNS },
    );
  });

  it('new RetryBudget(options): a budget whose methods answer, or a typed error', () => {
    fc.assert(
      fc.property(fuzzed(budgetValid), (raw) => {
        count('RetryBudget');
        const clock = new ManualClock();
        const options = withClock(realize(raw), clock);
        const made = attempt(() => new RetryBudget(options as never));
        if (!made.ok) {
          expectTyped(made.error, [...givenKeys(options), 'options'], 'RetryBudget');
          return;
        }
        const budget = made.value as RetryBudget;
        budget.deposit();
        expect(typeof budget.tryWithdraw()).toBe('boolean');
        clock.advance(700_000);
        expect(Number.isFinite(budget.balance)).toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  it('timeout(options).execute: settles with the value, the caller’s error or a TimeoutError', async () => {
    await fc.assert(
      fc.asyncProperty(fuzzed(timeoutValid), behaviour, executeOptions, (raw, how, call) =>
        checkPolicy('timeout', (o) => timeout(o as never), raw, how, call, ['ms']),
      ),
      { numRuns: RUNS },
    );
  });

  it('bulkhead(options).execute: settles, and frees its slot', async () => {
    await fc.assert(
      fc.asyncProperty(fuzzed(bulkheadValid), behaviour, executeOptions, async (raw, how, call) => {
        let made: ReturnType<typeof bulkhead> | undefined;
        await checkPolicy('bulkhead', (o) => (made = bulkhead(o as never)), raw, how, call, [
          'maxConcurrent',
        ]);
        if (made !== undefined) expect(made.running).toBe(0);
      }),
      { numRuns: RUNS },
    );
  });

  it('hedge(options).execute: settles with the value or the caller’s error', async () => {
    await fc.assert(
      fc.asyncProperty(fuzzed(hedgeValid), behaviour, executeOptions, (raw, how, call) =>
        checkPolicy('hedge', (o) => hedge(o as never), raw, how, call, [
          'afterMs',
          'afterPercentile',
        ]),
      ),
      { numRuns: RUNS },
    );
  });

  it('fallback(handler, options).execute: the value, the handler’s answer, or its error', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.constant(42),
          weird,
          fc.constant(() => 42),
        ),
        fuzzed({ on: errorFilter }),
        behaviour,
        executeOptions,
        async (rawHandler, raw, how, call) => {
          const handler = realize(rawHandler);
          count('fallback');
          const clock = new ManualClock();
          const options = realize(raw);
          const made = attempt(() => fallback(handler, options as never));
          if (!made.ok) {
            expectTyped(made.error, [...givenKeys(options), 'options', 'handler'], 'fallback');
            return;
          }
          const callOptions = placeholders(realize(call), clock);
          const started = attempt(() =>
            (made.value as Policy).execute(attemptOf(how), callOptions as never),
          );
          if (!started.ok) expect.fail(`fallback: execute threw ${describeError(started.error)}`);
          const outcome = await settle(started.value, clock, 'fallback');
          if (!outcome.ok) expectAllowedRejection(outcome.error, 'fallback');
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('pipeline(...policies).execute: typed error for a non-policy, else settles', async () => {
    const stage = fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom('retry', 'timeout', 'bulkhead', 'hedge', 'breaker') },
      { weight: 1, arbitrary: weird },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(stage, { maxLength: 4 }),
        behaviour,
        executeOptions,
        async (raw, how, call) => {
          count('pipeline');
          const clock = new ManualClock();
          const policies = raw.map((s): unknown => {
            switch (s) {
              case 'retry':
                return retry({ clock, maxAttempts: 2 });
              case 'timeout':
                return timeout({ clock, ms: 50, strategy: 'aggressive' });
              case 'bulkhead':
                return bulkhead({ clock, maxConcurrent: 1 });
              case 'hedge':
                return hedge({ clock, afterMs: 5 });
              case 'breaker':
                return new CircuitBreaker({ clock });
              default:
                return realize(s);
            }
          });
          const made = attempt(() => pipeline(...(policies as Policy[])));
          if (!made.ok) {
            expectTyped(made.error, ['policies', 'options'], 'pipeline');
            if (isInvalidOptionError(made.error))
              expect(made.error.option.startsWith('policies')).toBe(true);
            return;
          }
          const callOptions = placeholders(realize(call), clock);
          const started = attempt(() =>
            (made.value as Policy).execute(attemptOf(how), callOptions as never),
          );
          if (!started.ok) expect.fail(`pipeline: execute threw ${describeError(started.error)}`);
          const outcome = await settle(started.value, clock, 'pipeline');
          if (outcome.ok) {
            count('pipeline resolved');
            expect(outcome.value).toBe(42);
          } else expectAllowedRejection(outcome.error, 'pipeline');
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('resilientCall(balancer, options).call/callWithReport(fn, options): settles, typed', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          { weight: 5, arbitrary: fc.constant('balancer') },
          { weight: 1, arbitrary: weird },
        ),
        fuzzed(resilientValid),
        behaviour,
        fc.oneof(fc.constant(undefined), fuzzed(callValid)),
        fc.boolean(),
        async (rawBalancer, raw, how, rawCall, withReport) => {
          count('resilientCall');
          const clock = new ManualClock();
          const balancer =
            rawBalancer === 'balancer'
              ? new LoadBalancer({
                  strategy: roundRobin(),
                  endpoints: [{ id: 'a' }, { id: 'b' }],
                  clock,
                })
              : realize(rawBalancer);
          const options = realize(raw);
          withClock(options, clock, ['retry', 'hedge']);
          if (isRecord(options)) {
            const r = Object.getOwnPropertyDescriptor(options, 'retry');
            if (r !== undefined && 'value' in r) placeholders(r.value, clock);
          }
          const made = attempt(() => resilientCall(balancer as never, options as never));
          if (!made.ok) {
            expectTyped(
              made.error,
              // RetryRules and hedgeRules name a nested option by its own key.
              [...givenKeys(options, ['retry', 'hedge', 'breakers']), 'options', 'balancer'],
              'resilientCall',
            );
            return;
          }
          const caller = made.value as ReturnType<typeof resilientCall>;
          const fn = attemptOf(how);
          const callOptions = placeholders(realize(rawCall), clock);
          const started = attempt(() =>
            withReport
              ? caller.callWithReport((_e, signal) => fn(signal), callOptions as never)
              : caller.call((_e, signal) => fn(signal), callOptions as never),
          );
          if (!started.ok) expect.fail(`resilientCall: call threw ${describeError(started.error)}`);
          const outcome = await settle(started.value, clock, 'resilientCall');
          if (!outcome.ok) {
            expectAllowedRejection(outcome.error, 'resilientCall');
            return;
          }
          count('resilientCall resolved');
          if (withReport) {
            const report = outcome.value as { value: unknown; tried: unknown[] };
            expect(report.value).toBe(42);
            expect(report.tried.length).toBeGreaterThan(0);
          } else expect(outcome.value).toBe(42);
        },
      ),
      { numRuns: RUNS },
    );
  });
});

describe('keel/otel fuzz', () => {
  it('instrument(options): an Instrumentation (disposable twice), or a typed error', () => {
    fc.assert(
      fc.property(fc.oneof(fc.constant(undefined), fuzzed(instrumentValid)), (raw) => {
        count('instrument');
        const options = realize(raw);
        const made = attempt(() => instrument(options as never));
        if (!made.ok) {
          expectTyped(made.error, [...givenKeys(options), 'options'], 'instrument');
          return;
        }
        count('instrument made');
        const instrumentation = made.value as ReturnType<typeof instrument>;
        instrumentation.dispose();
        instrumentation.dispose();
      }),
      { numRuns: RUNS },
    );
  });
});
