import { describe, expect, it } from 'vitest';
import {
  isInvalidOptionError,
  isLogger,
  log,
  loggerOption,
  resolveOptions,
  silentLogger,
} from '../../src/core/index.js';

describe('core/logger', () => {
  it('recognises the pino shape and nothing less', () => {
    const pinoLike = { debug() {}, info() {}, warn() {}, error() {}, child() {} };
    expect(isLogger(pinoLike)).toBe(true);
    expect(isLogger(silentLogger)).toBe(true);
    for (const bad of [
      undefined,
      null,
      'pino',
      {},
      { debug() {}, info() {}, warn() {} },
      console.log,
    ])
      expect(isLogger(bad)).toBe(false);
  });

  it('is validated as an option: silent by default, a typed error naming `logger` otherwise', () => {
    const spec = { logger: loggerOption() };
    expect(resolveOptions('Thing', {}, spec).logger).toBe(silentLogger);
    let error: unknown;
    try {
      resolveOptions('Thing', { logger: { info: () => undefined } }, spec);
    } catch (e) {
      error = e;
    }
    expect(isInvalidOptionError(error)).toBe(true);
    expect(error).toMatchObject({ owner: 'Thing', option: 'logger' });
  });

  it('calls the level with (obj, msg) and the logger as `this`; a throwing logger is contained', () => {
    const calls: unknown[] = [];
    const logger = {
      prefix: 'svc',
      debug() {},
      info(this: { prefix: string }, obj: object, msg: string) {
        calls.push([this.prefix, obj, msg]);
      },
      warn() {
        throw new Error('broken logger');
      },
      error() {},
    };
    log(logger, 'info', { a: 1 }, 'hello');
    expect(calls).toEqual([['svc', { a: 1 }, 'hello']]);
    expect(() => {
      log(logger, 'warn', {}, 'boom');
    }).not.toThrow();
  });
});
