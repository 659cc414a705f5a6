/** Every service by role. */
import { startGateway } from './gateway.js';
import { startInventory } from './inventory.js';
import { startLedger } from './ledger.js';
import { startOrders } from './orders.js';
import { startPayments } from './payments.js';
import type { Role, RunningService, ServiceContext } from './service.js';

export const starters: Readonly<Record<Role, (ctx: ServiceContext) => Promise<RunningService>>> = {
  gateway: startGateway,
  orders: startOrders,
  inventory: startInventory,
  payments: startPayments,
  ledger: startLedger,
};
