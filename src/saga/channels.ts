/**
 * The saga's diagnostics channels (`keel:saga:<event>`), fed from the same place as the typed
 * `onTransition` events. Internal module.
 * @packageDocumentation
 */
import { KeelChannel } from '../core/index.js';
import type { SagaStatus } from './state.js';

/** A transition Redis accepted (`keel:saga:transition`, and `SagaCoordinator.onTransition`). */
export interface SagaTransitionEvent {
  /** The saga definition's name. */
  readonly saga: string;
  /** The instance id. */
  readonly id: string;
  /**
   * `start`, `claim`, `begin`, `done`, `fail`, `cbegin`, `cdone`, `skip`, `park`. A `park` is
   * also heard for an instance the recovery loop found malformed (fields Keel did not write):
   * parked `needs-attention` with the reason, never driven — with version and fence 0 and no
   * owner when its key holds another type (not an instance any more, left as it is).
   */
  readonly event: string;
  /** The step's name, for step events. */
  readonly step: string | undefined;
  /** The status after the transition. */
  readonly status: SagaStatus;
  /** The instance's version after the transition. */
  readonly version: number;
  /** The fence the transition was written with. */
  readonly fence: number;
  /** The coordinator that wrote it. */
  readonly owner: string;
  /** Epoch ms (this process's wall clock). */
  readonly time: number;
}

/** A write refused because the coordinator lost the instance (`keel:saga:fenced`). */
export interface SagaFencedEvent {
  /** The saga definition's name. */
  readonly saga: string;
  /** The instance id. */
  readonly id: string;
  /** The coordinator whose write was refused. */
  readonly owner: string;
  /** The fence that coordinator wrote with. */
  readonly fence: number;
  /** The fence Redis holds. */
  readonly currentFence: number;
  /** Epoch ms (this process's wall clock). */
  readonly time: number;
}

/** @internal */
export const transitionChannel = /* @__PURE__ */ new KeelChannel<SagaTransitionEvent>(
  'saga',
  'transition',
);
/** @internal */
export const fencedChannel = /* @__PURE__ */ new KeelChannel<SagaFencedEvent>('saga', 'fenced');
