/**
 * Plain `node:http` JSON plumbing shared by the services and the scenario runner: a server on a
 * free loopback port and a keep-alive client that honours an AbortSignal.
 */
import { Agent, createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export const HOST = '127.0.0.1';

/** A JSON reply: status code and body. */
export interface Reply {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

/** A route handler: the parsed JSON body (or `{}`) in, a reply out. */
export type Handler = (body: Record<string, unknown>, signal: AbortSignal) => Promise<Reply>;

/** A running HTTP server. */
export interface HttpServer {
  readonly port: number;
  /** Stops accepting and waits for open requests to end. */
  close(): Promise<void>;
  /** Drops every connection at once, as a crashed process would. */
  destroy(): void;
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  if (chunks.length === 0) return {};
  const parsed: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  return typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : {};
}

/** Serves `routes` ("METHOD /path" → handler) on 127.0.0.1, on a port the OS picks. */
export async function serve(routes: Readonly<Record<string, Handler>>): Promise<HttpServer> {
  const server: Server = createServer((req, res) => {
    const route = routes[`${req.method ?? 'GET'} ${(req.url ?? '/').split('?')[0] ?? '/'}`];
    const abort = new AbortController();
    res.once('close', () => {
      abort.abort(new Error('client went away'));
    });
    const send = (reply: Reply): void => {
      if (res.destroyed) return;
      const text = JSON.stringify(reply.body);
      res.writeHead(reply.status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(text),
      });
      res.end(text);
    };
    if (route === undefined) {
      send({ status: 404, body: { error: 'no such route' } });
      return;
    }
    readJson(req)
      .then((body) => route(body, abort.signal))
      .then(send, (error: unknown) => {
        send({ status: 500, body: { error: String(error) } });
      });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => {
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        // Requests still open after a grace period are cut, so shutdown never hangs.
        const cut = setTimeout(() => {
          server.closeAllConnections();
        }, 2000).unref();
        server.close(() => {
          clearTimeout(cut);
          resolve();
        });
        server.closeIdleConnections();
      }),
    destroy: () => {
      server.close();
      server.closeAllConnections();
    },
  };
}

const agent = new Agent({ keepAlive: true, maxSockets: 256 });

/** Options of {@link call}. */
export interface CallOptions {
  readonly signal?: AbortSignal | undefined;
  /** Gives up after this long. @defaultValue 10000 */
  readonly timeoutMs?: number | undefined;
}

/**
 * POSTs (or GETs, with `body` undefined) JSON to `http://host:port/path`. Resolves with the
 * reply whatever its status; rejects on network errors, timeouts and aborts.
 */
export function call(
  port: number,
  path: string,
  body?: unknown,
  options: CallOptions = {},
  host = HOST,
): Promise<Reply> {
  const signals = [AbortSignal.timeout(options.timeoutMs ?? 10_000)];
  if (options.signal !== undefined) signals.push(options.signal);
  const signal = AbortSignal.any(signals);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise<Reply>((resolve, reject) => {
    const req = request(
      {
        host,
        port,
        path,
        agent,
        method: payload === undefined ? 'GET' : 'POST',
        signal,
        headers:
          payload === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        readJson(res).then(
          (parsed) => {
            resolve({ status: res.statusCode ?? 0, body: parsed });
          },
          (error: unknown) => {
            reject(error instanceof Error ? error : new Error(String(error)));
          },
        );
      },
    );
    req.once('error', (error) => {
      reject(signal.aborted ? (signal.reason as Error) : error);
    });
    req.end(payload);
  });
}

/** Closes the client's idle keep-alive sockets (at shutdown, so the process can exit). */
export function closeClientSockets(): void {
  agent.destroy();
}

export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
