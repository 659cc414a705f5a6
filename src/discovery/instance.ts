/**
 * The instance model: what one running copy of a service tells the registry about itself.
 * Validated at the edges — strictly on the way in (a typo in a registration is a bug to report
 * at once), leniently on the way back (a record written by a newer Keel with an extra field is
 * still usable), and never trusted: a record read back that fails the checks is quarantined by
 * the watch, not handed to callers.
 *
 * The checks are written out by hand rather than with zod: a handful of fields did not justify
 * the ~450 kB zod added to every bundle of `keel/discovery` (issue 16). They accept exactly what
 * the zod schema they replaced accepted and word their problems as its English messages did;
 * `test/discovery/instance-schema.prop.test.ts` holds the two side by side.
 *
 * @packageDocumentation
 */
import { InvalidInstanceError, type InstanceProblem } from './errors.js';

/**
 * Lifecycle status of an instance. `up` takes traffic; `draining` is finishing its work and
 * should get no new requests (it stays visible so callers can tell it from a dead one); `down`
 * is registered but not serving.
 */
export type InstanceStatus = 'up' | 'draining' | 'down';

/** The statuses, in lifecycle order. */
export const INSTANCE_STATUSES: readonly InstanceStatus[] = Object.freeze([
  'up',
  'draining',
  'down',
]);

/** A registered service instance, as every reader sees it: validated, defaulted and frozen. */
export interface Instance {
  /** Service name, e.g. `orders`: letters, digits, `.`, `_`, `-` (1–128 characters). */
  readonly service: string;
  /** Unique id within the service (1–256 printable characters, no braces). */
  readonly id: string;
  /** Host name or address callers connect to. */
  readonly host: string;
  /** TCP port, 0–65535. */
  readonly port: number;
  /** Relative capacity for weighted balancing: a finite number > 0. */
  readonly weight: number;
  /** Failure domain (availability zone, rack), if given. */
  readonly zone: string | undefined;
  /** Build or API version, if given. */
  readonly version: string | undefined;
  /** Lifecycle status; only `up` instances get new traffic by default. */
  readonly status: InstanceStatus;
  /** Free-form string pairs (up to 64 entries). */
  readonly metadata: Readonly<Record<string, string>>;
}

/** An instance as the caller describes it to `register()`: only service, host and port are required. */
export interface InstanceSpec {
  /** Service name, e.g. `orders` (letters, digits, `.`, `_`, `-`; 1–128 characters). */
  readonly service: string;
  /** @defaultValue `${host}:${port}` */
  readonly id?: string | undefined;
  /** Host name or address callers connect to. */
  readonly host: string;
  /** TCP port, 0–65535. */
  readonly port: number;
  /** @defaultValue 1 */
  readonly weight?: number | undefined;
  /** Failure domain (availability zone, rack). */
  readonly zone?: string | undefined;
  /** Build or API version. */
  readonly version?: string | undefined;
  /** @defaultValue 'up' */
  readonly status?: InstanceStatus | undefined;
  /** @defaultValue `{}` */
  readonly metadata?: Readonly<Record<string, string>> | undefined;
}

// Braces are excluded from service names because the Redis backend puts the service name in a
// Redis Cluster hash tag (`{orders}`); a brace inside would change which part is hashed.
const SERVICE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
// Ids are printable ASCII without braces or whitespace, so they are safe in keys, logs and URLs.
const ID = /^[!-z|~]{1,256}$/;

const FIELDS = [
  'service',
  'id',
  'host',
  'port',
  'weight',
  'zone',
  'version',
  'status',
  'metadata',
] as const;
type Field = (typeof FIELDS)[number];
const FIELD_NAMES: ReadonlySet<string> = new Set(FIELDS);

/** The fields a registration may leave out (each has a default or is optional). */
const SPEC_OPTIONAL: ReadonlySet<Field> = new Set([
  'id',
  'weight',
  'zone',
  'version',
  'status',
  'metadata',
]);
/** The fields a stored record may leave out. */
const STORED_OPTIONAL: ReadonlySet<Field> = new Set(['zone', 'version']);

const MAX_METADATA_ENTRIES = 64;

/** Instance data that passed the checks (fields not yet defaulted). */
interface Checked {
  service: string;
  id: string | undefined;
  host: string;
  port: number;
  weight: number | undefined;
  zone: string | undefined;
  version: string | undefined;
  status: InstanceStatus | undefined;
  metadata: Record<string, string> | undefined;
}

/**
 * What a message calls a value's type: `typeof`, with `null`, `array`, `NaN`/`Infinity` and the
 * class name of an object made by a constructor other than `Object` told apart.
 */
function typeName(value: unknown): string {
  if (typeof value === 'number') return Number.isFinite(value) ? 'number' : String(value);
  if (typeof value !== 'object') return typeof value;
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (Object.getPrototypeOf(value) !== Object.prototype && 'constructor' in value) {
    const ctor: unknown = value.constructor;
    if (ctor) {
      const name: unknown = (ctor as { name?: unknown }).name;
      return typeof name === 'string' ? name : 'object';
    }
  }
  return 'object';
}

/** A type name with its article, as a sentence reads it: `a string`, `an array`, `null`. */
function withArticle(name: string): string {
  if (/^(null|undefined|NaN|-?Infinity)$/.test(name)) return name;
  return /^[aeiouAEIOU]/.test(name) ? `an ${name}` : `a ${name}`;
}

/**
 * A value of the wrong type, e.g. `expected a number, received a string`. The error built from
 * the first problem adds the value itself (issue 16: the words once read "received string,
 * received \"8080\"").
 */
const wrongType = (expected: string, value: unknown): string =>
  `expected ${withArticle(expected)}, received ${withArticle(typeName(value))}`;

/**
 * Length in Unicode code points (the limits count characters, not UTF-16 units): a surrogate
 * pair (a high surrogate U+D800–DBFF followed by a low one U+DC00–DFFF, ECMA-262 §6.1.4) counts
 * once, a lone surrogate as one.
 */
function codePoints(text: string): number {
  let count = text.length;
  for (let i = 0; i < text.length - 1; i++) {
    if ((text.charCodeAt(i) & 0xfc00) === 0xd800 && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      count--;
      i++;
    }
  }
  return count;
}

const longerThan = (text: string, max: number): boolean =>
  text.length > max && codePoints(text) > max;

/**
 * Checks one value, adding what is wrong with it to `problems`. Returns true when the value is
 * of the wrong kind altogether (later checks on it would be noise), false otherwise.
 */
type Check = (value: unknown, path: string, problems: InstanceProblem[]) => boolean;

function text(min: 0 | 1, max: number): Check {
  return (value, path, problems) => {
    if (typeof value !== 'string') {
      problems.push({ path, message: wrongType('string', value) });
      return true;
    }
    if (value.length < min) {
      problems.push({ path, message: `Too small: expected string to have >=${min} characters` });
    } else if (longerThan(value, max)) {
      problems.push({ path, message: `Too big: expected string to have <=${max} characters` });
    }
    return false;
  };
}

function matching(pattern: RegExp, message: string): Check {
  return (value, path, problems) => {
    if (typeof value !== 'string') {
      problems.push({ path, message: wrongType('string', value) });
      return true;
    }
    if (!pattern.test(value)) problems.push({ path, message });
    return false;
  };
}

const isNumber = (value: unknown): value is number =>
  typeof value === 'number' && Number.isFinite(value);

const checkPort: Check = (value, path, problems) => {
  if (!isNumber(value)) {
    problems.push({ path, message: wrongType('number', value) });
    return true;
  }
  if (!Number.isInteger(value)) {
    problems.push({ path, message: 'expected an integer, received a number' });
    return true;
  }
  if (value > Number.MAX_SAFE_INTEGER) {
    problems.push({ path, message: `Too big: expected int to be <=${Number.MAX_SAFE_INTEGER}` });
  } else if (value < Number.MIN_SAFE_INTEGER) {
    problems.push({ path, message: `Too small: expected int to be >=${Number.MIN_SAFE_INTEGER}` });
  }
  if (value < 0) problems.push({ path, message: 'Too small: expected number to be >=0' });
  if (value > 65535) problems.push({ path, message: 'Too big: expected number to be <=65535' });
  return false;
};

const checkWeight: Check = (value, path, problems) => {
  if (!isNumber(value)) {
    problems.push({ path, message: wrongType('number', value) });
    return true;
  }
  if (!(value > 0)) problems.push({ path, message: 'Too small: expected number to be >0' });
  return false;
};

const checkStatus: Check = (value, path, problems) => {
  if (INSTANCE_STATUSES.includes(value as InstanceStatus)) return false;
  problems.push({
    path,
    message: `Invalid option: expected one of ${INSTANCE_STATUSES.map((s) => `"${s}"`).join('|')}`,
  });
  return true;
};

const CHECKS: Readonly<Record<Exclude<Field, 'metadata'>, Check>> = {
  service: matching(SERVICE, 'letters, digits, ".", "_" or "-" (1-128, starting alnum)'),
  id: matching(ID, 'printable characters without spaces or braces (1-256)'),
  host: text(1, 255),
  port: checkPort,
  weight: checkWeight,
  zone: text(1, 128),
  version: text(1, 128),
  status: checkStatus,
};

/** An object (not null, not an array): what the instance itself must be. */
const isObject = (value: unknown): value is Record<PropertyKey, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * A plain object, as metadata must be: made by an object literal, `JSON.parse` or
 * `Object.create(null)` — not a Map, Date or class instance (whose data is not in its own
 * enumerable properties).
 */
function isPlainObject(value: unknown): value is Record<PropertyKey, unknown> {
  if (!isObject(value)) return false;
  const ctor: unknown = value.constructor;
  if (typeof ctor !== 'function') return true;
  const proto: unknown = (ctor as { prototype?: unknown }).prototype;
  return isObject(proto) && Object.prototype.hasOwnProperty.call(proto, 'isPrototypeOf');
}

const checkMetadataValue = text(0, 4096);

/**
 * Checks metadata and copies it: every own enumerable key (a `__proto__` key is dropped, never
 * copied), each value read once so the copy holds what was checked. Undefined when `value` is
 * not a plain object.
 */
function checkMetadata(
  value: unknown,
  path: string,
  problems: InstanceProblem[],
): Record<string, string> | undefined {
  if (!isPlainObject(value)) {
    problems.push({ path, message: wrongType('record', value) });
    return undefined;
  }
  const copy: Record<string, string> = {};
  let entries = 0;
  let wrongKind = false;
  for (const key of Reflect.ownKeys(value)) {
    if (key === '__proto__' || !Object.prototype.propertyIsEnumerable.call(value, key)) continue;
    const at = `${path}.${String(key)}`;
    // Keys are 1-128 characters; a symbol key is not a string at all.
    if (typeof key !== 'string' || key.length === 0 || longerThan(key, 128)) {
      problems.push({ path: at, message: 'Invalid key in record' });
      wrongKind = true;
      continue;
    }
    const entry = value[key];
    if (checkMetadataValue(entry, at, problems)) wrongKind = true;
    copy[key] = entry as string;
    entries++;
  }
  if (!wrongKind && entries > MAX_METADATA_ENTRIES) {
    problems.push({ path, message: `at most ${MAX_METADATA_ENTRIES} entries` });
  }
  return copy;
}

/**
 * Checks instance data field by field, each field read once. `strict` (registration) makes
 * unknown fields a problem; `optional` names the fields that may be absent (or undefined).
 */
function check(
  input: unknown,
  optional: ReadonlySet<Field>,
  strict: boolean,
  problems: InstanceProblem[],
): Checked | undefined {
  if (!isObject(input)) {
    problems.push({ path: 'instance', message: wrongType('object', input) });
    return undefined;
  }
  const out: Partial<Record<Field, unknown>> = {};
  for (const field of FIELDS) {
    const value = input[field];
    if (value === undefined && optional.has(field)) continue;
    out[field] =
      field === 'metadata'
        ? checkMetadata(value, field, problems)
        : (CHECKS[field](value, field, problems), value);
  }
  if (strict) {
    // Inherited enumerable keys count too: they are part of what the caller handed over.
    for (const key in input) {
      if (!FIELD_NAMES.has(key)) {
        problems.push({ path: key, message: 'unknown field' });
        break;
      }
    }
  }
  return problems.length === 0 ? (out as Checked) : undefined;
}

/** The instance, frozen, metadata copied and frozen too. */
function freeze(value: Checked & { id: string; weight: number; status: InstanceStatus }): Instance {
  return Object.freeze({
    service: value.service,
    id: value.id,
    host: value.host,
    port: value.port,
    weight: value.weight,
    zone: value.zone,
    version: value.version,
    status: value.status,
    metadata: Object.freeze({ ...value.metadata }),
  });
}

/**
 * Validates and defaults registration data. Throws {@link InvalidInstanceError} naming the first
 * bad field (and listing every problem).
 *
 * @param where - who is validating, for the message (e.g. `Registry.register`)
 * @internal
 */
export function parseInstance(input: unknown, where: string): Instance {
  const problems: InstanceProblem[] = [];
  const v = check(input, SPEC_OPTIONAL, true, problems);
  if (v === undefined) {
    const first = problems[0] ?? { path: 'instance', message: 'invalid' };
    const value = first.path === 'instance' ? input : pick(input, first.path.split('.'));
    throw new InvalidInstanceError(where, first.path, first.message, value, problems);
  }
  return freeze({
    ...v,
    id: v.id ?? `${v.host}:${v.port}`,
    weight: v.weight ?? 1,
    status: v.status ?? 'up',
  });
}

function pick(input: unknown, path: readonly PropertyKey[]): unknown {
  let value = input;
  for (const key of path) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

/** The result of reading a stored record back. */
export type Decoded =
  | { readonly ok: true; readonly instance: Instance }
  | { readonly ok: false; readonly reason: string };

/**
 * Decodes a stored record (a JSON string from Redis, or an object) into an instance, checking
 * that it belongs where it was found. Never throws: a bad record is a reason, not a crash.
 *
 * @internal
 */
export function decodeInstance(raw: unknown, service: string, id: string): Decoded {
  let value = raw;
  if (typeof raw === 'string') {
    try {
      value = JSON.parse(raw) as unknown;
    } catch {
      return { ok: false, reason: 'not valid JSON' };
    }
  }
  const problems: InstanceProblem[] = [];
  const v = check(value, STORED_OPTIONAL, false, problems);
  if (v === undefined) {
    const problem = problems[0] ?? { path: 'instance', message: 'invalid' };
    return { ok: false, reason: `${problem.path}: ${problem.message}` };
  }
  if (v.service !== service || v.id !== id) {
    return {
      ok: false,
      reason: `record claims ${v.service}/${String(v.id)} but is stored as ${service}/${id}`,
    };
  }
  // Weight and status are required in a stored record, so they were checked present.
  return {
    ok: true,
    instance: freeze({ ...v, id, weight: v.weight as number, status: v.status as InstanceStatus }),
  };
}

/** The stored form of an instance: JSON with a fixed field order, so equal instances encode equally. */
export function encodeInstance(instance: Instance): string {
  const metadata: Record<string, string> = {};
  for (const key of Object.keys(instance.metadata).sort())
    metadata[key] = instance.metadata[key] as string;
  return JSON.stringify({
    service: instance.service,
    id: instance.id,
    host: instance.host,
    port: instance.port,
    weight: instance.weight,
    zone: instance.zone,
    version: instance.version,
    status: instance.status,
    metadata,
  });
}

/** Whether two instances carry the same data. */
export function sameInstance(a: Instance, b: Instance): boolean {
  return a === b || encodeInstance(a) === encodeInstance(b);
}

/** True for a valid service name. @internal */
export function isServiceName(value: unknown): value is string {
  return typeof value === 'string' && SERVICE.test(value);
}
