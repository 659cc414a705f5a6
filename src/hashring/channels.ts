/**
 * The hashring's `node:diagnostics_channel` channel (issue 15; naming in core/diagnostics.ts):
 * `keel:hashring:rebuilt` — a {@link HashRing} changed its nodes (add, remove, a new weight) and
 * its points now stand for the new set ({@link RingRebuiltMessage}). Lookups publish nothing.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * @packageDocumentation
 */
import { KeelChannel } from '../core/index.js';

/** Published on `keel:hashring:rebuilt`. */
export interface RingRebuiltMessage {
  /** What changed. */
  readonly change: 'add' | 'remove' | 'set-weight';
  /** The node it changed. */
  readonly id: string;
  /** The ring's mode (`keel`, `ketama`, …); mode `keel` merges one node's points, the others rebuild. */
  readonly mode: string;
  /** Nodes on the ring now. */
  readonly nodes: number;
  /** Points on the ring now. */
  readonly points: number;
  /** The ring's revision after the change. */
  readonly revision: number;
  /** Wall-clock time of the change (epoch ms). */
  readonly time: number;
}

/** @internal */
export const rebuiltChannel = new KeelChannel<RingRebuiltMessage>('hashring', 'rebuilt');
