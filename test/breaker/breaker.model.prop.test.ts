import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { CircuitBreaker, type BreakerPermit, type BreakerState } from '../../src/breaker/index.js';
import { BreakerPolicy } from '../../src/breaker/policy.js';
import { CountWindow } from '../../src/breaker/window.js';

// A small reference model of the breaker's state machine (count window, no jitter), written
// independently of the implementation, and a fast-check model-based test that drives both
// with the same random commands and compares them after every step.

interface Config {
  readonly size: number;
  readonly minimumCalls: number;
  readonly failureRateThreshold: number;
  readonly slowCallRateThreshold: number;
  readonly slowCallDurationMs: number;
  readonly consecutiveFailures: number;
  readonly openDurationMs: number;
  readonly multiplier: number;
  readonly maxOpenDurationMs: number;
  readonly halfOpenPermits: number;
  readonly maxHalfOpenMs: number;
}

interface ModelPermit {
  readonly generation: number;
  readonly startedAt: number;
}

class Model {
  state: BreakerState = 'closed';
  generation = 0;
  window: { failed: boolean; slow: boolean }[] = [];
  consecutiveFailures = 0;
  consecutiveOpens = 0;
  openUntil = 0;
  stateSince = 0;
  trials = { started: 0, done: 0, failures: 0, slow: 0 };
  constructor(readonly c: Config) {}

  advance(now: number): void {
    if (this.state === 'open' && now >= this.openUntil) this.to('half-open', now);
    else if (this.state === 'half-open' && now - this.stateSince >= this.c.maxHalfOpenMs)
      this.open(now);
  }

  to(state: BreakerState, now: number): void {
    this.state = state;
    this.generation++;
    this.stateSince = now;
    if (state === 'half-open') this.trials = { started: 0, done: 0, failures: 0, slow: 0 };
  }

  open(now: number): void {
    const base = Math.min(
      this.c.openDurationMs * this.c.multiplier ** this.consecutiveOpens,
      this.c.maxOpenDurationMs,
    );
    this.openUntil = now + base;
    this.consecutiveOpens++;
    this.to('open', now);
  }

  acquire(now: number): ModelPermit | undefined {
    this.advance(now);
    if (this.state === 'open' || this.state === 'forced-open') return undefined;
    if (this.state === 'half-open') {
      if (this.trials.started >= this.c.halfOpenPermits) return undefined;
      this.trials.started++;
    }
    return { generation: this.generation, startedAt: now };
  }

  record(permit: ModelPermit, outcome: 'success' | 'failure' | 'ignored', now: number): void {
    if (outcome === 'ignored') {
      // An ignored half-open trial gives its permit back (it said nothing about the dependency).
      if (permit.generation === this.generation && this.state === 'half-open')
        this.trials.started--;
      return;
    }
    if (permit.generation !== this.generation) return;
    this.advance(now);
    if (permit.generation !== this.generation) return;
    const failed = outcome === 'failure';
    const slow = now - permit.startedAt >= this.c.slowCallDurationMs;
    if (this.state === 'half-open') {
      this.trials.done++;
      if (failed) this.trials.failures++;
      if (slow) this.trials.slow++;
      const p = this.c.halfOpenPermits;
      if (
        this.trials.failures / p >= this.c.failureRateThreshold ||
        this.trials.slow / p >= this.c.slowCallRateThreshold
      ) {
        this.open(now);
      } else if (this.trials.done >= p) {
        this.consecutiveOpens = 0;
        this.consecutiveFailures = 0;
        this.window = [];
        this.to('closed', now);
      }
      return;
    }
    if (this.state === 'open' || this.state === 'forced-open') return;
    this.window.push({ failed, slow });
    if (this.window.length > this.c.size) this.window.shift();
    this.consecutiveFailures = failed ? this.consecutiveFailures + 1 : 0;
    if (this.state === 'disabled' || this.state === 'metrics-only') return;
    const calls = this.window.length;
    const failures = this.window.filter((w) => w.failed).length;
    const slowCalls = this.window.filter((w) => w.slow).length;
    const byCount =
      this.c.consecutiveFailures > 0 && this.consecutiveFailures >= this.c.consecutiveFailures;
    const byRate =
      calls >= this.c.minimumCalls &&
      (failures / calls >= this.c.failureRateThreshold ||
        slowCalls / calls >= this.c.slowCallRateThreshold);
    if (byCount || byRate) this.open(now);
  }

  manual(action: 'forceOpen' | 'disable' | 'metricsOnly' | 'reset', now: number): void {
    if (action === 'reset') {
      this.window = [];
      this.consecutiveOpens = 0;
      this.consecutiveFailures = 0;
      this.to('closed', now);
    } else {
      this.to(
        action === 'forceOpen' ? 'forced-open' : action === 'disable' ? 'disabled' : 'metrics-only',
        now,
      );
    }
  }
}

type Command =
  | { kind: 'start' }
  | { kind: 'finish'; which: number; outcome: 'success' | 'failure' | 'ignored' }
  | { kind: 'advance'; ms: number }
  | { kind: 'manual'; action: 'forceOpen' | 'disable' | 'metricsOnly' | 'reset' };

const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 4, arbitrary: fc.constant<Command>({ kind: 'start' }) },
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('finish' as const),
      which: fc.nat(),
      outcome: fc.constantFrom(
        'success' as const,
        'failure' as const,
        'failure' as const,
        'ignored' as const,
      ),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('advance' as const),
      ms: fc.integer({ min: 0, max: 400 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('manual' as const),
      action: fc.constantFrom(
        'forceOpen' as const,
        'disable' as const,
        'metricsOnly' as const,
        'reset' as const,
      ),
    }),
  },
);

const config: fc.Arbitrary<Config> = fc
  .record({
    size: fc.integer({ min: 1, max: 8 }),
    failureRateThreshold: fc.constantFrom(0.25, 0.5, 1),
    slowCallRateThreshold: fc.constantFrom(0.5, 1),
    slowCallDurationMs: fc.constantFrom(50, 300, Infinity),
    consecutiveFailures: fc.constantFrom(0, 0, 2, 3),
    openDurationMs: fc.constantFrom(100, 250),
    multiplier: fc.constantFrom(1, 2),
    halfOpenPermits: fc.integer({ min: 1, max: 3 }),
    maxHalfOpenMs: fc.constantFrom(300, 1000),
  })
  .chain((c) =>
    fc
      .integer({ min: 1, max: c.size })
      .map((minimumCalls) => ({ ...c, minimumCalls, maxOpenDurationMs: c.openDurationMs * 4 })),
  );

describe('CircuitBreaker (model-based)', () => {
  it('agrees with the reference state machine after every command', () => {
    fc.assert(
      fc.property(config, fc.array(command, { maxLength: 120 }), (c, commands) => {
        const clock = new ManualClock();
        const breaker = new CircuitBreaker({
          clock,
          window: { type: 'count', size: c.size },
          minimumCalls: c.minimumCalls,
          failureRateThreshold: c.failureRateThreshold,
          slowCallRateThreshold: c.slowCallRateThreshold,
          slowCallDurationMs: c.slowCallDurationMs,
          consecutiveFailures: c.consecutiveFailures,
          openDurationMs: c.openDurationMs,
          backoff: { multiplier: c.multiplier, maxOpenDurationMs: c.maxOpenDurationMs, jitter: 0 },
          halfOpenPermits: c.halfOpenPermits,
          maxHalfOpenMs: c.maxHalfOpenMs,
        });
        const model = new Model(c);
        const open: { real: BreakerPermit; model: ModelPermit }[] = [];
        for (const cmd of commands) {
          const now = clock.now();
          if (cmd.kind === 'start') {
            const real = breaker.tryAcquire();
            const expected = model.acquire(now);
            expect(real === undefined).toBe(expected === undefined);
            if (real !== undefined && expected !== undefined) open.push({ real, model: expected });
          } else if (cmd.kind === 'finish') {
            if (open.length === 0) continue;
            const [call] = open.splice(cmd.which % open.length, 1);
            if (call === undefined) continue;
            if (cmd.outcome === 'success') call.real.success();
            else if (cmd.outcome === 'failure') call.real.failure(new Error('boom'));
            else call.real.ignore();
            model.record(call.model, cmd.outcome, now);
          } else if (cmd.kind === 'advance') {
            clock.advance(cmd.ms);
          } else {
            if (cmd.action === 'forceOpen') breaker.forceOpen();
            else if (cmd.action === 'disable') breaker.disable();
            else if (cmd.action === 'metricsOnly') breaker.metricsOnly();
            else breaker.reset();
            model.manual(cmd.action, now);
          }
          model.advance(clock.now());
          expect(breaker.state).toBe(model.state);
          const metrics = breaker.metrics();
          if (
            model.state === 'closed' ||
            model.state === 'disabled' ||
            model.state === 'metrics-only'
          ) {
            expect(metrics.calls).toBe(model.window.length);
            expect(metrics.failures).toBe(model.window.filter((w) => w.failed).length);
          }
          if (model.state === 'open')
            expect(metrics.retryAfterMs).toBe(
              Math.ceil(Math.max(0, model.openUntil - clock.now())),
            );
        }
      }),
      { numRuns: 300 },
    );
  });

  // The same model against the pure policy alone — no shell, no clock object, no permits:
  // time is a number passed in, an admission is a generation, an outcome is two booleans.
  it('the pure policy agrees with the reference state machine, driven directly', () => {
    fc.assert(
      fc.property(config, fc.array(command, { maxLength: 120 }), (c, commands) => {
        let now = 0;
        const policy = new BreakerPolicy(
          {
            minimumCalls: c.minimumCalls,
            failureRateThreshold: c.failureRateThreshold,
            slowCallRateThreshold: c.slowCallRateThreshold,
            consecutiveFailures: c.consecutiveFailures,
            openDurationMs: c.openDurationMs,
            backoff: {
              multiplier: c.multiplier,
              maxOpenDurationMs: c.maxOpenDurationMs,
              jitter: 0,
            },
            halfOpenPermits: c.halfOpenPermits,
            maxHalfOpenMs: c.maxHalfOpenMs,
            random: () => 0.5,
          },
          new CountWindow(c.size),
          now,
        );
        const time = { now: () => now };
        const model = new Model(c);
        const open: { generation: number; model: ModelPermit }[] = [];
        for (const cmd of commands) {
          if (cmd.kind === 'start') {
            policy.advance(now);
            const admitted = policy.admit();
            const expected = model.acquire(now);
            expect(admitted).toBe(expected !== undefined);
            if (admitted && expected !== undefined)
              open.push({ generation: policy.generation, model: expected });
          } else if (cmd.kind === 'finish') {
            if (open.length === 0) continue;
            const [call] = open.splice(cmd.which % open.length, 1);
            if (call === undefined) continue;
            if (cmd.outcome !== 'ignored') {
              const slow = now - call.model.startedAt >= c.slowCallDurationMs;
              policy.onOutcome(call.generation, cmd.outcome === 'failure', slow, now, time);
            } else {
              policy.ignored(call.generation);
            }
            model.record(call.model, cmd.outcome, now);
          } else if (cmd.kind === 'advance') {
            now += cmd.ms;
          } else {
            if (cmd.action === 'forceOpen') policy.moveTo('forced-open', 'manual', now);
            else if (cmd.action === 'disable') policy.moveTo('disabled', 'manual', now);
            else if (cmd.action === 'metricsOnly') policy.moveTo('metrics-only', 'manual', now);
            else policy.reset(now);
            model.manual(cmd.action, now);
          }
          model.advance(now);
          policy.advance(now);
          expect(policy.state).toBe(model.state);
          expect(policy.generation).toBe(model.generation);
          expect(policy.stateSince).toBe(model.stateSince);
          expect(policy.consecutiveOpens).toBe(model.consecutiveOpens);
          if (
            model.state === 'closed' ||
            model.state === 'disabled' ||
            model.state === 'metrics-only'
          ) {
            const totals = policy.totals(now);
            expect(totals.calls).toBe(model.window.length);
            expect(totals.failures).toBe(model.window.filter((w) => w.failed).length);
            expect(totals.slow).toBe(model.window.filter((w) => w.slow).length);
          }
          if (model.state === 'open')
            expect(policy.retryAfter(now)).toBe(Math.max(0, model.openUntil - now));
        }
      }),
      { numRuns: 300 },
    );
  });
});
