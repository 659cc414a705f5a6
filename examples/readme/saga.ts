import { Redis } from 'ioredis';
import { SagaCoordinator, defineSaga, type StepContext } from 'keel/saga';

const placeOrder = defineSaga('place-order', [
  {
    name: 'reserve',
    // ctx.idempotencyKey is `<saga>:<id>:<step>`, the same on every attempt: pass it on.
    run: (ctx: StepContext<{ sku: string }>) => ({ reservation: `r-${ctx.input.sku}` }),
    compensate: (ctx) => console.log('released', ctx.output?.reservation),
  },
  {
    name: 'charge',
    run: () => {
      throw new Error('card declined');
    },
    timeoutMs: 2_000,
  },
]);

const redis = new Redis(6379);
{
  // Every state change is written to Redis first; if this process dies mid-saga, another one
  // running the same definitions takes it over when its lease runs out.
  await using sagas = new SagaCoordinator({ redis, sagas: [placeOrder] });
  const outcome = await sagas.run(placeOrder, 'order-42', { sku: 'A1' });
  console.log(outcome.status); // compensated: 'charge' failed, 'reserve' was undone
}
await redis.quit();
