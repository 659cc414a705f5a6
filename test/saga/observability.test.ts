/**
 * Saga observability (issue 15): scripted scenarios against a real redis-server, read off the
 * `keel:saga:*` diagnostics channels — a saga whose last step fails and is compensated
 * (`keel:saga:transition`, the same messages `onTransition` gets), and a coordinator that lost
 * its instance to another while its step hung, whose late write is refused (`keel:saga:fenced`).
 */
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import {
  SagaCoordinator,
  defineSaga,
  type SagaCoordinatorOptions,
  type SagaTransitionEvent,
} from '../../src/saga/index.js';
import { recordChannels } from '../support/channels.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

describeRedis('saga observability (real redis-server)', () => {
  const redis = useRedis();
  let client: Redis;
  const coordinators: SagaCoordinator[] = [];
  beforeAll(() => {
    client = redis().client(0);
  });
  afterAll(() => {
    client.disconnect();
  });
  afterEach(async () => {
    await Promise.all(coordinators.map((c) => c.close()));
    coordinators.length = 0;
    await redis().flushAll();
  });
  const coordinator = (
    options: Partial<SagaCoordinatorOptions> & Pick<SagaCoordinatorOptions, 'sagas'>,
  ): SagaCoordinator => {
    const c = new SagaCoordinator({ redis: client, recovery: false, ...options });
    coordinators.push(c);
    return c;
  };

  it('a failing step compensated: every transition on keel:saga:transition, as onTransition sees it', async () => {
    const channels = recordChannels(['keel:saga:transition', 'keel:saga:fenced']);
    try {
      const before = Date.now();
      const saga = defineSaga('order', [
        { name: 'reserve', run: () => 'r', compensate: () => undefined },
        {
          name: 'charge',
          run: () => {
            throw new Error('card declined');
          },
          compensate: () => undefined,
        },
      ]);
      const sagas = coordinator({ sagas: [saga], owner: 'A' });
      const typed: SagaTransitionEvent[] = [];
      sagas.onTransition((e) => typed.push(e));
      const outcome = await sagas.run(saga, 'o-1', null);
      expect(outcome.status).toBe('compensated');

      const messages = channels.of('keel:saga:transition');
      // Three attempts at 'charge' (the default retry), then compensation in reverse.
      expect(
        messages.map(
          (m) => `${String(m.event)}:${(m.step as string | undefined) ?? ''}:${String(m.status)}`,
        ),
      ).toEqual([
        'start::running',
        'begin:reserve:running',
        'done:reserve:running',
        'begin:charge:running',
        'begin:charge:running',
        'begin:charge:running',
        'fail:charge:compensating',
        'cbegin:charge:compensating',
        'cdone:charge:compensating',
        'cbegin:reserve:compensating',
        'cdone:reserve:compensated',
      ]);
      expect(messages).toEqual(typed);
      for (const m of messages) {
        expect(m).toMatchObject({ saga: 'order', id: 'o-1', owner: 'A' });
        expect(m.time as number).toBeGreaterThanOrEqual(before);
      }
      const versions = messages.map((m) => m.version as number);
      expect(versions).toEqual([...versions].sort((a, b) => a - b));
      expect(channels.of('keel:saga:fenced')).toEqual([]);
    } finally {
      channels.dispose();
    }
  });

  it("an old owner's late write refused: keel:saga:fenced names both fences", async () => {
    const channels = recordChannels(['keel:saga:fenced']);
    try {
      let release: () => void = () => undefined;
      const gate = new Promise<void>((resolve) => (release = resolve));
      let calls = 0;
      const saga = defineSaga('handover', [
        {
          name: 'a',
          run: async () => {
            if (++calls === 1) await gate; // A's call hangs past its lease
            return calls;
          },
        },
      ]);
      // A's clock never moves: its heartbeat never renews, as in a paused process.
      const a = coordinator({ sagas: [saga], leaseMs: 200, clock: new ManualClock(), owner: 'A' });
      const b = coordinator({ sagas: [saga], leaseMs: 200, owner: 'B' });
      const runA = a.run(saga, 'h-1', null);
      await until(async () => {
        expect((await a.get(saga, 'h-1'))?.step).toBe('a');
      }, 5000);
      await until(async () => {
        expect(await b.recoverNow()).toBe(1);
      }, 5000);
      await until(async () => {
        expect((await b.get(saga, 'h-1'))?.status).toBe('completed');
      }, 5000);
      release(); // A's step returns now; its write must be refused, and say so
      await until(() => expect(channels.of('keel:saga:fenced')).toHaveLength(1), 5000);
      expect(channels.of('keel:saga:fenced')[0]).toMatchObject({
        saga: 'handover',
        id: 'h-1',
        owner: 'A',
        fence: 1,
        currentFence: 2,
      });
      await a.close();
      await runA;
    } finally {
      channels.dispose();
    }
  });
});
