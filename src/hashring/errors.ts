/**
 * Errors thrown by `keel/hashring`.
 *
 * @packageDocumentation
 */
import { KeelError, hasKeelCode } from '../core/index.js';

/** Error code of {@link DuplicateNodeError}. */
export const DUPLICATE_NODE = 'KEEL_DUPLICATE_NODE';
/** Error code of {@link InvalidSnapshotError}. */
export const INVALID_SNAPSHOT = 'KEEL_INVALID_SNAPSHOT';

/** A node id was added twice. */
export class DuplicateNodeError extends KeelError {
  override readonly name: string = 'DuplicateNodeError';
  declare readonly code: typeof DUPLICATE_NODE;
  /** The id given twice. */
  readonly id: string;
  constructor(owner: string, id: string) {
    super(
      DUPLICATE_NODE,
      `${owner}: node id ${JSON.stringify(id)} is already present; node ids must be unique`,
    );
    this.id = id;
  }
}

/** True when `value` is a {@link DuplicateNodeError} from any copy of Keel. */
export function isDuplicateNodeError(value: unknown): value is DuplicateNodeError {
  return hasKeelCode<DuplicateNodeError>(value, DUPLICATE_NODE);
}

/** A ring snapshot given to `fromJSON` is malformed. */
export class InvalidSnapshotError extends KeelError {
  override readonly name: string = 'InvalidSnapshotError';
  declare readonly code: typeof INVALID_SNAPSHOT;
  /** Where in the snapshot the problem is, e.g. `nodes[3].weight`. */
  readonly path: string;
  constructor(owner: string, path: string, problem: string) {
    super(INVALID_SNAPSHOT, `${owner}: invalid snapshot at ${path}: ${problem}`);
    this.path = path;
  }
}

/** True when `value` is an {@link InvalidSnapshotError} from any copy of Keel. */
export function isInvalidSnapshotError(value: unknown): value is InvalidSnapshotError {
  return hasKeelCode<InvalidSnapshotError>(value, INVALID_SNAPSHOT);
}
