/**
 * A history checker for watches: records every change a watch emits and checks, as it goes,
 * that the sequence is coherent — no instance added twice, removed or updated while absent
 * (duplicates or gaps would show up as exactly these), revisions never going backwards within
 * an epoch — and that replaying the changes reproduces the watch's own view at every step.
 * `expectConverged` then compares the final view with the store's true state.
 */
import { expect } from 'vitest';
import type { Instance, Registry, ServiceWatch, WatchChange } from '../../src/discovery/index.js';

export class WatchHistory {
  readonly watch: ServiceWatch;
  readonly changes: WatchChange[] = [];
  readonly problems: string[] = [];
  readonly #replica = new Map<string, Instance>();
  #epoch: string;
  #revision: number;
  readonly #subscription: { dispose(): void };

  constructor(watch: ServiceWatch) {
    this.watch = watch;
    for (const instance of watch.instances()) this.#replica.set(instance.id, instance);
    this.#epoch = watch.epoch;
    this.#revision = watch.revision;
    this.#subscription = watch.onChange((change) => {
      this.#check(change);
    });
  }

  #check(change: WatchChange): void {
    this.changes.push(change);
    const id = change.instance.id;
    const present = this.#replica.get(id);
    const where = `${change.type} ${id} @${change.revision} (${change.source})`;
    if (change.type === 'added') {
      if (present !== undefined) this.problems.push(`duplicate add: ${where}`);
      this.#replica.set(id, change.instance);
    } else if (change.type === 'updated') {
      if (present === undefined) this.problems.push(`update of an absent instance: ${where}`);
      else if (present !== change.previous)
        this.problems.push(`update from a stale previous: ${where}`);
      this.#replica.set(id, change.instance);
    } else {
      if (present === undefined) this.problems.push(`removal of an absent instance: ${where}`);
      this.#replica.delete(id);
    }
    const epoch = this.watch.epoch;
    if (epoch === this.#epoch && change.revision < this.#revision) {
      this.problems.push(`revision went backwards: ${this.#revision} -> ${where}`);
    }
    this.#epoch = epoch;
    this.#revision = change.revision;
    // Replaying the changes must give exactly the watch's view at this point.
    const view = this.watch.instances();
    if (view.length !== this.#replica.size || view.some((i) => this.#replica.get(i.id) !== i)) {
      this.problems.push(`replica diverged from the view after ${where}`);
    }
  }

  /** Ids in the watch's view. */
  ids(): string[] {
    return this.watch.instances().map((i) => i.id);
  }

  /** Asserts the history had no problem and the view equals `truth` (ids, sorted). */
  expectConverged(truth: readonly string[]): void {
    expect(this.problems).toEqual([]);
    expect(this.ids()).toEqual([...truth].sort());
  }

  dispose(): void {
    this.#subscription.dispose();
  }
}

/**
 * Opens `n` watches of `service`, each on a registry of its own from `registry()`, waits until
 * each is ready and records it; `cleanups` gets each history's disposal.
 */
export async function watchHistories(
  registry: () => Registry,
  service: string,
  n: number,
  cleanups: (() => unknown)[],
): Promise<WatchHistory[]> {
  const out: WatchHistory[] = [];
  for (let i = 0; i < n; i++) {
    const watch = registry().watch(service);
    await watch.ready;
    const history = new WatchHistory(watch);
    cleanups.push(() => {
      history.dispose();
    });
    out.push(history);
  }
  return out;
}
