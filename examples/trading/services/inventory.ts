/**
 * inventory — a shard that owns the stock of the SKUs the ring gives it. Every stock change
 * runs under a `keel/lock` lock on the SKU and carries the lock's fencing token into the store,
 * which refuses tokens older than the newest it has seen: a shard whose lock expired (a long
 * pause) or that still serves a SKU the ring has moved away cannot oversell.
 *
 * Requests for one SKU queue locally first, so the distributed lock is contended only across
 * shards (during a rebalance); the next local request goes as soon as the lock is released —
 * or lost, which is exactly when the fence has to stop the previous holder.
 */
import { HashRing } from 'keel/hashring';
import { isLockTakenError, isQuorumUnavailableError, type Lock } from 'keel/lock';
import { sleep, type Reply } from '../http.js';
import { LOCK_TTL_MS } from '../platform.js';
import type { StockView } from '../store.js';
import { noteFencedOff } from '../timeline.js';
import { startService, text, type RunningService, type ServiceContext } from './service.js';

type Op = 'reserve' | 'commit' | 'release';

/** Parses `reserved:2` into its parts. */
function reservationOf(value: string | undefined): { state: string; qty: number } | undefined {
  if (value === undefined) return undefined;
  const [state = '', qty = '0'] = value.split(':');
  return { state, qty: Number(qty) };
}

/** What `op` does to the stock: the reply status and the write to make (none if nothing changes). */
function decide(
  op: Op,
  view: StockView,
  qty: number,
): { status: string; next?: StockView } | { error: string } {
  const r = reservationOf(view.reservation);
  switch (op) {
    case 'reserve':
      if (r !== undefined) return { status: r.state }; // idempotent: this order already has its answer
      if (view.available < qty) return { status: 'sold-out' };
      return {
        status: 'reserved',
        next: { available: view.available - qty, sold: view.sold, reservation: `reserved:${qty}` },
      };
    case 'commit':
      if (r?.state === 'committed') return { status: 'committed' };
      if (r?.state !== 'reserved')
        return { error: `cannot commit a reservation that is ${r?.state ?? 'missing'}` };
      return {
        status: 'committed',
        next: {
          available: view.available,
          sold: view.sold + r.qty,
          reservation: `committed:${r.qty}`,
        },
      };
    case 'release':
      if (r?.state === 'released') return { status: 'released' };
      if (r?.state === 'committed') return { error: 'cannot release a committed reservation' };
      // A release with no reservation leaves a `released:0` marker, so a reserve that arrives
      // late (from an instance that has since lost the order) cannot take stock for it.
      return {
        status: 'released',
        next: {
          available: view.available + (r?.qty ?? 0),
          sold: view.sold,
          reservation: `released:${r?.qty ?? 0}`,
        },
      };
  }
}

export function startInventory(ctx: ServiceContext): Promise<RunningService> {
  const { locks, store, registry } = ctx.platform;
  const counts = {
    reserved: 0,
    soldOut: 0,
    committed: 0,
    released: 0,
    fencedOff: 0,
    misdirected: 0,
    busy: 0,
  };
  const tails = new Map<string, Promise<void>>();
  const waiting = new Map<string, number>();
  let stallMs = 0;
  let stallArmedAt = 0;
  let stalls = 0;

  // This shard's own view of the ring, to refuse SKUs it no longer owns (421): rebuilt once per
  // batch of changes the view applies.
  const watch = registry.watch('inventory');
  const build = (): HashRing =>
    new HashRing({ nodes: watch.instances({ status: 'up' }).map((i) => ({ id: i.id })) });
  let ring = build(); // empty until the first snapshot is in
  watch.onSettled(() => {
    ring = build();
  });
  // Before this shard sees itself in the ring (it just joined), it serves what it is sent.
  const owns = (sku: string): boolean => !ring.has(ctx.id) || ring.get(sku)?.id === ctx.id;

  /** Local FIFO per SKU, then the distributed lock. */
  async function withSku<T>(
    sku: string,
    alive: AbortSignal,
    fn: (lock: Lock) => Promise<T>,
  ): Promise<T> {
    const previous = tails.get(sku) ?? Promise.resolve();
    let turnOver: () => void = () => undefined;
    const mine = new Promise<void>((resolve) => {
      turnOver = resolve;
    });
    tails.set(sku, mine);
    waiting.set(sku, (waiting.get(sku) ?? 0) + 1);
    try {
      await previous;
    } finally {
      waiting.set(sku, (waiting.get(sku) ?? 1) - 1);
    }
    try {
      const lock = await locks.acquire(`sku:${sku}`, { waitMs: 5000, signal: alive });
      lock.signal.addEventListener('abort', turnOver, { once: true });
      try {
        return await fn(lock);
      } finally {
        await lock.release();
      }
    } finally {
      turnOver();
      if (tails.get(sku) === mine) tails.delete(sku);
    }
  }

  const handle =
    (op: Op, alive: AbortSignal) =>
    async (body: Record<string, unknown>): Promise<Reply> => {
      const sku = text(body.sku);
      const orderId = text(body.orderId);
      const qty = Number(body.qty ?? 0);
      if (sku === undefined || orderId === undefined) {
        return { status: 400, body: { error: 'sku and orderId expected' } };
      }
      if (!owns(sku)) {
        counts.misdirected++;
        return { status: 421, body: { error: 'misdirected', owner: ring.get(sku)?.id } };
      }
      try {
        return await withSku(sku, alive, async (lock): Promise<Reply> => {
          const token = lock.fencingToken;
          const view = await store.readStock(sku, token, orderId);
          if (view === undefined) return { status: 404, body: { error: `unknown sku ${sku}` } };
          if (view === 'stale') {
            counts.fencedOff++;
            noteFencedOff();
            return { status: 409, body: { error: 'fenced' } };
          }
          const decision = decide(op, view, qty);
          if ('error' in decision) return { status: 409, body: { error: decision.error } };
          if (decision.next !== undefined) {
            // The check a careful holder makes before writing…
            if (lock.signal.aborted) return { status: 503, body: { error: 'lock lost' } };
            // …and the pause that can still hit right after it (a GC pause, a stalled VM). The
            // drill arms it for a reservation with another request for the SKU queued behind
            // it — or, after half a second without one, for the next reservation.
            const queued = (waiting.get(sku) ?? 0) > 0 || performance.now() - stallArmedAt > 500;
            if (op === 'reserve' && stallMs > 0 && queued) {
              const ms = stallMs;
              stallMs = 0;
              stalls++;
              await sleep(ms, alive);
            }
            if (!(await store.writeStock(sku, token, orderId, decision.next))) {
              counts.fencedOff++;
              noteFencedOff();
              return { status: 409, body: { error: 'fenced' } };
            }
          }
          if (decision.status === 'sold-out') counts.soldOut++;
          else if (decision.next !== undefined)
            counts[decision.status as 'reserved' | 'committed' | 'released']++;
          return { status: 200, body: { status: decision.status } };
        });
      } catch (error) {
        if (alive.aborted) throw error;
        if (isLockTakenError(error) || isQuorumUnavailableError(error)) {
          counts.busy++;
          return { status: 503, body: { error: `busy: ${(error as Error).message}` } };
        }
        throw error;
      }
    };

  return startService('inventory', ctx, (alive) => ({
    routes: {
      'POST /reserve': handle('reserve', alive),
      'POST /commit': handle('commit', alive),
      'POST /release': handle('release', alive),
      'POST /admin/stall': (body) => {
        stallMs = Number(body.ms ?? 0) || LOCK_TTL_MS * 2;
        stallArmedAt = performance.now();
        return Promise.resolve({ status: 200, body: { stallMs } });
      },
    },
    stats: () => ({ ...counts, stalls, ring: ring.nodes().map((n) => n.id) }),
    dispose: () => {
      watch.close();
    },
  }));
}
