/**
 * Validation of caller-supplied nodes, shared by every router in `keel/hashring`.
 *
 * @internal
 * @packageDocumentation
 */
import { InvalidOptionError } from '../core/index.js';
import { DuplicateNodeError } from './errors.js';
import type { NodeSpec, RingNode } from './types.js';

/**
 * Checks one node and returns its frozen, resolved form. `where` names it in errors, e.g.
 * `nodes[2]` or `add(node)`.
 */
export function resolveNode<T>(owner: string, spec: unknown, where: string): RingNode<T> {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    throw new InvalidOptionError(owner, where, 'a node object { id, weight?, zone?, data? }', spec);
  }
  const { id, weight = 1, zone, data } = spec as NodeSpec<T> & Record<string, unknown>;
  if (typeof id !== 'string' || id === '') {
    throw new InvalidOptionError(owner, `${where}.id`, 'a non-empty string', id);
  }
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0) {
    throw new InvalidOptionError(
      owner,
      `${where}.weight`,
      'a finite number > 0',
      weight,
      `node ${JSON.stringify(id)}`,
    );
  }
  if (zone !== undefined && typeof zone !== 'string') {
    throw new InvalidOptionError(
      owner,
      `${where}.zone`,
      'a string',
      zone,
      `node ${JSON.stringify(id)}`,
    );
  }
  return Object.freeze({ id, weight, zone, data });
}

/** Resolves a list of nodes, rejecting duplicate ids. */
export function resolveNodes<T>(owner: string, specs: unknown, where = 'nodes'): RingNode<T>[] {
  if (specs === undefined) return [];
  if (typeof specs !== 'object' || specs === null || !(Symbol.iterator in specs)) {
    throw new InvalidOptionError(owner, where, 'an iterable of nodes', specs);
  }
  const out: RingNode<T>[] = [];
  const seen = new Set<string>();
  let i = 0;
  for (const spec of specs as Iterable<unknown>) {
    const node = resolveNode<T>(owner, spec, `${where}[${i}]`);
    if (seen.has(node.id)) throw new DuplicateNodeError(owner, node.id);
    seen.add(node.id);
    out.push(node);
    i++;
  }
  return out;
}

/** Validates the `n` of `getN(key, n)`: an integer >= 0 (Infinity allowed: every node). */
export function checkCount(owner: string, n: unknown): number {
  if (
    typeof n !== 'number' ||
    Number.isNaN(n) ||
    n < 0 ||
    (!Number.isInteger(n) && n !== Infinity)
  ) {
    throw new InvalidOptionError(owner, 'n', 'an integer >= 0', n, 'getN(key, n)');
  }
  return n;
}

/** Validates a key: a string or a Uint8Array. */
export function checkKey(owner: string, key: unknown): void {
  if (typeof key !== 'string' && !(key instanceof Uint8Array)) {
    throw new InvalidOptionError(owner, 'key', 'a string or Uint8Array', key);
  }
}

/** Compares ids by UTF-16 code units — the same order in every process and locale. */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
