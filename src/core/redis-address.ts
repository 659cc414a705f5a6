/**
 * How Keel names a Redis server in its errors: from a client's own options, read only when a
 * message is being written (never on a hot path). Pure: it inspects plain properties and
 * imports no Redis client, so any component can name the node it failed to reach.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */

/** What an ioredis client (or Cluster) shows of where it connects. All optional. */
interface AddressView {
  readonly isCluster?: unknown;
  readonly startupNodes?: unknown;
  readonly options?: null | {
    readonly host?: unknown;
    readonly port?: unknown;
    readonly path?: unknown;
    readonly name?: unknown;
    readonly sentinels?: unknown;
  };
}

/** `host:port` of an ioredis node description (`{ host, port }`, a port, or a string). */
function hostPort(node: unknown): string {
  if (typeof node === 'string') return node;
  if (typeof node === 'number') return `localhost:${node}`;
  if (typeof node === 'object' && node !== null) {
    const { host, port } = node as { host?: unknown; port?: unknown };
    const h = typeof host === 'string' ? host : 'localhost';
    const p = typeof port === 'number' || typeof port === 'string' ? port : 6379;
    return `${h}:${p}`;
  }
  return '?';
}

/**
 * The Redis server a client talks to, as errors name it: `host:port` (ioredis's `host` and
 * `port` options; the socket `path` for a Unix socket); `sentinel <name> via host:port,…` for a
 * Sentinel client (the master group's name and its sentinels); `cluster via host:port,…` for a
 * Cluster client (its startup nodes). `undefined` for a client whose options say nothing.
 */
export function redisAddress(client: unknown): string | undefined {
  if (typeof client !== 'object' || client === null) return undefined;
  const view = client as AddressView;
  if (view.isCluster === true && Array.isArray(view.startupNodes)) {
    return `cluster via ${view.startupNodes.map(hostPort).join(',')}`;
  }
  const o = view.options;
  if (o === undefined || o === null || typeof o !== 'object') return undefined;
  if (Array.isArray(o.sentinels) && o.sentinels.length > 0) {
    const name = typeof o.name === 'string' ? o.name : '?';
    return `sentinel ${name} via ${o.sentinels.map(hostPort).join(',')}`;
  }
  if (typeof o.path === 'string' && o.path !== '') return o.path;
  if (o.host === undefined && o.port === undefined) return undefined;
  return hostPort(o);
}
