/**
 * `--metrics-port`: Prometheus text at `/metrics`, fed by `keel/otel`'s `instrument()` through
 * the OpenTelemetry SDK and its Prometheus exporter (`@opentelemetry/exporter-prometheus`).
 *
 * Why the OTel exporter and not prom-client: Keel's metrics are defined once, in `keel/otel`,
 * as OpenTelemetry instruments; the exporter is the standard OTel → Prometheus bridge (names
 * `keel.lock.acquire.duration` in seconds become `keel_lock_acquire_duration_seconds`), so the
 * demo shows exactly what a user who wires `instrument()` into their own SDK would scrape.
 *
 * Why per process, then merged: `node:diagnostics_channel` is per process, so in Redis mode each
 * service instance (a child process) runs its own `MeterProvider` + exporter + `instrument()`
 * and serves its text on an ephemeral loopback port it reports at start-up. The demo's
 * `/metrics` fetches every live instance, adds `instance` and `service` labels to each sample
 * and merges the families — one `# HELP`/`# TYPE` per family, as the text format requires
 * (https://prometheus.io/docs/instrumenting/exposition_formats/#text-format-details), so a plain
 * concatenation would not do. A killed instance simply drops out. In embedded mode every
 * service shares the demo's process and so one set of channels: one exporter, labelled
 * `instance="embedded"` (breaker series still tell the orders instances apart by breaker name).
 */
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { instrument } from 'keel/otel';
import { HOST } from './http.js';

/** A running exporter: the text of this process's Keel metrics, on a loopback port. */
export interface ProcessMetrics {
  /** The port serving `GET /metrics` (Prometheus text). */
  readonly port: number;
  /** This process's metrics as Prometheus text. */
  text(): Promise<string>;
  close(): Promise<void>;
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.removeListener('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => {
      resolve();
    });
    server.closeAllConnections();
  });
}

/** Fetches a URL's body as text (GET, loopback, bounded). */
function fetchText(port: number, path: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: HOST, port, path, signal: AbortSignal.timeout(timeoutMs) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('end', () => {
          resolve(Buffer.concat(chunks).toString('utf8'));
        });
        res.once('error', reject);
      },
    );
    req.once('error', reject);
    req.end();
  });
}

/**
 * Records this process's Keel channels (`instrument()`) into an OTel `MeterProvider` read by a
 * Prometheus exporter, served on an ephemeral loopback port. Call before the components start,
 * so the first view changes are seen.
 */
export async function startProcessMetrics(): Promise<ProcessMetrics> {
  const exporter = new PrometheusExporter({
    preventServerStart: true,
    // One scrape is one process; the demo adds `instance` itself.
    withoutScopeInfo: true,
    withoutTargetInfo: true,
  });
  // No View for the duration histograms: `instrument()` advises bucket bounds in seconds.
  const provider = new MeterProvider({ readers: [exporter] });
  // Picks too: `keel_balancer_picks_total` is each balancer's request rate (a publish per pick,
  // a cost a demo can pay; `instrument()` leaves it off by default).
  const instrumentation = instrument({ meterProvider: provider, picks: true });
  const server = createServer((req, res) => {
    exporter.getMetricsRequestHandler(req, res);
  });
  const port = await listen(server, 0, HOST);
  server.unref();
  return {
    port,
    text: () => fetchText(port, '/metrics', 5000),
    close: async () => {
      instrumentation.dispose();
      await closeServer(server);
      await provider.shutdown().catch(() => undefined);
    },
  };
}

/** One scraped process: its labels and its Prometheus text. */
export interface MetricsSource {
  readonly labels: Readonly<Record<string, string>>;
  readonly text: string;
}

const escapeLabel = (v: string): string =>
  v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{?)(.*)$/;

/**
 * Merges the Prometheus text of several processes into one exposition: each family's
 * `# HELP`/`# TYPE` once, then its samples from every source, each sample given the source's
 * labels (put first, before the sample's own).
 */
export function mergePrometheus(sources: readonly MetricsSource[]): string {
  const families = new Map<string, { header: string[]; samples: string[] }>();
  for (const source of sources) {
    const extra = Object.entries(source.labels)
      .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
      .join(',');
    let family: { header: string[]; samples: string[] } | undefined;
    for (const line of source.text.split('\n')) {
      if (line.trim() === '') continue;
      const meta = /^# (HELP|TYPE|UNIT) ([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
      if (meta !== null) {
        const name = meta[2] as string;
        family = families.get(name);
        if (family === undefined) {
          family = { header: [], samples: [] };
          families.set(name, family);
        }
        if (!family.header.some((h) => h.startsWith(`# ${meta[1] as string} `)))
          family.header.push(line);
        continue;
      }
      if (line.startsWith('#')) continue;
      const m = SAMPLE.exec(line);
      if (m === null) continue;
      const [, name, brace, rest] = m as unknown as [string, string, string, string];
      const labelled =
        extra === ''
          ? line
          : brace === '{'
            ? `${name}{${extra}${rest.startsWith('}') ? '' : ','}${rest}`
            : `${name}{${extra}}${rest}`;
      if (family === undefined) {
        // A sample before any header: its own untyped family.
        family = { header: [], samples: [] };
        families.set(name, family);
      }
      family.samples.push(labelled);
    }
  }
  const out: string[] = [];
  for (const { header, samples } of families.values()) out.push(...header, ...samples, '');
  return out.join('\n');
}

/** The demo's `/metrics` server. */
export interface MetricsServer {
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` on `port` (0: the OS picks), answering with the merge of whatever
 * `collect()` gathers at that moment.
 */
export async function serveMetrics(
  port: number,
  collect: () => Promise<readonly MetricsSource[]>,
): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    if ((req.url ?? '/').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('try /metrics\n');
      return;
    }
    collect().then(
      (sources) => {
        // Prometheus text exposition format 0.0.4.
        res
          .writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' })
          .end(mergePrometheus(sources));
      },
      (error: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(error)}\n`);
      },
    );
  });
  const bound = await listen(server, port, HOST);
  server.unref();
  return {
    port: bound,
    url: `http://${HOST}:${bound}/metrics`,
    close: () => closeServer(server),
  };
}

/**
 * Scrapes one instance's exporter; `undefined` if it is gone (killed) or too slow. The bound is
 * generous (a busy instance on a loaded machine answers late) but below Prometheus's default
 * 10 s scrape timeout.
 */
export async function scrapeInstance(port: number): Promise<string | undefined> {
  return fetchText(port, '/metrics', 6000).catch(() => undefined);
}

/**
 * The demo's metrics: in embedded mode this process records its own channels; in Redis mode
 * each instance process does (see `startProcessMetrics`, started by service-process.ts) and
 * `/metrics` scrapes the instances alive at that moment, labelled with their id and role.
 */
export async function startDemoMetrics(
  mode: 'redis' | 'memory',
  port: number,
  fleet: ReadonlyMap<
    string,
    { readonly id: string; readonly role: string; readonly metricsPort?: number | undefined }
  >,
): Promise<MetricsServer> {
  const own = mode === 'memory' ? await startProcessMetrics() : undefined;
  const server = await serveMetrics(port, async () => {
    if (own !== undefined) return [{ labels: { instance: 'embedded' }, text: await own.text() }];
    const scraped = await Promise.all(
      [...fleet.values()].map(async (h): Promise<MetricsSource | undefined> => {
        const text = h.metricsPort === undefined ? undefined : await scrapeInstance(h.metricsPort);
        return text === undefined
          ? undefined
          : { labels: { instance: h.id, service: h.role }, text };
      }),
    );
    return scraped.filter((s) => s !== undefined);
  });
  return {
    port: server.port,
    url: server.url,
    close: async () => {
      await server.close();
      await own?.close();
    },
  };
}
