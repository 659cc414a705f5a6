/**
 * The saga suite's two 100-in-flight rows as the measuring tools (`saga-cost.ts`,
 * `saga-overlap.ts`) run them on any loaded Keel: `io`, 5 steps each making one Redis `INCR` on
 * `effects` (a client of its own, as a service's call would be), and `bare`, 5 steps that answer
 * at once; one round is 100 sagas started together and run to completion.
 * @packageDocumentation
 */
import type { Redis } from 'ioredis';
import type * as SagaModule from '../src/saga/index.js';

const IN_FLIGHT = 100;
const input = { orderId: 12345, sku: 'ABC-123', qty: 2, cents: 3998 };
let serial = 0;

/** A row: its label and one round of it. */
export interface SagaRow {
  readonly label: 'io' | 'bare';
  readonly round: () => Promise<void>;
}

/**
 * A coordinator of `mod` on `client` (keys under `prefix`, no recovery loop) and its rows (`only`
 * one of them, if given); the caller closes the coordinator.
 */
export function sagaRows(
  mod: typeof SagaModule,
  client: Redis,
  effects: Redis,
  prefix: string,
  only: string | undefined,
): { coordinator: SagaModule.SagaCoordinator; rows: SagaRow[] } {
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
  const coordinator = new mod.SagaCoordinator({
    redis: client,
    sagas: [io, bare],
    recovery: false,
    prefix,
  });
  const rows: SagaRow[] = [];
  for (const [label, def] of [
    ['io', io],
    ['bare', bare],
  ] as const) {
    if (only !== undefined && only !== label) continue;
    rows.push({
      label,
      round: async () => {
        await Promise.all(
          Array.from({ length: IN_FLIGHT }, async () => {
            const outcome = await coordinator.run(def, `x-${serial++}`, input);
            if (outcome.status !== 'completed') throw new Error(`saga ${outcome.status}`);
          }),
        );
      },
    });
  }
  return { coordinator, rows };
}
