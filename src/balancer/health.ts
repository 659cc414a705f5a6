/**
 * The balancer's health layer, apart from any pick strategy (as Envoy keeps outlier detection
 * apart from its load balancers): passive outlier ejection with its cap, panic mode and slow
 * start. It decides which endpoints are usable and at what weight, and writes that into each
 * {@link EndpointState} (`available`, `effectiveWeight`) for the strategies to read.
 *
 * It is a pure state machine over the endpoint list: no timers and no clock of its own. Every
 * method takes the time `now` (ms, from the balancer's injected clock), so tests drive it with
 * plain numbers and every decision is a function of the calls made.
 *
 * @internal
 * @packageDocumentation
 */
import { EventChannel, wallTime } from '../core/index.js';
import {
  ejectedChannel,
  panicEnteredChannel,
  panicLeftChannel,
  returnedChannel,
} from './channels.js';
import { NOT_EJECTED, type EndpointState } from './state.js';
import type { HealthChange } from './types.js';

/** Slow-start weight factors are quantised to this many steps, so tables rebuild rarely. */
export const SLOW_START_STEPS = 32;

/** Resolved (validated) settings of the health layer; see `LoadBalancerOptions`. */
export interface HealthSettings {
  readonly outlierEjection: {
    /** Consecutive failures that eject an endpoint; 0 turns ejection off. */
    readonly consecutiveFailures: number;
    /** First ejection length; the n-th ejection lasts n times this, up to `maxEjectionMs`. */
    readonly baseEjectionMs: number;
    readonly maxEjectionMs: number;
    /** Most endpoints ejected at once, as a percentage of all (rounded down). */
    readonly maxEjectionPercent: number;
  };
  /** Below this percentage of usable endpoints, every endpoint is usable; 0: never. */
  readonly panicThresholdPercent: number;
  readonly slowStart: {
    /** Length of the ramp; 0 turns slow start off. */
    readonly windowMs: number;
    /** Weight at the start of the ramp, as a percentage of the full weight. */
    readonly minWeightPercent: number;
    /** The weight factor is `progress^(1/aggression)`. */
    readonly aggression: number;
  };
}

/**
 * Outlier ejection, the ejection cap, panic mode and slow start over one endpoint list.
 *
 * The balancer calls {@link Health.reset} when its list changes, {@link Health.record} for every
 * finished call and {@link Health.advance} before any operation once the clock has reached
 * {@link Health.nextChange}. After each of them the invariants hold: at most
 * `maxEjectionPercent` of the list ejected, `panicking` exactly when too few are usable, every
 * `available` and `effectiveWeight` current. `onChange(nextChange)` runs whenever usability or a
 * weight may have changed, once the new state is computed and before any health event is emitted
 * (listeners may pick).
 */
export class Health<T = unknown> {
  readonly #settings: HealthSettings;
  readonly #onChange: (nextChange: number) => void;
  #states: readonly EndpointState<T>[] = [];
  #ejected = 0;
  #panic = false;
  /** The panic state last told (or that would have been, had anyone listened). */
  #panicTold = false;
  /**
   * Earliest clock time at which something time-based changes (an ejection ends, a slow-start
   * ramp steps); `Infinity` when nothing is pending. A plain field, read on every pick.
   */
  nextChange = Infinity;
  /** Ejections and returns, emitted once the state is consistent again. */
  readonly changes = new EventChannel<HealthChange>();

  /** Events caused while one is being told, told after it; undefined when none is. */
  #telling: (() => void)[] | undefined;

  /** The balancer's name, for the diagnostics channels. */
  readonly #name: string | undefined;

  constructor(settings: HealthSettings, onChange: (nextChange: number) => void, name?: string) {
    this.#settings = settings;
    this.#onChange = onChange;
    this.#name = name;
  }

  /** Whether panic mode is on (as of the last call): ejections are ignored. */
  get panicking(): boolean {
    return this.#panic;
  }

  /** Endpoints ejected now (as of the last call). */
  get ejectedCount(): number {
    return this.#ejected;
  }

  /**
   * The endpoint list changed (states that stayed keep their ejection and ramp). When the
   * shorter list would leave more endpoints ejected than the cap allows, the ones whose
   * ejection would end first return early (list order on a tie), with a `returned` event.
   */
  reset(states: readonly EndpointState<T>[], now: number): void {
    this.#states = states;
    this.#ejected = 0;
    for (const state of states) if (state.ejectedUntil !== NOT_EJECTED) this.#ejected++;
    const returned = this.#enforceCap(now);
    this.#recompute(now);
    if (returned !== undefined) for (const id of returned) this.#returned(id);
    this.#panicChanged();
  }

  /**
   * A call on `state` (which must be in the list) finished: counts it, and after
   * `consecutiveFailures` failures in a row ejects the endpoint — unless that would exceed the
   * cap, in which case it stays in rotation.
   */
  record(state: EndpointState<T>, ok: boolean, now: number): void {
    if (ok) {
      state.successes++;
      state.consecutiveFailures = 0;
      return;
    }
    state.failures++;
    state.consecutiveFailures++;
    const limit = this.#settings.outlierEjection.consecutiveFailures;
    if (limit > 0 && state.consecutiveFailures >= limit && state.ejectedUntil === NOT_EJECTED)
      this.#eject(state, now);
  }

  /**
   * Applies what time changed by `now`: ejections that ended (their ramp starts when the
   * ejection ended, not when someone noticed) and slow-start steps. Does nothing before
   * {@link Health.nextChange}.
   */
  advance(now: number): void {
    if (now < this.nextChange) return;
    let returned: string[] | undefined;
    for (const state of this.#states) {
      if (state.ejectedUntil !== NOT_EJECTED && state.ejectedUntil <= now) {
        state.warmingSince = state.ejectedUntil;
        state.ejectedUntil = NOT_EJECTED;
        this.#ejected--;
        (returned ??= []).push(state.endpoint.id);
      }
    }
    this.#recompute(now);
    if (returned !== undefined) for (const id of returned) this.#returned(id);
    this.#panicChanged();
  }

  /** Slow start: the weight of `state` at time `now`, on a quantised ramp. */
  weightAt(state: EndpointState<T>, now: number): number {
    const weight = state.endpoint.weight;
    const { windowMs, minWeightPercent, aggression } = this.#settings.slowStart;
    if (windowMs === 0) return weight;
    const progress = (now - state.warmingSince) / windowMs;
    if (progress >= 1) return weight;
    const step = Math.floor(Math.max(0, progress) * SLOW_START_STEPS) / SLOW_START_STEPS;
    const factor = Math.max(minWeightPercent / 100, step ** (1 / aggression));
    // On a 1/1024 grid: exact binary fractions keep weight sums exact, which smooth weighted
    // round-robin's grouped form needs to stay grouped (and equal to nginx's loop).
    return Math.max(1 / 1024, Math.round(weight * factor * 1024) / 1024);
  }

  /** Most endpoints that may be ejected at once with the current list. */
  #cap(): number {
    return Math.floor(
      (this.#states.length * this.#settings.outlierEjection.maxEjectionPercent) / 100,
    );
  }

  #eject(state: EndpointState<T>, now: number): void {
    if (this.#ejected + 1 > this.#cap()) return; // would exceed the cap: keep it in rotation
    const { baseEjectionMs, maxEjectionMs } = this.#settings.outlierEjection;
    state.timesEjected++;
    state.ejectedUntil = now + Math.min(baseEjectionMs * state.timesEjected, maxEjectionMs);
    state.consecutiveFailures = 0;
    this.#ejected++;
    this.#recompute(now);
    this.#ejectedNow(state, now);
    this.#panicChanged();
  }

  // The one place each health event is told from: typed listeners and the diagnostics channel.
  // Nothing is built (not even a clock read) when neither listens.

  #ejectedNow(state: EndpointState<T>, now: number): void {
    const typed = this.changes.active;
    if (!typed && !ejectedChannel.active) return;
    const id = state.endpoint.id;
    const until = state.ejectedUntil;
    const time = wallTime();
    const untilTime = time + (until - now);
    const message = {
      balancer: this.#name,
      id,
      until,
      untilTime,
      timesEjected: state.timesEjected,
      ejected: this.#ejected,
      total: this.#states.length,
      time,
    };
    this.#tell(() => {
      if (typed) this.changes.emit({ id, state: 'ejected', until, untilTime, time });
      ejectedChannel.publish(message);
    });
  }

  #returned(id: string): void {
    const typed = this.changes.active;
    if (!typed && !returnedChannel.active) return;
    const time = wallTime();
    const message = {
      balancer: this.#name,
      id,
      ejected: this.#ejected,
      total: this.#states.length,
      time,
    };
    this.#tell(() => {
      if (typed) this.changes.emit({ id, state: 'returned', time });
      returnedChannel.publish(message);
    });
  }

  /**
   * Panic mode entered or left since last told: tells the channel. Compared with what was last
   * told, not with the state when the caller began: a listener's `update()` in between may have
   * told it already (an entry told twice would count two panics).
   */
  #panicChanged(): void {
    if (this.#panic === this.#panicTold) return;
    this.#panicTold = this.#panic;
    const channel = this.#panic ? panicEnteredChannel : panicLeftChannel;
    if (!channel.active) return;
    const total = this.#states.length;
    const message = {
      balancer: this.#name,
      usable: total - this.#ejected,
      total,
      thresholdPercent: this.#settings.panicThresholdPercent,
      time: wallTime(),
    };
    this.#tell(() => {
      channel.publish(message);
    });
  }

  /**
   * Tells one event (its message made when it happened). An event caused by a listener or
   * subscriber of another (an `update()` from `onHealthChange`) waits until everyone has heard
   * that one, so every observer hears events in the order they happened. Nothing in `deliver`
   * throws (listeners' and subscribers' errors are rethrown on a later tick).
   */
  #tell(deliver: () => void): void {
    const telling = this.#telling;
    if (telling !== undefined) {
      telling.push(deliver);
      return;
    }
    const queue = (this.#telling = [deliver]);
    for (let i = 0; i < queue.length; i++) (queue[i] as () => void)();
    this.#telling = undefined;
  }

  /** Returns ejected endpoints early until the cap holds; their ids, or undefined if none. */
  #enforceCap(now: number): string[] | undefined {
    const max = this.#cap();
    if (this.#ejected <= max) return undefined;
    const ejected = this.#states
      .filter((state) => state.ejectedUntil !== NOT_EJECTED)
      .sort((a, b) => a.ejectedUntil - b.ejectedUntil || a.index - b.index);
    const returned: string[] = [];
    for (const state of ejected) {
      if (this.#ejected <= max) break;
      state.ejectedUntil = NOT_EJECTED;
      state.warmingSince = now;
      this.#ejected--;
      returned.push(state.endpoint.id);
    }
    return returned;
  }

  /**
   * Usability or weights may have changed: recomputes panic mode, every `available` and
   * `effectiveWeight`, and `nextChange`, then tells the balancer (which bumps its pick context's
   * version and keeps its own copy of `nextChange`, read on every pick).
   */
  #recompute(now: number): void {
    const total = this.#states.length;
    const usable = total - this.#ejected;
    const threshold = this.#settings.panicThresholdPercent;
    this.#panic = total > 0 && threshold > 0 && (usable * 100) / total < threshold;
    let next = Infinity;
    const window = this.#settings.slowStart.windowMs;
    for (const state of this.#states) {
      state.effectiveWeight = this.weightAt(state, now);
      state.available = this.#panic || state.ejectedUntil === NOT_EJECTED;
      if (state.ejectedUntil !== NOT_EJECTED) next = Math.min(next, state.ejectedUntil);
      if (window > 0) {
        const progress = (now - state.warmingSince) / window;
        if (progress < 1) {
          // The next quantised step of this endpoint's ramp.
          const nextStep =
            (Math.floor(Math.max(0, progress) * SLOW_START_STEPS) + 1) / SLOW_START_STEPS;
          next = Math.min(next, state.warmingSince + nextStep * window);
        }
      }
    }
    this.nextChange = next;
    this.#onChange(next);
  }
}
