/**
 * The queue chaos suite's drain rule on hand-made open counts: a drain still finishing messages
 * when its time runs out has lost nothing it can name (those messages are undrained — a slow
 * drain, as ordered mode's one-message-at-a-time partitions give on a loaded machine), while a
 * drain where nothing finishes for the stall time has lost what is left.
 */
import { describe, expect, it } from 'vitest';
import { DrainWatch, drainVerdict, type DrainEnd } from './drain.js';

/** Feeds `counts` one every `stepMs` from 0; the end and the last count observed. */
function run(watch: DrainWatch, counts: readonly number[], stepMs: number) {
  let end: DrainEnd | undefined;
  let open = 0;
  for (let i = 0; i < counts.length && end === undefined; i++) {
    open = counts[i] as number;
    end = watch.observe(open, i * stepMs);
  }
  return { end, open };
}

describe('queue chaos drain rule', () => {
  it('a backlog still shrinking when the time runs out is undrained, not lost', () => {
    const watch = new DrainWatch({ startedAt: 0, stallMs: 20_000, budgetMs: 60_000 });
    // One message finishes every second, from 1000 open: the time runs out first.
    const { end, open } = run(
      watch,
      Array.from({ length: 1000 }, (_, i) => 1000 - i),
      1000,
    );
    expect(end).toBe('out of time');
    expect(drainVerdict('out of time', open)).toEqual({ lost: 0, undrained: open });
  });

  it('a backlog that stops shrinking for the stall time is lost, with time left', () => {
    const watch = new DrainWatch({ startedAt: 0, stallMs: 20_000, budgetMs: 600_000 });
    const counts = [50, 40, 30, ...Array.from({ length: 100 }, () => 30)];
    const { end, open } = run(watch, counts, 1000);
    expect(end).toBe('stalled');
    expect(watch.progressAt).toBe(2000);
    expect(drainVerdict('stalled', open)).toEqual({ lost: 30, undrained: 0 });
  });

  it('done once nothing is open', () => {
    const watch = new DrainWatch({ startedAt: 0, stallMs: 20_000, budgetMs: 60_000 });
    expect(run(watch, [3, 2, 0], 1000).end).toBe('done');
    expect(drainVerdict('done', 0)).toEqual({ lost: 0, undrained: 0 });
  });
});
