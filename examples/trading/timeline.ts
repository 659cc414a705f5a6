/**
 * What each process saw over time, for the HTML report: every lock acquisition's wait (from
 * Keel's `keel:lock:acquire` trace — the same `node:diagnostics_channel` source `keel/otel`
 * reads, published by Redlock and MemoryLock alike), locks seen lost, and the stale writes the
 * store refused. One recorder per process, started by the first service; served at
 * `GET /timeline` by every instance (in embedded mode they share it — the runner keeps one copy
 * per process).
 */
import diagnostics from 'node:diagnostics_channel';

/** One lock acquisition: when it ended (epoch ms), how long it waited, whether it got the lock. */
export type LockWait = readonly [at: number, waitMs: number, ok: 0 | 1];

/** A process's timeline. */
export interface ProcessTimeline {
  readonly pid: number;
  readonly lockWaits: readonly LockWait[];
  /** When a held lock was seen lost (epoch ms). */
  readonly locksLost: readonly number[];
  /** When the store refused a write carrying an old fencing token (epoch ms). */
  readonly fencedOff: readonly number[];
}

interface Recorder {
  readonly lockWaits: LockWait[];
  readonly locksLost: number[];
  readonly fencedOff: number[];
}

let recorder: Recorder | undefined;

const num = (v: unknown): number | undefined =>
  typeof v === 'number' && Number.isFinite(v) ? v : undefined;

/** Starts this process's recorder (once; later calls return the same one). */
function start(): Recorder {
  if (recorder !== undefined) return recorder;
  const r: Recorder = { lockWaits: [], locksLost: [], fencedOff: [] };
  recorder = r;
  // Subscribed for the life of the process: the demo's processes end with the demo.
  diagnostics.tracingChannel('keel:lock:acquire').subscribe({
    start: () => undefined,
    end: () => undefined,
    asyncStart: () => undefined,
    asyncEnd: (message: unknown) => {
      const m = message as Record<string, unknown>;
      const time = num(m.time);
      const waitMs = num(m.waitMs);
      if (time === undefined || waitMs === undefined) return;
      r.lockWaits.push([
        Math.round(time + waitMs),
        Math.round(waitMs * 10) / 10,
        m.error === undefined ? 1 : 0,
      ]);
    },
    error: () => undefined,
  });
  diagnostics.subscribe('keel:lock:lost', (message: unknown) => {
    r.locksLost.push(num((message as Record<string, unknown>).time) ?? Date.now());
  });
  return r;
}

/** Makes sure this process records (called as each service starts). */
export function recordTimeline(): void {
  start();
}

/** A stale write was refused by its fencing token, now. */
export function noteFencedOff(): void {
  start().fencedOff.push(Date.now());
}

/** This process's timeline so far. */
export function timeline(): ProcessTimeline {
  const r = start();
  return {
    pid: process.pid,
    lockWaits: r.lockWaits,
    locksLost: r.locksLost,
    fencedOff: r.fencedOff,
  };
}
