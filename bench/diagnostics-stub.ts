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

export class KeelChannel {
  readonly name: string;
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

/** A channel nobody can subscribe to, with the shape of one of a TracingChannel's five. */
const silent = {
  hasSubscribers: false,
  publish: (): void => undefined,
  subscribe: (): void => undefined,
  unsubscribe: (): boolean => false,
};

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
