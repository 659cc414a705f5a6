import { LoadBalancer, leastRequest } from 'keel/balancer';

const payments = new LoadBalancer({
  strategy: leastRequest(), // power of two choices on in-flight requests (Envoy's least request)
  endpoints: [
    { id: 'payments-1', data: 'http://10.0.0.1:8080' },
    { id: 'payments-2', data: 'http://10.0.0.2:8080', weight: 2 },
  ],
  outlierEjection: { consecutiveFailures: 5, baseEjectionMs: 30_000, maxEjectionPercent: 50 },
  slowStart: { windowMs: 30_000 },
});

const lease = payments.acquire(); // undefined when there is no endpoint
if (lease) {
  const started = performance.now();
  const ok = lease.endpoint.data !== undefined; // … make the call to lease.endpoint.data …
  lease.done({ ok, latencyMs: performance.now() - started });
}
payments.update([{ id: 'payments-2', data: 'http://10.0.0.2:8080', weight: 2 }]); // state survives
console.log(payments.allStats());
