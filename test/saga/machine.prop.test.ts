/**
 * Model-based test of the saga state machine as the Lua transitions implement it: random
 * sequences of starts, claims and transitions by two coordinators (each with its own, possibly
 * stale, view of fence and version) are run against Redis and against an independent reference
 * model; after every command the accept/refuse answer and the stored state must match the model.
 * The property the fencing exists for follows: a coordinator whose view is stale (another
 * claimed the instance, or it moved on) can change nothing.
 */
import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SagaStore, type TransitionOp } from '../../src/saga/store.js';
import type { Row } from '../../src/saga/state.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const STEPS = 3;
type Status = 'running' | 'compensating' | 'completed' | 'compensated' | 'needs-attention';

interface Model {
  exists: boolean;
  status: Status;
  cur: number;
  cj: number;
  phase: 'idle' | 'run' | 'comp';
  version: number;
  fence: number;
  owner: string;
  attempts: Map<number, number>;
  comps: Map<number, number>;
  outputs: Map<number, string>;
}

interface View {
  fence: number;
  version: number;
}

interface Real {
  readonly store: SagaStore;
  readonly id: string;
  readonly views: Record<string, View>;
}

const live = (m: Model): boolean => m.status === 'running' || m.status === 'compensating';
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function expectSame(real: Real, model: Model): Promise<void> {
  const read = await real.store.read('m', real.id);
  if (!model.exists) {
    expect(read).toBeUndefined();
    return;
  }
  const row = read?.row as Row;
  expect({
    status: row.status,
    cur: row.cur,
    cj: row.cj,
    phase: row.phase,
    version: row.version,
    fence: row.fence,
    owner: row.owner,
    attempts: [...row.attempts].sort(),
    comps: [...row.compensations].sort(),
    outputs: [...row.outputs].sort(),
  }).toEqual({
    status: model.status,
    cur: model.cur,
    cj: model.cj,
    phase: model.phase,
    version: model.version,
    fence: model.fence,
    owner: model.owner,
    attempts: [...model.attempts].sort(),
    comps: [...model.comps].sort(),
    outputs: [...model.outputs].sort(),
  });
}

/** Claim (or start, which claims an expired live instance) by `who`, in the model. */
function modelClaim(
  model: Model,
  who: string,
  views: Record<string, View>,
  creating: boolean,
): void {
  if (!model.exists) {
    if (!creating) return;
    Object.assign(model, {
      exists: true,
      status: 'running',
      cur: 0,
      cj: -1,
      phase: 'idle',
      version: 1,
      fence: 1,
      owner: who,
    });
    views[who] = { fence: 1, version: 1 };
    return;
  }
  if (!live(model)) return;
  model.fence++;
  model.version++;
  model.owner = who;
  views[who] = { fence: model.fence, version: model.version };
}

class StartCommand implements fc.AsyncCommand<Model, Real> {
  constructor(readonly who: string) {}
  check = (): boolean => true;
  async run(model: Model, real: Real): Promise<void> {
    await sleep(3); // every lease (1 ms) has run out
    const reply = await real.store.start('m', real.id, this.who, '{}', 0, STEPS);
    const expected = !model.exists ? 'created' : live(model) ? 'claimed' : 'exists';
    expect(reply.kind).toBe(expected);
    modelClaim(model, this.who, real.views, true);
    await expectSame(real, model);
  }
  toString = (): string => `start(${this.who})`;
}

class ClaimCommand implements fc.AsyncCommand<Model, Real> {
  constructor(readonly who: string) {}
  check = (): boolean => true;
  async run(model: Model, real: Real): Promise<void> {
    await sleep(3);
    const { rows } = await real.store.claim('m', 0, this.who, 10);
    expect(rows.length).toBe(model.exists && live(model) ? 1 : 0);
    modelClaim(model, this.who, real.views, false);
    await expectSame(real, model);
  }
  toString = (): string => `claim(${this.who})`;
}

class TransitionCommand implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly who: string,
    readonly op: Exclude<TransitionOp, 'renew'>,
    readonly step: number,
    readonly stale: boolean,
  ) {}
  check = (): boolean => true;
  async run(model: Model, real: Real): Promise<void> {
    const view = real.views[this.who] ?? { fence: 0, version: 0 };
    const sent = {
      owner: this.who,
      fence: view.fence,
      version: view.version - (this.stale ? 1 : 0),
    };
    const argument =
      this.op === 'done' || this.op === 'next'
        ? `"out${this.step}"`
        : this.op === 'begin' || this.op === 'cbegin'
          ? '1'
          : 'why';
    const reply = await real.store.transition(
      'm',
      real.id,
      sent,
      this.op,
      this.step,
      'd',
      argument,
    );
    // The reference.
    let expected: string;
    if (!model.exists) expected = 'missing';
    else if (model.owner !== this.who || model.fence !== sent.fence) expected = 'fenced';
    else if (!live(model)) expected = 'state';
    else if (model.version !== sent.version) expected = 'version';
    else {
      const forward =
        this.op === 'begin' || this.op === 'done' || this.op === 'next' || this.op === 'fail';
      const ok = forward
        ? model.status === 'running' && model.cur === this.step
        : model.status === 'compensating' && model.cj === this.step;
      expected = ok ? 'ok' : 'state';
    }
    expect(reply.ok ? 'ok' : reply.why, this.toString()).toBe(expected);
    if (expected !== 'ok') {
      await expectSame(real, model);
      return;
    }
    model.version++;
    const j = this.step;
    switch (this.op) {
      case 'begin':
        model.phase = 'run';
        model.attempts.set(j, 1);
        break;
      case 'done':
        model.outputs.set(j, argument);
        model.cur = j + 1;
        model.phase = 'idle';
        if (model.cur >= STEPS) model.status = 'completed';
        break;
      case 'next':
        // done j, then (unless j was the last step) begin j + 1, attempt 1: two versions.
        model.outputs.set(j, argument);
        model.cur = j + 1;
        model.phase = 'idle';
        if (model.cur >= STEPS) {
          model.status = 'completed';
        } else {
          model.version++;
          model.phase = 'run';
          model.attempts.set(j + 1, 1);
        }
        break;
      case 'fail':
        model.cj = model.phase === 'run' ? j : j - 1;
        model.phase = 'idle';
        model.status = model.cj < 0 ? 'compensated' : 'compensating';
        break;
      case 'cbegin':
        model.phase = 'comp';
        model.comps.set(j, 1);
        break;
      case 'cdone':
        model.cj = j - 1;
        model.phase = 'idle';
        if (model.cj < 0) model.status = 'compensated';
        break;
      case 'park':
        model.phase = 'idle';
        model.status = 'needs-attention';
        break;
    }
    view.version = model.version;
    await expectSame(real, model);
  }
  toString = (): string => `${this.op}(${this.who}, ${this.step}${this.stale ? ', stale' : ''})`;
}

describeRedis('saga transitions against a reference model', () => {
  const redis = useRedis();
  let client: Redis;
  beforeAll(() => {
    client = redis().client(0);
  });
  afterAll(() => {
    client.disconnect();
  });

  it('every accept/refuse and every stored state matches the model; stale views change nothing', async () => {
    const store = (run: number): SagaStore =>
      new SagaStore({
        client,
        prefix: `model:${run}:`,
        shards: 1,
        leaseMs: 1,
        historyLimit: 16,
        finishedHistory: 4,
        retentionMs: 60_000,
      });
    const who = fc.constantFrom('A', 'B');
    const step = fc.integer({ min: -1, max: STEPS });
    const commands = [
      who.map((w) => new StartCommand(w)),
      who.map((w) => new ClaimCommand(w)),
      fc
        .tuple(
          who,
          fc.constantFrom('begin', 'done', 'next', 'fail', 'cbegin', 'cdone', 'park'),
          step,
          fc.boolean(),
        )
        .map(([w, op, s, stale]) => new TransitionCommand(w, op, s, stale)),
      // Transitions at the step the instance is at, by its owner, so runs go deep.
      fc
        .tuple(who, fc.constantFrom('begin', 'done', 'next', 'fail', 'cbegin', 'cdone', 'park'))
        .map(([w, op]) => new TransitionCommand(w, op, Number.NaN, false)),
    ];
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 40 }), async (cmds) => {
        const model: Model = {
          exists: false,
          status: 'running',
          cur: 0,
          cj: -1,
          phase: 'idle',
          version: 0,
          fence: 0,
          owner: '',
          attempts: new Map(),
          comps: new Map(),
          outputs: new Map(),
        };
        const real: Real = { store: store(run), id: `i${run}`, views: {} };
        run++;
        // NaN step: use the model's current step (forward or compensation) at run time.
        const bound = [...cmds].map((c) =>
          c instanceof TransitionCommand && Number.isNaN(c.step)
            ? {
                check: () => true,
                run: (m: Model, r: Real) =>
                  new TransitionCommand(
                    c.who,
                    c.op,
                    ['begin', 'done', 'next', 'fail'].includes(c.op) ? m.cur : m.cj,
                    false,
                  ).run(m, r),
                toString: () => `${c.op}(${c.who}, current)`,
              }
            : c,
        );
        await fc.asyncModelRun(() => ({ model, real }), bound);
      }),
      { numRuns: 40 },
    );
  }, 120_000);
});
