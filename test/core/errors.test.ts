import { describe, expect, it } from 'vitest';
import { KeelError, hasKeelCode, isKeelError } from '../../src/core/index.js';

describe('KeelError', () => {
  it('carries code, message, explicit name and cause', () => {
    const cause = new Error('socket closed');
    const error = new KeelError('KEEL_TEST', 'it broke', { cause });
    expect(error).toBeInstanceOf(Error);
    expect(error.code).toBe('KEEL_TEST');
    expect(error.message).toBe('it broke');
    expect(error.name).toBe('KeelError');
    expect(error.cause).toBe(cause);
    expect(String(error.stack)).toMatch(/^KeelError: it broke/);
  });

  it('has no cause property when none is given, and keeps an explicit undefined cause', () => {
    expect('cause' in new KeelError('KEEL_TEST', 'x')).toBe(false);
    expect('cause' in new KeelError('KEEL_TEST', 'x', { cause: undefined })).toBe(true);
  });

  it('subclasses keep their own explicit name, even when minified names differ', () => {
    class SomethingError extends KeelError {
      override readonly name: string = 'SomethingError';
    }
    const renamed = { X: SomethingError }.X; // constructor.name is irrelevant
    const error = new renamed('KEEL_SOMETHING', 'oops');
    expect(error.name).toBe('SomethingError');
    expect(isKeelError(error)).toBe(true);
  });
});

describe('isKeelError', () => {
  it('accepts Keel errors and rejects everything else', () => {
    expect(isKeelError(new KeelError('KEEL_TEST', 'x'))).toBe(true);
    for (const value of [
      new Error('x'),
      { code: 'KEEL_TEST', name: 'KeelError' },
      null,
      undefined,
      'KeelError',
      42,
    ]) {
      expect(isKeelError(value)).toBe(false);
    }
  });

  it('recognises errors from another copy of Keel through the shared registry symbol', () => {
    // What a duplicate install produces: a different class with the same brand.
    const foreign = Object.assign(new Error('from the other copy'), { code: 'KEEL_TEST' });
    Object.defineProperty(foreign, Symbol.for('keel.error'), { value: true });
    expect(foreign instanceof KeelError).toBe(false);
    expect(isKeelError(foreign)).toBe(true);
  });

  it('hasKeelCode narrows by code', () => {
    const error = new KeelError('KEEL_A', 'a');
    expect(hasKeelCode(error, 'KEEL_A')).toBe(true);
    expect(hasKeelCode(error, 'KEEL_B')).toBe(false);
    expect(hasKeelCode(new Error('a'), 'KEEL_A')).toBe(false);
  });
});
