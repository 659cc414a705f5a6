/**
 * The instance model: what one running copy of a service tells the registry about itself.
 * Validated with zod at the edges — strictly on the way in (a typo in a registration is a bug to
 * report at once), leniently on the way back (a record written by a newer Keel with an extra
 * field is still usable), and never trusted: a record read back that fails the schema is
 * quarantined by the watch, not handed to callers.
 *
 * @packageDocumentation
 */
import { z } from 'zod';
import { InvalidInstanceError } from './errors.js';

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

const text = (max: number): z.ZodString => z.string().min(1).max(max);

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

/** Registration input: strict (unknown fields are errors), with defaults for the optional parts. */
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

/** Stored form read back: every field present (optional ones may be absent), extras ignored. */
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

function freeze(value: z.infer<typeof storedSchema>): Instance {
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

function describeIssue(issue: z.core.$ZodIssue): { path: string; message: string } {
  const parts = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p)));
  // An unknown field is reported on its parent; name the field itself.
  if (issue.code === 'unrecognized_keys' && issue.keys[0] !== undefined) {
    parts.push(issue.keys[0]);
    return { path: parts.join('.'), message: 'unknown field' };
  }
  const path = parts.join('.');
  return { path: path === '' ? 'instance' : path, message: issue.message };
}

/**
 * Validates and defaults registration data. Throws {@link InvalidInstanceError} naming the first
 * bad field (and listing every problem).
 *
 * @param where - who is validating, for the message (e.g. `Registry.register`)
 * @internal
 */
export function parseInstance(input: unknown, where: string): Instance {
  const result = specSchema.safeParse(input);
  if (!result.success) {
    const problems = result.error.issues.map(describeIssue);
    const first = problems[0] ?? { path: 'instance', message: 'invalid' };
    const value = first.path === 'instance' ? input : pick(input, first.path.split('.'));
    throw new InvalidInstanceError(where, first.path, first.message, value, problems);
  }
  const v = result.data;
  return freeze({
    service: v.service,
    id: v.id ?? `${v.host}:${v.port}`,
    host: v.host,
    port: v.port,
    weight: v.weight ?? 1,
    zone: v.zone,
    version: v.version,
    status: v.status ?? 'up',
    metadata: v.metadata ?? {},
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
  return { ok: true, instance: freeze(result.data) };
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
