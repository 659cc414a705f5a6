/**
 * The saga instance's state as plain data, decoded from its Redis hash, and the pure decision of
 * what a coordinator does next with it. No I/O here: the coordinator asks {@link nextAction},
 * does it, and records the outcome with one transition script.
 *
 * Internal module.
 * @packageDocumentation
 */

/**
 * Where a saga instance is:
 * - `running`: steps run forward;
 * - `compensating`: a step failed (or the saga timed out or was cancelled); compensations run
 *   in reverse;
 * - `completed`: every step ran;
 * - `compensated`: every step that began was compensated;
 * - `needs-attention`: a compensation kept failing past its retries; parked with its history
 *   for a person (never dropped, never expired).
 */
export type SagaStatus =
  'running' | 'compensating' | 'completed' | 'compensated' | 'needs-attention';

/** Statuses in which a coordinator still has work to do. */
export const LIVE: ReadonlySet<SagaStatus> = new Set(['running', 'compensating']);

/** One entry of an instance's transition history (capped; see the coordinator's options). */
export interface SagaHistoryEntry {
  /** Epoch ms on the Redis server's clock. */
  readonly time: number;
  /** The instance's version after this transition. */
  readonly version: number;
  /** The fence of the owner that wrote it. */
  readonly fence: number;
  /**
   * `start`, `claim` (a coordinator took it over), `begin` / `done` (a step's action),
   * `fail` (compensation begins), `cbegin` / `cdone` / `skip` (a compensation), `park`.
   */
  readonly event: string;
  /** The step's name, for step events. */
  readonly step: string | undefined;
  /** Attempt numbers, error messages, owners — whatever the event records. */
  readonly detail: string;
}

/** A saga instance as stored (the decoded hash). @internal */
export interface Row {
  readonly saga: string;
  readonly input: string;
  status: SagaStatus;
  /** Current forward step. */
  cur: number;
  /** Next step to compensate (−1: none). */
  cj: number;
  phase: 'idle' | 'run' | 'comp';
  version: number;
  fence: number;
  owner: string;
  leaseUntil: number;
  readonly deadline: number;
  readonly createdAt: number;
  updatedAt: number;
  readonly steps: number;
  reason: string | undefined;
  cancel: boolean;
  /** JSON text of each finished step's output, by index. */
  readonly outputs: Map<number, string>;
  readonly attempts: Map<number, number>;
  readonly compensations: Map<number, number>;
}

const STATUSES: readonly string[] = [
  'running',
  'compensating',
  'completed',
  'compensated',
  'needs-attention',
];

/** Decodes an HGETALL reply (flat `[field, value, …]`); `undefined` for an empty one. @internal */
export function decodeRow(flat: readonly unknown[]): Row | undefined {
  if (flat.length === 0) return undefined;
  const f = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) f.set(String(flat[i]), String(flat[i + 1]));
  const num = (key: string): number => Number(f.get(key) ?? 0);
  const status = f.get('st') ?? '';
  const phase = f.get('ph');
  const row: Row = {
    saga: f.get('n') ?? '',
    input: f.get('in') ?? 'null',
    status: (STATUSES.includes(status) ? status : 'needs-attention') as SagaStatus,
    cur: num('cur'),
    cj: num('cj'),
    phase: phase === 'run' || phase === 'comp' ? phase : 'idle',
    version: num('v'),
    fence: num('f'),
    owner: f.get('ow') ?? '',
    leaseUntil: num('ls'),
    deadline: num('dl'),
    createdAt: num('t0'),
    updatedAt: num('up'),
    steps: num('ns'),
    reason: f.get('why'),
    cancel: f.get('cx') === '1',
    outputs: new Map(),
    attempts: new Map(),
    compensations: new Map(),
  };
  for (const [key, value] of f) {
    const colon = key.indexOf(':');
    if (colon !== 1) continue;
    const index = Number(key.slice(2));
    if (!Number.isInteger(index)) continue;
    if (key[0] === 'o') row.outputs.set(index, value);
    else if (key[0] === 'a') row.attempts.set(index, Number(value));
    else if (key[0] === 'c') row.compensations.set(index, Number(value));
  }
  return row;
}

/** Decodes one history entry `time|version|fence|event|step|detail`. @internal */
export function decodeEntry(text: string, stepNames: readonly string[]): SagaHistoryEntry {
  const parts = text.split('|');
  const step = Number(parts[4]);
  return {
    time: Number(parts[0]),
    version: Number(parts[1]),
    fence: Number(parts[2]),
    event: parts[3] ?? '',
    step: step >= 0 ? (stepNames[step] ?? String(step)) : undefined,
    detail: parts.slice(5).join('|'),
  };
}

/** What a coordinator does next with an instance it owns. @internal */
export type NextAction =
  | { readonly kind: 'run'; readonly step: number; readonly attempt: number }
  /** The step's attempts are used up (a crash during the last one): compensate. */
  | { readonly kind: 'exhausted'; readonly step: number }
  | { readonly kind: 'compensate'; readonly step: number; readonly attempt: number }
  /** The step has no compensation: record it as done without calling anything. */
  | { readonly kind: 'skip'; readonly step: number }
  /** Compensation attempts are used up: park as needs-attention. */
  | { readonly kind: 'park'; readonly step: number }
  | { readonly kind: 'finished' };

/**
 * The decision: given the stored state and, per step, its attempt limit and whether it has a
 * compensation, what to do. Pure, so the model test and the coordinator share it.
 * @internal
 */
export function nextAction(
  row: Pick<Row, 'status' | 'cur' | 'cj' | 'attempts' | 'compensations'>,
  steps: readonly { readonly attempts: number; readonly compensates: boolean }[],
  compensationAttempts: number,
): NextAction {
  if (row.status === 'running') {
    const step = steps[row.cur];
    if (step === undefined) return { kind: 'finished' };
    const used = row.attempts.get(row.cur) ?? 0;
    if (used >= step.attempts) return { kind: 'exhausted', step: row.cur };
    return { kind: 'run', step: row.cur, attempt: used + 1 };
  }
  if (row.status === 'compensating') {
    if (row.cj < 0) return { kind: 'finished' };
    if (steps[row.cj]?.compensates !== true) return { kind: 'skip', step: row.cj };
    const used = row.compensations.get(row.cj) ?? 0;
    if (used >= compensationAttempts) return { kind: 'park', step: row.cj };
    return { kind: 'compensate', step: row.cj, attempt: used + 1 };
  }
  return { kind: 'finished' };
}

/**
 * The shard of an instance id: FNV-1a (32-bit) over its UTF-16 code units, modulo `shards`.
 * Every process must use the same shard count. @internal
 */
export function shardOf(id: string, shards: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    hash ^= id.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % shards;
}
