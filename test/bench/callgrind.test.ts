import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { instructionTotal, newestDump } from '../../bench/callgrind.js';
import {
  countUnderCallgrind,
  judgeCounted,
  parseCounted,
  type CountedOp,
  type CountLimits,
} from '../../bench/diagnostics-counted.js';

/** The head of a real dump (valgrind 3.19, `--separate-threads=yes --dump-before=…`). */
const dump = (totals: string, events = 'Ir'): string =>
  [
    '# callgrind format',
    'version: 1',
    'creator: callgrind-3.19.0',
    'pid: 14145',
    'cmd:  node t.mjs',
    'part: 2',
    'thread: 1',
    'desc: Trigger: --dump-before=uv_getrusage',
    'positions: line',
    `events: ${events}`,
    `summary: ${totals}`,
    '',
    'fl=(1) ???',
    'fn=(1) 0x0000000001234560',
    '0 12',
    '',
    `totals: ${totals}`,
  ].join('\n');

describe('callgrind dumps', () => {
  it('reads the Ir total of a dump', () => {
    expect(instructionTotal(dump('5065216'))).toBe(5065216);
  });

  it('finds Ir among other events, and a left-out trailing count is 0', () => {
    expect(instructionTotal(dump('700 3 9', 'Bc Bcm Ir'))).toBe(9);
    expect(instructionTotal(dump('700 3', 'Bc Bcm Ir'))).toBe(0);
  });

  it('falls back to the summary line, and refuses a dump without Ir or totals', () => {
    expect(instructionTotal('events: Ir\nsummary: 42\n')).toBe(42);
    expect(() => instructionTotal('events: Bc\ntotals: 1\n')).toThrow(/no Ir/);
    expect(() => instructionTotal('events: Ir\n')).toThrow(/no totals/);
    expect(() => instructionTotal('events: Ir\ntotals: x\n')).toThrow(/bad Ir/);
  });

  it("picks the newest numbered dump of the process's main thread", () => {
    const files = [
      'cg.14145',
      'cg.14145-01',
      'cg.14145-02',
      'cg.14145.2-01',
      'cg.14145.10-01',
      'cg.14145.11-02',
      'cg.14145.9-01',
      'cg.999.12-01',
      'other.14145.13-01',
    ];
    expect(newestDump(files, 'cg', 14145)).toBe('cg.14145.10-01');
    expect(newestDump(files, 'cg', 14145, 2)).toBe('cg.14145.11-02');
    expect(newestDump(['cg.14145-01'], 'cg', 14145)).toBeUndefined();
  });
});

const limits: CountLimits = { maxFraction: 0.02, maxExtraBytes: 0.5, maxSpread: 0.002 };

const op = (
  instructions: number[],
  bytes = instructions.map(() => 856.5),
  spins = 0,
): CountedOp => ({
  op: 'lock',
  calls: 2048,
  warmup: 20480,
  spins,
  instructions,
  bytes,
  collected: 0,
});

describe('the counted verdict', () => {
  const off = op([5322.9, 5323.0, 5322.9, 5322.9]);
  const inj = op([5482.6, 5482.7, 5482.6, 5482.6], undefined, 27);

  it('is met when as shipped counts within 2 % and the injected +3 % is caught', () => {
    const j = judgeCounted({ off, on: op([5319.1, 5319.0, 5319.2, 5319.1]), inj }, limits);
    expect(j.verdict).toBe('met');
    expect(j.cost).toBeCloseTo(-3.8, 6);
    expect(j.injectedFraction).toBeCloseTo(0.03, 3);
  });

  it('is MISSED over 2 %, by instructions or by bytes', () => {
    expect(judgeCounted({ off, on: op([5440, 5440, 5440]), inj }, limits).verdict).toBe('MISSED');
    expect(judgeCounted({ off, on: op([5400, 5400], [857.1, 857.1]), inj }, limits).verdict).toBe(
      'MISSED (bytes)',
    );
  });

  it('exactly 2 % is still met; just over is MISSED', () => {
    const base = op([1000, 1000]);
    const injected = op([1030, 1030]);
    expect(judgeCounted({ off: base, on: op([1020, 1020]), inj: injected }, limits).verdict).toBe(
      'met',
    );
    expect(
      judgeCounted({ off: base, on: op([1020.1, 1020.1]), inj: injected }, limits).verdict,
    ).toBe('MISSED');
  });

  it('gives no verdict when the injected cost is not caught', () => {
    const weak = op([5400, 5400]);
    expect(judgeCounted({ off, on: off, inj: weak }, limits).verdict).toBe(
      'no verdict: injected cost not caught',
    );
  });

  it('gives no verdict when windows spread or too few are clean', () => {
    expect(judgeCounted({ off, on: op([5300, 5320]), inj }, limits).verdict).toMatch(
      /^no verdict: windows spread 0\.38 %/,
    );
    expect(judgeCounted({ off, on: op([5320]), inj }, limits).verdict).toBe(
      'no verdict: under 2 windows without a collection',
    );
  });

  it("reads the child's JSON lines and nothing else", () => {
    const line = JSON.stringify(off);
    expect(parseCounted(`noise\n${line}\n\n${line}\n`)).toEqual([off, off]);
  });
});

describe("a counting child's temporary directory", () => {
  /** Runs `count` with a fresh parent for its temporary directory; what that parent holds after. */
  const leftIn = async (count: (parent: string) => Promise<unknown>): Promise<string[]> => {
    const parent = mkdtempSync(join(tmpdir(), 'keel-cg-test-'));
    try {
      await expect(count(parent)).rejects.toThrow();
      return readdirSync(parent);
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  };

  it('is removed when the child cannot be spawned (spawn throws)', async () => {
    // A NUL byte in an argument: spawn() refuses it synchronously (ERR_INVALID_ARG_VALUE).
    expect(await leftIn((parent) => countUnderCallgrind('bad\0bundle', [], parent))).toEqual([]);
  });

  it('is removed when the program is not found (the child emits error)', async () => {
    const path = process.env.PATH;
    process.env.PATH = join(tmpdir(), 'keel-cg-test-no-such-dir');
    try {
      expect(await leftIn((parent) => countUnderCallgrind('bundle.mjs', [], parent))).toEqual([]);
    } finally {
      process.env.PATH = path;
    }
  });
});
