/**
 * The audit at the end of a run: it reads the store back and checks every invariant the
 * system exists for, then prints the report (and writes it as JSON).
 */
import { catalogInvariants, catalogLines, type CatalogResult } from './catalog.js';
import type { DemoOptions } from './config.js';
import type { EventsAudit } from './events.js';
import { formatResilience, type ResilienceFigures } from './report-resilience.js';
import type { BuyerResult, DrillLog, Plan } from './scenario.js';
import type { BreakerTransition, RingChange } from './services/orders.js';
import type { ViewEvent } from './services/gateway.js';
import type { StoreSnapshot } from './store.js';

/** The order sagas as keel/saga stores them, at the end of the run. */
export interface SagaReport {
  readonly completed: number;
  readonly compensated: number;
  /** Parked for an operator: a compensation kept failing. Each with why. */
  readonly needsAttention: readonly { readonly id: string; readonly reason: string }[];
  /** Still running or compensating after the run (must be none). */
  readonly stuck: readonly {
    readonly id: string;
    readonly status: string;
    readonly step?: string;
  }[];
  /** The sagas the killed instance was in the middle of a payment step of, and how they ended. */
  readonly traced: readonly {
    readonly id: string;
    readonly status: string;
    readonly claimedBy: readonly string[];
    /** The owner that holds (or finished) it: `<instance>:<pid>:<start time>`. */
    readonly owner: string;
    readonly reason: string;
    readonly events: readonly string[];
  }[];
}

export interface Invariant {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface Report {
  readonly ok: boolean;
  /** Units sold beyond a SKU's initial stock, summed over SKUs (must be 0). */
  readonly oversold: number;
  readonly mode: 'redis' | 'memory';
  readonly seed: number;
  readonly options: DemoOptions;
  readonly durationMs: number;
  readonly buyers: number;
  readonly requests: number;
  readonly ordersPerSecond: number;
  readonly outcomes: Readonly<Record<string, number>>;
  readonly units: {
    readonly initial: number;
    readonly sold: number;
    readonly remaining: number;
    readonly demand: number;
  };
  readonly skus: readonly {
    sku: string;
    initial: number;
    sold: number;
    remaining: number;
    confirmedUnits: number;
  }[];
  readonly invariants: readonly Invariant[];
  readonly charges: {
    readonly charged: number;
    readonly refunded: number;
    readonly voidedBeforeCharge: number;
  };
  readonly idempotency: {
    readonly duplicateBuyers: number;
    readonly retriedRequests: number;
    readonly ordersForRepeatedKeys: number;
  };
  readonly latencyMs: { readonly p50: number; readonly p99: number; readonly max: number };
  readonly breakerTransitions: readonly BreakerTransition[];
  /** Attempts per call of the resilient calls, during the payments outage and otherwise. */
  readonly resilience: ResilienceFigures;
  readonly killed: {
    readonly id: string | undefined;
    readonly ejectedAfterMs: number | undefined;
    readonly removedAfterMs: number | undefined;
  };
  readonly rebalance: {
    readonly joined: string | undefined;
    readonly movedSkus: number | undefined;
    readonly movedFraction: number | undefined;
  };
  readonly fencing: { readonly staleWritesRefused: number; readonly stalls: number };
  readonly sagas: SagaReport;
  readonly drill: readonly string[];
  /** What the run started: service process pids and redis-server ports (all gone at exit). */
  readonly processes: {
    readonly services: readonly number[];
    readonly redisPorts: readonly number[];
  };
  /** Redis mode: order events through the outbox to the ledger (`undefined` in embedded mode). */
  readonly events?: EventsAudit | undefined;
  /** Product-page reads through keel/cache (see catalog.ts). */
  readonly catalog?: CatalogResult | undefined;
}

/** Inputs gathered by main.ts. */
export interface AuditInput {
  readonly options: DemoOptions;
  readonly mode: 'redis' | 'memory';
  readonly plan: Plan;
  readonly results: readonly BuyerResult[];
  readonly snapshot: StoreSnapshot;
  readonly durationMs: number;
  readonly drill: DrillLog;
  readonly gatewayEvents: readonly ViewEvent[];
  readonly transitions: readonly BreakerTransition[];
  readonly resilience: ResilienceFigures;
  readonly ringChanges: readonly RingChange[];
  readonly fencedOff: number;
  readonly stalls: number;
  readonly processes: Report['processes'];
  /** Redis mode: the order events' audit (see events.ts). */
  readonly events?: EventsAudit | undefined;
  /** Product-page reads through keel/cache during the sale. */
  readonly catalog?: CatalogResult | undefined;
  readonly sagas: SagaReport;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number);
}

export function audit(input: AuditInput): Report {
  const { snapshot, plan, results } = input;
  const invariants: Invariant[] = [];
  const check = (name: string, failures: readonly string[], okDetail: string): void => {
    invariants.push({
      name,
      ok: failures.length === 0,
      detail:
        failures.length === 0
          ? okDetail
          : `${failures.length} violation(s): ${failures.slice(0, 5).join('; ')}`,
    });
  };
  const orders = new Map(snapshot.orders.map((o) => [o.id, o]));

  // 1. Every order reached a final state.
  const pending = snapshot.orders.filter((o) => o.state === 'pending');
  check(
    'every order final',
    pending.map((o) => `${o.id} pending at ${o.step}`),
    `${snapshot.orders.length} orders, none pending`,
  );

  // 2. Stock: sold + remaining == initial per SKU, sold == confirmed units, nothing left reserved.
  const confirmedUnits = new Map<string, number>();
  for (const o of snapshot.orders) {
    if (o.state === 'confirmed')
      confirmedUnits.set(o.sku, (confirmedUnits.get(o.sku) ?? 0) + o.qty);
  }
  const stockFailures: string[] = [];
  let oversold = 0;
  for (const s of snapshot.stock) {
    const confirmed = confirmedUnits.get(s.sku) ?? 0;
    oversold += Math.max(0, Math.max(s.sold, confirmed) - s.initial);
    if (s.sold + s.available !== s.initial)
      stockFailures.push(`${s.sku}: ${s.sold} sold + ${s.available} left != ${s.initial}`);
    if (s.sold !== confirmed)
      stockFailures.push(`${s.sku}: ${s.sold} sold but ${confirmed} confirmed`);
    if (s.available < 0) stockFailures.push(`${s.sku}: ${s.available} available`);
    const held = Object.entries(s.reservations).filter(([, r]) => r.startsWith('reserved'));
    if (held.length > 0)
      stockFailures.push(`${s.sku}: ${held.length} reservation(s) never settled`);
    if (plan.stock[s.sku] !== s.initial)
      stockFailures.push(`${s.sku}: initial ${s.initial} != planned ${plan.stock[s.sku]}`);
  }
  check(
    'sold + remaining == initial, per SKU',
    stockFailures,
    `${snapshot.stock.length} SKUs balance`,
  );
  check(
    'oversold == 0',
    oversold === 0 ? [] : [`${oversold} unit(s) oversold`],
    'no SKU sold beyond its stock',
  );

  // 3. Payments: each confirmed order exactly one charge; no charge stands without a confirmed order.
  const charges = new Map<string, number>();
  const refunds = new Map<string, number>();
  for (const e of snapshot.events) {
    const m = e.type === 'charge' ? charges : refunds;
    m.set(e.orderId, (m.get(e.orderId) ?? 0) + 1);
  }
  const chargeFailures: string[] = [];
  for (const o of snapshot.orders) {
    const c = charges.get(o.id) ?? 0;
    const r = refunds.get(o.id) ?? 0;
    if (o.state === 'confirmed' && (c !== 1 || r !== 0 || snapshot.ledger[o.id] !== 'charged')) {
      chargeFailures.push(`confirmed ${o.id}: ${c} charge(s), ${r} refund(s)`);
    }
    if (o.state !== 'confirmed' && c - r !== 0)
      chargeFailures.push(`${o.state} ${o.id}: ${c} charge(s), ${r} refund(s)`);
  }
  for (const id of charges.keys())
    if (!orders.has(id)) chargeFailures.push(`charge for unknown order ${id}`);
  check(
    'one charge per confirmed order, none without one',
    chargeFailures,
    `${charges.size} charges, ${refunds.size} refunded`,
  );

  // 4. Idempotency: one order per key; every answer a buyer got names that order.
  const keyFailures: string[] = [];
  const perKey = new Map<string, number>();
  for (const o of snapshot.orders) perKey.set(o.key, (perKey.get(o.key) ?? 0) + 1);
  for (const [key, n] of perKey) if (n !== 1) keyFailures.push(`${key}: ${n} orders`);
  for (const r of results) {
    if (r.orderIds.length > 1)
      keyFailures.push(`${r.key} answered with ${r.orderIds.length} order ids`);
    const stored = snapshot.keys[r.key];
    if (r.orderIds.length === 1 && stored !== r.orderIds[0])
      keyFailures.push(`${r.key} answered ${r.orderIds[0]}, store has ${stored}`);
  }
  check('retries never create a second order', keyFailures, `${perKey.size} keys, one order each`);

  // 5. What buyers were told matches what happened.
  const answerFailures: string[] = [];
  for (const r of results) {
    const id = snapshot.keys[r.key];
    const o = id === undefined ? undefined : orders.get(id);
    if (r.state.startsWith('error:')) answerFailures.push(`${r.key}: ${r.state}`);
    if (r.state !== 'unanswered' && !r.state.startsWith('error:') && o?.state !== r.state) {
      answerFailures.push(`${r.key}: told ${r.state}, order is ${o?.state ?? 'missing'}`);
    }
  }
  check(
    'every answer matches the stored order',
    answerFailures,
    `${results.length - input.results.filter((r) => r.state === 'unanswered').length} answers checked`,
  );

  // Outcomes from the store (the truth), buyers that never got an answer counted apart.
  const outcomes: Record<string, number> = {};
  for (const o of snapshot.orders) outcomes[o.state] = (outcomes[o.state] ?? 0) + 1;
  const unanswered = results.filter((r) => r.state === 'unanswered').length;
  if (unanswered > 0) outcomes['(buyer gave up waiting; order settled later)'] = unanswered;

  const latencies = results.map((r) => r.latencyMs).sort((a, b) => a - b);
  const killed = input.drill.killed;
  const after = (event: ViewEvent['event']): number | undefined => {
    if (killed === undefined) return undefined;
    const e = input.gatewayEvents.find(
      (v) => v.id === killed.id && v.event === event && v.at >= killed.at,
    );
    return e === undefined ? undefined : e.at - killed.at;
  };
  const rebalance = input.ringChanges.find((c) => c.nodes.includes(input.drill.joined?.id ?? '\0'));
  const ledger = Object.values(snapshot.ledger);
  const initial = snapshot.stock.reduce((a, s) => a + s.initial, 0);
  const sold = snapshot.stock.reduce((a, s) => a + s.sold, 0);
  if (input.events !== undefined) invariants.push(input.events.invariant);
  if (input.catalog !== undefined) invariants.push(...catalogInvariants(input.catalog));
  return {
    events: input.events,
    ok: invariants.every((i) => i.ok),
    oversold,
    mode: input.mode,
    seed: input.options.seed,
    options: input.options,
    durationMs: Math.round(input.durationMs),
    buyers: results.length,
    requests: results.reduce((a, r) => a + r.requests, 0),
    ordersPerSecond: Math.round(results.length / (input.durationMs / 1000)),
    outcomes,
    units: { initial, sold, remaining: initial - sold, demand: plan.demandUnits },
    skus: snapshot.stock.map((s) => ({
      sku: s.sku,
      initial: s.initial,
      sold: s.sold,
      remaining: s.available,
      confirmedUnits: confirmedUnits.get(s.sku) ?? 0,
    })),
    invariants,
    charges: {
      charged: ledger.filter((s) => s === 'charged').length,
      refunded: ledger.filter((s) => s === 'refunded').length,
      voidedBeforeCharge: ledger.filter((s) => s === 'voided').length,
    },
    idempotency: {
      duplicateBuyers: plan.buyers.filter((b) => b.duplicate !== 'no').length,
      retriedRequests: results.reduce((a, r) => a + r.requests, 0) - results.length,
      ordersForRepeatedKeys: Math.max(0, ...perKey.values()),
    },
    latencyMs: {
      p50: percentile(latencies, 0.5),
      p99: percentile(latencies, 0.99),
      max: percentile(latencies, 1),
    },
    breakerTransitions: [...input.transitions].sort((a, b) => a.at - b.at),
    resilience: input.resilience,
    killed: { id: killed?.id, ejectedAfterMs: after('ejected'), removedAfterMs: after('removed') },
    rebalance: {
      joined: input.drill.joined?.id,
      movedSkus: rebalance?.movedSkus,
      movedFraction: rebalance?.movedFraction,
    },
    fencing: { staleWritesRefused: input.fencedOff, stalls: input.stalls },
    sagas: input.sagas,
    drill: input.drill.lines,
    processes: input.processes,
    catalog: input.catalog,
  };
}

const ms = (n: number | undefined): string => (n === undefined ? 'n/a' : `${n} ms`);

/** The report for people. */
export function formatReport(r: Report): string {
  const lines: string[] = [];
  const pad = (s: string, n: number): string => s.padEnd(n);
  lines.push('', `=== Report (${r.mode} mode, seed ${r.seed}) ===`);
  lines.push(
    `${r.buyers} buyers, ${r.requests} requests in ${(r.durationMs / 1000).toFixed(1)} s (${r.ordersPerSecond} buyers/s)`,
  );
  lines.push('', 'Orders by outcome:');
  for (const [state, n] of Object.entries(r.outcomes).sort((a, b) => b[1] - a[1]))
    lines.push(`  ${pad(state, 32)} ${n}`);
  lines.push(
    '',
    `Stock: ${r.units.initial} units for a demand of ${r.units.demand}; sold ${r.units.sold}, remaining ${r.units.remaining}; oversold ${r.oversold}`,
  );
  const hot = [...r.skus]
    .sort((a, b) => b.initial - b.remaining - (a.initial - a.remaining))
    .slice(0, 5);
  for (const s of hot)
    lines.push(`  ${s.sku}: initial ${s.initial} = sold ${s.sold} + remaining ${s.remaining}`);
  if (r.skus.length > hot.length)
    lines.push(`  … and ${r.skus.length - hot.length} more SKUs (all in --json)`);
  lines.push(
    '',
    `Payments: ${r.charges.charged} charges stand, ${r.charges.refunded} refunded by a compensation, ${r.charges.voidedBeforeCharge} voids recorded before any charge (a late charge is refused)`,
  );
  lines.push(
    `Idempotency: ${r.idempotency.duplicateBuyers} buyers sent their order twice, ${r.idempotency.retriedRequests} repeated requests in all; most orders for one key: ${r.idempotency.ordersForRepeatedKeys}`,
  );
  lines.push(
    `Latency per buyer (first request to final answer): p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms, max ${r.latencyMs.max} ms`,
  );
  lines.push('', 'Breaker transitions (per orders instance, one breaker per payments instance):');
  for (const t of r.breakerTransitions) {
    const who = t.target === undefined ? t.instance : `${t.instance} -> ${t.target}`;
    lines.push(`  ${pad(who, 24)} ${pad(`${t.from} -> ${t.to}`, 22)} ${t.reason}`);
  }
  if (r.breakerTransitions.length === 0) lines.push('  none');
  lines.push('', ...formatResilience(r.resilience));
  const ejected =
    r.killed.ejectedAfterMs === undefined
      ? 'not ejected by the balancer (no request failed on it twice)'
      : `ejected by the gateway's balancer after ${ms(r.killed.ejectedAfterMs)}`;
  lines.push(
    '',
    `Killed ${r.killed.id ?? 'nothing'}: ${ejected}; gone from the gateway's discovery view after ${ms(r.killed.removedAfterMs)}`,
  );
  lines.push(
    `Rebalance: ${r.rebalance.joined ?? 'no shard'} joined; ${r.rebalance.movedSkus ?? 'n/a'} of ${r.skus.length} SKUs moved (${r.rebalance.movedFraction === undefined ? 'n/a' : `${(r.rebalance.movedFraction * 100).toFixed(1)}% of the hash space`})`,
  );
  lines.push(
    `Fencing: ${r.fencing.stalls} stalled owner(s); ${r.fencing.staleWritesRefused} stale stock write(s) refused by fencing tokens`,
  );
  lines.push(
    '',
    r.events === undefined
      ? 'Events: not run (embedded mode; keel/queue needs Redis).'
      : `Events (order-confirmed, outbox → ledger via keel/queue): sent ${r.events.sent} = handled ${r.events.handled} + dead-lettered ${r.events.deadLettered}, lost ${r.events.lost}, duplicate effects ${r.events.duplicateEffects}`,
  );
  if (r.catalog !== undefined) lines.push(...catalogLines(r.catalog));
  lines.push(...formatSagas(r.sagas, r.killed.id));
  lines.push('', 'Invariants:');
  for (const i of r.invariants)
    lines.push(`  ${i.ok ? 'PASS' : 'FAIL'}  ${pad(i.name, 48)} ${i.detail}`);
  lines.push('', r.ok ? 'All invariants hold.' : 'SOME INVARIANTS FAILED.');
  return lines.join('\n');
}

/** The sagas' lines of the report: how every order saga ended, and the ones a kill interrupted. */
export function formatSagas(s: SagaReport, killed: string | undefined): string[] {
  const lines = [
    '',
    `Sagas (keel/saga): completed ${s.completed}, compensated ${s.compensated}, needs-attention ${s.needsAttention.length}, stuck ${s.stuck.length}`,
  ];
  for (const p of s.needsAttention) lines.push(`  needs-attention ${p.id}: ${p.reason}`);
  for (const p of s.stuck.slice(0, 5))
    lines.push(`  STUCK ${p.id}: ${p.status}${p.step === undefined ? '' : ` at ${p.step}`}`);
  if (s.traced.length > 0) {
    lines.push(
      `  ${killed ?? 'the killed instance'} died in the middle of ${s.traced.length} payment step(s); another instance took each over after its lease:`,
    );
    for (const t of s.traced) {
      const why = t.reason === '' ? '' : ` (${t.reason})`;
      lines.push(
        `    ${t.id}: ${t.status}${why} by ${t.owner.split(':')[0] ?? '?'}; last: ${t.events.slice(-4).join(', ')}`,
      );
    }
  }
  return lines;
}
