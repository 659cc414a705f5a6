/**
 * Saga definitions: `defineSaga(name, steps, options?)`, typed end to end — each step's output
 * is a typed field of `ctx.outputs` in every later step and in the compensations — and checked
 * once, at definition time (names, functions, retry and timeout numbers), with
 * {@link keel!InvalidOptionError}s that name what was wrong.
 *
 * A definition is plain data: it runs nowhere until a `SagaCoordinator` is given it. Every
 * process that may run or recover a saga must be given the same definition (same name, same
 * steps in the same order).
 *
 * @packageDocumentation
 */
import { InvalidOptionError, numberProblem, resolveOptions } from '../core/index.js';
import { functionOption, integerOption, numberOption } from '../core/options.js';

/** How a step (or a compensation) is retried after it throws. */
export interface RetryPolicy {
  /** Attempts in all, the first included (1: no retry). @defaultValue 3 */
  readonly attempts?: number;
  /** Delay before the second attempt. @defaultValue 100 */
  readonly initialDelayMs?: number;
  /** Longest delay between attempts. @defaultValue 5000 */
  readonly maxDelayMs?: number;
  /** Growth of the delay per attempt. @defaultValue 2 */
  readonly factor?: number;
  /** ± fraction of each delay drawn at random, so recovering processes spread out. @defaultValue 0.2 */
  readonly jitter?: number;
  /**
   * Whether an error is worth another attempt; `false` ends the step's attempts at once (a
   * declined card is not retried). @defaultValue every error is retried
   */
  readonly retryIf?: (error: unknown) => boolean;
}

/** What a step's `run` receives. */
export interface StepContext<I = unknown, P = Readonly<Record<string, unknown>>> {
  /** The saga definition's name. */
  readonly saga: string;
  /** The saga instance's id. */
  readonly sagaId: string;
  /** This step's name. */
  readonly step: string;
  /** The saga's input, as given to `run` (after a JSON round trip). */
  readonly input: I;
  /** The outputs of the steps before this one, by step name. */
  readonly outputs: P;
  /**
   * `<saga>:<sagaId>:<step>` — the same on every attempt and after every recovery, so a callee
   * that honours it (Stripe's `Idempotency-Key`, or {@link IdempotencyKeys.idempotent}) applies
   * the step's effect at most once.
   */
  readonly idempotencyKey: string;
  /** 1 for the first attempt of this step (counted across crashes and recoveries). */
  readonly attempt: number;
  /**
   * The fencing token of this coordinator's claim on the instance: raised each time another
   * coordinator takes the instance over. A store that refuses tokens older than the newest it
   * has seen (Kleppmann's fencing rule) thereby refuses the late writes of an owner that lost
   * the instance mid-step.
   */
  readonly fence: number;
}

/** What a step's `compensate` receives. */
export interface CompensationContext<
  I = unknown,
  P = Readonly<Record<string, unknown>>,
  O = unknown,
> extends StepContext<I, P> {
  /**
   * The step's output when its action is known to have completed; `undefined` when the action
   * began but its outcome is unknown (it failed, timed out, or its coordinator died mid-call):
   * the compensation must then undo it only if it happened — look it up by
   * {@link StepContext.idempotencyKey} (see {@link IdempotencyKeys.compensate}).
   */
  readonly output: O | undefined;
  /** True when the action is known to have completed (`output` is its result). */
  readonly completed: boolean;
  /**
   * Why the saga compensates: `step <name> failed: <error>`, `step <name> failed after <n>
   * attempts: <error>`, `cancelled`, or `saga-timeout…`.
   */
  readonly reason: string;
}

/** One step of a saga: an action and the compensation that undoes it. */
export interface SagaStep<N extends string = string, I = unknown, P = never, O = unknown> {
  /** Unique within the saga; part of the idempotency key. */
  readonly name: N;
  /** The action. Its result must survive `JSON.stringify` (it is stored in Redis). */
  run(ctx: StepContext<I, P>, signal: AbortSignal): O | Promise<O>;
  /**
   * Undoes the action. Called only for a step whose action began, in reverse order of the
   * steps; it may run more than once (after a crash), so it must be idempotent. Omit it for a
   * step with nothing to undo.
   */
  compensate?(ctx: CompensationContext<I, P, O>, signal: AbortSignal): void | Promise<void>;
  /** Retries of the action. @defaultValue 3 attempts, 100 ms doubling to 5 s, ± 20 % */
  readonly retry?: RetryPolicy;
  /** Each attempt's `signal` aborts after this long (a {@link SagaStepTimeoutError}). @defaultValue none */
  readonly timeoutMs?: number;
}

/** Options of {@link defineSaga}. */
export interface SagaOptions {
  /**
   * The whole saga's deadline, from its start, on the Redis server's clock: past it no step
   * begins and the saga compensates (a {@link SagaTimeoutError} as the reason). Compensations
   * are not bound by it. @defaultValue none
   */
  readonly timeoutMs?: number;
  /**
   * Retries of a failing compensation before the saga is parked as `needs-attention`.
   * @defaultValue 10 attempts, 100 ms doubling to 30 s, ± 20 %
   */
  readonly compensationRetry?: Omit<RetryPolicy, 'retryIf'>;
}

/** A retry policy with every field resolved. @internal */
export interface ResolvedRetry {
  readonly attempts: number;
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  readonly factor: number;
  readonly jitter: number;
  readonly retryIf: ((error: unknown) => boolean) | undefined;
}

/** A step with its options resolved. @internal */
export interface ResolvedStep {
  readonly name: string;
  readonly run: (ctx: StepContext<unknown, never>, signal: AbortSignal) => unknown;
  readonly compensate:
    ((ctx: CompensationContext<unknown, never>, signal: AbortSignal) => unknown) | undefined;
  readonly retry: ResolvedRetry;
  readonly timeoutMs: number | undefined;
}

declare const types: unique symbol;

/**
 * A checked saga definition, to give to a `SagaCoordinator`. `I` is the input type, `R` the
 * outputs of all its steps by name.
 */
export class SagaDefinition<I = unknown, R = Readonly<Record<string, unknown>>> {
  /** Phantom: carries the input and outputs types; never set. */
  declare readonly [types]: {
    /** The input type. */
    readonly input: I;
    /** The outputs type, by step name. */
    readonly outputs: R;
  };
  /** The saga's name (part of every Redis key it uses). */
  readonly name: string;
  /** The steps, in order. @internal */
  readonly steps: readonly ResolvedStep[];
  /** The saga's timeout, if any. */
  readonly timeoutMs: number | undefined;
  /** @internal */
  readonly compensationRetry: ResolvedRetry;

  /** @internal use {@link defineSaga} */
  constructor(
    name: string,
    steps: readonly ResolvedStep[],
    timeoutMs: number | undefined,
    compensationRetry: ResolvedRetry,
  ) {
    this.name = name;
    this.steps = steps;
    this.timeoutMs = timeoutMs;
    this.compensationRetry = compensationRetry;
    Object.freeze(this);
  }
}

/** Saga and step names: printable, no braces (Redis Cluster hash tags), no `|` or `:` (keys, history). */
const NAME = /^[A-Za-z0-9_.-]{1,100}$/;
const NAME_EXPECTED = 'a name of 1–100 letters, digits, "_", "." or "-"';

const retrySpec = (defaults: { attempts: number; maxDelayMs: number }, withRetryIf: boolean) => ({
  attempts: integerOption({ min: 1, max: 1000, default: defaults.attempts }),
  initialDelayMs: numberOption({ min: 0, max: 3_600_000, default: 100 }),
  maxDelayMs: numberOption({ min: 0, max: 3_600_000, default: defaults.maxDelayMs }),
  factor: numberOption({ min: 1, max: 100, default: 2 }),
  jitter: numberOption({ min: 0, max: 1, default: 0.2 }),
  ...(withRetryIf
    ? { retryIf: functionOption<(error: unknown) => boolean>({ optional: true }) }
    : {}),
});

function resolveRetry(
  owner: string,
  input: unknown,
  path: string,
  defaults: { attempts: number; maxDelayMs: number },
  withRetryIf: boolean,
): ResolvedRetry {
  const r = resolveOptions(owner, input, retrySpec(defaults, withRetryIf), path) as Omit<
    ResolvedRetry,
    'retryIf'
  > & { retryIf?: (error: unknown) => boolean };
  return Object.freeze({ ...r, retryIf: r.retryIf });
}

function checkTimeout(owner: string, option: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const problem = numberProblem(value, false, { min: 0, minExclusive: true, max: 2 ** 31 - 1 });
  if (problem !== undefined) throw new InvalidOptionError(owner, option, problem, value);
  return value as number;
}

/** A step's output, under its name. @inline */
type Out<N extends string, O> = { readonly [K in N]: Awaited<O> };
/** A step named `N` with input `I`, earlier outputs `P` and output `O`. @inline */
type Step<N extends string, I, P, O> = SagaStep<N, I, P, O>;
/** The outputs before the first step: none. @inline */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- an object with no outputs yet
type None = {};
// The overloads below give each step the outputs of the steps before it. TypeScript infers the
// array's elements left to right (intra-expression inference, TypeScript 4.7), so a step's
// return type is known when the next step's callbacks are checked.

/**
 * Defines a saga: its name, its steps in order, and options.
 *
 * Each step's `run(ctx, signal)` sees `ctx.input` and the outputs of the steps before it as
 * `ctx.outputs.<step name>`, typed; its `compensate(ctx, signal)` also sees its own `output`.
 * Annotate the first step's `ctx` as `StepContext<YourInput>` to type the input.
 *
 * @throws {@link keel!InvalidOptionError} for a bad name, duplicate step names, a missing `run`,
 * or bad retry / timeout numbers.
 *
 * @example
 * ```ts
 * import { defineSaga, type StepContext } from 'keel/saga';
 *
 * const order = defineSaga('order', [
 *   {
 *     name: 'reserve',
 *     run: (ctx: StepContext<{ sku: string; cents: number }>) => ({ reservation: `r-${ctx.input.sku}` }),
 *     compensate: () => undefined,
 *   },
 *   {
 *     name: 'charge',
 *     run: (ctx) => ({ payment: `p-${ctx.outputs.reserve.reservation}-${ctx.input.cents}` }),
 *     compensate: () => undefined,
 *     timeoutMs: 2000,
 *   },
 * ]);
 * console.log(order.name); // 'order'
 * ```
 */
export function defineSaga<I, N1 extends string, O1>(
  name: string,
  steps: readonly [Step<N1, I, None, O1>],
  options?: SagaOptions,
): SagaDefinition<I, Out<N1, O1>>;
export function defineSaga<I, N1 extends string, O1, N2 extends string, O2>(
  name: string,
  steps: readonly [Step<N1, I, None, O1>, Step<N2, I, Out<N1, O1>, O2>],
  options?: SagaOptions,
): SagaDefinition<I, Out<N1, O1> & Out<N2, O2>>;
export function defineSaga<I, N1 extends string, O1, N2 extends string, O2, N3 extends string, O3>(
  name: string,
  steps: readonly [
    Step<N1, I, None, O1>,
    Step<N2, I, Out<N1, O1>, O2>,
    Step<N3, I, Out<N1, O1> & Out<N2, O2>, O3>,
  ],
  options?: SagaOptions,
): SagaDefinition<I, Out<N1, O1> & Out<N2, O2> & Out<N3, O3>>;
export function defineSaga<
  I,
  N1 extends string,
  O1,
  N2 extends string,
  O2,
  N3 extends string,
  O3,
  N4 extends string,
  O4,
>(
  name: string,
  steps: readonly [
    Step<N1, I, None, O1>,
    Step<N2, I, Out<N1, O1>, O2>,
    Step<N3, I, Out<N1, O1> & Out<N2, O2>, O3>,
    Step<N4, I, Out<N1, O1> & Out<N2, O2> & Out<N3, O3>, O4>,
  ],
  options?: SagaOptions,
): SagaDefinition<I, Out<N1, O1> & Out<N2, O2> & Out<N3, O3> & Out<N4, O4>>;
export function defineSaga<
  I,
  N1 extends string,
  O1,
  N2 extends string,
  O2,
  N3 extends string,
  O3,
  N4 extends string,
  O4,
  N5 extends string,
  O5,
>(
  name: string,
  steps: readonly [
    Step<N1, I, None, O1>,
    Step<N2, I, Out<N1, O1>, O2>,
    Step<N3, I, Out<N1, O1> & Out<N2, O2>, O3>,
    Step<N4, I, Out<N1, O1> & Out<N2, O2> & Out<N3, O3>, O4>,
    Step<N5, I, Out<N1, O1> & Out<N2, O2> & Out<N3, O3> & Out<N4, O4>, O5>,
  ],
  options?: SagaOptions,
): SagaDefinition<I, Out<N1, O1> & Out<N2, O2> & Out<N3, O3> & Out<N4, O4> & Out<N5, O5>>;
export function defineSaga<
  I,
  N1 extends string,
  O1,
  N2 extends string,
  O2,
  N3 extends string,
  O3,
  N4 extends string,
  O4,
  N5 extends string,
  O5,
  N6 extends string,
  O6,
>(
  name: string,
  steps: readonly [
    Step<N1, I, None, O1>,
    Step<N2, I, Out<N1, O1>, O2>,
    Step<N3, I, Out<N1, O1> & Out<N2, O2>, O3>,
    Step<N4, I, Out<N1, O1> & Out<N2, O2> & Out<N3, O3>, O4>,
    Step<N5, I, Out<N1, O1> & Out<N2, O2> & Out<N3, O3> & Out<N4, O4>, O5>,
    Step<N6, I, Out<N1, O1> & Out<N2, O2> & Out<N3, O3> & Out<N4, O4> & Out<N5, O5>, O6>,
  ],
  options?: SagaOptions,
): SagaDefinition<
  I,
  Out<N1, O1> & Out<N2, O2> & Out<N3, O3> & Out<N4, O4> & Out<N5, O5> & Out<N6, O6>
>;
/** More than six steps: outputs are typed as a record of unknowns. */
export function defineSaga<I = unknown>(
  name: string,
  steps: readonly SagaStep<string, I, Readonly<Record<string, unknown>>>[],
  options?: SagaOptions,
): SagaDefinition<I>;
export function defineSaga(name: unknown, steps: unknown, options?: unknown): SagaDefinition {
  const owner = 'defineSaga';
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new InvalidOptionError(owner, 'name', NAME_EXPECTED, name);
  }
  if (!Array.isArray(steps) || steps.length === 0) {
    throw new InvalidOptionError(owner, 'steps', 'a non-empty array of steps', steps);
  }
  const o = resolveOptions(owner, options, {
    timeoutMs: { parse: (v, own, opt) => checkTimeout(own, opt, v) },
    compensationRetry: { parse: (v) => v },
  });
  const seen = new Set<string>();
  const resolved = (steps as unknown[]).map((raw, i): ResolvedStep => {
    const path = `steps[${i}]`;
    if (typeof raw !== 'object' || raw === null) {
      throw new InvalidOptionError(owner, path, 'a step object { name, run, compensate? }', raw);
    }
    const s = raw as Record<string, unknown>;
    for (const key of Object.keys(s)) {
      if (
        !['name', 'run', 'compensate', 'retry', 'timeoutMs'].includes(key) &&
        s[key] !== undefined
      ) {
        throw new InvalidOptionError(
          owner,
          `${path}.${key}`,
          'one of name, run, compensate, retry, timeoutMs',
          s[key],
          'unknown step field',
        );
      }
    }
    if (typeof s.name !== 'string' || !NAME.test(s.name)) {
      throw new InvalidOptionError(owner, `${path}.name`, NAME_EXPECTED, s.name);
    }
    if (seen.has(s.name)) {
      throw new InvalidOptionError(owner, `${path}.name`, 'a name no other step has', s.name);
    }
    seen.add(s.name);
    if (typeof s.run !== 'function') {
      throw new InvalidOptionError(
        owner,
        `${path}.run`,
        'a function (ctx, signal) => output',
        s.run,
      );
    }
    if (s.compensate !== undefined && typeof s.compensate !== 'function') {
      throw new InvalidOptionError(
        owner,
        `${path}.compensate`,
        'a function (ctx, signal)',
        s.compensate,
      );
    }
    return Object.freeze({
      name: s.name,
      run: s.run as ResolvedStep['run'],
      compensate: s.compensate as ResolvedStep['compensate'],
      retry: resolveRetry(owner, s.retry, `${path}.retry`, { attempts: 3, maxDelayMs: 5000 }, true),
      timeoutMs: checkTimeout(owner, `${path}.timeoutMs`, s.timeoutMs),
    });
  });
  const compensationRetry = resolveRetry(
    owner,
    o.compensationRetry,
    'compensationRetry',
    { attempts: 10, maxDelayMs: 30_000 },
    false,
  );
  return new SagaDefinition(name, Object.freeze(resolved), o.timeoutMs, compensationRetry);
}
