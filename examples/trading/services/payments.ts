/**
 * payments — a simulated card processor. Latency, a slow tail (charges that outlive the
 * caller's timeout: the ambiguous case), declines decided by the buyer's key, and an outage
 * switch. Its ledger (in the shared store) is keyed by order id, so a charge can never be
 * taken twice for one order, and a void blocks a charge that arrives late.
 */
import { keyedChance } from '../config.js';
import { sleep } from '../http.js';
import { startService, text, type RunningService, type ServiceContext } from './service.js';

export function startPayments(ctx: ServiceContext): Promise<RunningService> {
  const { latencyMs, slowRate, slowMs, declineRate } = ctx.payments;
  let outage = false;
  const counts = { charged: 0, declined: 0, refusedInOutage: 0, voids: 0 };
  return startService('payments', ctx, (alive) => ({
    routes: {
      'POST /charge': async (body) => {
        const orderId = text(body.orderId);
        const key = text(body.key);
        const amount = Number(body.amount);
        if (orderId === undefined || key === undefined || !(amount > 0)) {
          return { status: 400, body: { error: 'orderId, key and amount expected' } };
        }
        // Down: refuse before touching the ledger, so a 503 is known not to have charged.
        if (outage) {
          counts.refusedInOutage++;
          return { status: 503, body: { error: 'payments outage' } };
        }
        const [low, high] = latencyMs;
        const slow = Math.random() < slowRate;
        await sleep(slow ? slowMs : low + Math.random() * (high - low), alive);
        if (keyedChance(key, ctx.seed ^ 0x5eed) < declineRate) {
          counts.declined++;
          return { status: 402, body: { status: 'declined' } };
        }
        const state = await ctx.platform.store.charge(orderId, amount);
        if (state !== 'charged') return { status: 409, body: { status: state } };
        counts.charged++;
        return { status: 200, body: { status: 'charged' } };
      },
      'POST /void': async (body) => {
        const orderId = text(body.orderId);
        if (orderId === undefined) return { status: 400, body: { error: 'orderId expected' } };
        if (outage) {
          counts.refusedInOutage++;
          return { status: 503, body: { error: 'payments outage' } };
        }
        counts.voids++;
        return { status: 200, body: { status: await ctx.platform.store.voidCharge(orderId) } };
      },
      'POST /admin/outage': (body) => {
        outage = body.on === true;
        return Promise.resolve({ status: 200, body: { outage } });
      },
    },
    stats: () => ({ outage, ...counts }),
  }));
}
