import { describe, expect, expectTypeOf, it } from 'vitest';
import { defineSaga, type SagaDefinition, type StepContext } from '../../src/saga/index.js';
import { invalidOption } from '../support/helpers.js';

describe('defineSaga', () => {
  it('types each step by the outputs before it, and the saga by all of them', () => {
    const saga = defineSaga('typed', [
      { name: 'one', run: (ctx: StepContext<{ n: number }>) => ({ a: ctx.input.n }) },
      {
        name: 'two',
        run: async (ctx) => {
          expectTypeOf(ctx.outputs.one.a).toEqualTypeOf<number>();
          return Promise.resolve(`${ctx.outputs.one.a}`);
        },
        compensate: (ctx) => {
          expectTypeOf(ctx.output).toEqualTypeOf<string | undefined>();
        },
      },
    ]);
    type Outputs = typeof saga extends SagaDefinition<unknown, infer R> ? R : never;
    expectTypeOf<Outputs>().toEqualTypeOf<
      { readonly one: { a: number } } & { readonly two: string }
    >();
    expect(saga.name).toBe('typed');
    expect(saga.steps.map((s) => s.name)).toEqual(['one', 'two']);
    expect(saga.steps[0]?.retry.attempts).toBe(3);
  });

  it('rejects bad names, duplicate steps, missing run and bad numbers with typed errors', () => {
    const run = (): number => 1;
    expect(invalidOption(() => defineSaga('a{b}', [{ name: 'x', run }])).option).toBe('name');
    expect(invalidOption(() => defineSaga('s', [])).option).toBe('steps');
    expect(
      invalidOption(() =>
        defineSaga('s', [
          { name: 'x', run },
          { name: 'x', run },
        ]),
      ).option,
    ).toBe('steps[1].name');
    expect(invalidOption(() => defineSaga('s', [{ name: 'x' } as never])).option).toBe(
      'steps[0].run',
    );
    expect(invalidOption(() => defineSaga('s', [{ name: 'x', run, timeoutMs: -1 }])).option).toBe(
      'steps[0].timeoutMs',
    );
    expect(
      invalidOption(() => defineSaga('s', [{ name: 'x', run, retry: { attempts: 0 } }])).option,
    ).toBe('steps[0].retry.attempts');
    expect(
      invalidOption(() => defineSaga('s', [{ name: 'x', run, retyr: {} } as never])).option,
    ).toBe('steps[0].retyr');
    expect(
      invalidOption(() => defineSaga('s', [{ name: 'x', run }], { timeoutMs: 0 })).option,
    ).toBe('timeoutMs');
  });
});
