// A bundled consumer (TypeScript "moduleResolution": "bundler"; esbuild bundles it): the two
// subpaths a front-end-ish service would bundle, one call each, run as the bundle.
import { HashRing } from 'keel/hashring';
import { CircuitBreaker, isBreakerOpenError } from 'keel/breaker';

const ring = new HashRing({ nodes: [{ id: 'cache-1' }, { id: 'cache-2' }, { id: 'cache-3' }] });
const owner = ring.get('session:42');
if (owner === undefined) throw new Error('keel/hashring: no owner');

const breaker = new CircuitBreaker();
breaker.forceOpen();
const outcome = await breaker
  .execute(() => Promise.resolve('called'))
  .catch((error: unknown) => error);
if (!isBreakerOpenError(outcome)) throw new Error('keel/breaker: a forced-open breaker called');

console.log(`bundler consumer: keel/hashring (${owner.id}) and keel/breaker OK`);
