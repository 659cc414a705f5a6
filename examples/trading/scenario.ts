/**
 * The flash sale: seeded buyers and stock, the buyers' traffic (with retries and duplicate
 * submissions), the fault drill run alongside it, and the live status line.
 */
import { seededRandom, type DemoOptions } from './config.js';
import { call, sleep } from './http.js';
import type { Cluster, InstanceHandle } from './cluster.js';
import type { Role } from './services/service.js';
import { breakersCell, ordersSeenCell, type Polled } from './status.js';

/** One buyer: what they want, and whether they press "buy" twice. */
export interface Buyer {
  readonly key: string;
  readonly buyer: string;
  readonly sku: string;
  readonly qty: number;
  /** `concurrent`: two requests at once (double click); `after`: again after the answer. */
  readonly duplicate: 'no' | 'concurrent' | 'after';
}

/** The seeded plan: SKUs, initial stock, buyers. */
export interface Plan {
  readonly skus: readonly string[];
  readonly stock: Readonly<Record<string, number>>;
  readonly buyers: readonly Buyer[];
  readonly demandUnits: number;
}

export function makePlan(o: DemoOptions): Plan {
  const random = seededRandom(o.seed);
  const skus = Array.from({ length: o.skus }, (_, i) => `SKU-${String(i + 1).padStart(3, '0')}`);
  // Zipf-like demand: a few hot products, a long tail.
  const weights = skus.map((_, i) => 1 / (i + 1) ** 0.9);
  const total = weights.reduce((a, b) => a + b, 0);
  const pick = (): string => {
    let x = random() * total;
    for (const [i, w] of weights.entries()) {
      x -= w;
      if (x <= 0) return skus[i] as string;
    }
    return skus[skus.length - 1] as string;
  };
  const buyers: Buyer[] = [];
  let demandUnits = 0;
  for (let i = 0; i < o.buyers; i++) {
    const r = random();
    const qty = r < 0.7 ? 1 : r < 0.95 ? 2 : 3;
    const d = random();
    const duplicate = d < o.duplicateRate / 2 ? 'concurrent' : d < o.duplicateRate ? 'after' : 'no';
    buyers.push({ key: `buyer-${i}:order-1`, buyer: `buyer-${i}`, sku: pick(), qty, duplicate });
    demandUnits += qty;
  }
  // Stock spread evenly-ish, far below demand in total.
  const units = Math.max(skus.length, Math.round(demandUnits * o.stockRatio));
  const stock: Record<string, number> = {};
  for (const sku of skus)
    stock[sku] = Math.max(1, Math.round((units / skus.length) * (0.5 + random())));
  return { skus, stock, buyers, demandUnits };
}

/** What one buyer experienced. */
export interface BuyerResult {
  readonly key: string;
  /** Requests sent, retries and duplicates included. */
  readonly requests: number;
  /** Order ids in the answers the buyer got (one, if idempotency holds). */
  readonly orderIds: readonly string[];
  /** The last final state answered, or `unanswered`. */
  readonly state: string;
  /** First request to final answer. */
  readonly latencyMs: number;
  /** When the final answer came (epoch ms). */
  readonly finishedAt: number;
}

/** Live progress, shared with the status line and the drill. */
export interface Progress {
  dispatched: number;
  finished: number;
  requests: number;
  readonly outcomes: Record<string, number>;
  loadDone: boolean;
}

/** Sends one request, retrying (same key) on 503s and network errors with backoff. */
async function order(
  gatewayPort: number,
  b: Buyer,
  results: { requests: number; ids: string[] },
): Promise<string | undefined> {
  for (let attempt = 0; attempt < 8; attempt++) {
    results.requests++;
    try {
      const reply = await call(
        gatewayPort,
        '/orders',
        { key: b.key, buyer: b.buyer, sku: b.sku, qty: b.qty },
        { timeoutMs: 20_000 },
      );
      if (typeof reply.body.orderId === 'string') results.ids.push(reply.body.orderId);
      if (reply.status === 200) return String(reply.body.state);
      if (reply.status < 500) return `error:${reply.status}`;
    } catch {
      // the gateway itself did not answer: retry
    }
    await sleep(Math.min(1500, 80 * 2 ** attempt) * (0.5 + Math.random()));
  }
  return undefined;
}

/** Runs every buyer through the gateway, `concurrency` at a time. */
export async function runBuyers(
  plan: Plan,
  o: DemoOptions,
  gatewayPort: number,
  progress: Progress,
): Promise<BuyerResult[]> {
  const results: BuyerResult[] = [];
  let next = 0;
  const start = performance.now();
  const worker = async (): Promise<void> => {
    while (next < plan.buyers.length) {
      const index = next++;
      const b = plan.buyers[index] as Buyer;
      // Arrivals spread evenly over the sale, as far as `concurrency` lets them.
      const due = start + (index * o.arrivalMs) / plan.buyers.length;
      if (due > performance.now()) await sleep(due - performance.now());
      progress.dispatched++;
      const started = performance.now();
      const seen = { requests: 0, ids: [] as string[] };
      let states: (string | undefined)[];
      if (b.duplicate === 'concurrent') {
        states = await Promise.all([order(gatewayPort, b, seen), order(gatewayPort, b, seen)]);
      } else {
        states = [await order(gatewayPort, b, seen)];
        if (b.duplicate === 'after') states.push(await order(gatewayPort, b, seen));
      }
      const state = states.filter((s) => s !== undefined).at(-1) ?? 'unanswered';
      progress.requests += seen.requests;
      progress.outcomes[state] = (progress.outcomes[state] ?? 0) + 1;
      progress.finished++;
      results.push({
        key: b.key,
        requests: seen.requests,
        orderIds: [...new Set(seen.ids)],
        state,
        latencyMs: performance.now() - started,
        finishedAt: Date.now(),
      });
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.concurrency, plan.buyers.length) }, worker));
  progress.loadDone = true;
  return results;
}

/** What the drill did, and when (ms since the epoch). */
export interface DrillLog {
  killed?: { id: string; pid: number; at: number };
  /** Order sagas the killed instance was in the middle of a payment step of. */
  midPayment?: readonly string[];
  outage?: { from: number; to: number };
  stall?: { shards: readonly string[]; at: number };
  joined?: { id: string; at: number };
  readonly lines: string[];
}

/** Every running instance by id, as the drill changes the fleet. */
export type Fleet = Map<string, InstanceHandle>;

const byRole = (fleet: Fleet, role: Role): InstanceHandle[] =>
  [...fleet.values()].filter((h) => h.role === role);

/**
 * Makes an orders instance stop inside its next three payment steps (the charge sent, its
 * outcome not yet recorded by the saga) and waits until it is inside all three, or inside one
 * after 2 s (a bound of 15 s for a loaded machine): the kill then lands mid-payment. Answers the
 * order ids of the sagas it is stuck in.
 */
async function holdPayments(victim: InstanceHandle): Promise<string[]> {
  await call(victim.port, '/admin/hold-charges', { count: 3 });
  const started = Date.now();
  let held: string[] = [];
  while (Date.now() < started + 15_000) {
    const stats = await call(victim.port, '/stats', undefined, { timeoutMs: 5000 });
    held = (stats.body.midPayment as string[] | undefined) ?? [];
    if (held.length >= 3 || (held.length > 0 && Date.now() > started + 2000)) break;
    await sleep(20);
  }
  return held;
}

/**
 * The faults, each when the given share of buyers has been dispatched (or the load is done):
 * make the inventory shards pause past their lock in a reservation (a stale owner), kill an
 * orders instance without warning, take payments down for `outageMs`, and add a third
 * inventory shard.
 */
export async function runDrill(
  cluster: Cluster,
  fleet: Fleet,
  o: DemoOptions,
  total: number,
  progress: Progress,
  log: DrillLog,
  say: (line: string) => void,
): Promise<void> {
  const started = Date.now();
  const note = (line: string): void => {
    const text = `t=${((Date.now() - started) / 1000).toFixed(1)}s  ${line}`;
    log.lines.push(text);
    say(text);
  };
  const at = async (share: number): Promise<void> => {
    while (!progress.loadDone && progress.dispatched < share * total) await sleep(20);
  };

  await at(0.1);
  const shards = byRole(fleet, 'inventory');
  await Promise.all(shards.map((s) => call(s.port, '/admin/stall', {})));
  log.stall = { shards: shards.map((s) => s.id), at: Date.now() };
  note(
    `fault: ${shards.map((s) => s.id).join(', ')} will each pause past their lock's ttl in the middle of a reservation`,
  );

  await at(0.2);
  const victim = fleet.get('orders-2') ?? byRole(fleet, 'orders')[0];
  if (victim !== undefined) {
    log.midPayment = await holdPayments(victim);
    await victim.kill();
    fleet.delete(victim.id);
    log.killed = { id: victim.id, pid: victim.pid, at: Date.now() };
    note(
      `fault: killed ${victim.id} without warning (${cluster.mode === 'redis' ? `SIGKILL pid ${victim.pid}` : 'crash in place'}) in the middle of ${log.midPayment.length} payment step(s)`,
    );
  }

  await at(0.3);
  const payments = byRole(fleet, 'payments');
  const outageFrom = Date.now();
  await Promise.all(payments.map((p) => call(p.port, '/admin/outage', { on: true })));
  note(`fault: payments down for ${o.outageMs} ms`);
  const outage = sleep(o.outageMs).then(async () => {
    // (A failure here means the run is being torn down; the outage ends with the processes.)
    await Promise.all(
      payments.map((p) => call(p.port, '/admin/outage', { on: false }).catch(() => undefined)),
    );
    log.outage = { from: outageFrom, to: Date.now() };
    note('fault over: payments back');
  });

  await at(0.5);
  note('change: inventory-3 is starting; it will join the ring');
  const joining = await cluster.start('inventory', 'inventory-3');
  fleet.set(joining.id, joining);
  log.joined = { id: joining.id, at: Date.now() };
  note('change: inventory-3 registered; every orders instance rebuilds its ring and SKUs move');

  await outage;
}

/** Polls the instances' /stats for the status line (best effort). */
export async function statusLine(
  fleet: Fleet,
  progress: Progress,
  total: number,
  started: number,
  mode: string,
): Promise<string> {
  // A /stats that misses its deadline (a loaded machine) reads as undefined: shown as `?`.
  const stats = async (h: InstanceHandle): Promise<Polled> => ({
    id: h.id,
    stats: await call(h.port, '/stats', undefined, { timeoutMs: 500 }).then(
      (reply) => reply.body,
      () => undefined,
    ),
  });
  const orders = await Promise.all(byRole(fleet, 'orders').map(stats));
  const gateway = byRole(fleet, 'gateway')[0];
  const g = gateway === undefined ? undefined : await stats(gateway);
  const seconds = (Date.now() - started) / 1000;
  const o = progress.outcomes;
  const rejected = Object.entries(o)
    .filter(([k]) => k.startsWith('rejected:'))
    .reduce((a, [, n]) => a + n, 0);
  return [
    `[${mode}] ${seconds.toFixed(1)}s`,
    `${progress.finished}/${total} buyers`,
    `${(progress.finished / Math.max(seconds, 0.1)).toFixed(0)} orders/s`,
    `confirmed ${o.confirmed ?? 0}, rejected ${rejected}`,
    breakersCell(orders),
    ordersSeenCell(g),
  ].join(' | ');
}
