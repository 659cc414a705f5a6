/**
 * What a Keel object leaves behind after `close()`: timers Keel's code created and that are
 * still pending (unref'd ones included — `process.getActiveResourcesInfo()` lists only timers
 * that keep the process alive, and Keel unrefs all of its own), sockets in this process, the
 * connections each Redis server sees (`CLIENT LIST`), and listeners left on process signals
 * or on the caller's clients.
 *
 * Timers are followed with `async_hooks` (Node's docs: "async_hooks", `init`/`destroy`; a
 * `Timeout` is destroyed when it is cleared or has fired): each one whose creation stack runs
 * through `src/` is Keel's, and stays on the list until destroyed.
 */
import { createHook } from 'node:async_hooks';
import { fileURLToPath } from 'node:url';
import { rawCommand } from '../support/redis.js';
import { liveHandles } from '../support/vitest.js';

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

/** Pending timers created by Keel's code, with the source line that created each. */
export class KeelTimers {
  readonly #live = new Map<number, string>();
  readonly #hook = createHook({
    init: (id, type) => {
      if (type !== 'Timeout') return;
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = 50;
      const stack = new Error().stack ?? '';
      Error.stackTraceLimit = limit;
      const frame = stack.split('\n').find((line) => line.includes(SRC));
      if (frame !== undefined) this.#live.set(id, frame.trim());
    },
    destroy: (id) => {
      this.#live.delete(id);
    },
  });

  constructor() {
    this.#hook.enable();
  }

  /** Where each pending Keel timer was created. */
  pending(): string[] {
    return [...this.#live.values()];
  }

  stop(): void {
    this.#hook.disable();
  }
}

/** The connections a Redis server sees, not counting the one asking. */
export async function serverClients(port: number): Promise<number> {
  const list = await rawCommand(port, 'CLIENT LIST');
  return list.split('\n').filter((line) => line.startsWith('id=')).length - 1;
}

/** What the process and the servers hold now. */
export interface Footprint {
  readonly sockets: number;
  readonly servers: readonly number[];
  readonly signalListeners: number;
  readonly clientListeners: readonly number[];
}

/** Something whose listeners we count (an ioredis client). */
interface Listened {
  listenerCount(event: string): number;
}

/** Takes the footprint: sockets, connections per server, signal and client listeners. */
export async function footprint(
  ports: readonly number[],
  clients: readonly Listened[] = [],
): Promise<Footprint> {
  const servers = await Promise.all(ports.map(serverClients));
  // The sockets of those queries close on a later turn of the loop.
  await new Promise((resolve) => setTimeout(resolve, 10));
  return {
    sockets: liveHandles().TCPSocketWrap ?? 0,
    servers,
    signalListeners: process.listenerCount('SIGTERM') + process.listenerCount('SIGINT'),
    clientListeners: clients.map((c) =>
      ['ready', 'error', 'message', 'end', 'close'].reduce((n, e) => n + c.listenerCount(e), 0),
    ),
  };
}
