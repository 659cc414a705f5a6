/**
 * Cells of the status line that read instances' `/stats`. On a loaded machine a `/stats` can
 * miss its short deadline; the line then says which instance did not answer (`orders-1:?`), or
 * that no figures came back, rather than print the fields it did not get as `undefined`.
 */

/** One instance's `/stats` for the status line: `undefined` when it did not answer in time. */
export interface Polled {
  readonly id: string;
  readonly stats: Readonly<Record<string, unknown>> | undefined;
}

/** `breakers orders-1:closed/closed orders-2:?` — or `breakers ? (stats unavailable)`. */
export function breakersCell(orders: readonly Polled[]): string {
  if (orders.length > 0 && orders.every((o) => o.stats === undefined)) {
    return 'breakers ? (stats unavailable)';
  }
  const cells = orders.map((o) => {
    const states = o.stats?.breaker;
    return `${o.id}:${typeof states === 'string' && states !== '' ? states : '?'}`;
  });
  return `breakers ${cells.join(' ')}`;
}

/**
 * `orders seen 3 (in view 2)` from the gateway's `/stats` (0 and 0 without a gateway), or `?`
 * when it did not answer.
 */
export function ordersSeenCell(gateway: Polled | undefined): string {
  if (gateway !== undefined && gateway.stats === undefined) {
    return 'orders seen ? (gateway stats unavailable)';
  }
  const stats = gateway?.stats ?? {};
  const count = (value: unknown): number => (Array.isArray(value) ? value.length : 0);
  return `orders seen ${count(stats.seen)} (in view ${count(stats.endpoints)})`;
}
