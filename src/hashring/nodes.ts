/**
 * Validation of caller-supplied nodes, shared by every router in `keel/hashring`.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { InvalidOptionError, describeValue, isKeelError, isWellFormedText } from '../core/index.js';
import { DuplicateNodeError } from './errors.js';
import type { NodeSpec, RingNode } from './types.js';

/** What every router constructor takes, in the words of its errors. */
const OPTIONS_SHAPE = 'an options object ({ nodes: [...] })';

/**
 * Checks that a router constructor's argument is `undefined` or a plain options object, before
 * its keys are read: an array passed where `{ nodes }` belongs would otherwise be read as the
 * options `"0"`, `"1"`… Throws an {@link InvalidOptionError} for `options` whose hint shows the
 * call to write, e.g. `new HashRing({ nodes: [{ id: "a" }, { id: "b" }] })`.
 */
export function checkOptionsShape(owner: string, input: unknown): void {
  if (input === undefined) return;
  if (typeof input === 'object' && input !== null && !Array.isArray(input)) {
    const proto: unknown = Object.getPrototypeOf(input);
    if (proto === Object.prototype || proto === null) return;
  }
  let hint: string | undefined;
  if (Array.isArray(input)) {
    const ids =
      input.length <= 3 && input.every((item) => typeof item === 'string' && item.length <= 40);
    const nodes = ids
      ? (input as string[]).map((id) => `{ id: ${JSON.stringify(id)} }`).join(', ')
      : '...';
    hint = `the nodes go inside the options: new ${owner}({ nodes: [${nodes}] })`;
  }
  throw new InvalidOptionError(owner, 'options', OPTIONS_SHAPE, input, hint);
}

/**
 * Checks one node and returns its frozen, resolved form. `where` names it in errors, e.g.
 * `nodes[2]` or `add(node)`. With `hashedId` (every router) the id must also be well-formed
 * UTF-16: ids are hashed as UTF-8, where every lone surrogate becomes U+FFFD, so `"a\uD800"` and
 * `"a\uDC00"` would get the very same points and one of them no key at all. The balancer, which
 * only hashes ids in its consistent-hash strategy (through a ring, which checks), passes `false`.
 */
export function resolveNode<T>(
  owner: string,
  spec: unknown,
  where: string,
  hashedId = true,
): RingNode<T> {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    throw new InvalidOptionError(owner, where, 'a node object { id, weight?, zone?, data? }', spec);
  }
  const { id, weight = 1, zone, data } = spec as NodeSpec<T> & Record<string, unknown>;
  if (typeof id !== 'string' || id === '') {
    throw new InvalidOptionError(owner, `${where}.id`, 'a non-empty string', id);
  }
  if (hashedId && !isWellFormedText(id)) {
    throw new InvalidOptionError(owner, `${where}.id`, 'a well-formed string', id);
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

/**
 * Iterates a caller's iterable, turning a broken iteration protocol (a `Symbol.iterator` that
 * is not a function, a `next()` result that is not an object, a Proxy a built-in iterator
 * refuses) into an InvalidOptionError naming `where`, with the original error as `cause`.
 * Errors the caller's own code throws while we read an entry are left to `visit`'s caller.
 */
export function forEachOf(
  owner: string,
  where: string,
  iterable: unknown,
  visit: (value: unknown, index: number) => void,
): void {
  const broken = (cause: unknown): InvalidOptionError => {
    if (isKeelError(cause)) throw cause;
    const error = new InvalidOptionError(
      owner,
      where,
      'an iterable',
      iterable,
      'iterating it threw',
    );
    Object.defineProperty(error, 'cause', { value: cause, configurable: true, writable: true });
    return error;
  };
  if (typeof iterable !== 'object' || iterable === null || !(Symbol.iterator in iterable)) {
    throw new InvalidOptionError(owner, where, 'an iterable', iterable);
  }
  let iterator: Iterator<unknown>;
  try {
    // Typed as TS sees it; at run time a caller's iterator may be anything.
    const made: unknown = (iterable as Iterable<unknown>)[Symbol.iterator]();
    if (typeof made !== 'object' || made === null) throw new TypeError('not an iterator');
    iterator = made as Iterator<unknown>;
  } catch (error) {
    throw broken(error);
  }
  for (let index = 0; ; index++) {
    let step: IteratorResult<unknown>;
    try {
      const next: unknown = iterator.next();
      if (typeof next !== 'object' || next === null) throw new TypeError('not an iterator result');
      step = next as IteratorResult<unknown>;
    } catch (error) {
      throw broken(error);
    }
    if (step.done === true) return;
    visit(step.value, index);
  }
}

/** Resolves a list of nodes, rejecting duplicate ids. */
export function resolveNodes<T>(owner: string, specs: unknown, where = 'nodes'): RingNode<T>[] {
  if (specs === undefined) return [];
  if (typeof specs !== 'object' || specs === null || !(Symbol.iterator in specs)) {
    throw new InvalidOptionError(owner, where, 'an iterable of nodes', specs);
  }
  const out: RingNode<T>[] = [];
  const seen = new Set<string>();
  forEachOf(owner, where, specs, (spec, i) => {
    const node = resolveNode<T>(owner, spec, `${where}[${i}]`);
    if (seen.has(node.id)) throw new DuplicateNodeError(owner, node.id);
    seen.add(node.id);
    out.push(node);
  });
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

/** Validates a new weight for `setWeight(id, weight)`: a finite number > 0. */
export function checkWeight(owner: string, id: string, weight: unknown): number {
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0) {
    throw new InvalidOptionError(
      owner,
      'weight',
      'a finite number > 0',
      weight,
      `setWeight(${describeValue(id)}, weight)`,
    );
  }
  return weight;
}

/**
 * The nodes of a router, kept in id order with an index by id — the bookkeeping the routers
 * that rebuild their tables from an id-ordered list (rendezvous, Maglev) share.
 */
export class SortedNodes<T> {
  /** Nodes in id order. Read-only for callers; change it through the methods. */
  readonly list: RingNode<T>[];
  readonly #owner: string;
  readonly #byId = new Map<string, RingNode<T>>();

  /** @param initial - resolved nodes with unique ids (from {@link resolveNodes}) */
  constructor(owner: string, initial: readonly RingNode<T>[]) {
    this.#owner = owner;
    this.list = [...initial].sort((a, b) => compareIds(a.id, b.id));
    for (const node of this.list) this.#byId.set(node.id, node);
  }

  get size(): number {
    return this.list.length;
  }

  has(id: string): boolean {
    return this.#byId.has(id);
  }

  get(id: string): RingNode<T> | undefined {
    return this.#byId.get(id);
  }

  /** Validates a node for `add(node)`: well-formed and not already present. */
  prepare(spec: unknown): RingNode<T> {
    const node = resolveNode<T>(this.#owner, spec, 'node');
    if (this.#byId.has(node.id)) throw new DuplicateNodeError(this.#owner, node.id);
    return node;
  }

  /** Inserts a node from {@link SortedNodes.prepare} at its place in id order. */
  insert(node: RingNode<T>): void {
    let lo = 0;
    let hi = this.list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareIds((this.list[mid] as RingNode<T>).id, node.id) < 0) lo = mid + 1;
      else hi = mid;
    }
    this.list.splice(lo, 0, node);
    this.#byId.set(node.id, node);
  }

  /** Removes a node; `false` when the id is unknown. */
  remove(id: string): boolean {
    const node = this.#byId.get(id);
    if (node === undefined) return false;
    this.#byId.delete(id);
    this.list.splice(this.list.indexOf(node), 1);
    return true;
  }

  /**
   * Replaces a node by a copy with the new weight; `false` when the weight is unchanged.
   * Throws for a bad weight or an unknown id.
   */
  setWeight(id: string, weight: number): boolean {
    checkWeight(this.#owner, id, weight);
    const node = this.#byId.get(id);
    if (node === undefined) {
      throw new InvalidOptionError(
        this.#owner,
        'id',
        'the id of a node in the router',
        id,
        'setWeight(id, weight)',
      );
    }
    if (node.weight === weight) return false;
    const updated: RingNode<T> = Object.freeze({ ...node, weight });
    this.#byId.set(id, updated);
    this.list[this.list.indexOf(node)] = updated;
    return true;
  }
}
