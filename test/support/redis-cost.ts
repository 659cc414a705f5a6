/**
 * What Redis did for some work, from `INFO commandstats` and `INFO cpu` deltas: commands run
 * (those inside scripts included — Redis counts every command a script calls, and the
 * `EVALSHA` itself), script calls, and the server's CPU time (`used_cpu_user` +
 * `used_cpu_sys`, from getrusage: networking and parsing included, and unaffected by how long
 * the server waited for a core on a loaded machine). Counts are deterministic for a given
 * sequence of calls, which makes them testable where timings are not.
 * https://redis.io/docs/latest/commands/info/
 */

/** A snapshot of one server's counters. */
export interface RedisCounters {
  /** Calls per command (`xadd`, `evalsha`, `xinfo|groups`, …). */
  readonly calls: ReadonlyMap<string, number>;
  /** Server CPU time so far, µs. */
  readonly cpuMicros: number;
}

/** What ran between two snapshots. */
export interface RedisCost {
  /** Every command, inside scripts included (INFO itself left out). */
  readonly commands: number;
  /** `EVAL`, `EVALSHA`, `FCALL` calls. */
  readonly scripts: number;
  /** Server CPU, µs. */
  readonly cpuMicros: number;
  /** Calls per command. */
  readonly byCommand: ReadonlyMap<string, number>;
}

/** Anything that can run `INFO <section>` (an ioredis client). */
export interface InfoClient {
  info(section: string): Promise<string>;
}

/** Reads the counters now. */
export async function redisCounters(client: InfoClient): Promise<RedisCounters> {
  const stats = await client.info('commandstats');
  const calls = new Map<string, number>();
  for (const line of stats.split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
    if (m !== null) calls.set(m[1] as string, Number(m[2]));
  }
  const cpu = await client.info('cpu');
  const user = Number(/used_cpu_user:([\d.]+)/.exec(cpu)?.[1] ?? 0);
  const sys = Number(/used_cpu_sys:([\d.]+)/.exec(cpu)?.[1] ?? 0);
  return { calls, cpuMicros: (user + sys) * 1e6 };
}

const SCRIPTS = new Set(['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall', 'fcall_ro']);

/** The cost between two snapshots (the `INFO` calls that took them are not counted). */
export function redisCost(before: RedisCounters, after: RedisCounters): RedisCost {
  const byCommand = new Map<string, number>();
  let commands = 0;
  let scripts = 0;
  for (const [name, n] of after.calls) {
    if (name === 'info') continue;
    const d = n - (before.calls.get(name) ?? 0);
    if (d === 0) continue;
    byCommand.set(name, d);
    commands += d;
    if (SCRIPTS.has(name)) scripts += d;
  }
  return { commands, scripts, cpuMicros: after.cpuMicros - before.cpuMicros, byCommand };
}
