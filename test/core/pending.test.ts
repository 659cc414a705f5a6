import { describe, expect, it } from 'vitest';
import { lastResolvers, pending } from '../../src/core/pending.js';

describe('pending()', () => {
  it('leaves the resolving functions of the promise it just made in lastResolvers', async () => {
    const first = pending<number>();
    const { resolve: resolveFirst } = lastResolvers;
    const second = pending<number>();
    const { reject: rejectSecond } = lastResolvers;
    // Each promise keeps its own functions: the second call did not take the first's over.
    (resolveFirst as (value: number) => void)(1);
    rejectSecond(new Error('two'));
    await expect(first).resolves.toBe(1);
    await expect(second).rejects.toThrow('two');
  });

  it('settles once, as any promise does', async () => {
    const p = pending<string>();
    const { resolve, reject } = lastResolvers;
    (resolve as (value: string) => void)('a');
    (resolve as (value: string) => void)('b');
    reject(new Error('late'));
    await expect(p).resolves.toBe('a');
  });
});
