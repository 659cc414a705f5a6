import { describe, expect, it } from 'vitest';
import { ManualClock, isInvalidOptionError } from '../../src/core/index.js';
import { BreakerRegistry, CircuitBreaker } from '../../src/breaker/index.js';
import { recordChannels, recordingLogger, tracingNames } from '../support/channels.js';

const boom = (): Promise<never> => Promise.reject(new Error('boom'));
const ok = (): Promise<string> => Promise.resolve('ok');

const STATE = 'keel:breaker:state-change';
const REJECTED = 'keel:breaker:call-rejected';
const EXECUTE = 'keel:breaker:execute';

function breaker(clock: ManualClock, extra: ConstructorParameters<typeof CircuitBreaker>[0] = {}) {
  return new CircuitBreaker({
    name: 'payments',
    clock,
    window: { size: 4 },
    minimumCalls: 2,
    openDurationMs: 1000,
    backoff: { jitter: 0 },
    ...extra,
  });
}

describe('breaker observability (issue 15)', () => {
  it('publishes a breaker opening, rejecting, half-opening and closing, with wall-clock times', async () => {
    const clock = new ManualClock();
    const logger = recordingLogger();
    const payments = breaker(clock, { logger });
    const typed: unknown[] = [];
    payments.onStateChange((c) => typed.push(c));
    using channels = recordChannels([STATE, REJECTED]);
    const before = Date.now();
    await payments.execute(ok);
    await payments.execute(boom).catch(() => undefined); // 1 of 2 failed: opens
    await payments.execute(ok).catch(() => undefined); // rejected
    clock.advance(1000);
    await payments.execute(ok); // the trial: closes
    const after = Date.now();

    expect(channels.published.map((p) => [p.channel, p.message.to ?? p.message.state])).toEqual([
      [STATE, 'open'],
      [REJECTED, 'open'],
      [STATE, 'half-open'],
      [STATE, 'closed'],
    ]);
    const [opened, rejected] = channels.published.map((p) => p.message);
    expect(opened).toEqual({
      name: 'payments',
      from: 'closed',
      to: 'open',
      reason: 'failure rate 0.500 >= 0.5',
      time: expect.any(Number) as number,
    });
    expect(rejected).toEqual({
      name: 'payments',
      state: 'open',
      retryAfterMs: 1000,
      time: expect.any(Number) as number,
    });
    for (const { message } of channels.published) {
      expect(message.time).toBeGreaterThanOrEqual(before);
      expect(message.time).toBeLessThanOrEqual(after);
    }
    // The typed events come from the same place: same changes, same times.
    expect(typed).toEqual(
      channels.of(STATE).map(({ from, to, reason, time }) => ({ from, to, reason, time })),
    );
    // The logger heard the transitions (an opening as a warning), never a call.
    expect(logger.lines.map((l) => [l.level, l.obj.to])).toEqual([
      ['warn', 'open'],
      ['info', 'half-open'],
      ['info', 'closed'],
    ]);
    expect(logger.lines[0]?.obj).toMatchObject({ breaker: 'payments', from: 'closed' });
  });

  it('publishes nothing and builds nothing without subscribers', async () => {
    const clock = new ManualClock();
    const payments = breaker(clock);
    await payments.execute(boom).catch(() => undefined);
    await payments.execute(boom).catch(() => undefined);
    using channels = recordChannels([`${STATE}-other`]);
    await payments.execute(ok).catch(() => undefined);
    expect(channels.published).toEqual([]);
    expect(payments.state).toBe('open');
  });

  it('traces execute() only for a breaker made with traceExecute', async () => {
    const clock = new ManualClock();
    using channels = recordChannels(tracingNames(EXECUTE));
    await breaker(clock).execute(ok);
    expect(channels.published).toEqual([]);

    const traced = breaker(clock, { name: 'traced', traceExecute: true });
    await expect(traced.execute(ok)).resolves.toBe('ok');
    await traced.execute(boom).catch(() => undefined);
    await traced.execute(boom).catch(() => undefined); // rejected: the breaker is open
    const kinds = channels.published.map((p) => p.channel.split(':').at(-1));
    expect(kinds).toEqual([
      'start',
      'end',
      'asyncStart',
      'asyncEnd',
      'start',
      'end',
      'error',
      'asyncStart',
      'asyncEnd',
      'start',
      'end',
      'error',
      'asyncStart',
      'asyncEnd',
    ]);
    const contexts = channels.of(`tracing:${EXECUTE}:asyncEnd`);
    expect(contexts[0]).toMatchObject({ name: 'traced', state: 'closed', result: 'ok' });
    expect(contexts[1]?.error).toBeInstanceOf(Error);
    expect(contexts[2]).toMatchObject({ state: 'open', error: { code: 'KEEL_BREAKER_OPEN' } });
  });

  it('validates the logger and traceExecute options', () => {
    for (const logger of [{}, { info: () => undefined }, 'pino', 1]) {
      let error: unknown;
      try {
        new CircuitBreaker({ logger: logger as never });
      } catch (e) {
        error = e;
      }
      expect(isInvalidOptionError(error)).toBe(true);
      expect(error).toMatchObject({ option: 'logger' });
    }
    expect(() => new CircuitBreaker({ traceExecute: 'yes' as never })).toThrow(/traceExecute/);
  });

  it('a logger that throws does not break the breaker', async () => {
    const explode = (): never => {
      throw new Error('logger down');
    };
    const payments = breaker(new ManualClock(), {
      logger: { debug: explode, info: explode, warn: explode, error: explode },
    });
    await payments.execute(boom).catch(() => undefined);
    await payments.execute(boom).catch(() => undefined);
    expect(payments.state).toBe('open');
  });

  it('BreakerRegistry.metrics() rolls every breaker up', async () => {
    const clock = new ManualClock();
    const logger = recordingLogger();
    const breakers = new BreakerRegistry({
      clock,
      window: { size: 4 },
      minimumCalls: 2,
      openDurationMs: 1000,
      logger,
    });
    const a = breakers.breakerFor('a');
    const b = breakers.breakerFor('b', { failureRateThreshold: 1 });
    breakers.breakerFor('c').forceOpen();
    await a.execute(boom).catch(() => undefined);
    await a.execute(boom).catch(() => undefined);
    await a.execute(ok).catch(() => undefined); // rejected
    await b.execute(ok);
    await b.execute(boom).catch(() => undefined);
    const before = Date.now();
    const m = breakers.metrics();
    expect(m).toMatchObject({
      breakers: 3,
      byState: { closed: 1, open: 1, 'forced-open': 1, 'half-open': 0 },
      open: ['a', 'c'],
      successfulTotal: 1,
      failedTotal: 3,
      ignoredTotal: 0,
      rejectedTotal: 1,
    });
    expect(m.time).toBeGreaterThanOrEqual(before);
    expect(Object.keys(m.perBreaker).sort()).toEqual(['a', 'b', 'c']);
    expect(m.perBreaker.b).toMatchObject({ state: 'closed', failedTotal: 1 });
    // Breakers made by the registry log through its logger; so does a sweep.
    expect(logger.lines.map((l) => l.obj.breaker)).toEqual(['c', 'a']);
    clock.advance(10);
    expect(breakers.sweep(5)).toBe(3);
    expect(logger.lines.at(-1)).toMatchObject({ level: 'debug', obj: { removed: 3 } });
    expect(breakers.metrics()).toMatchObject({ breakers: 0, open: [], rejectedTotal: 0 });
  });
});
