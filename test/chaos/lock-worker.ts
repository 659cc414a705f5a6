/**
 * One worker process of the lock / semaphore chaos suites (forked by lock-run.ts, run by tsx).
 * It opens `clients` Redlocks, each with its own connections to every node, and each loops:
 * acquire (a lock on one or two of the resources, or permits of a semaphore), use it for a
 * while — extending now and then, writing through the orchestrator's fenced register while
 * the lock is valid — and release. It reports each grant, extension, end of use and write to
 * the orchestrator over IPC, every time on `hostNow()`, the host-wide monotonic clock, which is
 * also the Redlocks' clock (so `validUntil` is on the shared timeline).
 *
 * The loop stops on the orchestrator's `stop`, when the IPC channel closes, or by itself at
 * its hard deadline; the process then closes its connections and exits.
 *
 * @packageDocumentation
 */
import { Redis } from 'ioredis';
import { systemClock, type Clock } from '../../src/core/index.js';
import { Redlock, type Lock } from '../../src/lock/index.js';
import { between, hostNow, prng, sleep } from './config.js';

/** The worker's settings (JSON in argv[2]). */
export interface WorkerConfig {
  readonly mode: 'lock' | 'semaphore';
  readonly worker: number;
  readonly ports: readonly number[];
  readonly clients: number;
  /** Lock: resource names; semaphore: semaphore names. */
  readonly resources: readonly string[];
  readonly ttlMs: number;
  readonly permits: number;
  readonly seed: number;
  /** Hard stop, ms after start, in case the orchestrator never says stop. */
  readonly hardStopMs: number;
}

/** Messages from a worker. */
export type WorkerMessage =
  | { readonly t: 'ready' }
  | {
      readonly t: 'hold';
      readonly id: string;
      readonly resources: readonly string[];
      readonly tokens: Readonly<Record<string, number>>;
      readonly permits: number;
      readonly start: number;
      readonly ack: number;
      readonly validUntil: number;
    }
  | { readonly t: 'extend'; readonly id: string; readonly validUntil: number }
  | { readonly t: 'end'; readonly id: string; readonly at: number; readonly why: string }
  | {
      readonly t: 'write';
      readonly seq: number;
      readonly id: string;
      readonly resource: string;
      readonly token: number;
      readonly sentAt: number;
    }
  | {
      readonly t: 'done';
      readonly errors: Readonly<Record<string, number>>;
      readonly samples: Readonly<Record<string, string>>;
      readonly released: number;
      readonly releaseRefused: number;
      /** Promise rejections nobody handled (each would crash a process by default). */
      readonly unhandled: number;
    };

/** Messages to a worker. */
export type OrchestratorMessage =
  | { readonly t: 'go' }
  | { readonly t: 'stop' }
  | { readonly t: 'ack'; readonly seq: number; readonly ok: boolean };

/**
 * Cold resources (lock mode): a twentieth of the acquisitions go to one of these sixteen, so
 * each is locked only now and then and several faults — empty restarts among them — pass
 * between two of its acquisitions with no traffic on it to repair restarted nodes' counters.
 */
const COLD_RESOURCES = 16;
const COLD_SHARE = 0.05;

/** The Redlocks' clock: host-wide monotonic time, system timers. */
const hostClock: Clock = { now: hostNow, setTimer: (cb, ms) => systemClock.setTimer(cb, ms) };

function send(message: WorkerMessage): void {
  if (process.connected) process.send?.(message);
}

const config = JSON.parse(process.argv[2] ?? '{}') as WorkerConfig;
let stopping = false;
const errors: Record<string, number> = {};
const samples: Record<string, string> = {};
let released = 0;
let releaseRefused = 0;
let writeSeq = 0;
const pendingWrites = new Map<number, (ok: boolean) => void>();
let go: () => void = () => undefined;
const started = new Promise<void>((resolve) => (go = resolve));

function recordError(op: string, error: unknown): void {
  const kind =
    typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string'
      ? error.code
      : error instanceof Error
        ? `untyped ${error.name}`
        : `thrown ${typeof error}`;
  const key = `${op}: ${kind}`;
  errors[key] = (errors[key] ?? 0) + 1;
  samples[key] ??= error instanceof Error ? error.message.slice(0, 300) : String(error);
}

process.on('message', (raw: OrchestratorMessage) => {
  if (raw.t === 'go') go();
  else if (raw.t === 'stop') stopping = true;
  else pendingWrites.get(raw.seq)?.(raw.ok);
});
// A rejection nobody handled would crash a user's process (Node's default): count it, with
// where the command came from (ioredis's showFriendlyErrorStack), and carry on.
let unhandled = 0;
process.on('unhandledRejection', (reason) => {
  unhandled++;
  recordError('unhandled rejection', reason);
  const key = Object.keys(samples).find((k) => k.startsWith('unhandled rejection'));
  if (key !== undefined && reason instanceof Error && !samples[key]?.includes('\n')) {
    samples[key] = (reason.stack ?? reason.message).slice(0, 1500);
  }
});
process.on('disconnect', () => {
  stopping = true;
  go();
});

/** A write through the fenced register; resolves with whether it was accepted. */
function write(id: string, resource: string, token: number): Promise<boolean> {
  const seq = ++writeSeq;
  return new Promise((resolve) => {
    pendingWrites.set(seq, (ok) => {
      pendingWrites.delete(seq);
      resolve(ok);
    });
    send({ t: 'write', seq, id, resource, token, sentAt: hostNow() });
    // If the orchestrator is gone the answer never comes: do not hang.
    setTimeout(() => pendingWrites.get(seq)?.(false), 10_000).unref();
  });
}

async function loop(redlock: Redlock, client: number): Promise<void> {
  const random = prng(config.seed * 7919 + config.worker * 131 + client);
  const { ttlMs, resources, mode } = config;
  const semaphores = resources.map((name) => redlock.semaphore(name, { permits: config.permits }));
  let n = 0;
  while (!stopping) {
    const start = hostNow();
    let lock: Lock;
    let chosen: string[];
    let permits = 1;
    try {
      if (mode === 'lock') {
        const first = between(random, 0, resources.length - 1);
        if (random() < COLD_SHARE) {
          chosen = [`chaos:cold:${between(random, 0, COLD_RESOURCES - 1)}`];
        } else {
          chosen = [resources[first] as string];
          if (random() < 0.15 && resources.length > 1) {
            chosen.push(resources[(first + 1) % resources.length] as string);
          }
        }
        lock = await redlock.acquire(chosen);
      } else {
        const which = between(random, 0, semaphores.length - 1);
        chosen = [resources[which] as string];
        permits = random() < 0.2 && config.permits > 1 ? 2 : 1;
        lock = await (semaphores[which] as (typeof semaphores)[number]).acquire({ permits });
      }
    } catch (error) {
      recordError('acquire', error);
      await sleep(between(random, 0, 50));
      continue;
    }
    const ack = hostNow();
    const id = `${config.worker}.${client}.${++n}`;
    send({
      t: 'hold',
      id,
      resources: chosen,
      tokens: mode === 'lock' ? lock.fencingTokens : {},
      permits,
      start,
      ack,
      validUntil: lock.validUntil,
    });
    let why = 'release';
    const rounds = between(random, 1, 3);
    use: for (let round = 0; round < rounds; round++) {
      if (random() < 0.25) {
        try {
          await lock.extend();
          send({ t: 'extend', id, validUntil: lock.validUntil });
        } catch (error) {
          recordError('extend', error);
          why = 'extend-failed';
          break;
        }
      }
      await sleep(between(random, 0, Math.round(ttlMs * 0.2)));
      if (mode !== 'lock') continue;
      for (const resource of chosen) {
        if (hostNow() >= lock.validUntil) {
          why = 'expired';
          break use;
        }
        await write(id, resource, lock.fencingTokens[resource] ?? 0);
      }
    }
    if (why === 'release' && hostNow() >= lock.validUntil) why = 'expired';
    send({ t: 'end', id, at: hostNow(), why });
    try {
      const result = await lock.release();
      if (result.released) released++;
      else releaseRefused++;
    } catch (error) {
      recordError('release', error);
    }
    await sleep(between(random, 0, 30));
  }
}

async function main(): Promise<void> {
  const hardStop = setTimeout(() => {
    process.exit(3);
  }, config.hardStopMs);
  hardStop.unref();
  const connections: Redis[] = [];
  const redlocks: Redlock[] = [];
  for (let c = 0; c < config.clients; c++) {
    const clients = config.ports.map((port) => {
      const client = new Redis({
        host: '127.0.0.1',
        port,
        maxRetriesPerRequest: 1,
        showFriendlyErrorStack: true,
      });
      client.on('error', () => undefined);
      connections.push(client);
      return client;
    });
    redlocks.push(
      new Redlock({
        clients,
        ttlMs: config.ttlMs,
        clock: hostClock,
        retryCount: 5,
        retryDelayMs: 40,
        retryJitterMs: 40,
        nodeTimeoutMs: 150,
        random: prng(config.seed + config.worker * 17 + c),
      }),
    );
  }
  await Promise.all(connections.map((c) => c.ping().catch(() => undefined)));
  send({ t: 'ready' });
  await started;
  await Promise.all(redlocks.map((redlock, c) => loop(redlock, c)));
  for (const redlock of redlocks) await redlock.close();
  for (const connection of connections) connection.disconnect();
  // Disconnect once the last report is flushed (a disconnect right away could drop it).
  if (!process.connected) return;
  process.send?.(
    { t: 'done', errors, samples, released, releaseRefused, unhandled } satisfies WorkerMessage,
    () => {
      process.disconnect();
    },
  );
}

main().catch((error: unknown) => {
  process.stderr.write(`lock worker ${config.worker} failed: ${String(error)}\n`);
  process.exit(1);
});
