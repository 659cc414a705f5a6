/**
 * `node:diagnostics_channel`, the one source of Keel's observability (issue 15): every component
 * publishes on named channels, and `keel/otel`, APM agents and tests subscribe by name.
 *
 * **Naming.** `keel:<component>:<event>` for events (`keel:lock:lost`,
 * `keel:breaker:state-change`), and the same scheme for operations that take time, published
 * through a `TracingChannel` (`keel:lock:acquire` gives Node's
 * `tracing:keel:lock:acquire:start` / `end` / `asyncStart` / `asyncEnd` / `error`, see
 * https://nodejs.org/docs/latest-v20.x/api/diagnostics_channel.html#class-tracingchannel).
 * Components and events are lower-case words joined by `-`.
 *
 * **Cost.** Publishing is guarded by `hasSubscribers`, so with nobody listening a publish is
 * one property read and the message object is never built: callers test
 * {@link KeelChannel.active} before building it.
 *
 * **Messages** are plain objects. Each carries `time`, wall-clock epoch milliseconds
 * (`Date.now()`), so it can be put on a dashboard, beside whatever monotonic durations the
 * event has (`waitMs`, `holdMs`).
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * @packageDocumentation
 */
import diagnostics, { type Channel, type TracingChannel } from 'node:diagnostics_channel';
import { InvalidOptionError } from './options.js';

/** The components that publish, in the order of the layout in DESIGN.md. */
export type KeelComponent =
  | 'hashring'
  | 'lock'
  | 'balancer'
  | 'breaker'
  | 'discovery'
  | 'resilience'
  | 'cache'
  | 'queue'
  | 'saga';

const WORD = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;

/** `keel:<component>:<event>`; throws for names outside the scheme (a bug, not input). */
export function channelName(component: KeelComponent, event: string): string {
  if (!WORD.test(component) || !WORD.test(event)) {
    throw new InvalidOptionError(
      'channelName',
      'event',
      "lower-case words joined by '-' (keel:<component>:<event>)",
      `keel:${component}:${event}`,
    );
  }
  return `keel:${component}:${event}`;
}

/**
 * One named event channel carrying messages of type `T`. `publish` does nothing without a
 * subscriber; test {@link KeelChannel.active} first when the message costs anything to build.
 */
export class KeelChannel<T extends object> {
  /** The channel's name, `keel:<component>:<event>`. */
  readonly name: string;
  /**
   * Node's channel of that name. A per-call guard reads `hasSubscribers` on it, held in a
   * module constant (`const guard = someChannel.channel`): one property read fewer than
   * {@link KeelChannel.active}, which reads it through this object.
   */
  readonly channel: Channel;
  readonly #channel: Channel;

  constructor(component: KeelComponent, event: string) {
    this.name = channelName(component, event);
    this.#channel = this.channel = diagnostics.channel(this.name);
  }

  /** True when somebody subscribed to this channel (by name, through any module copy). */
  get active(): boolean {
    return this.#channel.hasSubscribers;
  }

  /** Publishes `message` to the channel's subscribers, if any. */
  publish(message: T): void {
    if (this.#channel.hasSubscribers) this.#channel.publish(message);
  }
}

/**
 * The `TracingChannel` for an operation that takes time, `keel:<component>:<operation>`. Use
 * `channel.hasSubscribers ? channel.tracePromise(fn, context) : fn()` so the untraced path costs
 * one property read.
 */
export function operationChannel<C extends object>(
  component: KeelComponent,
  operation: string,
): TracingChannel<unknown, C> {
  return diagnostics.tracingChannel<unknown, C>(channelName(component, operation));
}

/** Wall-clock epoch milliseconds, the `time` every message carries. */
export function wallTime(): number {
  return Date.now();
}
