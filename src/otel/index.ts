/**
 * `keel/otel` — Keel's `node:diagnostics_channel` channels recorded as OpenTelemetry metrics and
 * spans. The only part of Keel that imports `@opentelemetry/api` (an optional peer dependency:
 * install it to use this subpath).
 *
 * @module keel/otel
 */
export { instrument, INSTRUMENTATION_SCOPE } from './instrument.js';
export type { InstrumentOptions, Instrumentation } from './instrument.js';
