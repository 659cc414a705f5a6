/**
 * keel/otel against the real OpenTelemetry SDK: metrics through a PeriodicExportingMetricReader
 * into an InMemoryMetricExporter, spans through a SimpleSpanProcessor into an
 * InMemorySpanExporter (issue 15: not a mock).
 */
import diagnostics from 'node:diagnostics_channel';
import { afterEach, describe, expect, it } from 'vitest';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
  type MetricData,
} from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { instrument } from '../../src/otel/index.js';
import { ManualClock, isInvalidOptionError } from '../../src/core/index.js';
import { CircuitBreaker } from '../../src/breaker/index.js';
import { LoadBalancer, roundRobin } from '../../src/balancer/index.js';
import { HashRing } from '../../src/hashring/index.js';
import { Registry } from '../../src/discovery/index.js';

function sdk() {
  const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({
    exporter: metricExporter,
    exportIntervalMillis: 3_600_000,
  });
  const meterProvider = new MeterProvider({ readers: [reader] });
  const spanExporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({
    spanProcessors: [new SimpleSpanProcessor(spanExporter)],
  });
  /** Every metric exported by a flush now, by name. */
  const collect = async (): Promise<Map<string, MetricData>> => {
    metricExporter.reset();
    await reader.forceFlush();
    const out = new Map<string, MetricData>();
    for (const resource of metricExporter.getMetrics()) {
      for (const scope of resource.scopeMetrics) {
        for (const metric of scope.metrics) out.set(metric.descriptor.name, metric);
      }
    }
    return out;
  };
  return { meterProvider, tracerProvider, spanExporter, collect, reader };
}

/** Value of the data point of `metric` whose attributes include `where`. */
function point(metric: MetricData | undefined, where: Record<string, unknown>): unknown {
  const found = metric?.dataPoints.find((p) =>
    Object.entries(where).every(([k, v]) => p.attributes[k] === v),
  );
  return found?.value;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  cleanups.length = 0;
});

describe('keel/otel instrument()', () => {
  it('records breaker, balancer, discovery and hashring channels as metrics, with names and units', async () => {
    const s = sdk();
    cleanups.push(() => s.meterProvider.shutdown());
    const instrumentation = instrument({
      meterProvider: s.meterProvider,
      tracerProvider: s.tracerProvider,
    });
    cleanups.push(() => {
      instrumentation.dispose();
    });

    // A breaker opening and rejecting.
    const payments = new CircuitBreaker({
      name: 'payments',
      clock: new ManualClock(),
      window: { size: 4 },
      minimumCalls: 2,
    });
    await payments.execute(() => Promise.reject(new Error('down'))).catch(() => undefined);
    await payments.execute(() => Promise.reject(new Error('down'))).catch(() => undefined);
    await payments.execute(() => Promise.resolve(1)).catch(() => undefined);
    // An endpoint ejected.
    const orders = new LoadBalancer({
      name: 'orders',
      strategy: roundRobin(),
      endpoints: [{ id: 'a' }, { id: 'b' }],
      outlierEjection: { consecutiveFailures: 1 },
      panicThresholdPercent: 0,
    });
    for (;;) {
      const lease = orders.acquire();
      if (lease?.endpoint.id === 'a') {
        lease.done({ ok: false });
        break;
      }
      lease?.done({ ok: true });
    }
    // A registry view (in memory) with two instances, one registration traced.
    const registry = new Registry();
    cleanups.push(() => registry.close());
    await registry.register({ service: 'quotes', id: 'q1', host: '127.0.0.1', port: 1 });
    await registry.register({ service: 'quotes', id: 'q2', host: '127.0.0.1', port: 2 });
    await registry.ready('quotes');
    await new Promise((resolve) => setTimeout(resolve, 20)); // the log entries' batch
    // A ring change.
    new HashRing({ nodes: [{ id: 'x' }] }).add({ id: 'y' });

    const m = await s.collect();
    expect(m.get('keel.breaker.transitions')?.descriptor.unit).toBe('{transition}');
    expect(
      point(m.get('keel.breaker.transitions'), {
        'keel.breaker.name': 'payments',
        'keel.breaker.to': 'open',
      }),
    ).toBe(1);
    expect(point(m.get('keel.breaker.rejected_calls'), { 'keel.breaker.name': 'payments' })).toBe(
      1,
    );
    expect(
      point(m.get('keel.breaker.state'), {
        'keel.breaker.name': 'payments',
        'keel.breaker.state': 'open',
      }),
    ).toBe(1);
    expect(
      point(m.get('keel.breaker.state'), {
        'keel.breaker.name': 'payments',
        'keel.breaker.state': 'closed',
      }),
    ).toBe(0);
    expect(point(m.get('keel.balancer.ejections'), { 'keel.balancer.name': 'orders' })).toBe(1);
    expect(point(m.get('keel.balancer.ejected'), { 'keel.balancer.name': 'orders' })).toBe(1);
    expect(m.get('keel.balancer.ejected')?.descriptor.unit).toBe('{endpoint}');
    expect(
      point(m.get('keel.discovery.view.size'), {
        'keel.discovery.service': 'quotes',
        'keel.discovery.status': 'up',
      }),
    ).toBe(2);
    expect(point(m.get('keel.discovery.view.stale'), { 'keel.discovery.service': 'quotes' })).toBe(
      0,
    );
    const register = m.get('keel.discovery.register.duration');
    expect(register?.descriptor.unit).toBe('s');
    expect(point(register, { 'keel.discovery.service': 'quotes' })).toMatchObject({ count: 2 });
    expect(point(m.get('keel.hashring.rebuilds'), { 'keel.hashring.change': 'add' })).toBe(1);
    expect(m.has('keel.balancer.picks')).toBe(false); // opt-in

    const spans = s.spanExporter.getFinishedSpans();
    const registers = spans.filter((span) => span.name === 'keel.discovery.register');
    expect(registers.map((span) => span.attributes['keel.discovery.instance'])).toEqual([
      'q1',
      'q2',
    ]);
    expect(spans.some((span) => span.name === 'keel.discovery.resync')).toBe(true);
  });

  it('records lock operations by channel name: spans with wait time and votes, durations in s', async () => {
    const s = sdk();
    cleanups.push(() => s.meterProvider.shutdown());
    const instrumentation = instrument({
      meterProvider: s.meterProvider,
      tracerProvider: s.tracerProvider,
    });
    cleanups.push(() => {
      instrumentation.dispose();
    });
    // What keel/lock publishes (its channels are named in its own module): an acquire that waited
    // and won 3 of 3 votes, a contended attempt, a release after holding it, a lock lost.
    const acquire = diagnostics.tracingChannel('keel:lock:acquire');
    const context: Record<string, unknown> = { resource: 'orders:42', time: Date.now() };
    await acquire.tracePromise(() => {
      Object.assign(context, { votes: 3, quorum: 2, attempts: 2, waitMs: 12, fencingToken: 7 });
      return Promise.resolve('lock');
    }, context);
    const failed: Record<string, unknown> = { resource: 'orders:43', time: Date.now() };
    await acquire
      .tracePromise(() => Promise.reject(new Error('quorum not reached')), failed)
      .catch(() => undefined);
    diagnostics.channel('keel:lock:contended').publish({ resource: 'orders:42', attempt: 1 });
    diagnostics.channel('keel:lock:quorum-failed').publish({ resource: 'orders:43' });
    diagnostics.channel('keel:lock:lost').publish({ resource: 'orders:42' });
    await diagnostics
      .tracingChannel('keel:lock:release')
      .tracePromise(() => Promise.resolve(true), { resource: 'orders:42', holdMs: 250 });

    const m = await s.collect();
    const acquireDuration = m.get('keel.lock.acquire.duration');
    expect(acquireDuration?.descriptor.unit).toBe('s');
    expect(point(acquireDuration, { 'keel.outcome': 'success' })).toMatchObject({ count: 1 });
    expect(point(acquireDuration, { 'keel.outcome': 'failure' })).toMatchObject({ count: 1 });
    expect(point(m.get('keel.lock.hold.duration'), {})).toMatchObject({ count: 1, sum: 0.25 });
    expect(point(m.get('keel.lock.contentions'), {})).toBe(1);
    expect(point(m.get('keel.lock.quorum_failures'), {})).toBe(1);
    expect(point(m.get('keel.lock.lost'), {})).toBe(1);

    const spans = s.spanExporter.getFinishedSpans();
    const acquired = spans.find(
      (span) =>
        span.name === 'keel.lock.acquire' && span.attributes['keel.lock.resource'] === 'orders:42',
    );
    expect(acquired?.attributes).toMatchObject({
      'keel.lock.votes': 3,
      'keel.lock.quorum': 2,
      'keel.lock.attempts': 2,
      'keel.lock.wait_ms': 12,
      'keel.lock.fencing_token': 7,
    });
    const refused = spans.find(
      (span) =>
        span.name === 'keel.lock.acquire' && span.attributes['keel.lock.resource'] === 'orders:43',
    );
    expect(refused?.status).toMatchObject({ code: 2, message: 'quorum not reached' });
    expect(spans.find((span) => span.name === 'keel.lock.release')?.attributes).toMatchObject({
      'keel.lock.hold_ms': 250,
    });
  });

  it('gives its seconds histograms bucket bounds for seconds: 1 ms and 1 s land in different buckets', async () => {
    // With no advice the SDK aggregates with its default bounds, meant for milliseconds
    // (0, 5, 10, 25 … 10 000): every Keel duration, in seconds, fell in the one bucket (0, 5].
    const s = sdk();
    cleanups.push(() => s.meterProvider.shutdown());
    const instrumentation = instrument({
      meterProvider: s.meterProvider,
      tracerProvider: s.tracerProvider,
    });
    cleanups.push(() => {
      instrumentation.dispose();
    });
    const release = diagnostics.tracingChannel('keel:lock:release');
    await release.tracePromise(() => Promise.resolve(true), { resource: 'a', holdMs: 1 });
    await release.tracePromise(() => Promise.resolve(true), { resource: 'b', holdMs: 1000 });

    const m = await s.collect();
    const hold = point(m.get('keel.lock.hold.duration'), {}) as
      { count: number; buckets: { boundaries: number[]; counts: number[] } } | undefined;
    expect(hold?.count).toBe(2);
    const counts = hold?.buckets.counts ?? [];
    const filled = counts.flatMap((n, i) => (n > 0 ? [i] : []));
    expect(filled).toHaveLength(2);
    // Every duration histogram Keel made has the same seconds bounds: sub-millisecond to 10 s.
    const histograms = [...m.values()].filter((metric) => metric.descriptor.unit === 's');
    expect(histograms.length).toBeGreaterThan(0);
    for (const metric of histograms) {
      for (const dataPoint of metric.dataPoints) {
        const bounds = (dataPoint.value as { buckets: { boundaries: number[] } }).buckets
          .boundaries;
        expect(bounds[0]).toBeLessThan(0.001);
        expect(bounds.at(-1)).toBe(10);
      }
    }
  });

  it('unsubscribes on dispose: nothing is recorded after, the channels go quiet', async () => {
    const s = sdk();
    cleanups.push(() => s.meterProvider.shutdown());
    const instrumentation = instrument({
      meterProvider: s.meterProvider,
      tracerProvider: s.tracerProvider,
    });
    expect(diagnostics.channel('keel:breaker:state-change').hasSubscribers).toBe(true);
    instrumentation.dispose();
    instrumentation.dispose(); // twice is safe
    expect(diagnostics.channel('keel:breaker:state-change').hasSubscribers).toBe(false);
    expect(diagnostics.tracingChannel('keel:lock:acquire').hasSubscribers).toBe(false);
    new CircuitBreaker({ name: 'late' }).trip();
    const m = await s.collect();
    expect(point(m.get('keel.breaker.transitions'), { 'keel.breaker.name': 'late' })).toBe(
      undefined,
    );
  });

  it('refuses options that are not providers, with a typed error', () => {
    for (const bad of [
      { meterProvider: {} },
      { tracerProvider: 'x' },
      { picks: 1 },
      { meter: 1 },
    ]) {
      let error: unknown;
      try {
        instrument(bad as never);
      } catch (e) {
        error = e;
      }
      expect(isInvalidOptionError(error)).toBe(true);
    }
  });
});
