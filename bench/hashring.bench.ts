/**
 * hashring: Keel's HashRing against npm `hashring` (the ketama ring most Node users have) and
 * npm `consistent-hash`, on unique 10–20 character keys (not a few repeated strings, which
 * would only measure hashring's LRU cache), at N = 10, 100 and 1000 nodes with 160 points
 * per node for all three. Reports memory per virtual node, balance, and keys moved on
 * membership changes for the ring and its alternatives.
 */
import ConsistentHash from 'consistent-hash';
import NpmHashRing from 'hashring';
import {
  BoundedLoads,
  HashRing,
  JumpHash,
  MaglevHash,
  PartitionedRing,
  RendezvousHash,
  type KeyRouter,
} from '../src/hashring/index.js';
import { defineSuite, type BenchReport, type BenchTask } from './suite.js';

/** Deterministic PRNG (mulberry32) so every run measures the same keys. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789:-_';

/** `count` unique keys of 10–20 characters. */
function makeKeys(count: number, seed: number): string[] {
  const random = rng(seed);
  const out = new Set<string>();
  while (out.size < count) {
    const length = 10 + Math.floor(random() * 11);
    let key = '';
    for (let i = 0; i < length; i++) key += ALPHABET.charAt(Math.floor(random() * ALPHABET.length));
    out.add(key);
  }
  return [...out];
}

const KEYS = makeKeys(200_000, 42);
const ids = (n: number, prefix = '10.0'): string[] =>
  Array.from({ length: n }, (_, i) => `${prefix}.${Math.floor(i / 250)}.${(i % 250) + 1}:11211`);

const BATCH = 100;
let cursor = 0;
const nextKey = (): string => {
  cursor = cursor + 1 === KEYS.length ? 0 : cursor + 1;
  return KEYS[cursor] as string;
};

function lookupTasks(n: number): BenchTask[] {
  const servers = ids(n);
  const ours = new HashRing({ nodes: servers.map((id) => ({ id })) });
  const npm = new NpmHashRing(servers);
  const ch = new ConsistentHash({ distribution: 'uniform' });
  for (const id of servers) ch.add(id, 160);
  const label = `N=${n}`;
  return [
    {
      name: `HashRing.get ${label}`,
      kind: 'keel',
      batch: BATCH,
      compareTo: [`hashring.get ${label}`, `consistent-hash.get ${label}`],
      fn: () => ours.get(nextKey()),
    },
    { name: `hashring.get ${label}`, kind: 'peer', batch: BATCH, fn: () => npm.get(nextKey()) },
    {
      name: `consistent-hash.get ${label}`,
      kind: 'peer',
      batch: BATCH,
      fn: () => ch.get(nextKey()),
    },
    {
      name: `HashRing.getN(3) ${label}`,
      kind: 'keel',
      batch: BATCH,
      compareTo: [`hashring.range(3) ${label}`, `consistent-hash.get(3) ${label}`],
      fn: () => ours.getN(nextKey(), 3),
    },
    {
      name: `hashring.range(3) ${label}`,
      kind: 'peer',
      batch: BATCH,
      fn: () => npm.range(nextKey(), 3),
    },
    {
      name: `consistent-hash.get(3) ${label}`,
      kind: 'peer',
      batch: BATCH,
      fn: () => ch.get(nextKey(), 3),
    },
  ];
}

function changeTasks(n: number): BenchTask[] {
  const servers = ids(n);
  const nodes = servers.map((id) => ({ id }));
  const extra = '10.9.9.9:11211';
  const ours = new HashRing({ nodes });
  const npm = new NpmHashRing(servers);
  const ch = new ConsistentHash({ distribution: 'uniform' });
  for (const id of servers) ch.add(id, 160);
  const label = `N=${n}`;
  return [
    {
      name: `HashRing build ${label}`,
      kind: 'keel',
      compareTo: [`hashring build ${label}`, `consistent-hash build ${label}`],
      fn: () => new HashRing({ nodes }).pointCount,
    },
    { name: `hashring build ${label}`, kind: 'peer', fn: () => new NpmHashRing(servers) },
    {
      name: `consistent-hash build ${label}`,
      kind: 'peer',
      fn: () => {
        const ring = new ConsistentHash({ distribution: 'uniform' });
        for (const id of servers) ring.add(id, 160);
        return ring.get('x'); // its lookup structure is built lazily, on the first get
      },
    },
    {
      name: `HashRing add+remove ${label}`,
      kind: 'keel',
      compareTo: [`hashring add+remove ${label}`, `consistent-hash add+remove ${label}`],
      fn: () => {
        ours.add({ id: extra });
        ours.remove(extra);
        return ours.pointCount;
      },
    },
    {
      name: `hashring add+remove ${label}`,
      kind: 'peer',
      fn: () => {
        npm.add(extra);
        npm.remove(extra);
        return npm.get('x');
      },
    },
    {
      name: `consistent-hash add+remove ${label}`,
      kind: 'peer',
      fn: () => {
        ch.add(extra, 160);
        ch.remove(extra);
        return ch.get('x');
      },
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Reports

function heapBytes(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) return Number.NaN;
  gc();
  gc();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

/** Holds the object being measured, so it stays reachable until after the second reading. */
const holder: object[] = [];

/** Heap + ArrayBuffer bytes that `build()`'s result keeps alive. */
function retainedBytes(build: () => object): number {
  holder.length = 0;
  const before = heapBytes();
  holder.push(build());
  const after = heapBytes();
  holder.length = 0;
  return after - before;
}

function memoryReport(): BenchReport {
  const rows: Record<string, string | number>[] = [];
  for (const n of [1000, 5000]) {
    const servers = ids(n);
    const nodes = servers.map((id) => ({ id }));
    const points = n * 160;
    rows.push({
      library: 'keel HashRing',
      nodes: n,
      points,
      'bytes/point': retainedBytes(() => new HashRing({ nodes })) / points,
    });
    rows.push({
      library: 'npm hashring',
      nodes: n,
      points,
      'bytes/point': retainedBytes(() => new NpmHashRing(servers)) / points,
    });
  }
  return {
    title:
      'memory per virtual node (heap + ArrayBuffer delta after GC; includes node objects; run with --expose-gc)',
    rows,
  };
}

interface Contender {
  readonly name: string;
  readonly build: (nodes: { id: string }[]) => KeyRouter;
}

const contenders: readonly Contender[] = [
  { name: 'HashRing (160/node)', build: (nodes) => new HashRing({ nodes }) },
  { name: 'Maglev', build: (nodes) => new MaglevHash({ nodes }) },
  { name: 'jump', build: (nodes) => new JumpHash({ nodes }) },
  { name: 'rendezvous', build: (nodes) => new RendezvousHash({ nodes }) },
];

/** PartitionedRing with P fixed for a given base size (changing P would remap every key). */
const partitioned = (base: number): Contender => ({
  name: `PartitionedRing (P=${nextPrime(27 * base)}, c=1.25)`,
  build: (nodes) => new PartitionedRing({ nodes, partitionCount: nextPrime(27 * base) }),
});

function nextPrime(n: number): number {
  const isPrime = (x: number): boolean => {
    if (x < 2) return false;
    for (let d = 2; d * d <= x; d++) if (x % d === 0) return false;
    return true;
  };
  let x = n;
  while (!isPrime(x)) x++;
  return x;
}

function spread(counts: number[]): { sd: number; max: number } {
  const mean = counts.reduce((a, b) => a + b, 0) / counts.length;
  const sd = Math.sqrt(counts.reduce((a, b) => a + (b - mean) ** 2, 0) / counts.length) / mean;
  return { sd, max: Math.max(...counts) / mean };
}

function balanceReport(sample: number): BenchReport {
  const keys = KEYS.slice(0, sample);
  const rows: Record<string, string | number>[] = [];
  for (const n of [10, 100]) {
    const nodes = ids(n).map((id) => ({ id }));
    const exact = new HashRing({ nodes }).stats();
    rows.push({
      scheme: 'HashRing, exact arcs',
      N: n,
      'sd/mean': exact.stdDev,
      'max/mean': exact.maxOverIdeal,
    });
    for (const contender of [...contenders, partitioned(n)]) {
      const router = contender.build(nodes);
      const counts = new Map<string, number>(nodes.map((node) => [node.id, 0]));
      for (const key of keys) {
        const id = router.get(key)?.id ?? '';
        counts.set(id, (counts.get(id) ?? 0) + 1);
      }
      const { sd, max } = spread([...counts.values()]);
      rows.push({
        scheme: `${contender.name}, ${sample} keys`,
        N: n,
        'sd/mean': sd,
        'max/mean': max,
      });
    }
    const ring = new HashRing({ nodes });
    const bounded = new BoundedLoads(ring, { c: 1.25 });
    for (const key of keys) bounded.assign(key);
    const { sd, max } = spread(nodes.map((node) => bounded.load(node.id)));
    rows.push({
      scheme: `BoundedLoads c=1.25, ${sample} keys`,
      N: n,
      'sd/mean': sd,
      'max/mean': max,
    });
  }
  return {
    title: 'balance (share of keys per node relative to the mean; 0 and 1 are perfect)',
    rows,
  };
}

function movementReport(sample: number): BenchReport {
  const keys = KEYS.slice(0, sample);
  const rows: Record<string, string | number>[] = [];
  for (const n of [10, 100]) {
    const nodes = ids(n).map((id) => ({ id }));
    const joiner = { id: '10.9.9.9:11211' };
    for (const contender of [...contenders, partitioned(n)]) {
      const before = contender.build(nodes);
      const grown = contender.build([...nodes, joiner]);
      const addMoved = keys.filter((k) => before.get(k)?.id !== grown.get(k)?.id).length;
      const idealAdd = sample / (n + 1);
      // Remove the last node (the only removal jump hash supports without extra movement).
      const shrunk = contender.build(nodes.slice(0, -1));
      const removeMoved = keys.filter((k) => before.get(k)?.id !== shrunk.get(k)?.id).length;
      const idealRemove = sample / n;
      rows.push({
        scheme: contender.name,
        N: n,
        'add: moved/ideal': addMoved / idealAdd,
        'remove: moved/ideal': removeMoved / idealRemove,
      });
    }
  }
  return {
    title: `keys moved when one node joins (ideal K/(N+1)) or leaves (ideal K/N), K = ${sample}`,
    rows,
  };
}

const quick = process.argv.includes('--quick');

export const suite = defineSuite({
  name: 'hashring',
  description:
    'HashRing vs npm hashring and consistent-hash (160 points/node each), unique 10–20 char keys',
  tasks: [
    ...lookupTasks(10),
    ...lookupTasks(100),
    ...lookupTasks(1000),
    ...changeTasks(10),
    ...changeTasks(100),
    ...changeTasks(1000),
  ],
  reports: () => [
    memoryReport(),
    balanceReport(quick ? 20_000 : 200_000),
    movementReport(quick ? 20_000 : 100_000),
  ],
});
