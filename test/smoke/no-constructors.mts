// Type-checked by test/smoke/dts.mjs against the built declarations (as a consumer sees them):
// the handles Keel makes itself have no public constructor (issue 16, item 2) — with the
// `@internal` constructors stripped, the .d.ts used to show an implicit public one — and
// `instanceof` still works on them.
import { FollowingBalancer } from '../../dist/balancer/index.js';
import { Registration, ServiceWatch } from '../../dist/discovery/index.js';
import { Lock, Permit, Semaphore } from '../../dist/lock/index.js';

// @ts-expect-error Lock has no public constructor (locks come from acquire() and using())
new Lock();
// @ts-expect-error Permit has no public constructor
new Permit();
// @ts-expect-error Semaphore has no public constructor (Redlock.semaphore())
new Semaphore();
// @ts-expect-error Registration has no public constructor (Registry.register())
new Registration();
// @ts-expect-error ServiceWatch has no public constructor (Registry.watch())
new ServiceWatch();
// @ts-expect-error FollowingBalancer has no public constructor (LoadBalancer.following())
new FollowingBalancer({} as never); // eslint-disable-line @typescript-eslint/no-unnecessary-type-assertion -- a watch, as the public constructor would take

export function kinds(value: unknown): string[] {
  const found: string[] = [];
  if (value instanceof Lock) found.push('lock');
  if (value instanceof Permit) found.push(`permit of ${value.permits}`);
  if (value instanceof Semaphore) found.push(value.name);
  if (value instanceof Registration) found.push(value.id);
  if (value instanceof ServiceWatch) found.push(value.service);
  if (value instanceof FollowingBalancer) found.push(value.watch.service);
  return found;
}
