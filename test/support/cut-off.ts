/**
 * Cuts one ioredis client off its server and lets it back, for tests of what a client that
 * cannot reconnect does (ioredis fails what it holds after `maxRetriesPerRequest` failed
 * reconnections, or at once with the offline queue off). The server keeps running: only this
 * client's reconnections are refused, to a port nothing listens on.
 */
import type { Redis } from 'ioredis';

/** A port nothing listens on (below 1024: no test server, no ephemeral port): refused. */
const NOWHERE = 1;

/** The parts of an ioredis client this reaches into (its connect options and socket). */
interface Reachable {
  options: { port: number };
  stream: { destroy(): void };
}

/** A switch for `client`'s connection: `cut()` drops it and refuses reconnections; `heal()` lets them through. */
export function cutOff(client: Redis): { readonly cut: () => void; readonly heal: () => void } {
  const reachable = client as unknown as Reachable;
  const port = reachable.options.port;
  return {
    cut: () => {
      reachable.options.port = NOWHERE;
      reachable.stream.destroy();
    },
    heal: () => {
      reachable.options.port = port;
    },
  };
}
