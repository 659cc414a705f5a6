/**
 * The transition reply is one string per transition (see TRANSITION in scripts.ts), read in
 * place by `decodeTransitionReply`: the fields that may hold any text (a reason, a stored status
 * of foreign data) are last, so a `|` inside them cannot shift the others.
 */
import { describe, expect, it } from 'vitest';
import { decodeTransitionReply } from '../../src/saga/store.js';

describe('decodeTransitionReply', () => {
  it('reads an accepted transition, with and without a reason', () => {
    expect(decodeTransitionReply('1|7|1733390000123|1733390015123|-1|running')).toEqual({
      ok: true,
      version: 7,
      now: 1733390000123,
      lease: 1733390015123,
      cj: -1,
      status: 'running',
      why: undefined,
    });
    expect(decodeTransitionReply('1|9|5|0|2|compensating|step b failed: x|y||')).toEqual({
      ok: true,
      version: 9,
      now: 5,
      lease: 0,
      cj: 2,
      status: 'compensating',
      why: 'step b failed: x|y||',
    });
    // An empty reason is a reason (the Lua sends it whenever the field exists).
    expect(decodeTransitionReply('1|2|5|6|0|completed|').why).toBe('');
  });

  it('reads a refusal; a stored status of any text is kept whole', () => {
    expect(decodeTransitionReply('0|fenced|3|12|running')).toEqual({
      ok: false,
      why: 'fenced',
      fence: 3,
      version: 12,
      status: 'running',
    });
    expect(decodeTransitionReply('0|missing|0|0|')).toEqual({
      ok: false,
      why: 'missing',
      fence: 0,
      version: 0,
      status: '',
    });
    // Foreign data: fields that are not numbers read as Number reads them, status as stored.
    expect(decodeTransitionReply('0|state|x||weird|status')).toEqual({
      ok: false,
      why: 'state',
      fence: Number.NaN,
      version: 0,
      status: 'weird|status',
    });
  });

  it('reads every number field exactly as Number reads its text (signs, foreign text)', () => {
    for (const cj of [
      '-1',
      '-0',
      '-12',
      '7',
      '-',
      '--1',
      '-0x10',
      '0x10',
      '-1.5',
      '1e3',
      ' 1',
      '',
    ]) {
      const reply = decodeTransitionReply(`1|1|2|3|${cj}|running`);
      expect(reply.ok && reply.cj).toBe(Number(cj));
      const refusal = decodeTransitionReply(`0|state|${cj}|${cj}|running`);
      expect(refusal.ok ? undefined : [refusal.fence, refusal.version]).toEqual([
        Number(cj),
        Number(cj),
      ]);
    }
  });

  it('refuses a reply of another shape (an old array reply, a truncated string)', () => {
    for (const bad of [[1, 2, 3, 4, 'running', -1], '', '1', '1|2|3|4|5', '2|a|b|c|d|e', null]) {
      expect(() => decodeTransitionReply(bad)).toThrow(/unexpected transition reply/);
    }
  });
});
