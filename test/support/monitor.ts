/**
 * Which connection sent which command to a server, from `MONITOR`
 * (https://redis.io/docs/latest/commands/monitor/): every command a client sends is reported
 * with its source address once it has run; the commands a script runs are reported too, with the
 * source `lua`, and are left out here (they are the script's, not a connection's).
 *
 * For tests that count the commands Keel sends. The server-wide counters (`INFO
 * commandstats`, see redis-cost.ts) count every connection's; a count taken from MONITOR,
 * between two markers sent on Keel's own connection, is that connection's alone.
 */
import type { Redis } from 'ioredis';

/** One command a connection sent. */
export interface MonitoredCommand {
  /** `host:port` of the connection that sent it, as the server saw it. */
  readonly source: string;
  /** The command's name, lowercase (`evalsha`, `echo`, …). */
  readonly command: string;
  /** Whether the connection that sent the start marker sent it. */
  readonly own: boolean;
}

/** A MONITOR connection's record. */
export interface CommandMonitor {
  /**
   * The commands run after the `ECHO start` of one connection and before its `ECHO end`
   * (every connection's; `own` marks that one's). Waits (polling, at most `waitMs`) for the end
   * marker to be reported; throws when either marker never is.
   */
  between(start: string, end: string, waitMs?: number): Promise<MonitoredCommand[]>;
  /** Closes the MONITOR connection. */
  stop(): void;
}

interface Line {
  readonly source: string;
  readonly args: readonly string[];
}

const isMarker = (line: Line, marker: string): boolean =>
  line.args[0]?.toLowerCase() === 'echo' && line.args[1] === marker;

/**
 * Starts recording what every connection sends to `client`'s server, on a MONITOR connection of
 * its own (ioredis `monitor()`). Resolves once the server is reporting.
 */
export async function monitorCommands(client: Redis): Promise<CommandMonitor> {
  const monitor = await client.monitor();
  const lines: Line[] = [];
  monitor.on('monitor', (_time: string, args: string[], source: string | undefined) => {
    if (source === undefined || source === 'lua') return;
    lines.push({ source, args });
  });
  monitor.on('error', () => undefined);
  return {
    async between(start, end, waitMs = 10_000) {
      const until = Date.now() + waitMs;
      for (;;) {
        const from = lines.findIndex((l) => isMarker(l, start));
        const own = lines[from]?.source;
        const to = lines.findIndex((l, i) => i > from && l.source === own && isMarker(l, end));
        if (from >= 0 && to >= 0) {
          return lines.slice(from + 1, to).map((l) => ({
            source: l.source,
            command: (l.args[0] ?? '').toLowerCase(),
            own: l.source === own,
          }));
        }
        if (Date.now() > until) {
          const missing = from < 0 ? start : end;
          throw new Error(`MONITOR did not report "ECHO ${missing}" within ${waitMs} ms`);
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    },
    stop() {
      monitor.disconnect();
    },
  };
}
