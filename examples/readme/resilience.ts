import { LoadBalancer, p2c } from 'keel/balancer';
import { CircuitBreaker } from 'keel/breaker';
import {
  RetryBudget,
  isResilientCallError,
  pipeline,
  resilientCall,
  retry,
  timeout,
} from 'keel/resilience';

const balancer = new LoadBalancer({
  strategy: p2c(),
  endpoints: [{ id: 'quotes-1' }, { id: 'quotes-2' }, { id: 'quotes-3' }],
});
// A breaker per endpoint, retries on another endpoint within a shared budget, hedging after p95.
const quotes = resilientCall(balancer, {
  retry: { maxAttempts: 3, budget: new RetryBudget({ percent: 0.2 }) },
  hedge: { afterPercentile: 95, afterMs: 50 },
  attemptTimeoutMs: 500,
});

const { value, tried } = await quotes.callWithReport(
  (endpoint, signal) => {
    if (endpoint.id === 'quotes-1') throw new Error('quotes-1 is down');
    return Promise.resolve({ price: 101.5, from: endpoint.id, aborted: signal.aborted });
  },
  { idempotent: true }, // reads are safe to repeat: retries and hedges are on
);
console.log(value.price, tried.length >= 1);

try {
  // Not marked idempotent (a charge): exactly one attempt, never retried or hedged.
  await quotes.call(() => Promise.reject(new Error('charge failed')));
} catch (error) {
  if (isResilientCallError(error)) console.log(error.stoppedBy, error.tried.length);
}

// The same policies without a balancer, composed outermost first.
const policy = pipeline(
  retry({ maxAttempts: 3 }),
  new CircuitBreaker({ name: 'pricing' }),
  timeout({ ms: 200 }),
);
console.log(await policy.execute((signal) => Promise.resolve(signal.aborted ? 0 : 42)));
