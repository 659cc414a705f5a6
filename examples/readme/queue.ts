import { Redis } from 'ioredis';
import { Queue, idempotent } from 'keel/queue';

type Payment = { account: string; cents: number };
const client = new Redis(6379);
const queue = new Queue({ client, partitions: 4 });

// The same id twice within the dedup window: enqueued once.
await queue.send('payments', { account: 'alice', cents: 500 }, { key: 'alice', id: 'pay-1' });
await queue.send('payments', { account: 'alice', cents: 500 }, { key: 'alice', id: 'pay-1' });
await queue.send('payments', { account: 'bob', cents: 250 }, { key: 'bob', id: 'pay-2' });

let handled = 0;
const consumer = queue.consume<Payment>(
  'payments',
  'ledger',
  // The effect and "pay-1 was processed" are written together: a redelivery changes nothing.
  idempotent({ client }, (message, effect) => {
    effect.call('HINCRBY', ['{ledger}:cents'], message.payload.account, message.payload.cents);
    handled++;
  }),
  // Acked only after the handler resolves; a throw is retried with backoff; after 5 attempts
  // the message goes to the dead-letter stream (queue.deadLetters / queue.replay).
  { ordered: true, maxAttempts: 5, visibilityMs: 30_000 },
);
while (handled < 2) await new Promise((resolve) => setTimeout(resolve, 20));
await consumer.close(); // stops reading, finishes or hands back what it holds
console.log(await client.hgetall('{ledger}:cents')); // { alice: '500', bob: '250' }
await queue.close();
await client.quit();
