/**
 * `keel/saga` — durable sagas on Redis: `defineSaga(name, steps)` with typed steps and
 * compensations, a `SagaCoordinator` that writes every state change with one fenced script
 * (before and after each step), recovers the instances of coordinators that died, compensates
 * in reverse on failure, timeout or cancellation, and parks what it cannot compensate as
 * `needs-attention`; and `IdempotencyKeys`, Stripe-style idempotency keys with a separate
 * in-progress lease and Seata's TCC fence for compensations.
 *
 * @module keel/saga
 */
export { defineSaga, SagaDefinition } from './definition.js';
export type {
  SagaStep,
  StepContext,
  CompensationContext,
  RetryPolicy,
  SagaOptions,
} from './definition.js';
export { SagaCoordinator } from './coordinator.js';
export type {
  SagaCoordinatorOptions,
  RunOptions,
  SagaOutcome,
  SagaSnapshot,
  ListOptions,
} from './coordinator.js';
export type { SagaStatus, SagaHistoryEntry } from './state.js';
export type { SagaTransitionEvent, SagaFencedEvent } from './channels.js';
export { IdempotencyKeys } from './idempotency.js';
export { MemorySagaBackend } from './memory.js';
export type { MemorySagaBackendOptions } from './memory.js';
export type {
  IdempotencyKeysOptions,
  IdempotentOptions,
  CompensateOptions,
  CompensateResult,
} from './idempotency.js';
export {
  SagaFencedError,
  SagaConflictError,
  SagaUnknownError,
  SagaStepTimeoutError,
  SagaTimeoutError,
  SagaClosedError,
  SagaStoreError,
  IdempotencyConflictError,
  IdempotencyCancelledError,
  IdempotencyLostError,
  isSagaFencedError,
  isSagaConflictError,
  isSagaUnknownError,
  isSagaStepTimeoutError,
  isSagaTimeoutError,
  isSagaClosedError,
  isSagaStoreError,
  isIdempotencyConflictError,
  isIdempotencyCancelledError,
  isIdempotencyLostError,
  SAGA_FENCED,
  SAGA_CONFLICT,
  SAGA_UNKNOWN,
  SAGA_STEP_TIMEOUT,
  SAGA_TIMEOUT,
  SAGA_CLOSED,
  SAGA_STORE,
  IDEMPOTENCY_CONFLICT,
  IDEMPOTENCY_CANCELLED,
  IDEMPOTENCY_LOST,
} from './errors.js';
