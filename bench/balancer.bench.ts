/**
 * balancer: ns per pick for every strategy at 10 and 1000 endpoints, against the floor of a
 * bare array index (`endpoints[i++ % n]`), plus heap bytes allocated per pick.
 */
import { getHeapStatistics } from 'node:v8';
import {
  LoadBalancer,
  consistentHash,
  leastConnections,
  leastRequest,
  peakEwma,
  random,
  roundRobin,
  weightedRandom,
  type Strategy,
} from '../src/balancer/index.js';
import { defineSuite, type BenchReport, type BenchTask } from './suite.js';

const BATCH = 100;

const strategies: [string, () => Strategy][] = [
  ['roundRobin', () => roundRobin()],
  ['random', () => random()],
  ['weightedRandom (alias)', () => weightedRandom()],
  ['leastConnections', () => leastConnections()],
  ['leastRequest (P2C)', () => leastRequest()],
  ['peakEwma (P2C)', () => peakEwma()],
  ['consistentHash (ring)', () => consistentHash()],
];

function endpointsOf(n: number): { id: string; weight: number }[] {
  // Up to 16 distinct weights, as real fleets mix a few instance sizes.
  return Array.from({ length: n }, (_, i) => ({
    id: `10.0.${i >> 8}.${i & 255}:8080`,
    weight: 1 + (i % 16),
  }));
}

const keys = Array.from({ length: 4096 }, (_, i) => `session:${(i * 2654435761) >>> 0}`);

function pickTasks(n: number): BenchTask[] {
  const endpoints = endpointsOf(n);
  const baselineName = `bare array index, N=${n}`;
  let cursor = 0;
  const tasks: BenchTask[] = [
    {
      name: baselineName,
      kind: 'baseline',
      batch: BATCH,
      fn: () => endpoints[(cursor = (cursor + 1) % n)],
    },
  ];
  for (const [label, make] of strategies) {
    const balancer = new LoadBalancer({ strategy: make(), endpoints });
    // Load-aware strategies need calls in flight to be realistic: hold a few open leases.
    for (let i = 0; i < Math.min(n, 50); i++) balancer.acquire({ key: `warm${i}` });
    let k = 0;
    const options = { key: '' as string };
    const sticky = label.startsWith('consistentHash');
    tasks.push({
      name: `${label} pick, N=${n}`,
      kind: 'keel',
      batch: BATCH,
      compareTo: baselineName,
      // Sticky picks take a request key; the others are called as users call them, bare.
      fn: sticky
        ? () => {
            options.key = keys[(k = (k + 1) & 4095)] as string;
            return balancer.pick(options);
          }
        : () => balancer.pick(),
    });
  }
  return tasks;
}

function allocationReport(): BenchReport {
  const rows: Record<string, string | number>[] = [];
  for (const [label, make] of strategies) {
    const balancer = new LoadBalancer({ strategy: make(), endpoints: endpointsOf(100) });
    const options = { key: 'session:1' };
    const measure = (fn: () => unknown): number => {
      for (let i = 0; i < 300_000; i++) fn();
      (globalThis as { gc?: () => void }).gc?.();
      const before = getHeapStatistics().used_heap_size;
      const calls = 100_000;
      for (let i = 0; i < calls; i++) fn();
      return Math.max(0, (getHeapStatistics().used_heap_size - before) / calls);
    };
    rows.push({
      strategy: label,
      'pick(): bytes/call': measure(() => balancer.pick(options)),
      'acquire()+done(): bytes/call': measure(() =>
        balancer.acquire(options)?.done({ ok: true, latencyMs: 1 }),
      ),
    });
  }
  return {
    title:
      'heap bytes allocated per call (N=100, 100 000 calls after warm-up; a few bytes or less is background noise — the smallest object is 12+ bytes; acquire() allocates its lease)',
    rows,
  };
}

export const suite = defineSuite({
  name: 'balancer',
  description:
    'ns per pick for every strategy vs a bare array index, N = 10 and 1000 (16 distinct weights)',
  tasks: [...pickTasks(10), ...pickTasks(1000)],
  reports: () => [allocationReport()],
});
