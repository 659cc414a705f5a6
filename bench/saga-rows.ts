/**
 * The two throughput rows' sagas of `saga.bench.ts`, as the measuring tools build them from one
 * loaded copy of Keel's saga (`bench/saga-cost.ts`, `bench/saga-count.ts`): five steps that each
 * make one Redis call (`io`, with a no-op compensation), or five steps without I/O (`bare`).
 */
import type { Redis } from 'ioredis';
import type * as SagaModule from '../src/saga/index.js';

/** `io` and `bare`, defined by `mod`; `io`'s steps INCR `effect:s<n>` on `effects`. */
export function benchSagas(
  mod: typeof SagaModule,
  effects: Redis,
): {
  io: SagaModule.SagaDefinition<unknown, unknown>;
  bare: SagaModule.SagaDefinition<unknown, unknown>;
} {
  const io = mod.defineSaga(
    'io',
    [1, 2, 3, 4, 5].map((n) => ({
      name: `s${n}`,
      run: async () => ({ ok: await effects.incr(`effect:s${n}`) }),
      compensate: () => undefined,
    })),
  );
  const bare = mod.defineSaga(
    'bare',
    [1, 2, 3, 4, 5].map((n) => ({ name: `s${n}`, run: () => ({ ok: n }) })),
  );
  return { io, bare };
}
