/**
 * A real ioredis client whose connection drops right after it sends a given script call, once
 * armed: the call reaches Redis and runs there, its reply is lost, and ioredis reconnects and
 * sends the same call again (`autoResendUnfulfilledCommands`, on by default), so the script runs
 * twice for one call. (A `destroy()` straight after the write may discard it before it reaches
 * the kernel; the socket is paused instead, and dropped once the command had time to run.)
 * Matches the script's SHA-1 as the first argument of `EVALSHA` (a call sent on its own, not
 * inside a batch). `afterScript` is the same wrapper with another fault after the call, such as
 * `readLate` (its answer, and every other on the connection, read late).
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

/**
 * Reads nothing from `client`'s connection for `ms`: the replies to what was just written (and
 * to whatever else is in flight on it) arrive that much late, the connection kept.
 */
export function readLate(client: Redis, ms: number): void {
  const stream = (client as unknown as { stream: Socket }).stream;
  stream.pause();
  setTimeout(() => stream.resume(), ms);
}

/** A real client that does `fault` to its connection right after one chosen script call. */
export interface FaultyClient {
  /** The wrapped client (hand it to the code under test). */
  readonly client: Redis;
  /** Fault after the next `EVALSHA` of the script. */
  readonly arm: () => void;
  /** How many times the fault was done (a test checks it happened). */
  readonly faults: number;
}

/**
 * Wraps `client` so that, once armed, its next `EVALSHA` of `sha` is followed by `fault` — or,
 * with `command` `'eval'`, its next `EVAL` of the script whose source is `sha` (the fallback
 * after `NOSCRIPT`).
 */
export function afterScript(
  client: Redis,
  sha: string,
  fault: (client: Redis) => void,
  command: 'evalsha' | 'eval' = 'evalsha',
): FaultyClient {
  let armed = false;
  let faults = 0;
  const wrapped = new Proxy(client, {
    get(target, property, receiver) {
      if (property !== command) return Reflect.get(target, property, receiver) as unknown;
      return (...args: Parameters<Redis['evalsha']>) => {
        const reply = target[command](...args);
        if (armed && args[0] === sha) {
          armed = false;
          faults++;
          fault(target);
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
    get faults() {
      return faults;
    },
  };
}

export function losingOneReply(client: Redis, sha: string): LosingClient {
  const faulty = afterScript(client, sha, dropAfterWrite);
  return {
    client: faulty.client,
    arm: faulty.arm,
    get dropped() {
      return faulty.faults;
    },
  };
}

/**
 * Drops `client`'s connection right after what was just written, and the next connection as it
 * becomes ready: that one's ready check (INFO) is sent, then the client's side of the socket is
 * closed, so the check's answer makes the client ready on a socket it cannot write to. ioredis
 * (its `readyHandler`) then queues the commands it sends again — the first connection's
 * unanswered ones — behind the commands issued while it was reconnecting, and the connection
 * after sends them in that order: the node runs a call made later before one made earlier. (In
 * production: a connection reset that races the reconnect's ready check.)
 */
export function dropTwiceAroundReady(client: Redis): void {
  const stream = (client as unknown as { stream: Socket }).stream;
  void (async () => {
    while (stream.writableLength > 0) await later(1);
    const own = client as unknown as { info: (...args: unknown[]) => unknown };
    const info = own.info;
    own.info = (...args: unknown[]) => {
      Reflect.deleteProperty(own, 'info'); // the prototype's again
      const sent = info.apply(client, args);
      (client as unknown as { stream: Socket }).stream.end();
      return sent;
    };
    stream.destroy();
  })();
}
