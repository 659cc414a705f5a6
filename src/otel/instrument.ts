/**
 * `instrument()`: Keel's diagnostics channels → OpenTelemetry metrics and spans (issue 15).
 *
 * It listens to the channels BY NAME (`keel:<component>:<event>`, see core/diagnostics.ts), so
 * it imports no component: whichever parts of Keel an application uses, from whichever copy of
 * the package, are recorded. Names and units follow the OpenTelemetry semantic-convention
 * guidelines (https://opentelemetry.io/docs/specs/semconv/general/metrics/): dotted lower-case
 * names under the `keel.` namespace, durations as histograms in seconds (`s`), counts as
 * counters with a `{thing}` annotation unit, states as gauges, and attributes namespaced
 * `keel.<component>.<field>`. Attributes on metrics are kept to bounded sets (breaker name,
 * balancer name, service, outcome); unbounded values (lock resources, endpoint ids, instance
 * ids) go on spans only.
 *
 * @packageDocumentation
 */
import diagnostics from 'node:diagnostics_channel';
import {
  SpanStatusCode,
  metrics,
  trace,
  type Attributes,
  type Counter,
  type Histogram,
  type Meter,
  type MeterProvider,
  type ObservableResult,
  type Span,
  type Tracer,
  type TracerProvider,
} from '@opentelemetry/api';
import { booleanOption, guardedOption, resolveOptions } from '../core/index.js';

/** Options of {@link instrument}. */
export interface InstrumentOptions {
  /** Where metrics go. @defaultValue the global `MeterProvider` (`metrics.getMeterProvider()`) */
  readonly meterProvider?: MeterProvider | undefined;
  /** Where spans go. @defaultValue the global `TracerProvider` (`trace.getTracerProvider()`) */
  readonly tracerProvider?: TracerProvider | undefined;
  /**
   * Also count every balancer pick (`keel.balancer.picks`). Off by default: subscribing to
   * `keel:balancer:pick` makes every pick publish a message.
   * @defaultValue false
   */
  readonly picks?: boolean | undefined;
}

/** What {@link instrument} returns: dispose it to unsubscribe from every channel. */
export interface Instrumentation extends Disposable {
  /** Unsubscribes from every channel and stops reporting the gauges. Safe to call twice. */
  dispose(): void;
}

/**
 * Bucket bounds (seconds) advised for every duration histogram. Without advice an SDK
 * aggregates with the specification's default bounds (0, 5, 10, 25 … 10 000), which were chosen
 * for milliseconds: every Keel duration, recorded in seconds, would fall in the first bucket.
 * These follow the bounds the HTTP semantic conventions advise for `http.server.request.duration`
 * (https://opentelemetry.io/docs/specs/semconv/http/http-metrics/), reaching down to 0.5 ms for
 * the sub-millisecond operations Keel times (a lock acquired on a loopback Redis, a call through
 * a breaker). An application's own View still overrides them (advice is a hint; the SDK applies
 * a matching View's aggregation first: the metrics SDK specification, "Instrument advisory
 * parameters").
 */
const SECONDS_BUCKETS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** The scope name of Keel's meter and tracer. */
export const INSTRUMENTATION_SCOPE = 'keel';

const isMeterProvider = (v: unknown): v is MeterProvider =>
  typeof v === 'object' && v !== null && typeof (v as MeterProvider).getMeter === 'function';
const isTracerProvider = (v: unknown): v is TracerProvider =>
  typeof v === 'object' && v !== null && typeof (v as TracerProvider).getTracer === 'function';

type Message = Record<string, unknown>;

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: unknown): number | undefined =>
  typeof v === 'number' && Number.isFinite(v) ? v : undefined;
/** A count from a number, an array (its length) or an object of per-node answers. */
const count = (v: unknown): number | undefined =>
  num(v) ?? (Array.isArray(v) ? v.length : undefined);

/** Copies the defined, primitive values of `fields` into span attributes. */
function attributes(fields: Record<string, unknown>): Attributes {
  const out: Attributes = {};
  for (const [key, value] of Object.entries(fields)) {
    if (typeof value === 'string' || typeof value === 'boolean') out[key] = value;
    else if (typeof value === 'number' && Number.isFinite(value)) out[key] = value;
    else if (typeof value === 'bigint') out[key] = value.toString();
  }
  return out;
}

/** Reads a field from the context or, after the operation, from its result. */
function field(context: Message, ...names: string[]): unknown {
  const result = context.result;
  for (const name of names) {
    if (context[name] !== undefined) return context[name];
    if (typeof result === 'object' && result !== null) {
      const value = (result as Message)[name];
      if (value !== undefined && typeof value !== 'function') return value;
    }
  }
  return undefined;
}

interface Operation {
  /** Span name, e.g. `keel.lock.acquire`. */
  readonly span: string;
  /** Attributes when the operation starts. */
  readonly start: (context: Message) => Record<string, unknown>;
  /** Attributes when it ends (the context then has `result` or `error`). */
  readonly end?: (context: Message) => Record<string, unknown>;
  /** Records the duration (seconds) and the outcome. */
  readonly record: (seconds: number, ok: boolean, context: Message) => void;
}

/**
 * Subscribes to Keel's diagnostics channels and records them as OpenTelemetry metrics and
 * spans. Call it once at start-up, after the SDK is set up; dispose the result to stop.
 *
 * @example
 * ```ts
 * import { metrics, trace } from '@opentelemetry/api';
 * import { instrument } from 'keel/otel';
 *
 * const instrumentation = instrument({
 *   meterProvider: metrics.getMeterProvider(),
 *   tracerProvider: trace.getTracerProvider(),
 * });
 * // … on shutdown:
 * instrumentation.dispose();
 * ```
 */
export function instrument(options: InstrumentOptions = {}): Instrumentation {
  const o = resolveOptions('instrument', options, {
    meterProvider: guardedOption(isMeterProvider, 'a MeterProvider (with getMeter)', {
      optional: true,
    }),
    tracerProvider: guardedOption(isTracerProvider, 'a TracerProvider (with getTracer)', {
      optional: true,
    }),
    picks: booleanOption({ default: false }),
  });
  const meter: Meter = (o.meterProvider ?? metrics.getMeterProvider()).getMeter(
    INSTRUMENTATION_SCOPE,
  );
  const tracer: Tracer = (o.tracerProvider ?? trace.getTracerProvider()).getTracer(
    INSTRUMENTATION_SCOPE,
  );
  const undo: (() => void)[] = [];

  const on = (name: string, listener: (message: Message) => void): void => {
    const wrapped = (message: unknown): void => {
      if (typeof message === 'object' && message !== null) listener(message as Message);
    };
    diagnostics.subscribe(name, wrapped);
    undo.push(() => {
      diagnostics.unsubscribe(name, wrapped);
    });
  };

  const counter = (name: string, unit: string, description: string): Counter =>
    meter.createCounter(name, { unit, description });
  const seconds = (name: string, description: string): Histogram =>
    meter.createHistogram(name, {
      unit: 's',
      description,
      advice: { explicitBucketBoundaries: [...SECONDS_BUCKETS] },
    });

  /** A traced operation: a span from start to asyncEnd, and its duration recorded. */
  const operation = (channel: string, op: Operation): void => {
    const live = new WeakMap<object, { span: Span; started: number }>();
    const finish = (context: Message): void => {
      const entry = live.get(context);
      if (entry === undefined) return;
      live.delete(context);
      const ok = context.error === undefined;
      const { span, started } = entry;
      span.setAttributes(attributes(op.end?.(context) ?? {}));
      if (!ok) {
        const error = context.error;
        if (error instanceof Error) span.recordException(error);
        span.setStatus({
          code: SpanStatusCode.ERROR,
          message: error instanceof Error ? error.message : String(error),
        });
      }
      span.end();
      op.record((performance.now() - started) / 1000, ok, context);
    };
    const handlers = {
      start: (message: unknown): void => {
        const context = message as Message;
        const span = tracer.startSpan(op.span, { attributes: attributes(op.start(context)) });
        live.set(context, { span, started: performance.now() });
      },
      end: (message: unknown): void => {
        // A synchronous throw ends the operation here (no asyncEnd follows).
        const context = message as Message;
        if (context.error !== undefined) finish(context);
      },
      asyncStart: (): void => undefined,
      asyncEnd: (message: unknown): void => {
        finish(message as Message);
      },
      error: (): void => undefined,
    };
    const tracing = diagnostics.tracingChannel(channel);
    tracing.subscribe(handlers);
    undo.push(() => {
      tracing.unsubscribe(handlers);
    });
  };

  // --- lock ---------------------------------------------------------------------------------
  const lockAcquireDuration = seconds(
    'keel.lock.acquire.duration',
    'Time to acquire a lock, waiting and retries included',
  );
  const lockHoldDuration = seconds('keel.lock.hold.duration', 'How long locks were held');
  const lockExtends = counter('keel.lock.extensions', '{extension}', 'Lock extensions');
  const lockLost = counter('keel.lock.lost', '{lock}', 'Locks lost before release');
  const lockQuorumFailed = counter(
    'keel.lock.quorum_failures',
    '{attempt}',
    'Acquire attempts that did not reach a quorum',
  );
  const lockContended = counter(
    'keel.lock.contentions',
    '{attempt}',
    'Acquire attempts that found the lock held',
  );
  const lockSpanFields = (context: Message): Record<string, unknown> => ({
    'keel.lock.resource': str(field(context, 'resource')),
    'keel.lock.votes': count(field(context, 'votes')),
    'keel.lock.quorum': num(field(context, 'quorum')),
    'keel.lock.attempts': num(field(context, 'attempts', 'attempt')),
    'keel.lock.wait_ms': num(field(context, 'waitMs')),
    'keel.lock.hold_ms': num(field(context, 'holdMs')),
    'keel.lock.fencing_token': field(context, 'fencingToken', 'token'),
  });
  const outcome = (ok: boolean): Attributes => ({ 'keel.outcome': ok ? 'success' : 'failure' });
  operation('keel:lock:acquire', {
    span: 'keel.lock.acquire',
    start: (c) => ({ 'keel.lock.resource': str(c.resource) }),
    end: lockSpanFields,
    record: (s, ok) => {
      lockAcquireDuration.record(s, outcome(ok));
    },
  });
  operation('keel:lock:extend', {
    span: 'keel.lock.extend',
    start: (c) => ({ 'keel.lock.resource': str(c.resource) }),
    end: lockSpanFields,
    record: (_s, ok) => {
      lockExtends.add(1, outcome(ok));
    },
  });
  operation('keel:lock:release', {
    span: 'keel.lock.release',
    start: (c) => ({ 'keel.lock.resource': str(c.resource) }),
    end: lockSpanFields,
    record: (_s, _ok, c) => {
      const held = num(field(c, 'holdMs'));
      if (held !== undefined) lockHoldDuration.record(held / 1000);
    },
  });
  on('keel:lock:lost', () => {
    lockLost.add(1);
  });
  on('keel:lock:quorum-failed', () => {
    lockQuorumFailed.add(1);
  });
  on('keel:lock:contended', () => {
    lockContended.add(1);
  });

  // --- breaker ------------------------------------------------------------------------------
  const breakerStates = new Map<string, string>();
  const STATES = ['closed', 'open', 'half-open', 'forced-open', 'disabled', 'metrics-only'];
  const transitions = counter(
    'keel.breaker.transitions',
    '{transition}',
    'Circuit breaker state changes',
  );
  const rejected = counter(
    'keel.breaker.rejected_calls',
    '{call}',
    'Calls a circuit breaker rejected without running them',
  );
  const callDuration = seconds(
    'keel.breaker.call.duration',
    'Duration of calls through a breaker with traceExecute',
  );
  on('keel:breaker:state-change', (m) => {
    const name = str(m.name) ?? 'breaker';
    const to = str(m.to) ?? 'closed';
    breakerStates.set(name, to);
    transitions.add(1, {
      'keel.breaker.name': name,
      'keel.breaker.from': str(m.from) ?? '',
      'keel.breaker.to': to,
    });
  });
  on('keel:breaker:call-rejected', (m) => {
    rejected.add(1, {
      'keel.breaker.name': str(m.name) ?? 'breaker',
      'keel.breaker.state': str(m.state) ?? '',
    });
  });
  operation('keel:breaker:execute', {
    span: 'keel.breaker.execute',
    start: (c) => ({ 'keel.breaker.name': str(c.name), 'keel.breaker.state': str(c.state) }),
    record: (s, ok, c) => {
      callDuration.record(s, { 'keel.breaker.name': str(c.name) ?? 'breaker', ...outcome(ok) });
    },
  });
  const stateGauge = meter.createObservableGauge('keel.breaker.state', {
    unit: '1',
    description:
      'Circuit breaker state: 1 for the state a breaker is in, 0 for the others (breakers seen changing state)',
  });
  const observeStates = (result: ObservableResult): void => {
    for (const [name, current] of breakerStates) {
      for (const state of STATES) {
        result.observe(state === current ? 1 : 0, {
          'keel.breaker.name': name,
          'keel.breaker.state': state,
        });
      }
    }
  };
  stateGauge.addCallback(observeStates);
  undo.push(() => {
    stateGauge.removeCallback(observeStates);
  });

  // --- balancer -----------------------------------------------------------------------------
  const ejectedNow = new Map<string, number>();
  const panicNow = new Map<string, number>();
  const balancerName = (m: Message): string => str(m.balancer) ?? '';
  const ejections = counter('keel.balancer.ejections', '{ejection}', 'Outlier ejections');
  const panics = counter('keel.balancer.panics', '{panic}', 'Times a balancer entered panic mode');
  on('keel:balancer:endpoint-ejected', (m) => {
    const name = balancerName(m);
    ejections.add(1, { 'keel.balancer.name': name });
    ejectedNow.set(name, num(m.ejected) ?? 0);
  });
  on('keel:balancer:endpoint-returned', (m) => {
    ejectedNow.set(balancerName(m), num(m.ejected) ?? 0);
  });
  on('keel:balancer:panic-entered', (m) => {
    const name = balancerName(m);
    panics.add(1, { 'keel.balancer.name': name });
    panicNow.set(name, 1);
  });
  on('keel:balancer:panic-left', (m) => {
    panicNow.set(balancerName(m), 0);
  });
  if (o.picks) {
    const picks = counter('keel.balancer.picks', '{pick}', 'Endpoints handed out by balancers');
    on('keel:balancer:pick', (m) => {
      picks.add(1, { 'keel.balancer.name': balancerName(m) });
    });
  }
  const ejectedGauge = meter.createObservableGauge('keel.balancer.ejected', {
    unit: '{endpoint}',
    description: 'Endpoints ejected by outlier detection now (Envoy: ejections_active)',
  });
  const panicGauge = meter.createObservableGauge('keel.balancer.panic', {
    unit: '1',
    description: '1 while a balancer is in panic mode (Envoy: lb_healthy_panic)',
  });
  const observeEjected = (result: ObservableResult): void => {
    for (const [name, n] of ejectedNow) result.observe(n, { 'keel.balancer.name': name });
  };
  const observePanic = (result: ObservableResult): void => {
    for (const [name, n] of panicNow) result.observe(n, { 'keel.balancer.name': name });
  };
  ejectedGauge.addCallback(observeEjected);
  panicGauge.addCallback(observePanic);
  undo.push(() => {
    ejectedGauge.removeCallback(observeEjected);
    panicGauge.removeCallback(observePanic);
  });

  // --- discovery ----------------------------------------------------------------------------
  const views = new Map<string, { instances: number; up: number; stale: number }>();
  const viewOf = (service: string): { instances: number; up: number; stale: number } => {
    let view = views.get(service);
    if (view === undefined) {
      view = { instances: 0, up: 0, stale: 0 };
      views.set(service, view);
    }
    return view;
  };
  const service = (m: Message): string => str(m.service) ?? '';
  const resyncDuration = seconds('keel.discovery.resync.duration', 'Snapshot reads of a view');
  const registerDuration = seconds(
    'keel.discovery.register.duration',
    'Registrations written to the store',
  );
  const quarantined = counter(
    'keel.discovery.quarantined',
    '{record}',
    'Records and change-log entries quarantined',
  );
  const reregistrations = counter(
    'keel.discovery.reregistrations',
    '{registration}',
    'Registrations written again after the store lost them',
  );
  const heartbeatFailures = counter(
    'keel.discovery.heartbeat_failures',
    '{heartbeat}',
    'Heartbeats that did not reach the store',
  );
  const epochChanges = counter(
    'keel.discovery.epoch_changes',
    '{change}',
    'Store data losses seen by a view',
  );
  operation('keel:discovery:register', {
    span: 'keel.discovery.register',
    start: (c) => ({
      'keel.discovery.service': str(c.service),
      'keel.discovery.instance': str(c.id),
      'keel.discovery.ttl_ms': num(c.ttlMs),
    }),
    record: (s, ok, c) => {
      registerDuration.record(s, { 'keel.discovery.service': service(c), ...outcome(ok) });
    },
  });
  operation('keel:discovery:resync', {
    span: 'keel.discovery.resync',
    start: (c) => ({
      'keel.discovery.service': str(c.service),
      'keel.discovery.reason': str(c.reason),
    }),
    end: (c) => {
      const result = c.result as Message | undefined;
      return {
        'keel.discovery.revision': num(result?.revision),
        'keel.discovery.epoch': str(result?.epoch),
        'keel.discovery.records': Array.isArray(result?.records)
          ? result.records.length
          : undefined,
      };
    },
    record: (s, ok, c) => {
      resyncDuration.record(s, { 'keel.discovery.service': service(c), ...outcome(ok) });
    },
  });
  on('keel:discovery:view-changed', (m) => {
    const view = viewOf(service(m));
    view.instances = num(m.instances) ?? 0;
    view.up = num(m.up) ?? 0;
  });
  on('keel:discovery:stale', (m) => {
    viewOf(service(m)).stale = 1;
  });
  on('keel:discovery:fresh', (m) => {
    viewOf(service(m)).stale = 0;
  });
  on('keel:discovery:quarantined', (m) => {
    quarantined.add(1, { 'keel.discovery.service': service(m) });
  });
  on('keel:discovery:re-registered', (m) => {
    reregistrations.add(1, { 'keel.discovery.service': service(m) });
  });
  on('keel:discovery:heartbeat-failed', (m) => {
    heartbeatFailures.add(1, { 'keel.discovery.service': service(m) });
  });
  on('keel:discovery:epoch-changed', (m) => {
    epochChanges.add(1, { 'keel.discovery.service': service(m) });
  });
  const viewSize = meter.createObservableGauge('keel.discovery.view.size', {
    unit: '{instance}',
    description: 'Instances in a view, by status (all, up)',
  });
  const viewStale = meter.createObservableGauge('keel.discovery.view.stale', {
    unit: '1',
    description: '1 while a view may be out of date (store unreachable, resync failing)',
  });
  const observeSize = (result: ObservableResult): void => {
    for (const [name, view] of views) {
      result.observe(view.instances, {
        'keel.discovery.service': name,
        'keel.discovery.status': 'all',
      });
      result.observe(view.up, { 'keel.discovery.service': name, 'keel.discovery.status': 'up' });
    }
  };
  const observeStale = (result: ObservableResult): void => {
    for (const [name, view] of views)
      result.observe(view.stale, { 'keel.discovery.service': name });
  };
  viewSize.addCallback(observeSize);
  viewStale.addCallback(observeStale);
  undo.push(() => {
    viewSize.removeCallback(observeSize);
    viewStale.removeCallback(observeStale);
  });

  // --- hashring -----------------------------------------------------------------------------
  const rebuilds = counter('keel.hashring.rebuilds', '{change}', 'Hash ring node-set changes');
  on('keel:hashring:rebuilt', (m) => {
    rebuilds.add(1, {
      'keel.hashring.change': str(m.change) ?? '',
      'keel.hashring.mode': str(m.mode) ?? '',
    });
  });

  let active = true;
  const dispose = (): void => {
    if (!active) return;
    active = false;
    for (const step of undo.reverse()) step();
  };
  return { dispose, [Symbol.dispose]: dispose };
}
