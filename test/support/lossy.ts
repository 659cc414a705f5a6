/**
 * A lost reply, the way a dropped connection loses one: the call reaches Redis and runs, and
 * ioredis, reconnecting, sends it again (`autoResendUnfulfilledCommands`, on by default), so the
 * script runs twice for one call. Redis is real; only the connection is cut.
 */
import type { Redis } from 'ioredis';

/**
 * `client`, except that its connection drops right after it sends the first call of script
 * `sha` once armed: the call reaches Redis and runs, its reply is lost, and ioredis reconnects
 * and sends it again (as it does for every command unanswered when a connection drops).
 */
export function losingOneReply(client: Redis, sha: string): { client: Redis; arm: () => void } {
  let armed = false;
  const wrapped = new Proxy(client, {
    get(target, property, receiver) {
      if (property !== 'evalsha') return Reflect.get(target, property, receiver) as unknown;
      return (...args: Parameters<Redis['evalsha']>) => {
        const reply = target.evalsha(...args);
        if (armed && args[0] === sha) {
          armed = false;
          (target as unknown as { stream: { destroy(): void } }).stream.destroy();
        }
        return reply;
      };
    },
  });
  return { client: wrapped, arm: () => (armed = true) };
}
