/**
 * Fake participants for the saga recovery and chaos tests: services that honour idempotency
 * keys the way a careful callee does — the effect and the key's record change in one atomic
 * step (a Lua script on the test's Redis), and a compensation leaves a tombstone so an action
 * arriving after it is refused (Seata's TCC fence). Every applied effect, undo, empty undo and
 * refused late action is appended to the saga's log `fx:log:<sagaId>` and counted per step
 * (`fx:n:<sagaId>:<step>`), which the checkers read.
 *
 * The saga used by both tests has four steps, `a` to `d`; a step's action calls `apply`, its
 * compensation `undo`. Faults (failing before or after the effect, hanging past the timeout and
 * then applying — a late action) are drawn from a seeded random source.
 *
 * @packageDocumentation
 */
import type { Redis } from 'ioredis';
import { defineSaga, type StepContext } from '../../src/saga/index.js';

const APPLY = `
if redis.call('EXISTS', 'fx:tomb:' .. KEYS[1]) == 1 then
  redis.call('RPUSH', 'fx:log:' .. ARGV[1], 'refused:' .. ARGV[2])
  return 'refused'
end
if redis.call('SET', 'fx:applied:' .. KEYS[1], '1', 'NX') then
  redis.call('RPUSH', 'fx:log:' .. ARGV[1], 'do:' .. ARGV[2])
  redis.call('INCR', 'fx:n:' .. ARGV[1] .. ':' .. ARGV[2])
  return 'applied'
end
return 'dedup'
`;

const UNDO = `
if redis.call('EXISTS', 'fx:tomb:' .. KEYS[1]) == 1 then return 'already' end
redis.call('SET', 'fx:tomb:' .. KEYS[1], '1')
if redis.call('EXISTS', 'fx:applied:' .. KEYS[1]) == 1 then
  redis.call('RPUSH', 'fx:log:' .. ARGV[1], 'undo:' .. ARGV[2])
  return 'undone'
end
redis.call('RPUSH', 'fx:log:' .. ARGV[1], 'empty:' .. ARGV[2])
return 'empty'
`;

/** Fault probabilities per call. */
export interface Faults {
  /** The action throws before applying. */
  readonly failBefore: number;
  /** The action applies, then throws (the reply was lost). */
  readonly failAfter: number;
  /** The action hangs past its timeout, ignoring the signal, then applies (a late action). */
  readonly hang: number;
  /** A compensation throws (before undoing). */
  readonly undoFail: number;
}

export const NO_FAULTS: Faults = { failBefore: 0, failAfter: 0, hang: 0, undoFail: 0 };

export const STEPS = ['a', 'b', 'c', 'd'] as const;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The four-step saga over the fake services. `failStep` always fails (to force compensation);
 * `timeoutMs` bounds each attempt.
 */
export function chaosSaga(
  redis: Redis,
  random: () => number,
  faults: Faults,
  options: { failStep?: string; timeoutMs?: number; attempts?: number } = {},
) {
  const timeoutMs = options.timeoutMs ?? 300;
  const apply = async (ctx: StepContext<{ n: number }, unknown>): Promise<string> => {
    if (ctx.step === options.failStep) throw new Error(`${ctx.step} always fails`);
    const r = random();
    if (r < faults.failBefore) throw new Error(`${ctx.step} failed before applying`);
    if (r < faults.failBefore + faults.hang) {
      await sleep(timeoutMs * 1.5);
    }
    const result = String(await redis.eval(APPLY, 1, ctx.idempotencyKey, ctx.sagaId, ctx.step));
    if (random() < faults.failAfter) throw new Error(`${ctx.step} applied, reply lost`);
    return `${ctx.step}:${result}`;
  };
  const undo = async (ctx: StepContext<{ n: number }, unknown>): Promise<void> => {
    if (random() < faults.undoFail) throw new Error(`undo ${ctx.step} failed`);
    await redis.eval(UNDO, 1, ctx.idempotencyKey, ctx.sagaId, ctx.step);
  };
  const retry = { attempts: options.attempts ?? 3, initialDelayMs: 20, maxDelayMs: 200 };
  return defineSaga(
    'chaos',
    [
      {
        name: 'a',
        run: (ctx: StepContext<{ n: number }>) => apply(ctx),
        compensate: undo,
        retry,
        timeoutMs,
      },
      { name: 'b', run: (ctx) => apply(ctx), compensate: undo, retry, timeoutMs },
      { name: 'c', run: (ctx) => apply(ctx), compensate: undo, retry, timeoutMs },
      { name: 'd', run: (ctx) => apply(ctx), compensate: undo, retry, timeoutMs },
    ],
    { compensationRetry: { attempts: 8, initialDelayMs: 10, maxDelayMs: 100 } },
  );
}

/** What the fake services saw for one saga. */
export interface Effects {
  readonly log: readonly string[];
  /** Effects applied per step (more than 1 is a duplicate). */
  readonly applied: Readonly<Record<string, number>>;
}

export async function effectsOf(redis: Redis, sagaId: string): Promise<Effects> {
  const log = await redis.lrange(`fx:log:${sagaId}`, 0, -1);
  const applied: Record<string, number> = {};
  for (const step of STEPS)
    applied[step] = Number((await redis.get(`fx:n:${sagaId}:${step}`)) ?? 0);
  return { log, applied };
}

/**
 * The checker's verdict on one saga's effects given its final status; an empty list when they
 * are right: at most one effect per step; a completed saga applied every step and undid none; a
 * compensated one undid every applied step, in reverse order of application; no action applied
 * after its compensation.
 */
export function effectProblems(status: string, fx: Effects): string[] {
  const problems: string[] = [];
  for (const [step, n] of Object.entries(fx.applied))
    if (n > 1) problems.push(`duplicate ${step} ×${n}`);
  const done = fx.log.filter((e) => e.startsWith('do:')).map((e) => e.slice(3));
  const undone = fx.log.filter((e) => e.startsWith('undo:')).map((e) => e.slice(5));
  const compensatedAt = new Map<string, number>();
  fx.log.forEach((e, i) => {
    const [kind = '', step = ''] = e.split(':');
    if ((kind === 'undo' || kind === 'empty') && !compensatedAt.has(step))
      compensatedAt.set(step, i);
    if (kind === 'do' && compensatedAt.has(step))
      problems.push(`action ${step} applied after its compensation`);
  });
  if (status === 'completed') {
    if (done.join() !== STEPS.join()) problems.push(`completed but applied [${done.join()}]`);
    if (undone.length > 0) problems.push(`completed but undid [${undone.join()}]`);
  } else if (status === 'compensated') {
    if ([...undone].sort().join() !== [...done].sort().join()) {
      problems.push(`compensated: applied [${done.join()}] but undid [${undone.join()}]`);
    }
    if (undone.join() !== [...done].reverse().join()) {
      problems.push(
        `compensations not in reverse order: applied [${done.join()}], undid [${undone.join()}]`,
      );
    }
  }
  return problems;
}
