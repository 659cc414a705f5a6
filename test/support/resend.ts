/**
 * A real ioredis client whose connection drops right after it sends a given script call, once
 * armed: the call reaches Redis and runs there, its reply is lost, and ioredis reconnects and
 * sends the same call again (`autoResendUnfulfilledCommands`, on by default), so the script runs
 * twice for one call. (A `destroy()` straight after the write may discard it before it reaches
 * the kernel; the socket is paused instead, and dropped once the command had time to run.)
 * Matches the script's SHA-1 as the first argument of `EVALSHA` (a call sent on its own, not
 * inside a batch).
 */
import type { Socket } from 'node:net';
import type { Redis } from 'ioredis';

/** How long a command written to the socket is given to run on a local redis-server. */
const RUN_MS = 50;

const later = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export interface LosingClient {
  /** The wrapped client (hand it to the code under test). */
  readonly client: Redis;
  /** Drop the connection after the next `EVALSHA` of the script. */
  readonly arm: () => void;
  /** How many times the connection was dropped so (a test checks the fault happened). */
  readonly dropped: number;
}

/**
 * Drops `client`'s connection once what was just written has had time to run on the server,
 * its reply unread: the socket is paused before this tick's I/O, the command is given time to
 * reach Redis and run there, and then the connection is destroyed (ioredis reconnects and sends
 * it again). Call it right after the command was sent.
 */
export function dropAfterWrite(client: Redis): void {
  const stream = (client as unknown as { stream: Socket }).stream;
  stream.pause();
  void (async () => {
    while (stream.writableLength > 0) await later(1);
    await later(RUN_MS);
    stream.destroy();
  })();
}

export function losingOneReply(client: Redis, sha: string): LosingClient {
  let armed = false;
  let dropped = 0;
  const wrapped = new Proxy(client, {
    get(target, property, receiver) {
      if (property !== 'evalsha') return Reflect.get(target, property, receiver) as unknown;
      return (...args: Parameters<Redis['evalsha']>) => {
        const reply = target.evalsha(...args);
        if (armed && args[0] === sha) {
          armed = false;
          dropped++;
          dropAfterWrite(target);
        }
        return reply;
      };
    },
  });
  return {
    client: wrapped,
    arm: () => {
      armed = true;
    },
    get dropped() {
      return dropped;
    },
  };
}
