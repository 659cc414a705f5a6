/**
 * The order-events part of the drill (Redis mode): two `ledger` instances consume the events;
 * mid-run one is SIGKILLed with messages in flight (the other reclaims them after their
 * visibility timeout), and one poison message is sent through the outbox (the ledger fails it
 * on every attempt, so it ends in the dead-letter stream).
 */
import type { OrderEvents } from './events.js';
import { call, sleep } from './http.js';
import type { DrillLog, Fleet, Progress } from './scenario.js';

export async function runEventsDrill(
  fleet: Fleet,
  events: OrderEvents,
  progress: Progress,
  total: number,
  log: DrillLog,
  say: (line: string) => void,
): Promise<void> {
  const started = Date.now();
  const note = (line: string): void => {
    const text = `t=${((Date.now() - started) / 1000).toFixed(1)}s  ${line}`;
    log.lines.push(text);
    say(text);
  };
  const at = async (share: number): Promise<void> => {
    while (!progress.loadDone && progress.dispatched < share * total) await sleep(20);
  };
  await at(0.4);
  const victim = fleet.get('ledger-1');
  if (victim !== undefined) {
    const held = await call(victim.port, '/stats', undefined, { timeoutMs: 2000 }).then(
      (r) => Number(r.body.inFlight),
      () => NaN,
    );
    await victim.kill();
    fleet.delete(victim.id);
    note(
      `fault: killed ${victim.id} (SIGKILL pid ${victim.pid}) holding ${Number.isNaN(held) ? 'an unknown number of' : held} order event(s); ledger-2 reclaims what it held after the 2 s visibility timeout`,
    );
  }
  await at(0.45);
  await events.confirmed({ orderId: 'poison-1', sku: '-', qty: 0, amount: 0, poison: true });
  note('fault: sent one poison order event (the ledger fails it every time: dead-lettered)');
}
