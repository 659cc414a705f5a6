import { createHash } from 'node:crypto';
import NpmHashRing from 'hashring';
import { describe, expect, it } from 'vitest';
import { HashRing, ketamaDigests } from '../../src/hashring/index.js';
import vectors from './fixtures/ketama-vectors.json' with { type: 'json' };

// Reference vectors come from scripts/ketama/vectors.c: key → server answers from the real
// libmemcached (Debian's libmemcached-dev, weighted ketama), and digest counts computed with
// C float arithmetic from the libmemcached/twemproxy and libketama formulas.

interface Server {
  host: string;
  port: number;
  weight: number;
}

const serverId = (s: Server): string => `${s.host}:${s.port}`;

describe('ketama compatibility', () => {
  it('libmemcached mode maps every key to the server real libmemcached picks', () => {
    let checked = 0;
    for (const vector of vectors.libmemcached) {
      const servers = vector.servers as Server[];
      const ring = new HashRing({
        mode: 'libmemcached',
        nodes: servers.map((s) => ({ id: serverId(s), weight: s.weight })),
      });
      for (const [key, index] of Object.entries(vector.keys as Record<string, number>)) {
        expect(ring.get(key)?.id, `${servers.length} servers, key ${key}`).toBe(
          serverId(servers[index] as Server),
        );
        checked++;
      }
    }
    expect(checked).toBe(36 * 200);
  });

  it('digest counts match the C float formulas (libmemcached/twemproxy and libketama)', () => {
    for (const c of vectors.counts) {
      expect(ketamaDigests('libmemcached', c.weight, c.total, c.servers), JSON.stringify(c)).toBe(
        c.libmemcached,
      );
      expect(ketamaDigests('libketama', c.weight, c.total, c.servers), JSON.stringify(c)).toBe(
        c.libketama,
      );
    }
  });

  it('float32 matters: with 7 equal servers libketama gives 40 digests where doubles give 39', () => {
    expect(ketamaDigests('libketama', 1, 7, 7)).toBe(40);
    expect(ketamaDigests('libmemcached', 1, 7, 7)).toBe(40);
    expect(ketamaDigests('hashring-legacy', 1, 7, 7)).toBe(39); // npm hashring issue #43
  });

  it('libmemcached mode hashes "host" for port 11211 and "host:port" otherwise; libketama always "host:port"', () => {
    const words = (label: string, digests: number): number[] => {
      const out: number[] = [];
      for (let i = 0; i < digests; i++) {
        const d = createHash('md5').update(`${label}-${i}`).digest();
        for (let j = 0; j < 4; j++) out.push(d.readUInt32LE(j * 4));
      }
      return out.sort((a, b) => a - b);
    };
    const nodes = [{ id: '10.0.0.1:11211' }, { id: '10.0.0.2:11300' }];
    const lm = new HashRing({ mode: 'libmemcached', nodes });
    const lk = new HashRing({ mode: 'libketama', nodes });
    expect([...lm.pointsOf('10.0.0.1:11211')]).toEqual(words('10.0.0.1', 40));
    expect([...lm.pointsOf('10.0.0.2:11300')]).toEqual(words('10.0.0.2:11300', 40));
    expect([...lk.pointsOf('10.0.0.1:11211')]).toEqual(words('10.0.0.1:11211', 40));
  });

  it('hashring-legacy mode agrees with npm hashring key for key', () => {
    for (const n of [1, 2, 3, 7, 10, 31]) {
      const ids = Array.from({ length: n }, (_, i) => `10.0.0.${i + 1}:${11211 + (i % 2)}`);
      const weights = ids.map((_, i) => (i % 3) + 1);
      const npm = new NpmHashRing(Object.fromEntries(ids.map((id, i) => [id, weights[i] ?? 1])));
      const ours = new HashRing({
        mode: 'hashring-legacy',
        nodes: ids.map((id, i) => ({ id, weight: weights[i] as number })),
      });
      for (let k = 0; k < 2000; k++) {
        const key = `user:${k * 7919}`;
        expect(ours.get(key)?.id).toBe(npm.get(key));
      }
    }
  });

  it('libketama and libmemcached modes agree where their formulas agree (equal weights, port != 11211)', () => {
    const nodes = Array.from({ length: 5 }, (_, i) => ({ id: `cache${i}:11300` }));
    const a = new HashRing({ mode: 'libketama', nodes });
    const b = new HashRing({ mode: 'libmemcached', nodes });
    expect(a.pointCount).toBe(b.pointCount);
    for (let k = 0; k < 1000; k++) expect(a.get(`k${k}`)?.id).toBe(b.get(`k${k}`)?.id);
  });

  it('compatibility modes reject keel-only options', () => {
    expect(() => new HashRing({ mode: 'libketama', pointsPerWeight: 100 })).toThrow(
      /pointsPerWeight/,
    );
    expect(() => new HashRing({ mode: 'libmemcached', hash: () => 1 })).toThrow(/"hash"/);
  });
});
