/**
 * Injected network latency in front of a real redis-server: an ioredis client whose script
 * calls (EVALSHA / EVAL, what the lock sends) reach the node late, in call order, like a slow
 * TCP link; and `withOverrides`, for other such wrappers. Redis itself is real; only the way
 * there is slowed.
 */
import type { Redis } from 'ioredis';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const now = (): number => performance.now();

/** The simulated network in front of the nodes: latency per node, and calls in flight. */
export interface Net {
  readonly latency: number[];
  readonly inflight: number[];
  /**
   * When given: per node, the arguments of every script call in flight to it, so a test can
   * tell one call (say, a release naming its token) from others sent meanwhile (the lock's own
   * periodic incarnation check goes to every node about once a second).
   */
  readonly calls?: Set<readonly (string | number)[]>[];
}

/**
 * An ioredis client whose script calls reach the node `net.latency[node]` ms late, in call
 * order (like a slow TCP link). Everything else (duplicate() for subscribers, …) is the client.
 */
export function throughNet(client: Redis, node: number, net: Net): Redis {
  let sent: Promise<void> = Promise.resolve();
  const delayed =
    (call: (...args: (string | number)[]) => Promise<unknown>) =>
    async (...args: (string | number)[]): Promise<unknown> => {
      (net.inflight[node] as number)++;
      net.calls?.[node]?.add(args);
      try {
        const sendAt = now() + (net.latency[node] as number);
        const previous = sent;
        let markSent = (): void => undefined;
        sent = new Promise<void>((resolve) => (markSent = resolve));
        try {
          await previous;
          const wait = sendAt - now();
          if (wait > 0) await sleep(wait);
        } finally {
          markSent();
        }
        return await call(...args);
      } finally {
        (net.inflight[node] as number)--;
        net.calls?.[node]?.delete(args);
      }
    };
  const evalsha = delayed((sha, numKeys, ...rest) =>
    client.evalsha(String(sha), numKeys as number, ...rest),
  );
  const evalScript = delayed((source, numKeys, ...rest) =>
    client.eval(String(source), numKeys as number, ...rest),
  );
  return withOverrides(client, { evalsha, eval: evalScript });
}

/**
 * `client` with some of its methods replaced (a fault or a delay on the way to a real server);
 * everything else is the client's own, bound to it.
 */
export function withOverrides<T extends object>(
  client: T,
  overrides: { readonly [K in keyof T]?: unknown },
): T {
  return new Proxy(client, {
    get(target, property) {
      if (Object.hasOwn(overrides, property)) return overrides[property as keyof T];
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function'
        ? (value as (...args: unknown[]) => unknown).bind(target)
        : value;
    },
  });
}
