/**
 * The baseline of `diagnostics.bench.ts`: `src/core/diagnostics.ts` with publishing compiled
 * out. Same exports; every channel reports no subscriber, always — a constant the JIT folds, so
 * the components' `if (channel.active)` / `hasSubscribers` guards and the code behind them are
 * as good as absent. Bundled in place of the real module by esbuild; never imported otherwise.
 */
import type { TracingChannel } from 'node:diagnostics_channel';

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

export function channelName(component: KeelComponent, event: string): string {
  return `keel:${component}:${event}`;
}

/**
 * A channel nobody can subscribe to. `hasSubscribers` is a getter on the class, as on Node's
 * own `Channel`, so a guard reading it costs what reading a real channel without subscribers
 * costs beyond its answer being constant: one map check (a data property would add a load).
 */
class SilentChannel {
  get hasSubscribers(): boolean {
    return false;
  }
  publish(): void {
    // compiled out
  }
  subscribe(): void {
    // compiled out
  }
  unsubscribe(): boolean {
    return false;
  }
}

const silent = new SilentChannel();

export class KeelChannel {
  readonly name: string;
  readonly channel = silent;
  constructor(component: KeelComponent, event: string) {
    this.name = channelName(component, event);
  }
  get active(): boolean {
    return false;
  }
  publish(): void {
    // compiled out
  }
}

const inert = {
  hasSubscribers: false,
  start: silent,
  end: silent,
  asyncStart: silent,
  asyncEnd: silent,
  error: silent,
  subscribe: (): void => undefined,
  unsubscribe: (): boolean => false,
  traceSync: (
    fn: (...args: unknown[]) => unknown,
    _context?: object,
    thisArg?: unknown,
    ...args: unknown[]
  ) => Reflect.apply(fn, thisArg, args),
  tracePromise: (
    fn: (...args: unknown[]) => unknown,
    _context?: object,
    thisArg?: unknown,
    ...args: unknown[]
  ) => Reflect.apply(fn, thisArg, args),
  traceCallback: (
    fn: (...args: unknown[]) => unknown,
    _position?: number,
    _context?: object,
    thisArg?: unknown,
    ...args: unknown[]
  ) => Reflect.apply(fn, thisArg, args),
};

export function operationChannel<C extends object>(): TracingChannel<unknown, C> {
  return inert as unknown as TracingChannel<unknown, C>;
}

export function wallTime(): number {
  return Date.now();
}
