/**
 * The trading demo's status line when an instance's `/stats` does not answer in time (a loaded
 * machine): it says so, instead of printing `undefined:undefined` where the breakers go.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { InstanceHandle } from '../../examples/trading/cluster.js';
import { statusLine, type Fleet, type Progress } from '../../examples/trading/scenario.js';
import type { Role } from '../../examples/trading/services/service.js';

// The demo imports Keel by its package name, which tsx resolves through tsconfig's `paths`;
// vitest does not read them, so the name is pointed at the same source here (the real module).
vi.mock('keel/hashring', () => import('../../src/hashring/index.js'));

const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

/** A loopback server answering `/stats` with `body`, or never answering when `body` is undefined. */
async function instance(body: Record<string, unknown> | undefined): Promise<number> {
  const server = createServer((_req, res) => {
    if (body === undefined) return; // accepts the request, never answers: a /stats that times out
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

function handle(id: string, role: Role, port: number): InstanceHandle {
  return {
    id,
    role,
    port,
    pid: 0,
    kill: () => Promise.resolve(),
    stop: () => Promise.resolve(),
  };
}

const progress = (): Progress => ({
  dispatched: 10,
  finished: 4,
  requests: 10,
  outcomes: { confirmed: 3, 'rejected:stock': 1 },
  loadDone: false,
});

describe('trading demo status line', () => {
  it('marks an instance whose /stats timed out with ? and never prints undefined', async () => {
    const fleet: Fleet = new Map([
      ['orders-1', handle('orders-1', 'orders', await instance(undefined))],
      [
        'orders-2',
        handle('orders-2', 'orders', await instance({ id: 'orders-2', breaker: 'closed/open' })),
      ],
      ['gateway-1', handle('gateway-1', 'gateway', await instance(undefined))],
    ]);
    const line = await statusLine(fleet, progress(), 10, Date.now() - 1000, 'memory');
    expect(line).not.toContain('undefined');
    expect(line).toContain('breakers orders-1:? orders-2:closed/open');
    expect(line).toContain('orders seen ? (gateway stats unavailable)');
  });

  it('says the stats are unavailable when no orders instance answered', async () => {
    const fleet: Fleet = new Map([
      ['orders-1', handle('orders-1', 'orders', await instance(undefined))],
      ['orders-2', handle('orders-2', 'orders', await instance(undefined))],
      [
        'gateway-1',
        handle(
          'gateway-1',
          'gateway',
          await instance({ seen: ['orders-1', 'orders-2'], endpoints: ['orders-1'] }),
        ),
      ],
    ]);
    const line = await statusLine(fleet, progress(), 10, Date.now() - 1000, 'memory');
    expect(line).not.toContain('undefined');
    expect(line).toContain('breakers ? (stats unavailable)');
    expect(line).toContain('orders seen 2 (in view 1)');
  });
});
