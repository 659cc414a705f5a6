/**
 * The saga's diagnostics channels (`keel:saga:<event>`), fed from the same place as the typed
 * `onTransition` events. Internal module.
 * @packageDocumentation
 */
import { KeelChannel } from '../core/index.js';
import type { SagaStatus } from './state.js';

/** A transition Redis accepted (`keel:saga:transition`, and `SagaCoordinator.onTransition`). */
export interface SagaTransitionEvent {
  readonly saga: string;
  readonly id: string;
  /** `start`, `claim`, `begin`, `done`, `fail`, `cbegin`, `cdone`, `skip`, `park`. */
  readonly event: string;
  /** The step's name, for step events. */
  readonly step: string | undefined;
  /** The status after the transition. */
  readonly status: SagaStatus;
  readonly version: number;
  readonly fence: number;
  /** The coordinator that wrote it. */
  readonly owner: string;
  /** Epoch ms (this process's wall clock). */
  readonly time: number;
}

/** A write refused because the coordinator lost the instance (`keel:saga:fenced`). */
export interface SagaFencedEvent {
  readonly saga: string;
  readonly id: string;
  readonly owner: string;
  readonly fence: number;
  readonly currentFence: number;
  readonly time: number;
}

/** @internal */
export const transitionChannel = /* @__PURE__ */ new KeelChannel<SagaTransitionEvent>(
  'saga',
  'transition',
);
/** @internal */
export const fencedChannel = /* @__PURE__ */ new KeelChannel<SagaFencedEvent>('saga', 'fenced');
