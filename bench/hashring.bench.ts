/**
 * hashring: Keel's HashRing against npm `hashring` (the ketama ring most Node users have) and
 * npm `consistent-hash`, on unique 10–20 character keys (not a few repeated strings, which
 * would only measure hashring's LRU cache), at N = 10, 100 and 1000 nodes with 160 points
 * per node for all three. Reports memory per virtual node, balance, and keys moved on
 * membership changes for the ring and its alternatives.
 */
import { createHash } from 'node:crypto';
import { getHeapStatistics } from 'node:v8';
import ConsistentHash from 'consistent-hash';
import NpmHashRing from 'hashring';
import murmurReference from 'murmurhash3js-revisited';
import {
  BoundedLoads,
  HashRing,
  JumpHash,
  MaglevHash,
  PartitionedRing,
  RendezvousHash,
  loadXxhash,
  murmur3,
  murmur3String,
  type KeyRouter,
} from '../src/hashring/index.js';
import { defineSuite, type BenchReport, type BenchTask } from './suite.js';
import { seededRandom } from '../test/support/random.js';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789:-_';

/** `count` unique keys of 10–20 characters. */
function makeKeys(count: number, seed: number): string[] {
  const random = seededRandom(seed);
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

/** Which key hash is fastest for short keys: the question behind the default. */
async function hashTasks(): Promise<BenchTask[]> {
  const { xxh32, xxh64 } = await loadXxhash();
  const encoder = new TextEncoder();
  const bytes = KEYS.slice(0, 50_000).map((key) => encoder.encode(key));
  let b = 0;
  const nextBytes = (): Uint8Array => {
    b = b + 1 === bytes.length ? 0 : b + 1;
    return bytes[b] as Uint8Array;
  };
  const base = 'murmur3String (keel default, string key)';
  return [
    {
      name: base,
      kind: 'keel',
      batch: BATCH,
      compareTo: [
        'xxh32 (xxhash-wasm, string key)',
        'xxh64 low 32 bits (string key)',
        'md5 first word (node:crypto)',
      ],
      fn: () => murmur3String(nextKey()),
    },
    {
      name: 'xxh32 (xxhash-wasm, string key)',
      kind: 'baseline',
      batch: BATCH,
      fn: () => xxh32.string(nextKey()),
    },
    {
      name: 'xxh64 low 32 bits (string key)',
      kind: 'baseline',
      batch: BATCH,
      fn: () => xxh64.string(nextKey()),
    },
    {
      name: 'md5 first word (node:crypto)',
      kind: 'baseline',
      batch: BATCH,
      fn: () => createHash('md5').update(nextKey()).digest().readUInt32LE(0),
    },
    {
      name: 'murmur3 (keel, byte key)',
      kind: 'keel',
      batch: BATCH,
      compareTo: ['murmurhash3js-revisited (byte key)', 'xxh32 (xxhash-wasm, byte key)'],
      fn: () => murmur3(nextBytes()),
    },
    {
      name: 'murmurhash3js-revisited (byte key)',
      kind: 'peer',
      batch: BATCH,
      fn: () => murmurReference.x86.hash32(nextBytes()),
    },
    {
      name: 'xxh32 (xxhash-wasm, byte key)',
      kind: 'baseline',
      batch: BATCH,
      fn: () => xxh32.bytes(nextBytes()),
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Reports

/** Heap bytes allocated per call, over 100 000 calls between two GCs (0 = allocation-free). */
function allocationReport(): BenchReport {
  const gc = (globalThis as { gc?: () => void }).gc;
  const nodes = ids(100).map((id) => ({ id }));
  const ring = new HashRing({ nodes });
  const keys = KEYS.slice(0, 1000);
  const unicode = keys.map((key) => `ключ-${key}`);
  const encoder = new TextEncoder();
  const byteKeys = keys.map((key) => encoder.encode(key));
  const measure = (fn: (i: number) => unknown): number => {
    const calls = 100_000; // few enough that no scavenge runs in between (it would hide allocations)
    // Warm up well past optimisation: compiled code and feedback live on the heap too, and
    // would otherwise show up as a fraction of a byte per call.
    for (let i = 0; i < 300_000; i++) fn(i % 1000);
    gc?.();
    const before = getHeapStatistics().used_heap_size;
    for (let i = 0; i < calls; i++) fn(i % 1000);
    const after = getHeapStatistics().used_heap_size;
    return Math.max(0, (after - before) / calls);
  };
  return {
    title:
      'heap bytes allocated per call (100 000 calls after warm-up, N=100). The smallest heap object is 12+ bytes, so a value of a few bytes or less is background noise (compilation, GC bookkeeping), not a per-call allocation',
    rows: [
      {
        call: 'HashRing.get (ASCII string key)',
        'bytes/call': measure((i) => ring.get(keys[i] as string)),
      },
      {
        call: 'HashRing.get (non-ASCII string key)',
        'bytes/call': measure((i) => ring.get(unicode[i] as string)),
      },
      {
        call: 'HashRing.get (Uint8Array key)',
        'bytes/call': measure((i) => ring.get(byteKeys[i] as Uint8Array)),
      },
      {
        call: 'HashRing.getN(key, 3) (returns a new array)',
        'bytes/call': measure((i) => ring.getN(keys[i] as string, 3)),
      },
    ],
  };
}

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
    ...(await hashTasks()),
    ...lookupTasks(10),
    ...lookupTasks(100),
    ...lookupTasks(1000),
    ...changeTasks(10),
    ...changeTasks(100),
    ...changeTasks(1000),
  ],
  reports: () => [
    allocationReport(),
    memoryReport(),
    balanceReport(quick ? 20_000 : 200_000),
    movementReport(quick ? 20_000 : 100_000),
  ],
});
