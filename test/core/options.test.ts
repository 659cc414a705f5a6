import { describe, expect, it } from 'vitest';
import {
  InvalidOptionError,
  ManualClock,
  booleanOption,
  describeValue,
  functionOption,
  guardedOption,
  integerOption,
  isAbortSignal,
  isClock,
  isInvalidOptionError,
  isKeelError,
  nestedOption,
  numberOption,
  numberProblem,
  oneOfOption,
  resolveOptions,
  stringOption,
  type Clock,
} from '../../src/core/index.js';

const spec = {
  ttlMs: integerOption({ min: 1, default: 10_000 }),
  driftFactor: numberOption({ min: 0, max: 0.5, default: 0.01 }),
  name: stringOption({ nonEmpty: true, default: 'keel' }),
  verbose: booleanOption({ default: false }),
  mode: oneOfOption(['count', 'time'], { default: 'count' }),
  onEvent: functionOption<(x: number) => void>({ optional: true }),
  clock: guardedOption<Clock>(isClock, 'a Clock', { optional: true }),
  retry: nestedOption({ count: integerOption({ min: 0, default: 3 }) }),
};

function thrown(fn: () => unknown): InvalidOptionError {
  try {
    fn();
  } catch (error) {
    expect(isInvalidOptionError(error)).toBe(true);
    return error as InvalidOptionError;
  }
  throw new Error('expected an InvalidOptionError');
}

describe('resolveOptions', () => {
  it('rejects a huge unknown key quickly, without a hint', () => {
    const key = 'k'.repeat(1_000_000);
    expect(() => resolveOptions('Thing', { [key]: 1 }, spec)).toThrow(/\(unknown option\)$/);
  });

  it('fills defaults and returns a frozen copy without touching the input', () => {
    const input = { ttlMs: 500 };
    const resolved = resolveOptions('Thing', input, spec);
    expect(resolved).toEqual({
      ttlMs: 500,
      driftFactor: 0.01,
      name: 'keel',
      verbose: false,
      mode: 'count',
      onEvent: undefined,
      clock: undefined,
      retry: { count: 3 },
    });
    expect(Object.isFrozen(resolved)).toBe(true);
    expect(Object.isFrozen(resolved.retry)).toBe(true);
    expect(input).toEqual({ ttlMs: 500 });
    expect(resolved).not.toBe(input);
  });

  it('treats undefined values and a missing options object as not given', () => {
    expect(resolveOptions('Thing', undefined, spec).ttlMs).toBe(10_000);
    expect(resolveOptions('Thing', { ttlMs: undefined }, spec).ttlMs).toBe(10_000);
  });

  it('accepts valid values of every kind', () => {
    const clock = new ManualClock();
    const onEvent = (): void => undefined;
    const resolved = resolveOptions(
      'Thing',
      {
        mode: 'time',
        verbose: true,
        name: 'x',
        onEvent,
        clock,
        retry: { count: 0 },
        driftFactor: 0.5,
      },
      spec,
    );
    expect(resolved.mode).toBe('time');
    expect(resolved.onEvent).toBe(onEvent);
    expect(resolved.clock).toBe(clock);
    expect(resolved.retry.count).toBe(0);
    expect(resolved.driftFactor).toBe(0.5);
  });

  it.each([
    [{ ttlMs: 0 }, 'ttlMs', 'an integer >= 1', '0'],
    [{ ttlMs: 1.5 }, 'ttlMs', 'an integer >= 1', '1.5'],
    [{ ttlMs: '100' }, 'ttlMs', 'an integer >= 1', '"100"'],
    [{ ttlMs: Number.NaN }, 'ttlMs', 'an integer >= 1', 'NaN'],
    [{ driftFactor: 0.6 }, 'driftFactor', 'a finite number >= 0 and <= 0.5', '0.6'],
    [{ driftFactor: Infinity }, 'driftFactor', 'a finite number >= 0 and <= 0.5', 'Infinity'],
    [{ name: '' }, 'name', 'a non-empty string', '""'],
    [{ verbose: 'yes' }, 'verbose', 'a boolean', '"yes"'],
    [{ mode: 'sliding' }, 'mode', 'one of "count", "time"', '"sliding"'],
    [{ onEvent: 3 }, 'onEvent', 'a function', '3'],
    [{ clock: { now: () => 0 } }, 'clock', 'a Clock', 'an object'],
    [{ retry: { count: -1 } }, 'retry.count', 'an integer >= 0', '-1'],
    [{ retry: 5 }, 'retry', 'an options object', '5'],
  ])('rejects %j naming the option', (input, option, expected, received) => {
    const error = thrown(() => resolveOptions('Thing', input, spec));
    expect(error).toBeInstanceOf(InvalidOptionError);
    expect(isKeelError(error)).toBe(true);
    expect(error.code).toBe('KEEL_INVALID_OPTION');
    expect(error.name).toBe('InvalidOptionError');
    expect(error.owner).toBe('Thing');
    expect(error.option).toBe(option);
    expect(error.expected).toBe(expected);
    expect(error.received).toBe(received);
    expect(error.message).toBe(
      `Thing: invalid option "${option}": expected ${expected}, received ${received}`,
    );
  });

  it('rejects a non-object options argument', () => {
    for (const input of [null, 42, 'x', [1], new Map()]) {
      expect(thrown(() => resolveOptions('Thing', input, spec)).option).toBe('options');
    }
  });

  it('rejects unknown options with a did-you-mean hint', () => {
    const error = thrown(() => resolveOptions('Thing', { ttl: 100 }, spec));
    expect(error.option).toBe('ttl');
    expect(error.message).toContain('did you mean "ttlMs"?');
    const far = thrown(() => resolveOptions('Thing', { completelyDifferent: 1 }, spec));
    expect(far.message).toContain('unknown option');
    expect(far.message).not.toContain('did you mean');
    expect(thrown(() => resolveOptions('Thing', { retry: { cont: 1 } }, spec)).option).toBe(
      'retry.cont',
    );
  });

  it('reports a missing required option', () => {
    const required = { host: stringOption({ required: true }) };
    const error = thrown(() => resolveOptions('Client', {}, required));
    expect(error.option).toBe('host');
    expect(error.message).toContain('(required)');
  });

  it('allows Infinity only where asked', () => {
    const rule = { limit: numberOption({ min: 0, allowInfinity: true, default: Infinity }) };
    expect(resolveOptions('T', { limit: Infinity }, rule).limit).toBe(Infinity);
    expect(thrown(() => resolveOptions('T', { limit: -Infinity }, rule)).expected).toBe(
      'a finite number >= 0 (or Infinity)',
    );
  });

  it('supports exclusive minimums', () => {
    const rule = { rate: numberOption({ min: 0, minExclusive: true, max: 1, default: 0.5 }) };
    expect(thrown(() => resolveOptions('T', { rate: 0 }, rule)).expected).toBe(
      'a finite number > 0 and <= 1',
    );
  });
});

describe('numberProblem', () => {
  it('returns undefined for valid numbers and the expectation otherwise', () => {
    expect(numberProblem(3, true, { min: 1 })).toBeUndefined();
    expect(numberProblem(2 ** 60, true, {})).toBe('an integer');
    expect(numberProblem(0.5, false, { max: 1 })).toBeUndefined();
  });
});

describe('describeValue', () => {
  it('describes values briefly and safely', () => {
    expect(describeValue(undefined)).toBe('undefined');
    expect(describeValue(null)).toBe('null');
    expect(describeValue(-0)).toBe('-0');
    expect(describeValue(10n)).toBe('10n');
    expect(describeValue(Symbol('s'))).toBe('Symbol(s)');
    expect(describeValue('x'.repeat(100))).toBe('a string of length 100');
    expect(describeValue([1, 2])).toBe('an array of length 2');
    expect(describeValue(new Uint8Array(3))).toBe('a Uint8Array of length 3');
    expect(describeValue(new TypeError('x'))).toBe('an error (TypeError)');
    expect(describeValue(new Map())).toBe('a Map');
    expect(describeValue(Object.create(null))).toBe('an object');
    expect(describeValue(() => 1)).toBe('a function');
    const hostile = {
      toString() {
        throw new Error('never called');
      },
    };
    expect(describeValue(hostile)).toBe('an object');
  });

  it('never throws, even for a revoked Proxy or a throwing getter', () => {
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    expect(describeValue(proxy)).toMatch(/cannot be inspected/);
    const error = new Error('x');
    Object.defineProperty(error, 'name', {
      get() {
        throw new Error('hostile');
      },
    });
    expect(describeValue(error)).toMatch(/cannot be inspected/);
  });
});

describe('isAbortSignal', () => {
  it('recognises signals', () => {
    expect(isAbortSignal(new AbortController().signal)).toBe(true);
    expect(isAbortSignal({ aborted: false })).toBe(false);
    expect(isAbortSignal(null)).toBe(false);
  });
});
