/**
 * Instance filters for `discover`, `watch.instances` and `balancer`.
 *
 * @packageDocumentation
 */
import { InvalidOptionError } from '../core/index.js';
import { INSTANCE_STATUSES, type Instance, type InstanceStatus } from './instance.js';

/** Which instances to return. Every given condition must hold. */
export interface InstanceFilter {
  /**
   * Statuses to include, or `'any'`. `discover` and `balancer` default to `'up'` (draining and
   * down instances get no new traffic); `watch.instances()` without a filter returns all.
   */
  readonly status?: InstanceStatus | readonly InstanceStatus[] | 'any' | undefined;
  /** Only instances in this zone. */
  readonly zone?: string | undefined;
  /** Only instances of this version. */
  readonly version?: string | undefined;
  /** Only instances whose metadata has every one of these pairs. */
  readonly metadata?: Readonly<Record<string, string>> | undefined;
  /** Any other condition. */
  readonly where?: ((instance: Instance) => boolean) | undefined;
}

/** Checks a filter's shape once, so a typo fails loudly instead of matching nothing. @internal */
export function checkFilter(owner: string, filter: unknown): InstanceFilter | undefined {
  if (filter === undefined) return undefined;
  if (typeof filter !== 'object' || filter === null) {
    throw new InvalidOptionError(owner, 'filter', 'an object { status?, zone?, … }', filter);
  }
  const known = new Set(['status', 'zone', 'version', 'metadata', 'where']);
  for (const key of Object.keys(filter)) {
    if (!known.has(key))
      throw new InvalidOptionError(
        owner,
        `filter.${key}`,
        `one of ${[...known].join(', ')}`,
        (filter as Record<string, unknown>)[key],
        'unknown filter field',
      );
  }
  const { status } = filter as InstanceFilter;
  const statuses = status === undefined || status === 'any' ? [] : [status].flat();
  for (const s of statuses) {
    if (!INSTANCE_STATUSES.includes(s))
      throw new InvalidOptionError(
        owner,
        'filter.status',
        `'any' or one or more of ${INSTANCE_STATUSES.join(', ')}`,
        s,
      );
  }
  return filter;
}

/** Whether `instance` passes `filter`. @internal */
export function matchesFilter(instance: Instance, filter: InstanceFilter): boolean {
  const { status, zone, version, metadata, where } = filter;
  if (status !== undefined && status !== 'any') {
    if (typeof status === 'string' ? instance.status !== status : !status.includes(instance.status))
      return false;
  }
  if (zone !== undefined && instance.zone !== zone) return false;
  if (version !== undefined && instance.version !== version) return false;
  if (metadata !== undefined) {
    for (const key of Object.keys(metadata))
      if (instance.metadata[key] !== metadata[key]) return false;
  }
  return where === undefined || where(instance);
}
