import { BreakerRegistry, isBreakerOpenError } from 'keel/breaker';

const breakers = new BreakerRegistry({
  failureRateThreshold: 0.5,
  minimumCalls: 10,
  openDurationMs: 5_000,
});
const payments = breakers.breakerFor('payments', { timeoutMs: 800 });

try {
  const receipt = await payments.execute(async (signal) => {
    // await fetch('http://payments/charge', { method: 'POST', signal, … })
    return { charged: !signal.aborted };
  });
  console.log(receipt.charged);
} catch (error) {
  if (isBreakerOpenError(error)) console.log(`payments down; retry in ${error.retryAfterMs} ms`);
}
console.log(payments.metrics());
