/**
 * The shell every service shares: an HTTP server on a free loopback port, `GET /stats`, and a
 * registration in `keel/discovery` that heartbeats by itself and is withdrawn on shutdown.
 */
import type { Registration } from 'keel/discovery';
import type { PaymentSettings } from '../config.js';
import { HOST, serve, type Handler, type HttpServer } from '../http.js';
import type { Platform } from '../platform.js';
import { recordTimeline, timeline } from '../timeline.js';

export type Role = 'gateway' | 'orders' | 'inventory' | 'payments' | 'ledger';

/** What a service instance is started with. */
export interface ServiceContext {
  /** Instance id, e.g. `orders-2`. */
  readonly id: string;
  readonly platform: Platform;
  readonly seed: number;
  readonly payments: PaymentSettings;
  /** The SKUs on sale. */
  readonly skus: readonly string[];
}

/** A started instance. */
export interface RunningService {
  readonly id: string;
  readonly role: Role;
  readonly port: number;
  /** What `GET /stats` answers. */
  stats(): Record<string, unknown>;
  /** Graceful shutdown: withdraw the registration, finish requests, close. */
  stop(): Promise<void>;
  /** Crash: drop connections, stop heartbeating without deregistering, abandon work. */
  crash(): void;
}

/** The role-specific part a service hands to {@link startService}. */
export interface ServiceParts {
  readonly routes: Readonly<Record<string, Handler>>;
  readonly stats: () => Record<string, unknown>;
  /** Stops background work (timers, watches). */
  readonly dispose?: () => void;
}

/**
 * Builds the service's parts, serves them, registers the instance, and returns its handle.
 * `build` gets a signal that aborts when the instance "crashes" (embedded mode's stand-in for
 * SIGKILL): work in flight stops at its next step, as it would with the process gone.
 */
export async function startService(
  role: Role,
  ctx: ServiceContext,
  build: (alive: AbortSignal) => ServiceParts,
): Promise<RunningService> {
  recordTimeline();
  const crashController = new AbortController();
  // Every request in flight passes this signal to `using()`; Keel adds one shared listener to
  // it however many holds are in flight.
  const parts = build(crashController.signal);
  const stats = (): Record<string, unknown> => ({
    id: ctx.id,
    role,
    pid: process.pid,
    ...parts.stats(),
  });
  const server: HttpServer = await serve({
    ...parts.routes,
    'GET /stats': () => Promise.resolve({ status: 200, body: stats() }),
    // Lock waits, locks lost and fenced-off writes over time, for the HTML report.
    'GET /timeline': () => Promise.resolve({ status: 200, body: { ...timeline() } }),
  });
  const registration: Registration = await ctx.platform.registry.register({
    service: role,
    id: ctx.id,
    host: HOST,
    port: server.port,
    metadata: { pid: String(process.pid) },
  });
  let stopped = false;
  return {
    id: ctx.id,
    role,
    port: server.port,
    stats,
    async stop() {
      if (stopped) return;
      stopped = true;
      await registration.deregister().catch(() => false);
      parts.dispose?.();
      await server.close();
      await ctx.platform.close();
    },
    crash() {
      if (stopped) return;
      stopped = true;
      crashController.abort(new Error(`${ctx.id} crashed`));
      registration.abandon();
      parts.dispose?.();
      server.destroy();
      void ctx.platform.close();
    },
  };
}

/** A JSON body field as a string, or undefined. */
export const text = (value: unknown): string | undefined =>
  typeof value === 'string' && value !== '' ? value : undefined;
