/**
 * Public-API fuzz suite of `keel/hashring` (issue 14): every exported constructor, method and
 * option gets arbitrary values — fast-check's `anything`, NaN/±Infinity/−0/huge numbers, lone
 * surrogates, 1 MB strings, `__proto__` keys, throwing getters, Proxies — and must answer with
 * the documented result or a typed KeelError naming the option; a call that throws changes
 * nothing observable. Runs are bounded so the file stays well under 20 s; sizes are bounded by
 * the documented limits (MAX_RING_POINTS), so nothing hangs.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BoundedLoads,
  HashRing,
  JumpHash,
  MaglevHash,
  MAX_RING_POINTS,
  PartitionedRing,
  RendezvousHash,
  boundedCap,
  boundedGet,
  jumpConsistentHash,
  ketamaDigests,
  murmur3,
  murmur3Hasher,
  murmur3String,
  type KeyRouter,
} from '../../src/hashring/index.js';
import {
  built,
  hostileNodeList,
  hostileNodeSpec,
  hostileNumber,
  hostileString,
  hostileValue,
  newTally,
  reportTally,
  settle,
} from './arbitraries.js';

/** Runs per property; KEEL_FUZZ_RUNS raises it for a long local run. */
const RUNS = Number(process.env.KEEL_FUZZ_RUNS ?? 100);
const tally = newTally();
reportTally('hashring fuzz', tally);

/** Options objects with every known option possibly hostile, plus unknown and polluting keys. */
function optionsArb(known: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<unknown> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.record(known, { requiredKeys: [] }) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.record(known, { requiredKeys: [] }), hostileString, hostileValue)
        .map(([base, key, value]) => ({ ...base, [key]: value })),
    },
    { weight: 1, arbitrary: hostileValue },
  );
}

function ringState(ring: HashRing): unknown {
  return {
    size: ring.size,
    points: ring.pointCount,
    revision: ring.revision,
    fingerprint: ring.fingerprint,
    nodes: ring.nodes(),
  };
}

function routerState(router: KeyRouter): unknown {
  return { size: router.size, nodes: router.nodes(), owner: router.get('probe')?.id };
}

/** Calls a mutator with hostile arguments; if it throws, the state must be unchanged. */
function mutate(what: string, state: () => unknown, fn: () => unknown): void {
  const before = state();
  if (!settle(what, fn, tally))
    expect(state(), `${what} threw but changed the state`).toEqual(before);
}

describe('keel/hashring fuzz', () => {
  it('HashRing: constructor options', () => {
    fc.assert(
      fc.property(
        optionsArb({
          nodes: hostileNodeList,
          mode: fc.oneof(
            fc.constantFrom('keel', 'libmemcached', 'libketama', 'hashring-legacy'),
            hostileValue,
          ),
          pointsPerWeight: fc.oneof(fc.integer({ min: 1, max: 400 }), hostileNumber),
          hash: fc.oneof(fc.constant(murmur3Hasher), fc.constant(murmur3), hostileValue),
          cacheSize: fc.oneof(fc.nat({ max: 100 }), hostileNumber),
        }),
        built((options) => {
          tally.cases++;
          let ring: HashRing | undefined;
          settle('new HashRing', () => (ring = new HashRing(options as never)), tally);
          if (ring !== undefined) {
            expect(ring.pointCount).toBeLessThanOrEqual(MAX_RING_POINTS);
            if (ring.size > 0) expect(ring.pointCount).toBeGreaterThan(0);
            const r = ring;
            settle('get', () => r.get('k'), tally);
          }
        }),
      ),
      { numRuns: RUNS },
    );
  });

  it('HashRing: every method, on every mode', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('keel', 'libmemcached', 'libketama', 'hashring-legacy' as const),
        fc.array(
          fc.tuple(
            fc.constantFrom(
              'get',
              'getN',
              'findFrom',
              'hashKey',
              'ownerOfHash',
              'has',
              'node',
              'pointsOf',
              'add',
              'remove',
              'setWeight',
              'stats',
              'diff',
              'toJSON',
              'fromJSON',
            ),
            hostileValue,
            hostileValue,
            hostileNodeSpec,
          ),
          { maxLength: 8 },
        ),
        built((mode, calls) => {
          const ring = new HashRing({
            mode,
            nodes: [{ id: 'a:1' }, { id: 'b:1', weight: 2 }, { id: 'c:1', zone: 'z' }],
          });
          const state = (): unknown => ringState(ring);
          for (const [method, x, y, spec] of calls) {
            tally.cases++;
            switch (method) {
              case 'get':
                settle('get', () => ring.get(x as string), tally);
                break;
              case 'getN':
                settle('getN', () => ring.getN(x as string, y as number, spec as never), tally);
                settle('getN n', () => ring.getN('k', y as number), tally);
                break;
              case 'findFrom':
                settle('findFrom', () => ring.findFrom(x as string, y as never), tally);
                break;
              case 'hashKey':
                settle('hashKey', () => ring.hashKey(x as string), tally);
                break;
              case 'ownerOfHash':
                settle('ownerOfHash', () => ring.ownerOfHash(x as number), tally);
                break;
              case 'has':
                settle('has', () => ring.has(x as string), tally);
                break;
              case 'node':
                settle('node', () => ring.node(x as string), tally);
                break;
              case 'pointsOf':
                settle('pointsOf', () => ring.pointsOf(x as string), tally);
                break;
              case 'add':
                mutate('add', state, () => ring.add(spec as never));
                break;
              case 'remove':
                mutate('remove', state, () => ring.remove(x as string));
                break;
              case 'setWeight':
                mutate('setWeight', state, () => ring.setWeight(x as string, y as number));
                mutate('setWeight a', state, () => ring.setWeight('a:1', y as number));
                break;
              case 'stats':
                settle('stats', () => ring.stats(), tally);
                break;
              case 'diff':
                settle('diff', () => HashRing.diff(ring, x as HashRing), tally);
                settle('diff', () => HashRing.diff(x as HashRing, ring), tally);
                break;
              case 'toJSON':
                settle('toJSON', () => ring.toJSON(), tally);
                break;
              case 'fromJSON': {
                const snapshot = ring.toJSON();
                settle('fromJSON', () => HashRing.fromJSON(x), tally);
                settle('fromJSON', () => HashRing.fromJSON(snapshot, x as never), tally);
                settle(
                  'fromJSON nodes',
                  () => HashRing.fromJSON({ ...snapshot, nodes: [spec] }),
                  tally,
                );
                settle(
                  'fromJSON field',
                  () =>
                    HashRing.fromJSON({ ...snapshot, [typeof y === 'string' ? y : 'extra']: x }),
                  tally,
                );
                // The documented round trip, whenever the nodes' data is JSON (a BigInt is not).
                let text: string | undefined;
                try {
                  text = JSON.stringify(snapshot);
                } catch {
                  text = undefined;
                }
                if (text !== undefined)
                  expect(HashRing.fromJSON(text).fingerprint).toBe(ring.fingerprint);
                break;
              }
            }
            if (ring.size > 0) expect(ring.get('probe')).toBeDefined();
          }
        }),
      ),
      { numRuns: RUNS },
    );
  });

  it('MaglevHash, RendezvousHash, JumpHash, PartitionedRing: constructors and methods', () => {
    const makers: [string, (options: unknown) => KeyRouter & Record<string, unknown>][] = [
      ['MaglevHash', (o) => new MaglevHash(o as never) as never],
      ['RendezvousHash', (o) => new RendezvousHash(o as never) as never],
      ['JumpHash', (o) => new JumpHash(o as never) as never],
      ['PartitionedRing', (o) => new PartitionedRing(o as never) as never],
    ];
    fc.assert(
      fc.property(
        fc.constantFrom(...makers),
        optionsArb({
          nodes: hostileNodeList,
          tableSize: fc.oneof(fc.constantFrom(101, 1009, 65537), hostileNumber),
          partitionCount: fc.oneof(fc.constantFrom(1, 7, 271), hostileNumber),
          c: fc.oneof(fc.constantFrom(1.25, 2), hostileNumber),
          pointsPerWeight: fc.oneof(fc.constantFrom(1, 40), hostileNumber),
        }),
        fc.array(fc.tuple(hostileValue, hostileValue, hostileNodeSpec), { maxLength: 6 }),
        built(([name, make], options, calls) => {
          tally.cases++;
          settle(`new ${name}`, () => make(options), tally);
          // Methods run on a well-formed router, so their own arguments are what is tested.
          const router = make({
            nodes: [{ id: 'a' }, { id: 'b' }, { id: 'c' }],
            // A small Maglev table: every change rebuilds it.
            ...(name === 'MaglevHash' ? { tableSize: 1009 } : {}),
          });
          const state = (): unknown => routerState(router);
          for (const [x, y, spec] of calls) {
            tally.cases++;
            settle(`${name}.get`, () => router.get(x as string), tally);
            settle(`${name}.getN`, () => router.getN(x as string, y as number), tally);
            settle(`${name}.getN n`, () => router.getN('k', y as number), tally);
            settle(`${name}.has`, () => router.has(x as string), tally);
            for (const method of [
              'node',
              'bucketOf',
              'capOf',
              'partitionOf',
              'ownerOf',
              'partitionsOf',
            ]) {
              const fn = router[method];
              if (typeof fn === 'function')
                settle(
                  `${name}.${method}`,
                  () => (fn as (v: unknown) => unknown).call(router, x),
                  tally,
                );
            }
            mutate(`${name}.add`, state, () => (router as unknown as HashRing).add(spec as never));
            mutate(`${name}.remove`, state, () =>
              (router as unknown as HashRing).remove(x as string),
            );
            if (name !== 'JumpHash') {
              mutate(`${name}.setWeight`, state, () =>
                (router as unknown as HashRing).setWeight(x as string, y as number),
              );
              mutate(`${name}.setWeight a`, state, () =>
                (router as unknown as HashRing).setWeight('a', y as number),
              );
            }
            if (router.size > 0) expect(router.get('probe')).toBeDefined();
          }
        }),
      ),
      { numRuns: RUNS },
    );
  });

  it('BoundedLoads and the bounded-load helpers', () => {
    fc.assert(
      fc.property(
        hostileValue,
        optionsArb({ c: fc.oneof(fc.constantFrom(1.25, 2), hostileNumber) }),
        fc.array(fc.tuple(hostileValue, hostileValue), { maxLength: 6 }),
        built((ringArg, options, calls) => {
          tally.cases++;
          settle(
            'new BoundedLoads',
            () => new BoundedLoads(ringArg as HashRing, options as never),
            tally,
          );
          const ring = new HashRing({ nodes: [{ id: 'a' }, { id: 'b', weight: 2 }] });
          const loads = new BoundedLoads(ring);
          for (const [x, y] of calls) {
            tally.cases++;
            const state = (): unknown => ({
              total: loads.totalLoad,
              a: loads.load('a'),
              b: loads.load('b'),
            });
            mutate('assign', state, () => loads.assign(x as string));
            mutate('release', state, () => loads.release(x as string, y as number));
            mutate('release a', state, () => loads.release('a', y as number));
            settle('load', () => loads.load(x as string), tally);
            settle('capOf', () => loads.capOf(x as string), tally);
            settle('boundedCap', () => boundedCap(x as number, y as number, 1, 2), tally);
            settle('boundedCap', () => boundedCap(1.25, 3, x as number, y as number), tally);
            settle('boundedGet', () => boundedGet(ring, x as string, y as never), tally);
            settle('boundedGet', () => boundedGet(x as HashRing, 'k', () => 0), tally);
          }
        }),
      ),
      { numRuns: RUNS },
    );
  });

  it('hash functions and ketamaDigests', () => {
    fc.assert(
      fc.property(
        hostileValue,
        hostileValue,
        hostileValue,
        hostileValue,
        built((a, b, c, d) => {
          tally.cases++;
          settle('murmur3', () => murmur3(a as Uint8Array, b as number), tally);
          settle('murmur3String', () => murmur3String(a as string, b as number), tally);
          settle('murmur3Hasher.string', () => murmur3Hasher.string(a as string), tally);
          settle('murmur3Hasher.bytes', () => murmur3Hasher.bytes(a as Uint8Array), tally);
          settle(
            'jumpConsistentHash',
            () => jumpConsistentHash(a as number, b as number, c as number),
            tally,
          );
          settle(
            'ketamaDigests',
            () => ketamaDigests(a as 'libketama', b as number, c as number, d as number),
            tally,
          );
          for (const mode of ['libmemcached', 'libketama', 'hashring-legacy'] as const) {
            settle(
              'ketamaDigests',
              () => ketamaDigests(mode, b as number, c as number, d as number),
              tally,
            );
          }
        }),
      ),
      { numRuns: RUNS * 2 },
    );
  });
});
