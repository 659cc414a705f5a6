/**
 * Entry point of one service instance in Redis mode (forked by cluster.ts). It builds its own
 * Redis-backed platform, starts its service, reports its port, and shuts down gracefully when
 * told to — or at once when its parent goes away, so no instance outlives the demo.
 */
import { SPEC_ENV, type ProcessSpec, type ReadyMessage } from './cluster.js';
import { closeClientSockets } from './http.js';
import { redisPlatform } from './platform.js';
import { starters } from './services/index.js';

const spec = JSON.parse(process.env[SPEC_ENV] ?? '{}') as ProcessSpec;
// Before the platform and service exist, so their first events are recorded. Imported only
// when asked for: the OpenTelemetry SDK is not loaded (nor paid for at start-up) otherwise.
const metrics =
  spec.metrics === true ? await (await import('./metrics.js')).startProcessMetrics() : undefined;
const platform = redisPlatform(spec.urls, spec.prefix);
const service = await starters[spec.role]({
  id: spec.id,
  platform,
  seed: spec.seed,
  payments: spec.payments,
  skus: spec.skus,
});

let stopping = false;
async function shutdown(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  await service.stop().catch(() => undefined);
  closeClientSockets();
  process.exit(code);
}

process.on('message', (message: { type?: string }) => {
  if (message.type === 'stop') void shutdown(0);
});
process.on('SIGTERM', () => void shutdown(0));
process.on('SIGINT', () => void shutdown(0));
// The parent died (even by SIGKILL): the IPC channel closes. Leave at once.
process.on('disconnect', () => {
  if (!stopping) process.exit(1);
});
process.send?.({
  type: 'ready',
  port: service.port,
  metricsPort: metrics?.port,
} satisfies ReadyMessage);
