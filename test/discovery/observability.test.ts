/**
 * Discovery's diagnostics channels, logger and stats (issue 15) on a real redis-server: an
 * instance dying (it stops heartbeating and is reaped), then the store killed and restarted
 * empty (stale, failed heartbeats, a new epoch, re-registration, fresh again).
 */
import { afterEach, expect, it } from 'vitest';
import { RedisBackend, Registry, type RegistryOptions } from '../../src/discovery/index.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { recordChannels, recordingLogger, tracingNames } from '../support/channels.js';
import { faultBackendOptions, faultRegistryOptions } from './redis-fixture.js';

const CHANNELS = [
  'keel:discovery:view-changed',
  'keel:discovery:stale',
  'keel:discovery:fresh',
  'keel:discovery:epoch-changed',
  'keel:discovery:quarantined',
  'keel:discovery:re-registered',
  'keel:discovery:heartbeat-failed',
  ...tracingNames('keel:discovery:register'),
  ...tracingNames('keel:discovery:resync'),
];

describeRedis('discovery observability on Redis (issue 15)', () => {
  const redis = useRedis({ count: 1 });
  const cleanups: (() => Promise<void> | void)[] = [];
  let serial = 0;

  afterEach(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    cleanups.length = 0;
    if (redis().node(0).state === 'killed') await redis().restart(0);
    await redis().flushAll();
  });

  const registry = (options: RegistryOptions = {}): Registry => {
    const backend = new RedisBackend({
      client: redis().client(0, { maxRetriesPerRequest: 1 }),
      ...faultBackendOptions,
    });
    const r = new Registry({ backend, ...faultRegistryOptions, ...options });
    cleanups.push(async () => {
      await r.close();
      await backend.close();
    });
    return r;
  };

  it('an instance dying: register traced, record quarantined, view changed as it is reaped', async () => {
    const service = `dying-${++serial}`;
    using channels = recordChannels(CHANNELS);
    const writer = registry();
    const before = Date.now();
    const alive = await writer.register({ service, id: 'a', host: '127.0.0.1', port: 1 });
    const dying = await writer.register({ service, id: 'b', host: '127.0.0.1', port: 2 });
    const admin = redis().client(0);
    await admin.hset(new RedisBackend({ client: admin }).keys(service).records, 'bad', '{');

    const logger = recordingLogger();
    const watcher = registry({ logger });
    await watcher.ready(service);
    expect(watcher.discover(service).map((i) => i.id)).toEqual(['a', 'b']);
    dying.abandon(); // stops heartbeating, as a crashed process would
    await until(() => {
      expect(watcher.discover(service).map((i) => i.id)).toEqual(['a']);
    }, 5000);

    // Two registrations traced, start to asyncEnd, with their service and id.
    const started = channels.of('tracing:keel:discovery:register:start');
    expect(started.map((c) => c.id)).toEqual(['a', 'b']);
    expect(started[0]).toMatchObject({ service, id: 'a', ttlMs: 1000 });
    expect(channels.of('tracing:keel:discovery:register:asyncEnd')).toHaveLength(2);
    // The watcher's first snapshot, traced with its reason.
    const resyncs = channels.of('tracing:keel:discovery:resync:asyncEnd');
    expect(resyncs.some((c) => c.service === service && c.reason === 'initial snapshot')).toBe(
      true,
    );
    // The malformed record, quarantined (the watcher and the writer's reaper may both see it).
    const quarantined = channels.of('keel:discovery:quarantined');
    expect(quarantined.length).toBeGreaterThanOrEqual(1);
    expect(quarantined[0]).toMatchObject({
      service,
      id: 'bad',
      time: expect.any(Number) as number,
    });
    expect(logger.lines.some((l) => l.level === 'warn' && l.obj.id === 'bad')).toBe(true);
    // The view changed: two instances, then one once the dead one was reaped.
    const sizes = channels
      .of('keel:discovery:view-changed')
      .filter((m) => m.service === service)
      .map((m) => m.instances);
    expect(sizes).toContain(2);
    expect(sizes.at(-1)).toBe(1);
    for (const { message } of channels.published) {
      expect(message.time).toBeGreaterThanOrEqual(before);
      expect(message.time).toBeLessThanOrEqual(Date.now());
    }

    const stats = watcher.stats();
    expect(stats).toMatchObject({
      staleViews: 0,
      registrations: 0,
      quarantined: 1,
      heartbeatFailures: 0,
      reregistrations: 0,
      epochChanges: 0,
    });
    expect(stats.resyncs).toBeGreaterThanOrEqual(1);
    expect(stats.views).toEqual([
      expect.objectContaining({
        service,
        ready: true,
        instances: 1,
        up: 1,
        stale: false,
        staleSince: undefined,
      }),
    ]);
    expect(writer.stats().registrations).toBe(1);
    await alive.deregister();
  });

  it('the store killed and restarted empty: stale, heartbeats fail, new epoch, re-registered, fresh', async () => {
    const service = `restarted-${++serial}`;
    using channels = recordChannels(CHANNELS);
    const writerLogger = recordingLogger();
    const writer = registry({ logger: writerLogger });
    const registration = await writer.register({ service, id: 'a', host: '127.0.0.1', port: 1 });
    const logger = recordingLogger();
    const watcher = registry({ logger, dataLossGraceMs: 4000 });
    await watcher.ready(service);
    const epoch = watcher.stats().views[0]?.epoch;

    await redis().kill(0);
    await until(() => {
      expect(watcher.stats().staleViews).toBe(1);
      expect(writer.stats().heartbeatFailures).toBeGreaterThanOrEqual(1);
    }, 5000);
    const staleSince = watcher.stats().views[0]?.staleSince;
    expect(staleSince).toBeGreaterThan(0);
    await redis().restart(0); // comes back empty (no persistence)
    await until(() => {
      expect(registration.state).toBe('active');
      expect(writer.stats().reregistrations).toBe(1);
      const stats = watcher.stats();
      expect(stats.staleViews).toBe(0);
      expect(stats.epochChanges).toBe(1);
      expect(stats.views[0]?.epoch).not.toBe(epoch);
    }, 10_000);

    const stale = channels.of('keel:discovery:stale').filter((m) => m.service === service);
    expect(stale.length).toBeGreaterThanOrEqual(1);
    expect(stale[0]).toMatchObject({
      reason: expect.any(String) as string,
      time: expect.any(Number) as number,
    });
    expect(channels.of('keel:discovery:heartbeat-failed')[0]).toMatchObject({
      service,
      id: 'a',
      failures: 1,
      error: expect.any(Error) as Error,
    });
    expect(channels.of('keel:discovery:re-registered')).toEqual([
      { service, id: 'a', time: expect.any(Number) as number },
    ]);
    const epochs = channels.of('keel:discovery:epoch-changed').filter((m) => m.service === service);
    expect(epochs).toHaveLength(1);
    // `to` is the epoch the resync found: '' if the store was still empty then, else the new one.
    expect(epochs[0]?.from).toBe(epoch);
    expect(epochs[0]?.to).not.toBe(epoch);
    const fresh = channels.of('keel:discovery:fresh').filter((m) => m.service === service);
    expect((fresh.at(-1)?.staleMs as number) > 0).toBe(true);
    // The operators' log: stale and fresh, the data loss; the writer's failures and re-register.
    const said = (lines: typeof logger.lines): string[] => lines.map((l) => `${l.level} ${l.msg}`);
    expect(said(logger.lines).some((l) => l.startsWith('warn discovery: view of'))).toBe(true);
    expect(said(logger.lines).some((l) => l.includes('lost the data'))).toBe(true);
    expect(said(logger.lines).some((l) => l.startsWith('info discovery: view of'))).toBe(true);
    expect(said(writerLogger.lines).some((l) => l.includes('registered again'))).toBe(true);
    expect(said(writerLogger.lines).some((l) => l.includes('heartbeat failed'))).toBe(true);
  });

  it('refuses a logger that is not one', () => {
    expect(() => new Registry({ logger: { info: () => undefined } as never })).toThrow(/logger/);
  });
});
