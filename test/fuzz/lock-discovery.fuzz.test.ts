/**
 * Public-API fuzz suite for the option layer of `keel/lock` and `keel/discovery` (issue 14):
 * constructors, `acquire`/`using` options and resources, `register` specs and `watch` names
 * get arbitrary values (fc.anything(), special numbers, lone surrogates, 1 MB strings,
 * `__proto__` keys, throwing getters, Proxies). Each call must end in the documented result, a
 * typed KeelError (an InvalidOptionError naming its option), or the caller's own error (a
 * `HostileError` from `./arbitraries.js`) passed through — never a plain TypeError/RangeError,
 * never a hang (every async call is raced against a generous bound), never a lock or
 * registration left behind by a call that failed.
 *
 * No Redis is needed: the lock's Redis side is exercised through `MemoryLock` (the same option
 * rules) and through `Redlock` clients that point at a closed port and never reconnect, so a
 * well-formed acquisition ends promptly in a typed `QuorumUnavailableError`.
 */
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { ManualClock, isKeelError } from '../../src/core/index.js';
import { MemoryBackend, RedisBackend, Registry } from '../../src/discovery/index.js';
import { MemoryLock, Redlock, isLockLostError } from '../../src/lock/index.js';
import {
  built,
  real,
  hostileNumber,
  hostileString,
  hostileValue,
  newTally,
  settle,
  type Tally,
} from './arbitraries.js';

const RUNS = Number(process.env.KEEL_FUZZ_RUNS ?? 100);
/** Far beyond any bounded call here (option errors are synchronous, refusals take ms). */
const HANG_MS = 10_000;

const tallies = new Map<string, Tally>();
function tallyOf(name: string): Tally {
  let tally = tallies.get(name);
  if (tally === undefined) tallies.set(name, (tally = newTally()));
  return tally;
}
afterAll(() => {
  const parts = [...tallies].map(
    ([name, t]) => `${name} ${t.returned + t.typed + t.hostile} (${t.typed} typed errors)`,
  );
  console.log(`lock/discovery fuzz: ${parts.join(', ')}`);
});

/** Awaits `run()` and checks how it ended, as {@link settle} does, within {@link HANG_MS}. */
async function settleAsync(
  what: string,
  run: () => Promise<unknown>,
  tally: Tally,
): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<'hang'>((resolve) => {
    timer = setTimeout(() => resolve('hang'), HANG_MS);
  });
  try {
    const outcome = await Promise.race([
      Promise.resolve()
        .then(run)
        .then(
          (value) => ({ ok: true as const, value }),
          (error: unknown) => ({ ok: false as const, error }),
        ),
      hang,
    ]);
    expect(outcome, `${what} did not settle within ${HANG_MS} ms`).not.toBe('hang');
    if (outcome === 'hang') return undefined;
    if (outcome.ok) {
      tally.returned++;
      return outcome.value;
    }
    return settle(
      what,
      () => {
        throw outcome.error;
      },
      tally,
    );
  } finally {
    clearTimeout(timer);
  }
}

/** Option objects: mostly the real keys with hostile or plausible values, sometimes anything. */
function optionsOf(
  keys: readonly string[],
  plausible: fc.Arbitrary<unknown>,
): fc.Arbitrary<unknown> {
  return fc.oneof(
    {
      weight: 4,
      arbitrary: fc.dictionary(
        fc.constantFrom(...keys, '__proto__', 'constructor', 'tllMs'),
        fc.oneof(plausible, hostileValue),
        { maxKeys: 4 },
      ),
    },
    { weight: 1, arbitrary: hostileValue },
  );
}

const plausibleNumber = fc.oneof(fc.constantFrom(0, 1, 5, 50, 200, 1000, 30_000), hostileNumber);
const resources: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('sku:1', 'order:{7}', ['a', 'b'], ['x']) },
  { weight: 1, arbitrary: fc.array(fc.oneof(hostileString, hostileValue), { maxLength: 3 }) },
  { weight: 1, arbitrary: hostileString },
  { weight: 1, arbitrary: hostileValue },
);

/** Whether `r` is a string or an array of strings (false for a Proxy whose traps throw). */
function plainResources(r: unknown): boolean {
  try {
    return typeof r === 'string' || (Array.isArray(r) && r.every((x) => typeof x === 'string'));
  } catch {
    return false;
  }
}

/** Clients at ports nobody listens on, that give up at once and never reconnect. */
function deadClients(n: number): Redis[] {
  // Ports 1, 2, …: nothing listens there, and each client names a server of its own (a Redlock
  // refuses one server listed twice).
  return Array.from({ length: n }, (_, i) => {
    const client = new Redis({
      host: '127.0.0.1',
      port: 1 + i,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: true,
      retryStrategy: () => null,
    });
    client.on('error', () => undefined); // refused connections are the point here
    return client;
  });
}

describe('fuzz: keel/lock option layer', () => {
  const ACQUIRE_KEYS = ['ttlMs', 'retryCount', 'retryDelayMs', 'retryJitterMs', 'waitMs', 'signal'];

  it('MemoryLock: constructor, acquire and using with hostile input give typed errors and leave no lock', async () => {
    const tally = tallyOf('MemoryLock');
    await fc.assert(
      fc.asyncProperty(
        optionsOf(
          ['ttlMs', 'retryCount', 'retryDelayMs', 'retryJitterMs', 'clock', 'random'],
          plausibleNumber,
        ),
        resources,
        optionsOf(ACQUIRE_KEYS, plausibleNumber),
        async (options, what, acquireOptions) => {
          const [o, r, a] = real3(options, what, acquireOptions);
          let lock: MemoryLock | undefined;
          if (!settle('new MemoryLock', () => (lock = new MemoryLock(o as never)), tally)) return;
          const locks = lock as MemoryLock;
          // Hostile waits are bounded: a resource nobody holds is granted at once or refused.
          const got = await settleAsync(
            'MemoryLock.acquire',
            () => locks.acquire(r as never, a as never),
            tally,
          );
          if (got !== undefined && typeof got === 'object' && got !== null && 'release' in got) {
            await (got as { release(): Promise<unknown> }).release();
          }
          await settleAsync(
            'MemoryLock.using',
            () => locks.using(r as never, a as never, () => Promise.resolve(1)),
            tally,
          );
          // Nothing left held: a fresh acquisition of the same well-formed resources succeeds.
          if (plainResources(r)) {
            const again = await locks
              .acquire(r as never, { retryCount: 0 })
              .catch((e: unknown) => e);
            if (!isKeelError(again)) await (again as { release(): Promise<unknown> }).release();
            else
              expect(again.code, 'a refused call left its resources held').not.toBe(
                'KEEL_LOCK_TAKEN',
              );
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('Redlock: constructor and acquire options with hostile input give typed errors, promptly', async () => {
    const tally = tallyOf('Redlock');
    const clients = deadClients(3);
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(
            { weight: 4, arbitrary: fc.constant(clients) },
            { weight: 1, arbitrary: hostileValue },
          ),
          optionsOf(
            [
              'ttlMs',
              'driftFactor',
              'minValidityMs',
              'nodeTimeoutMs',
              'retryCount',
              'keyPrefix',
              'notifications',
              'batching',
              'localTurns',
              'clock',
              'random',
            ],
            fc.oneof(plausibleNumber, fc.boolean(), hostileString),
          ),
          resources,
          optionsOf(ACQUIRE_KEYS, plausibleNumber),
          async (clientList, options, what, acquireOptions) => {
            const [o, r, a] = real3(options, what, acquireOptions);
            let redlock: Redlock | undefined;
            const made = settle(
              'new Redlock',
              () =>
                (redlock = new Redlock({
                  ...(typeof o === 'object' && o !== null ? o : {}),
                  clients: clientList as never,
                  retryCount: 0,
                  nodeTimeoutMs: 50,
                })),
              tally,
            );
            if (!made) return;
            const locks = redlock as Redlock;
            try {
              await settleAsync(
                'Redlock.acquire',
                () => locks.acquire(r as never, { ...(a as object), retryCount: 0 }),
                tally,
              );
            } finally {
              await locks.close();
            }
          },
        ),
        { numRuns: Math.max(10, Math.floor(RUNS / 2)) },
      );
    } finally {
      for (const c of clients) c.disconnect();
    }
  });
});

describe('fuzz: keel/lock semaphores and extensions', () => {
  it('Redlock.semaphore, Semaphore.acquire and Lock.extend with hostile input give typed errors, promptly, and never lose a held lock', async () => {
    const tally = tallyOf('semaphore/extend');
    const clients = deadClients(3);
    const redlock = new Redlock({ clients, retryCount: 0, nodeTimeoutMs: 50 });
    const memory = new MemoryLock();
    const names = fc.oneof(
      { weight: 2, arbitrary: fc.constantFrom('pool', 'card-processor', '{tagged}') },
      { weight: 1, arbitrary: hostileString },
      { weight: 1, arbitrary: hostileValue },
    );
    try {
      await fc.assert(
        fc.asyncProperty(
          names,
          optionsOf(['permits'], plausibleNumber),
          optionsOf(['ttlMs', 'retryCount', 'waitMs', 'signal', 'permits'], plausibleNumber),
          fc.oneof(plausibleNumber, hostileValue),
          async (name, options, acquireOptions, ttl) => {
            const [n, o, a] = real3(name, options, acquireOptions);
            let semaphore: ReturnType<Redlock['semaphore']> | undefined;
            const made = settle(
              'Redlock.semaphore',
              () => (semaphore = redlock.semaphore(n as never, o as never)),
              tally,
            );
            if (made) {
              const s = semaphore as NonNullable<typeof semaphore>;
              await settleAsync(
                'Semaphore.acquire',
                () => s.acquire({ ...(a as object), retryCount: 0 }),
                tally,
              );
            }
            // A held lock: an extension is refused with a typed error (the lock untouched), or
            // extends it, or leaves too little validity (LockLostError: documented; a ttl of a
            // few ms expires as soon) — a ttl the nodes or timers cannot hold must not lose it.
            const lock = await memory.acquire('held', { ttlMs: 60_000 });
            const signal = lock.signal; // read first, as using() does: its loss timer is armed
            try {
              const t = real(ttl);
              const seen = { tooShort: false };
              await settleAsync(
                'Lock.extend',
                () =>
                  lock.extend(t as never).catch((error: unknown) => {
                    seen.tooShort = isLockLostError(error) && error.kind === 'extension-too-short';
                    throw error;
                  }),
                tally,
              );
              await new Promise((resolve) => setTimeout(resolve, 2));
              if (!seen.tooShort && !(typeof t === 'number' && t < 50)) {
                expect(signal.aborted, `extend(${fc.stringify(ttl)}) lost the lock`).toBe(false);
              }
            } finally {
              await lock.release();
            }
          },
        ),
        { numRuns: Math.max(10, Math.floor(RUNS / 2)) },
      );
    } finally {
      await redlock.close();
      for (const c of clients) c.disconnect();
    }
  });
});

describe('fuzz: keel/discovery option layer', () => {
  it('Registry: constructor, register and watch with hostile input give typed errors and register nothing half-way', async () => {
    const tally = tallyOf('Registry');
    await fc.assert(
      fc.asyncProperty(
        optionsOf(
          [
            'ttlMs',
            'heartbeatFraction',
            'heartbeatJitter',
            'reapIntervalMs',
            'dataLossGraceMs',
            'operationTimeoutMs',
            'services',
            'strict',
          ],
          fc.oneof(plausibleNumber, fc.boolean(), fc.constant(['orders'])),
        ),
        fc.oneof(
          {
            weight: 3,
            arbitrary: fc.record(
              {
                service: fc.oneof(
                  fc.constantFrom('orders', 'payments'),
                  hostileString,
                  hostileValue,
                ),
                host: fc.oneof(fc.constant('10.0.0.1'), hostileString, hostileValue),
                port: fc.oneof(fc.constantFrom(80, 8080), hostileNumber, hostileValue),
                weight: fc.oneof(fc.constantFrom(1, 2), hostileNumber),
                metadata: hostileValue,
              },
              { requiredKeys: ['service', 'host', 'port'] },
            ),
          },
          { weight: 1, arbitrary: hostileValue },
        ),
        fc.oneof(fc.constantFrom('orders', 'payments'), hostileString, hostileValue),
        async (options, spec, service) => {
          const [o, s, w] = real3(options, spec, service);
          const clock = new ManualClock(0);
          const backend = new MemoryBackend({ clock });
          let registry: Registry | undefined;
          const made = settle(
            'new Registry',
            () =>
              (registry = new Registry({
                ...(typeof o === 'object' && o !== null ? o : {}),
                backend,
                clock,
              })),
            tally,
          );
          try {
            if (!made) return;
            const r = registry as Registry;
            const before = backend.ids('orders').length + backend.ids('payments').length;
            const registered = await settleAsync(
              'Registry.register',
              () => r.register(s as never),
              tally,
            );
            if (registered === false || registered === undefined) {
              // Refused: nothing was written.
              expect(backend.ids('orders').length + backend.ids('payments').length).toBe(before);
            }
            settle(
              'Registry.watch',
              () => (r.watch(w as never) as { close(): void }).close(),
              tally,
            );
          } finally {
            await registry?.close();
            await backend.close();
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('Registry, Registration and watch call options (signal, ttlMs) with hostile input give typed errors and change nothing half-way', async () => {
    const tally = tallyOf('discovery call options');
    const live = new AbortController().signal;
    await fc.assert(
      fc.asyncProperty(
        optionsOf(['signal', 'ttlMs'], fc.oneof(plausibleNumber, fc.constant(live))),
        async (options) => {
          const [o] = real3(options, undefined, undefined);
          const clock = new ManualClock(0);
          const backend = new MemoryBackend({ clock });
          const registry = new Registry({ backend, clock, reapIntervalMs: 0 });
          try {
            const registration = await registry.register({
              service: 'orders',
              id: 'a',
              host: 'h',
              port: 1,
            });
            const before = backend.ids('orders');
            const registered = await settleAsync(
              'Registry.register',
              () =>
                registry.register({ service: 'orders', id: 'b', host: 'h', port: 2 }, o as never),
              tally,
            );
            if (registered === false || registered === undefined)
              expect(backend.ids('orders')).toEqual(before);
            const calls: [string, () => Promise<unknown>][] = [
              ['Registry.ready', () => registry.ready('orders', o as never)],
              ['Registry.reap', () => registry.reap(o as never)],
              ['ServiceWatch.whenReady', () => registry.watch('orders').whenReady(o as never)],
              ['Registration.heartbeat', () => registration.heartbeat(o as never)],
              ['Registration.update', () => registration.update({ weight: 3 }, o as never)],
              ['Registration.setStatus', () => registration.setStatus('draining', o as never)],
              ['Registration.deregister', () => registration.deregister(o as never)],
            ];
            for (const [what, call] of calls) await settleAsync(what, call, tally);
          } finally {
            await registry.close();
            await backend.close();
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('RedisBackend: constructor options with hostile input give typed errors', () => {
    const tally = tallyOf('RedisBackend');
    const [client] = deadClients(1);
    try {
      fc.assert(
        fc.property(
          optionsOf(
            [
              'keyPrefix',
              'maxLogLength',
              'maxLogBytes',
              'blockMs',
              'readTimeoutMs',
              'outageThresholdMs',
              'outageGraceMs',
              'reapBatch',
              'readBatch',
              'retryBaseMs',
              'retryMaxMs',
              'clock',
              'random',
            ],
            fc.oneof(plausibleNumber, hostileString),
          ),
          fc.oneof(
            { weight: 4, arbitrary: fc.constant(client) },
            { weight: 1, arbitrary: hostileValue },
          ),
          built((options: unknown, c: unknown) => {
            let backend: RedisBackend | undefined;
            settle(
              'new RedisBackend',
              () =>
                (backend = new RedisBackend({
                  ...(typeof options === 'object' && options !== null ? options : {}),
                  client: c as never,
                })),
              tally,
            );
            void backend?.close();
          }),
        ),
        { numRuns: RUNS },
      );
    } finally {
      (client as Redis).disconnect();
    }
  });
});

/** The values of three arbitraries with every lazy hostile object built (see `built`). */
function real3(a: unknown, b: unknown, c: unknown): [unknown, unknown, unknown] {
  let out: [unknown, unknown, unknown] = [a, b, c];
  built((x: unknown, y: unknown, z: unknown) => {
    out = [x, y, z];
  })(a, b, c);
  return out;
}
