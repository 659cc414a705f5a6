/**
 * The report's resilient-calls section: how many attempts the charges made while payments was
 * down (the retry budget and the per-instance breakers at work), beside the rest of the run,
 * and the gateway's attempts per request.
 */
import type { CallRecord } from './services/calls.js';

/** Charge calls in a stretch of the run, and the attempts they made. */
export interface CallFigures {
  /** Charge calls. */
  readonly requests: number;
  /** Attempts that reached a payments instance. */
  readonly attempts: number;
  /** Attempts a breaker refused locally (nothing sent). */
  readonly rejected: number;
}

/** What the section shows (also in the JSON report). */
export interface ResilienceFigures {
  /** Charges started before payments went down. */
  readonly chargesBefore: CallFigures;
  /** Charges started while payments was down. */
  readonly chargesInOutage: CallFigures;
  /** Charges started after payments came back (breakers closing again). */
  readonly chargesAfter: CallFigures;
  /** The gateway's calls to orders: requests, attempts sent, retries the budget refused. */
  readonly gateway: {
    readonly requests: number;
    readonly attempts: number;
    readonly budgetRefused: number;
  };
}

const sum = (records: readonly CallRecord[]): CallFigures => ({
  requests: records.length,
  attempts: records.reduce((n, r) => n + r[1], 0),
  rejected: records.reduce((n, r) => n + r[2], 0),
});

/** Splits every orders instance's charge log at the outage (epoch ms). */
export function resilienceFigures(
  chargeLogs: readonly CallRecord[],
  outage: { readonly from: number; readonly to: number } | undefined,
  gateway: ResilienceFigures['gateway'] | undefined,
): ResilienceFigures {
  const from = outage?.from ?? Infinity;
  const to = outage?.to ?? Infinity;
  return {
    chargesBefore: sum(chargeLogs.filter((r) => r[0] < from)),
    chargesInOutage: sum(chargeLogs.filter((r) => r[0] >= from && r[0] <= to)),
    chargesAfter: sum(chargeLogs.filter((r) => r[0] > to)),
    gateway: gateway ?? { requests: 0, attempts: 0, budgetRefused: 0 },
  };
}

const ratio = (f: CallFigures | ResilienceFigures['gateway']): string =>
  f.requests === 0 ? 'n/a' : (f.attempts / f.requests).toFixed(2);

/** The section's lines. */
export function formatResilience(r: ResilienceFigures): string[] {
  const line = (label: string, f: CallFigures): string =>
    `  ${label.padEnd(30)} ${f.requests} calls, ${f.attempts} attempts sent = ${ratio(f)} per call; ${f.rejected} refused locally by an open breaker`;
  return [
    'Resilient calls (keel/resilience; a charge may go to the other payments instance once):',
    line('charges before the outage:', r.chargesBefore),
    line('charges during the outage:', r.chargesInOutage),
    line('charges after it:', r.chargesAfter),
    `  ${'gateway -> orders:'.padEnd(30)} ${r.gateway.requests} requests, ${r.gateway.attempts} attempts sent = ${ratio(r.gateway)} per request; ${r.gateway.budgetRefused} retries refused by the budget`,
  ];
}
