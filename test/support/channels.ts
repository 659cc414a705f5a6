/**
 * Records what is published on `node:diagnostics_channel` channels, subscribed by name as an APM
 * agent or `keel/otel` would. For the observability tests of every component (issue 15).
 */
import diagnostics from 'node:diagnostics_channel';

/** One recorded message: the channel's name and what was published. */
export interface Published {
  readonly channel: string;
  readonly message: Record<string, unknown>;
}

/** A recorder over some channels; `dispose()` unsubscribes. */
export interface ChannelRecorder extends Disposable {
  /** Everything published so far, in order. */
  readonly published: Published[];
  /** The messages of one channel, in order. */
  of(channel: string): Record<string, unknown>[];
  dispose(): void;
}

/**
 * Subscribes to `names` (plain channels; for a TracingChannel give the `tracing:…:start` etc.
 * names) and records every message.
 */
export function recordChannels(names: readonly string[]): ChannelRecorder {
  const published: Published[] = [];
  const listeners = names.map((channel) => {
    const listener = (message: unknown): void => {
      published.push({ channel, message: message as Record<string, unknown> });
    };
    diagnostics.subscribe(channel, listener);
    return { channel, listener };
  });
  let active = true;
  const dispose = (): void => {
    if (!active) return;
    active = false;
    for (const { channel, listener } of listeners) diagnostics.unsubscribe(channel, listener);
  };
  return {
    published,
    of: (channel) => published.filter((p) => p.channel === channel).map((p) => p.message),
    dispose,
    [Symbol.dispose]: dispose,
  };
}

/** The five channel names of a TracingChannel operation `keel:<component>:<op>`. */
export function tracingNames(name: string): string[] {
  return ['start', 'end', 'asyncStart', 'asyncEnd', 'error'].map((e) => `tracing:${name}:${e}`);
}

/** A logger (pino's shape) that records its lines. */
export function recordingLogger(): {
  readonly lines: { level: string; obj: Record<string, unknown>; msg: string }[];
  readonly debug: (obj: Record<string, unknown>, msg: string) => void;
  readonly info: (obj: Record<string, unknown>, msg: string) => void;
  readonly warn: (obj: Record<string, unknown>, msg: string) => void;
  readonly error: (obj: Record<string, unknown>, msg: string) => void;
} {
  const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  const at =
    (level: string) =>
    (obj: Record<string, unknown>, msg: string): void => {
      lines.push({ level, obj, msg });
    };
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
