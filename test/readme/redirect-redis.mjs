// Preloaded (`node --import`) into a README example run by test/readme/readme-examples.test.ts.
//
// The README's examples connect to Redis where a user's would — `new Redis({ port: 6379 })` —
// and the files under examples/readme/ must stay byte-identical to them, so the test cannot
// edit the addresses. Instead, this module points those connections at the harness's servers
// (free loopback ports) where they are opened: Node's `net.createConnection` / `net.connect`,
// which ioredis's standalone connector calls through the `net` module object at connect time
// (ioredis/built/connectors/StandaloneConnector.js), so replacing them here is seen by it.
//
// KEEL_README_REDIS_PORTS="6379=41234,6380=41235" maps each README port to a harness port, for
// connections to localhost / 127.0.0.1 / ::1 or with no host; every other connection is left
// alone. Nothing else about the client changes: errors still name the README's port.
import net from 'node:net';

const spec = process.env.KEEL_README_REDIS_PORTS ?? '';
const ports = new Map();
for (const pair of spec.split(',').filter((part) => part !== '')) {
  const [from, to] = pair.split('=').map(Number);
  if (!Number.isInteger(from) || !Number.isInteger(to)) {
    throw new Error(`KEEL_README_REDIS_PORTS: bad pair "${pair}" (expected from=to)`);
  }
  ports.set(from, to);
}
const LOCAL = new Set([undefined, 'localhost', '127.0.0.1', '::1']);

function redirected(options) {
  if (typeof options !== 'object' || options === null || options.path !== undefined) {
    return options;
  }
  const port = Number(options.port ?? 6379);
  const to = ports.get(port);
  if (to === undefined || !LOCAL.has(options.host)) return options;
  return { ...options, host: '127.0.0.1', port: to };
}

for (const name of ['createConnection', 'connect']) {
  const original = net[name];
  net[name] = function (...args) {
    if (args.length > 0) args[0] = redirected(args[0]);
    return original.apply(this, args);
  };
}
