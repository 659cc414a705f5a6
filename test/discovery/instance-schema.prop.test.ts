/**
 * The instance validation against the zod schema it was first written with (issue 16, item 2:
 * `keel/discovery` stopped bundling zod). The zod schema lives on here, in the tests only, as the
 * reference: for any input — well formed, near every limit, or hostile — registration
 * (`parseInstance`) and read-back (`decodeInstance`) must accept the same inputs, produce the
 * same instance, and report the same problems with the same messages.
 *
 * zod's "Invalid input: expected number, received string" is reworded to "expected a number,
 * received a string" (issue 16) on both sides of the comparison; see `plainWords`.
 *
 * One difference is intended and normalised away below: zod also measured the `length` of a
 * value that is not a string at all (`host: []` gave "expected string, received array" and then
 * "Too small: expected array to have >=1 items"); the hand-written checks report the wrong type
 * once. The first problem — the error's field and message — is the same either way. The same
 * read of `length` made zod pass a hostile Proxy's error through where the hand-written checks
 * report the wrong type (a typed error); that case is allowed below too.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { InvalidInstanceError, isInvalidInstanceError } from '../../src/discovery/errors.js';
import type { InstanceProblem } from '../../src/discovery/errors.js';
import { decodeInstance, parseInstance } from '../../src/discovery/instance.js';
import {
  HostileError,
  hostileNumber,
  hostileString,
  hostileValue,
  real,
} from '../fuzz/arbitraries.js';

// ---- the reference: the zod schema keel/discovery shipped before, unchanged ----------------

const SERVICE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const ID = /^[!-z|~]{1,256}$/;
const text = (max: number) => z.string().min(1).max(max);
const fields = {
  service: z.string().regex(SERVICE, 'letters, digits, ".", "_" or "-" (1-128, starting alnum)'),
  id: z.string().regex(ID, 'printable characters without spaces or braces (1-256)'),
  host: text(255),
  port: z.number().int().min(0).max(65535),
  weight: z.number().positive(),
  zone: text(128).optional(),
  version: text(128).optional(),
  status: z.enum(['up', 'draining', 'down']),
  metadata: z
    .record(z.string().min(1).max(128), z.string().max(4096))
    .refine((m) => Object.keys(m).length <= 64, 'at most 64 entries'),
};
const specSchema = z.strictObject({
  service: fields.service,
  id: fields.id.optional(),
  host: fields.host,
  port: fields.port,
  weight: fields.weight.optional(),
  zone: fields.zone,
  version: fields.version,
  status: fields.status.optional(),
  metadata: fields.metadata.optional(),
});
const storedSchema = z.object({
  service: fields.service,
  id: fields.id,
  host: fields.host,
  port: fields.port,
  weight: fields.weight,
  zone: fields.zone,
  version: fields.version,
  status: fields.status,
  metadata: fields.metadata,
});

function describeIssue(issue: z.core.$ZodIssue): InstanceProblem {
  const parts = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p)));
  if (issue.code === 'unrecognized_keys' && issue.keys[0] !== undefined) {
    parts.push(issue.keys[0]);
    return { path: parts.join('.'), message: 'unknown field' };
  }
  const path = parts.join('.');
  return { path: path === '' ? 'instance' : path, message: plainWords(issue.message) };
}

/**
 * zod's "Invalid input: expected number, received string" in the words Keel uses since issue 16
 * ("expected a number, received a string"): the one rewording of zod's messages.
 */
function plainWords(message: string): string {
  const match = /^Invalid input: expected (\w+), received (.+)$/.exec(message);
  if (match === null) return message;
  const a = (name: string): string =>
    /^(null|undefined|NaN|-?Infinity)$/.test(name)
      ? name
      : `${/^[aeiou]/i.test(name) ? 'an' : 'a'} ${name}`;
  const expected = match[1] === 'int' ? 'integer' : (match[1] as string);
  return `expected ${a(expected)}, received ${a(match[2] as string)}`;
}

/** zod's length checks on a value of the wrong type (see the file comment). */
const lengthOfNonString = (p: InstanceProblem): boolean =>
  /^Too (small|big): expected (array|unknown) /.test(p.message);

/** Reads `value.length` as zod did; true when that read throws (a hostile Proxy). */
function lengthThrows(value: unknown): boolean {
  if ((typeof value !== 'object' && typeof value !== 'function') || value === null) return false;
  try {
    return (value as { length?: unknown }).length === Symbol.for('never');
  } catch {
    return true;
  }
}

/** Whether a text field of `input` (or a metadata value) is a value whose `length` throws. */
function zodReadsThrowingLength(input: unknown): boolean {
  try {
    const record = input as Record<string, unknown>;
    if (['host', 'zone', 'version'].some((f) => lengthThrows(record[f]))) return true;
    const metadata = record.metadata;
    if (typeof metadata !== 'object' || metadata === null) return false;
    return Reflect.ownKeys(metadata).some((k) =>
      lengthThrows((metadata as Record<PropertyKey, unknown>)[k]),
    );
  } catch {
    return false;
  }
}

function pick(input: unknown, path: readonly string[]): unknown {
  let value = input;
  for (const key of path) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

type Outcome =
  | { kind: 'ok'; value: unknown }
  | { kind: 'invalid'; field: string; message: string; problems: readonly InstanceProblem[] }
  | { kind: 'threw'; name: string };

function referenceParse(input: unknown): Outcome {
  // zod's messages are built lazily, and building one may read the input again (a hostile
  // getter then throws there): the whole reference runs inside the try.
  try {
    return referenceParseUnsafe(input);
  } catch (error) {
    return { kind: 'threw', name: (error as Error).name };
  }
}

function referenceParseUnsafe(input: unknown): Outcome {
  const result = specSchema.safeParse(input);
  if (result.success) {
    const v = result.data;
    return {
      kind: 'ok',
      value: {
        service: v.service,
        id: v.id ?? `${v.host}:${v.port}`,
        host: v.host,
        port: v.port,
        weight: v.weight ?? 1,
        zone: v.zone,
        version: v.version,
        status: v.status ?? 'up',
        metadata: { ...v.metadata },
      },
    };
  }
  const problems = result.error.issues.map(describeIssue).filter((p) => !lengthOfNonString(p));
  const first = problems[0] ?? { path: 'instance', message: 'invalid' };
  const value = first.path === 'instance' ? input : pick(input, first.path.split('.'));
  const error = new InvalidInstanceError('Test', first.path, first.message, value, problems);
  return { kind: 'invalid', field: first.path, message: error.message, problems };
}

function actualParse(input: unknown): Outcome {
  try {
    const instance = parseInstance(input, 'Test');
    expect(Object.isFrozen(instance) && Object.isFrozen(instance.metadata)).toBe(true);
    return { kind: 'ok', value: { ...instance, metadata: { ...instance.metadata } } };
  } catch (error) {
    if (!isInvalidInstanceError(error)) return { kind: 'threw', name: (error as Error).name };
    return {
      kind: 'invalid',
      field: error.field,
      message: error.message,
      problems: error.problems.map((p) => ({ path: p.path, message: p.message })),
    };
  }
}

function referenceDecode(raw: unknown, service: string, id: string): unknown {
  try {
    return referenceDecodeUnsafe(raw, service, id);
  } catch (error) {
    return { threw: (error as Error).name };
  }
}

function referenceDecodeUnsafe(raw: unknown, service: string, id: string): unknown {
  let value = raw;
  if (typeof raw === 'string') {
    try {
      value = JSON.parse(raw) as unknown;
    } catch {
      return { ok: false, reason: 'not valid JSON' };
    }
  }
  const result = storedSchema.safeParse(value);
  if (!result.success) {
    const problem = describeIssue(result.error.issues[0] as z.core.$ZodIssue);
    return { ok: false, reason: `${problem.path}: ${problem.message}` };
  }
  if (result.data.service !== service || result.data.id !== id) {
    return {
      ok: false,
      reason: `record claims ${result.data.service}/${result.data.id} but is stored as ${service}/${id}`,
    };
  }
  return { ok: true, instance: { ...result.data, metadata: { ...result.data.metadata } } };
}

function actualDecode(raw: unknown, service: string, id: string): unknown {
  try {
    const decoded = decodeInstance(raw, service, id);
    if (!decoded.ok) return decoded;
    const { instance } = decoded;
    return { ok: true, instance: { ...instance, metadata: { ...instance.metadata } } };
  } catch (error) {
    return { threw: (error as Error).name };
  }
}

// ---- inputs: valid, at each limit, one past it, and hostile ---------------------------------

const ASTRAL = '\u{1F600}'; // one code point, two UTF-16 units: limits count code points

const around = (unit: string, n: number): string[] => [
  unit.repeat(n - 1),
  unit.repeat(n),
  unit.repeat(n + 1),
];

const textValue = (max: number): fc.Arbitrary<unknown> =>
  fc.oneof(
    fc.constantFrom('', 'x', ...around('x', max), ...around(ASTRAL, max)),
    fc.constantFrom<unknown>([], ['a'], new Array<number>(max + 1).fill(1), { length: 0 }),
    fc.string({ maxLength: 6 }),
    hostileString,
    hostileValue,
  );

const serviceValue = fc.oneof(
  fc.constantFrom('orders', 'a', 'a.b_c-d', ...around('a', 128), 'or{ders}', '-x', '', 'é'),
  hostileString,
  hostileValue,
);
const idValue = fc.oneof(
  fc.constantFrom('h:1', 'x', ...around('x', 256), 'a b', '{a}', '~|!', 'é', ASTRAL),
  fc.string({ maxLength: 8 }),
  hostileString,
  hostileValue,
);
const portValue = fc.oneof(
  fc.constantFrom<unknown>(0, 80, 65535, 65536, -1, 1.5, -1.5, 70000.5, 1e20, -1e20, '8080', -0),
  fc.integer({ min: -10, max: 70000 }),
  hostileNumber,
  hostileValue,
);
const weightValue = fc.oneof(
  fc.constantFrom<unknown>(1, 0, -0, 0.25, -1),
  hostileNumber,
  hostileValue,
);
const statusValue = fc.oneof(
  fc.constantFrom<unknown>('up', 'draining', 'down', 'UP', 'sleeping', ''),
  hostileValue,
);

const metaKey = fc.oneof(
  fc.string({ maxLength: 5 }),
  fc.constantFrom('', ...around('k', 128), ...around(ASTRAL, 128), '__proto__', 'constructor'),
);
const metaValue = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 5 }) },
  { weight: 1, arbitrary: fc.constantFrom(...around('v', 4096), ...around(ASTRAL, 4096)) },
  { weight: 1, arbitrary: hostileValue },
);

/** Own enumerable properties, set with defineProperty so `__proto__` is a real own key. */
function objectOf(entries: readonly (readonly [PropertyKey, unknown])[], proto: object | null) {
  const out = Object.create(proto) as Record<PropertyKey, unknown>;
  for (const [key, value] of entries) {
    Object.defineProperty(out, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

const protoOf = fc.constantFrom<() => object | null>(
  ...new Array<() => object>(8).fill(() => Object.prototype),
  () => null,
  () => ({ inherited: 'x' }),
  () => ({ zone: 'inherited-zone', colour: 'red' }),
  () => Map.prototype,
);

const metadataValue: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.tuple(fc.array(fc.tuple(metaKey, metaValue), { maxLength: 5 }), protoOf).map(
      ([entries, proto]) =>
        () =>
          objectOf(entries, proto()),
    ),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.integer({ min: 62, max: 66 }), metaValue, fc.boolean())
      .map(([n, value, symbol]) => () => {
        const entries: [PropertyKey, unknown][] = [];
        for (let i = 0; i < n; i++) entries.push([`k${i}`, i === 0 ? value : 'v']);
        if (symbol) entries.push([Symbol('s'), 'v']);
        return objectOf(entries, Object.prototype);
      }),
  },
  { weight: 1, arbitrary: hostileValue.map((v) => () => real(v)) },
);

const FIELDS = {
  service: serviceValue,
  id: idValue,
  host: textValue(255),
  port: portValue,
  weight: weightValue,
  zone: textValue(128),
  version: textValue(128),
  status: statusValue,
  metadata: metadataValue,
} as const;
type FieldName = keyof typeof FIELDS;
const FIELD_NAMES = Object.keys(FIELDS) as FieldName[];

/**
 * A spec: a valid one (minimal or complete) with up to three fields replaced by generated
 * values (valid or not) and maybe one left out, sometimes an unknown field, sometimes an odd
 * prototype — or not an object at all.
 */
const specInput: fc.Arbitrary<() => unknown> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc
      .tuple(
        fc.record(FIELDS),
        fc.subarray(FIELD_NAMES, { maxLength: 3 }),
        fc.option(fc.constantFrom(...FIELD_NAMES), { freq: 4 }),
        fc.oneof(
          { weight: 4, arbitrary: fc.constant([]) },
          {
            weight: 1,
            arbitrary: fc.array(
              fc.tuple(
                fc.constantFrom<PropertyKey>(
                  'colour',
                  '__proto__',
                  'toString',
                  'Port',
                  Symbol('x'),
                ),
                fc.anything({ maxDepth: 1 }),
              ),
              { minLength: 1, maxLength: 2 },
            ),
          },
        ),
        protoOf,
        fc.boolean(),
      )
      .map(([values, replaced, dropped, extras, proto, complete]) => () => {
        const base: Record<string, unknown> = complete
          ? {
              service: 'orders',
              id: 'i-1',
              host: '10.0.0.1',
              port: 8080,
              weight: 2,
              zone: 'z1',
              version: '1.0',
              status: 'draining',
              metadata: { region: 'eu' },
            }
          : { service: 'orders', host: '10.0.0.1', port: 8080 };
        const entries: [PropertyKey, unknown][] = [];
        for (const name of FIELD_NAMES) {
          if (name === dropped) continue;
          if (replaced.includes(name)) {
            const value: unknown = values[name];
            entries.push([
              name,
              typeof value === 'function' ? (value as () => unknown)() : real(value),
            ]);
          } else if (name in base) {
            entries.push([name, base[name]]);
          }
        }
        return objectOf([...entries, ...extras], proto());
      }),
  },
  { weight: 1, arbitrary: hostileValue.map((v) => () => real(v)) },
);

describe('instance validation matches the zod schema it replaced', () => {
  it('parseInstance (registration): same verdict, instance, field, message and problems', () => {
    const seen = { ok: 0, invalid: 0, threw: 0 };
    fc.assert(
      fc.property(specInput, (make) => {
        const expected = referenceParse(make());
        const actual = actualParse(make());
        if (
          expected.kind === 'threw' &&
          actual.kind === 'invalid' &&
          zodReadsThrowingLength(make())
        ) {
          seen.invalid++;
          return;
        }
        expect(actual).toEqual(expected);
        if (actual.kind === 'threw') expect(actual.name).toBe(HostileError.name);
        seen[actual.kind]++;
      }),
      { numRuns: 2000 },
    );
    // The inputs reach both verdicts often enough for the comparison to mean something.
    expect(seen.ok).toBeGreaterThan(50);
    expect(seen.invalid).toBeGreaterThan(500);
  });

  it('decodeInstance (read-back): same verdict, instance and reason, from objects and JSON', () => {
    fc.assert(
      fc.property(specInput, fc.boolean(), (make, asJson) => {
        const probe = make();
        const service =
          typeof probe === 'object' && probe !== null ? safeString(probe, 'service') : 'orders';
        const id = typeof probe === 'object' && probe !== null ? safeString(probe, 'id') : 'i-1';
        let raw: unknown = make();
        if (asJson) {
          try {
            raw = JSON.stringify(raw);
          } catch {
            raw = '{not json';
          }
        }
        const expected = referenceDecode(raw, service, id);
        const actual = actualDecode(raw, service, id);
        if ('threw' in (expected as object) && !('threw' in (actual as object))) {
          expect(zodReadsThrowingLength(raw)).toBe(true);
          return;
        }
        expect(actual).toEqual(expected);
      }),
      { numRuns: 2000 },
    );
  });

  it('names the pinned messages a caller sees', () => {
    const problem = (spec: object): string =>
      (actualParse(spec) as { message: string }).message.replace(/^Test: /, '');
    const base = { service: 'orders', host: 'h', port: 1 };
    // Issue 16: the type and the value were each introduced by "received".
    expect(problem({ ...base, port: '8080' })).toBe(
      'invalid instance field "port": expected a number, received a string ("8080")',
    );
    expect(problem({ ...base, port: 1.5 })).toBe(
      'invalid instance field "port": expected an integer, received a number (1.5)',
    );
    expect(problem({ ...base, port: null })).toBe(
      'invalid instance field "port": expected a number, received null',
    );
    expect(problem({ ...base, metadata: new Map() })).toBe(
      'invalid instance field "metadata": expected a record, received a Map',
    );
    expect(problem({ ...base, port: 1e20 })).toBe(
      'invalid instance field "port": Too big: expected int to be <=9007199254740991, received 100000000000000000000 (and 1 more problem(s))',
    );
    expect(problem({ ...base, weight: 0 })).toBe(
      'invalid instance field "weight": Too small: expected number to be >0, received 0',
    );
    expect(problem({ ...base, status: 'sleeping' })).toBe(
      'invalid instance field "status": Invalid option: expected one of "up"|"draining"|"down", received "sleeping"',
    );
    expect(problem({ ...base, host: '' })).toBe(
      'invalid instance field "host": Too small: expected string to have >=1 characters, received ""',
    );
    expect(problem({ ...base, colour: 'red', size: 1 })).toBe(
      'invalid instance field "colour": unknown field, received "red"',
    );
    expect(problem({ ...base, metadata: { '': 'x' } })).toBe(
      'invalid instance field "metadata.": Invalid key in record, received "x"',
    );
    expect(problem([])).toBe(
      'invalid instance field "instance": expected an object, received an array',
    );
  });
});

/** A string field of the probe, if reading it is safe and gives a string. */
function safeString(value: object, key: string): string {
  try {
    const v = (value as Record<string, unknown>)[key];
    return typeof v === 'string' ? v : 'x';
  } catch {
    return 'x';
  }
}
