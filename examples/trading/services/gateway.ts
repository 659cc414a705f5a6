/**
 * gateway — the front door. Finds `orders` instances through `keel/discovery` and spreads
 * requests over them with a `keel/balancer` least-request (P2C) balancer with outlier
 * ejection, through `keel/resilience` (services/calls.ts). A request whose instance fails on the
 * wire is sent again to another instance, within a retry budget: safe, because the buyer's
 * idempotency key makes the retry find the same order.
 */
import { LoadBalancer, leastRequest } from 'keel/balancer';
import { ordersCalls } from './calls.js';
import { startService, type RunningService, type ServiceContext } from './service.js';

/** One change in the gateway's view of `orders`. */
export interface ViewEvent {
  readonly at: number;
  readonly id: string;
  readonly event: 'added' | 'removed' | 'ejected' | 'returned';
  readonly reason?: string;
}

export function startGateway(ctx: ServiceContext): Promise<RunningService> {
  const orders = LoadBalancer.following(ctx.platform.registry.watch('orders'), {
    strategy: leastRequest(),
    outlierEjection: { consecutiveFailures: 2, baseEjectionMs: 5000, maxEjectionPercent: 50 },
  });
  const seen = new Set<string>();
  const events: ViewEvent[] = [];
  const counts = { requests: 0, noInstance: 0 };
  const calls = ordersCalls(orders);
  const subscriptions = [
    orders.watch.onAdded(({ instance }) => {
      seen.add(instance.id);
      events.push({ at: Date.now(), id: instance.id, event: 'added' });
    }),
    orders.watch.onRemoved(({ instance, reason }) => {
      events.push({ at: Date.now(), id: instance.id, event: 'removed', reason });
    }),
    orders.onHealthChange(({ id, state }) => {
      events.push({ at: Date.now(), id, event: state });
    }),
  ];
  void orders.ready.then(() => {
    for (const endpoint of orders.endpoints()) seen.add(endpoint.id);
  });

  return startService('gateway', ctx, (alive) => ({
    routes: {
      'POST /orders': async (body) => {
        counts.requests++;
        try {
          const { reply, via } = await calls.send(body, alive);
          return { status: reply.status, body: { ...reply.body, via } };
        } catch (error) {
          if (alive.aborted) throw error;
        }
        counts.noInstance++;
        return { status: 503, body: { error: 'no orders instance answered' } };
      },
    },
    stats: () => ({
      ...counts,
      calls: calls.counts,
      seen: [...seen].sort(),
      endpoints: orders.endpoints().map((e) => e.id),
      events,
    }),
    dispose: () => {
      for (const s of subscriptions) s.dispose();
      orders.close();
    },
  }));
}
