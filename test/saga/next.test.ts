/**
 * Op `next` (a step's done and the next step's begin in one script call) is exactly `done`
 * followed by `begin` sent as two transitions: for every stored step count and position (the last
 * step included), history cap, lease, pending cancel and passed deadline, and recovery-index
 * state, an instance driven by `next` and its twin driven by `done` + `begin` — in the same
 * TRANSITIONS call, at the same instant — end with the same hash, history, reply, `live` score,
 * `fin:` membership and expiry, on Redis and in `MemorySagaBackend` (which must also agree with
 * each other). Written by the session 18 review of the change.
 */
import { expect, it } from 'vitest';
import { runScript, type ScriptClient } from '../../src/core/index.js';
import { MemorySagaBackend } from '../../src/saga/index.js';
import { CANCEL, READ, TRANSITIONS } from '../../src/saga/scripts.js';
import { SagaStore, encodeBatch } from '../../src/saga/store.js';
import { describeRedis, useRedis } from '../support/vitest.js';

describeRedis('op next is done + begin (same instant, one TRANSITIONS call)', () => {
  const redis = useRedis({ count: 1 });
  it('every scenario: same hash, history, reply, index, finish sets and expiry, on Redis and in memory', async () => {
    const c = redis().client(0);
    let t = 1_700_000_000_000;
    const mem = new MemorySagaBackend({ now: () => t });
    const failures: string[] = [];
    const cross = new Map<string, string>();
    let n = 0;
    for (const backend of ['redis', 'memory'] as const) {
      for (const ns of [2, 3, 4])
        for (const at of [0, 1, 2]) {
          if (at >= ns) continue;
          for (const cap of [1, 2, 3, 16])
            for (const lease of [0, 100_000])
              for (const mode of ['plain', 'cancel', 'deadline', 'both'] as const)
                for (const ixm of ['keep', 'del', 'big'] as const) {
                  n++;
                  const client: ScriptClient = backend === 'redis' ? c : mem;
                  const prefix = `eq${n}:`;
                  const store = new SagaStore({
                    client,
                    prefix,
                    shards: 1,
                    leaseMs: lease,
                    historyLimit: cap,
                    finishedHistory: 2,
                    retentionMs: 100_000,
                  });
                  const keys = (id: string) => [...store.keys('S', id).all];
                  const settings = {
                    leaseMs: lease,
                    historyLimit: cap,
                    retentionMs: 100_000,
                    finishedHistory: 2,
                  };
                  const timeout = mode === 'deadline' || mode === 'both' ? 1 : 0;
                  const setup: { keys: string[]; args: (string | number)[] }[] = [];
                  for (const id of ['x', 'y']) {
                    setup.push({
                      keys: keys(id),
                      args: [id, 'me', '', timeout, 'start', ns, 'S', '{}'],
                    });
                    let v = 1;
                    for (let s = 0; s < at; s++) {
                      setup.push({
                        keys: keys(id),
                        args: [id, 'me', 1, v++, 'begin', s, 'attempt 1', '1'],
                      });
                      setup.push({
                        keys: keys(id),
                        args: [id, 'me', 1, v++, 'done', s, '', `"o${s}"`],
                      });
                    }
                    setup.push({
                      keys: keys(id),
                      args: [id, 'me', 1, v, 'begin', at, 'attempt 1', '1'],
                    });
                  }
                  const b1 = encodeBatch(setup, settings);
                  const r1 = (await runScript(client, TRANSITIONS, b1.keys, b1.args)) as unknown[];
                  const V = 2 * at + 2;
                  if (mode === 'cancel' || mode === 'both')
                    for (const id of ['x', 'y'])
                      await runScript(client, CANCEL, keys(id).slice(0, 1), []);
                  if (ixm !== 'keep') {
                    // manipulate ix identically (redis only: memory has no HSET entry point)
                    if (backend === 'redis')
                      for (const id of ['x', 'y']) {
                        if (ixm === 'del') await c.hdel(keys(id)[0] as string, 'ix');
                        else await c.hset(keys(id)[0] as string, 'ix', '99999999999999');
                      }
                    else continue;
                  }
                  if (timeout) {
                    t += 10;
                    await new Promise((r) => setTimeout(r, 10));
                  }
                  t += 1;
                  const b2 = encodeBatch(
                    [
                      {
                        keys: keys('x'),
                        args: ['x', 'me', 1, V, 'next', at, 'attempt 1', `"o${at}"`],
                      },
                      { keys: keys('y'), args: ['y', 'me', 1, V, 'done', at, '', `"o${at}"`] },
                      {
                        keys: keys('y'),
                        args: ['y', 'me', 1, V + 1, 'begin', at + 1, 'attempt 1', '1'],
                      },
                    ],
                    settings,
                  );
                  const r2 = (await runScript(client, TRANSITIONS, b2.keys, b2.args)) as unknown[];
                  const read = async (id: string) => {
                    const [h, hist] = (await runScript(client, READ, keys(id).slice(0, 2), [])) as [
                      string[],
                      string[],
                    ];
                    const m: Record<string, string> = {};
                    for (let i = 0; i < h.length; i += 2) m[h[i] as string] = h[i + 1] as string;
                    return { m, hist };
                  };
                  const x = await read('x');
                  const y = await read('y');
                  const liveKey = keys('x')[2] as string;
                  let zx: unknown, zy: unknown, ttlx: unknown, ttly: unknown;
                  if (backend === 'redis') {
                    zx = await c.zscore(liveKey, 'x');
                    zy = await c.zscore(liveKey, 'y');
                    ttlx = (await c.pttl(keys('x')[0] as string)) > 0;
                    ttly = (await c.pttl(keys('y')[0] as string)) > 0;
                    const fins = keys('x').slice(3);
                    for (const f of fins) {
                      const a = await c.zscore(f, 'x');
                      const b = await c.zscore(f, 'y');
                      if ((a === null) !== (b === null))
                        failures.push(
                          `${backend} ${ns}/${at}/${cap}/${lease}/${mode}/${ixm}: fin ${f}`,
                        );
                    }
                  }
                  // compare: reply of next vs reply of the last y op that applied
                  const last = at + 1 >= ns ? r2[1] : r2[2];
                  const tag = `${backend} ns=${ns} at=${at} cap=${cap} lease=${lease} ${mode} ix=${ixm}`;
                  if (JSON.stringify(r2[0]) !== JSON.stringify(last))
                    failures.push(
                      `${tag}: reply next=${JSON.stringify(r2[0])} vs ${JSON.stringify(last)} (all ${JSON.stringify(r2)}) setup ${JSON.stringify(r1.slice(-1))}`,
                    );
                  const sorted = (o: Record<string, string>) =>
                    JSON.stringify(
                      Object.keys(o)
                        .sort()
                        .map((k) => [k, o[k]]),
                    );
                  if (sorted(x.m) !== sorted(y.m))
                    failures.push(`${tag}: hash ${sorted(x.m)} vs ${sorted(y.m)}`);
                  if (JSON.stringify(x.hist) !== JSON.stringify(y.hist))
                    failures.push(
                      `${tag}: hist ${JSON.stringify(x.hist)} vs ${JSON.stringify(y.hist)}`,
                    );
                  if (ixm === 'keep') {
                    const norm = (v: unknown) => JSON.stringify(v).replace(/\d{10,}/g, 'T');
                    const key = `${ns}/${at}/${cap}/${lease}/${mode}`;
                    const val = norm([
                      r2,
                      Object.keys(x.m)
                        .sort()
                        .map((k) => [k, x.m[k]]),
                      x.hist,
                    ]);
                    if (backend === 'redis') cross.set(key, val);
                    else if (cross.get(key) !== val)
                      failures.push(`cross ${key}: ${cross.get(key)} vs ${val}`);
                  }
                  if (zx !== zy || ttlx !== ttly)
                    failures.push(
                      `${tag}: live ${String(zx)} vs ${String(zy)} ttl ${String(ttlx)} ${String(ttly)}`,
                    );
                }
        }
    }
    c.disconnect();
    expect(failures.slice(0, 15)).toEqual([]);
  });
});
