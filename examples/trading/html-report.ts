/**
 * `demo-report.html`: the run on one page — throughput and p99 latency over time with the
 * faults marked, breaker state per orders instance, the gateway's view of `orders`, lock waits
 * and fencing refusals, and the audit. Self-contained: inline SVG drawn here, inline CSS, no
 * script and nothing fetched, so it opens from a CI artifact or a mail attachment.
 */
import { call } from './http.js';
import type { BuyerResult, DrillLog, Fleet } from './scenario.js';
import type { Report } from './report.js';
import type { BreakerTransition, RingChange } from './services/orders.js';
import type { ViewEvent } from './services/gateway.js';
import type { ProcessTimeline } from './timeline.js';

/** Everything the page is drawn from (gathered by main.ts at the end of the run). */
export interface HtmlInput {
  readonly report: Report;
  readonly results: readonly BuyerResult[];
  readonly drill: DrillLog;
  readonly gatewayEvents: readonly ViewEvent[];
  readonly ringChanges: readonly RingChange[];
  /** One per process still alive at the end (a killed instance's record died with it). */
  readonly timelines: readonly ProcessTimeline[];
  /** The orders instances, in order (one breaker each). */
  readonly orders: readonly string[];
  /** When the load started and the run ended (epoch ms). */
  readonly startedAt: number;
  readonly endedAt: number;
}

/** Every live process's timeline (one per process: embedded-mode instances share theirs). */
export async function collectTimelines(fleet: Fleet): Promise<ProcessTimeline[]> {
  const replies = await Promise.all(
    [...fleet.values()].map((h) =>
      call(h.port, '/timeline', undefined, { timeoutMs: 10_000 }).then(
        (reply) => (reply.status === 200 ? (reply.body as unknown as ProcessTimeline) : undefined),
        () => undefined,
      ),
    ),
  );
  const byPid = new Map<number, ProcessTimeline>();
  for (const t of replies) if (t !== undefined) byPid.set(t.pid, t);
  return [...byPid.values()];
}

const esc = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const fmt = (n: number, digits = 0): string =>
  n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const seconds = (ms: number): string => (ms >= 1000 ? `${fmt(ms / 1000, 1)} s` : `${fmt(ms)} ms`);

// Geometry shared by every chart, so their time axes line up.
const W = 1100;
const LEFT = 64;
const RIGHT = 64;
const PLOT = W - LEFT - RIGHT;

const COLORS = {
  ink: '#1f2933',
  muted: '#7b8794',
  grid: '#e4e7eb',
  throughput: '#8fb8de',
  p99: '#d64545',
  closed: '#3ebd93',
  open: '#e12d39',
  halfOpen: '#f7c948',
  view: '#2680c2',
  healthy: '#3ebd93',
  wait: '#486581',
  failed: '#e12d39',
  fault: '#e12d39',
  change: '#7c5e10',
  outage: 'rgba(225,45,57,0.08)',
};

interface Marker {
  readonly at: number;
  readonly label: string;
  readonly color: string;
}

/** Round step sizes for an axis. */
function niceStep(max: number, ticks: number): number {
  const raw = max / ticks;
  const pow = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * pow >= raw) return m * pow;
  return 10 * pow;
}

class Chart {
  readonly parts: string[] = [];
  readonly top: number;
  readonly bottom: number;

  constructor(
    readonly height: number,
    readonly x: (at: number) => number,
    readonly span: readonly [number, number],
    readonly pad: { top: number; bottom: number } = { top: 14, bottom: 26 },
  ) {
    this.top = pad.top;
    this.bottom = height - pad.bottom;
  }

  /** Vertical grid and labels, one per "nice" number of seconds. */
  timeAxis(): void {
    const seconds = (this.span[1] - this.span[0]) / 1000;
    const step = niceStep(seconds, 12);
    for (let s = 0; s <= seconds + 1e-9; s += step) {
      const x = this.x(this.span[0] + s * 1000);
      this.parts.push(
        `<line x1="${x}" x2="${x}" y1="${this.top}" y2="${this.bottom}" stroke="${COLORS.grid}"/>`,
        `<text x="${x}" y="${this.bottom + 16}" class="tick" text-anchor="middle">${fmt(s, Number.isInteger(step) ? 0 : 1)} s</text>`,
      );
    }
  }

  /** Horizontal grid and labels for a value axis (left or right). */
  valueAxis(max: number, y: (v: number) => number, side: 'left' | 'right', unit: string): void {
    const step = niceStep(max, 4);
    for (let v = 0; v <= max + 1e-9; v += step) {
      const yy = y(v);
      if (side === 'left')
        this.parts.push(
          `<line x1="${LEFT}" x2="${W - RIGHT}" y1="${yy}" y2="${yy}" stroke="${COLORS.grid}"/>`,
        );
      const tx = side === 'left' ? LEFT - 6 : W - RIGHT + 6;
      const label =
        unit === ' ms' && max >= 2000
          ? `${fmt(v / 1000, step % 1000 === 0 ? 0 : 1)} s`
          : `${fmt(v, Number.isInteger(step) ? 0 : 1)}${unit}`;
      this.parts.push(
        `<text x="${tx}" y="${yy + 4}" class="tick" text-anchor="${side === 'left' ? 'end' : 'start'}">${label}</text>`,
      );
    }
  }

  /**
   * The outage as a shaded band and the drill's moments as dashed lines; with `labels`, their
   * names in rows above the plot (each label in the first row where it does not overlap the
   * previous one). Returns the height the label rows take.
   */
  markers(markers: readonly Marker[], outage: DrillLog['outage'], labels: boolean): number {
    if (outage !== undefined) {
      const x0 = this.x(outage.from);
      const x1 = this.x(outage.to);
      this.parts.unshift(
        `<rect x="${x0}" y="${this.top}" width="${Math.max(1, x1 - x0)}" height="${this.bottom - this.top}" fill="${COLORS.outage}"/>`,
      );
    }
    for (const m of markers) {
      const x = this.x(m.at);
      this.parts.push(
        `<line x1="${x}" x2="${x}" y1="${this.top}" y2="${this.bottom}" stroke="${m.color}" stroke-dasharray="4 3" stroke-width="1.2"/>`,
      );
    }
    if (!labels) return 0;
    const texts: { x: number; label: string; color: string }[] = markers.map((m) => ({
      x: this.x(m.at),
      label: m.label,
      color: m.color,
    }));
    if (outage !== undefined)
      texts.push({ x: this.x(outage.from), label: 'payments down', color: COLORS.fault });
    texts.sort((a, b) => a.x - b.x);
    const rowEnds: number[] = [];
    for (const t of texts) {
      const width = t.label.length * 6.4 + 10;
      // Near the right edge the label goes left of its line.
      const left = t.x + width > W - 4 ? t.x - width : t.x;
      let row = rowEnds.findIndex((end) => end < left);
      if (row === -1) row = rowEnds.push(0) - 1;
      rowEnds[row] = left + width;
      const y = this.top + 11 + row * 14;
      this.parts.push(
        `<text x="${left === t.x ? t.x + 4 : t.x - 4}" y="${y}" class="mark" fill="${t.color}" text-anchor="${left === t.x ? 'start' : 'end'}">${esc(t.label)}</text>`,
      );
    }
    return rowEnds.length * 14 + 6;
  }

  svg(title: string): string {
    return `<svg viewBox="0 0 ${W} ${this.height}" role="img" aria-label="${esc(title)}">${this.parts.join('')}</svg>`;
  }
}

/** The drill's moments, in time order. */
function drillMarkers(input: HtmlInput): Marker[] {
  const { drill, gatewayEvents, ringChanges } = input;
  const markers: Marker[] = [];
  if (drill.stall !== undefined)
    markers.push({ at: drill.stall.at, label: 'shards stall past lock ttl', color: COLORS.fault });
  if (drill.killed !== undefined) {
    const killed = drill.killed;
    markers.push({ at: killed.at, label: `${killed.id} killed`, color: COLORS.fault });
    const after = (event: ViewEvent['event']): ViewEvent | undefined =>
      gatewayEvents.find((e) => e.id === killed.id && e.event === event && e.at >= killed.at);
    const ejected = after('ejected');
    if (ejected !== undefined)
      markers.push({ at: ejected.at, label: `${killed.id} ejected`, color: COLORS.view });
    const removed = after('removed');
    if (removed !== undefined)
      markers.push({ at: removed.at, label: `${killed.id} left view`, color: COLORS.view });
  }
  if (drill.joined !== undefined) {
    const joined = drill.joined;
    markers.push({ at: joined.at, label: `${joined.id} joined`, color: COLORS.change });
    const rebuilt = ringChanges
      .filter((c) => c.nodes.includes(joined.id))
      .sort((a, b) => a.at - b.at)[0];
    if (rebuilt !== undefined)
      markers.push({
        at: rebuilt.at,
        label: `ring rebuilt: ${rebuilt.movedSkus} SKUs moved`,
        color: COLORS.change,
      });
  }
  return markers.sort((a, b) => a.at - b.at);
}

function percentileOf(values: number[], p: number): number {
  if (values.length === 0) return 0;
  values.sort((a, b) => a - b);
  return values[Math.min(values.length - 1, Math.floor(p * values.length))] as number;
}

/** Time buckets over the run: about 40, each a round number of ms. */
function buckets(span: readonly [number, number]): { size: number; count: number } {
  const ms = span[1] - span[0];
  const size = Math.max(100, niceStep(ms, 40));
  return { size, count: Math.max(1, Math.ceil(ms / size)) };
}

function throughputChart(input: HtmlInput, c: Chart, markers: readonly Marker[]): string {
  const { size, count } = buckets(c.span);
  const answered = Array.from({ length: count }, () => 0);
  const latencies = Array.from({ length: count }, (): number[] => []);
  for (const r of input.results) {
    const i = Math.min(count - 1, Math.max(0, Math.floor((r.finishedAt - c.span[0]) / size)));
    answered[i] = (answered[i] as number) + 1;
    (latencies[i] as number[]).push(r.latencyMs);
  }
  const perSecond = answered.map((n) => (n * 1000) / size);
  const p99 = latencies.map((l) => percentileOf(l, 0.99));
  const maxRate = Math.max(1, ...perSecond) * 1.05;
  const maxLatency = Math.max(1, ...p99) * 1.05;
  // Labels first (their rows sit above the plot), then the plot below them.
  const reserved = c.markers(markers, input.drill.outage, true);
  const yRate = (v: number): number => c.bottom - (v / maxRate) * (c.bottom - c.top - reserved);
  const yLat = (v: number): number => c.bottom - (v / maxLatency) * (c.bottom - c.top - reserved);
  c.timeAxis();
  c.valueAxis(maxRate, yRate, 'left', '/s');
  c.valueAxis(maxLatency, yLat, 'right', ' ms');

  const barWidth = (size / (c.span[1] - c.span[0])) * PLOT;
  perSecond.forEach((v, i) => {
    const x = c.x(c.span[0] + i * size);
    c.parts.push(
      `<rect x="${x + 1}" y="${yRate(v)}" width="${Math.max(1, barWidth - 2)}" height="${c.bottom - yRate(v)}" fill="${COLORS.throughput}"><title>${fmt(v)} answers/s, p99 ${fmt(p99[i] as number)} ms</title></rect>`,
    );
  });
  const points = p99
    .map((v, i) =>
      latencies[i]?.length === 0 ? undefined : `${c.x(c.span[0] + (i + 0.5) * size)},${yLat(v)}`,
    )
    .filter((p) => p !== undefined);
  c.parts.push(
    `<polyline points="${points.join(' ')}" fill="none" stroke="${COLORS.p99}" stroke-width="2.2" stroke-linejoin="round"/>`,
  );
  return c.svg('throughput and p99 latency over time');
}

const STATE_COLOR: Record<string, string> = {
  closed: COLORS.closed,
  open: COLORS.open,
  'half-open': COLORS.halfOpen,
};

function breakerChart(input: HtmlInput, c: Chart, markers: readonly Marker[]): string {
  const lane = (c.bottom - c.top) / Math.max(1, input.orders.length);
  c.timeAxis();
  c.markers(markers, input.drill.outage, false);
  input.orders.forEach((id, row) => {
    const y = c.top + row * lane + 4;
    const h = lane - 8;
    const end = input.drill.killed?.id === id ? input.drill.killed.at : c.span[1];
    const changes = input.report.breakerTransitions
      .filter((t: BreakerTransition) => t.instance === id)
      .sort((a, b) => a.at - b.at);
    let state = changes[0]?.from ?? 'closed';
    let from = c.span[0];
    const segment = (to: number): void => {
      const x0 = c.x(Math.max(from, c.span[0]));
      const x1 = c.x(Math.min(to, end));
      if (x1 > x0)
        c.parts.push(
          `<rect x="${x0}" y="${y}" width="${x1 - x0}" height="${h}" fill="${STATE_COLOR[state] ?? COLORS.muted}"><title>${esc(id)}: ${esc(state)}</title></rect>`,
        );
    };
    for (const t of changes) {
      segment(t.at);
      state = t.to;
      from = t.at;
    }
    segment(end);
    c.parts.push(
      `<text x="${LEFT - 6}" y="${y + h / 2 + 4}" class="lane" text-anchor="end">${esc(id)}</text>`,
    );
    if (end < c.span[1]) {
      const x = c.x(end);
      c.parts.push(
        `<text x="${x + 6}" y="${y + h / 2 + 4}" class="lane" fill="${COLORS.fault}">✗ killed</text>`,
      );
    }
  });
  return c.svg('circuit breaker state per orders instance');
}

function viewChart(input: HtmlInput, c: Chart, markers: readonly Marker[]): string {
  // Replay the gateway's view: in view = added − removed; healthy = in view − ejected.
  const inView = new Set<string>();
  const ejected = new Set<string>();
  const steps: { at: number; view: number; healthy: number }[] = [];
  const push = (at: number): void => {
    let healthy = 0;
    for (const id of inView) if (!ejected.has(id)) healthy++;
    steps.push({ at, view: inView.size, healthy });
  };
  for (const e of [...input.gatewayEvents].sort((a, b) => a.at - b.at)) {
    if (e.event === 'added') inView.add(e.id);
    else if (e.event === 'removed') {
      inView.delete(e.id);
      ejected.delete(e.id);
    } else if (e.event === 'ejected') ejected.add(e.id);
    else ejected.delete(e.id);
    push(e.at);
  }
  const max = Math.max(3, ...steps.map((s) => s.view)) + 0.5;
  const y = (v: number): number => c.bottom - (v / max) * (c.bottom - c.top);
  c.timeAxis();
  c.valueAxis(max - 0.5, y, 'left', '');
  c.markers(markers, input.drill.outage, false);
  const line = (pick: (s: { view: number; healthy: number }) => number): string => {
    const last = steps.filter((s) => s.at <= c.span[0]).at(-1);
    const pts: string[] = [];
    let prev = last === undefined ? 0 : pick(last);
    pts.push(`${c.x(c.span[0])},${y(prev)}`);
    for (const s of steps) {
      if (s.at <= c.span[0]) continue;
      const x = c.x(Math.min(s.at, c.span[1]));
      pts.push(`${x},${y(prev)}`, `${x},${y(pick(s))}`);
      prev = pick(s);
    }
    pts.push(`${c.x(c.span[1])},${y(prev)}`);
    return pts.join(' ');
  };
  c.parts.push(
    `<polyline points="${line((s) => s.view)}" fill="none" stroke="${COLORS.view}" stroke-width="2.5"/>`,
    `<polyline points="${line((s) => s.healthy)}" fill="none" stroke="${COLORS.healthy}" stroke-width="2" stroke-dasharray="6 3"/>`,
  );
  return c.svg("the gateway's view of orders");
}

function lockChart(input: HtmlInput, c: Chart, markers: readonly Marker[]): string {
  const waits = input.timelines.flatMap((t) => t.lockWaits);
  const fenced = input.timelines.flatMap((t) => t.fencedOff);
  const lost = input.timelines.flatMap((t) => t.locksLost);
  // Log scale from 1 ms: most waits are immediate (drawn on the "< 1 ms" row), the ones behind
  // a stalled or killed holder take up to its lock's ttl.
  const maxWait = Math.max(100, ...waits.map((w) => w[1]));
  const top = Math.log10(maxWait * 1.5);
  const strip = 22; // the bottom strip for fencing refusals and lost locks
  const plotBottom = c.bottom - strip;
  const fast = plotBottom - 6;
  const y = (ms: number): number =>
    ms < 1 ? fast : fast - 14 - (Math.log10(ms) / top) * (fast - 14 - c.top);
  c.timeAxis();
  c.parts.push(
    `<text x="${LEFT - 6}" y="${fast + 4}" class="tick" text-anchor="end">&lt; 1 ms</text>`,
  );
  for (let e = 0; e <= top; e++) {
    const yy = y(10 ** e);
    c.parts.push(
      `<line x1="${LEFT}" x2="${W - RIGHT}" y1="${yy}" y2="${yy}" stroke="${COLORS.grid}"/>`,
      `<text x="${LEFT - 6}" y="${yy + 4}" class="tick" text-anchor="end">${10 ** e >= 1000 ? `${10 ** (e - 3)} s` : `${10 ** e} ms`}</text>`,
    );
  }
  c.markers(markers, input.drill.outage, false);
  // Jitter the immediate ones a little, so their density shows.
  let jitter = 0;
  for (const [at, ms, ok] of waits) {
    if (at < c.span[0] || at > c.span[1]) continue;
    const yy = ms < 1 ? fast + ((jitter++ % 5) - 2) * 1.5 : y(ms);
    c.parts.push(
      `<circle cx="${c.x(at).toFixed(1)}" cy="${yy.toFixed(1)}" r="${ok === 1 ? 2 : 2.8}" fill="${ok === 1 ? COLORS.wait : COLORS.failed}" fill-opacity="${ok === 1 ? 0.35 : 0.75}"/>`,
    );
  }
  c.parts.push(
    `<line x1="${LEFT}" x2="${W - RIGHT}" y1="${plotBottom + 2}" y2="${plotBottom + 2}" stroke="${COLORS.muted}"/>`,
    `<text x="${LEFT - 6}" y="${plotBottom + 16}" class="tick" text-anchor="end">refused</text>`,
  );
  for (const at of fenced) {
    const x = c.x(Math.min(Math.max(at, c.span[0]), c.span[1]));
    c.parts.push(
      `<path d="M${x} ${plotBottom + 6} l5 12 h-10 z" fill="${COLORS.fault}"><title>stale write refused by fencing token</title></path>`,
    );
  }
  for (const at of lost) {
    const x = c.x(Math.min(Math.max(at, c.span[0]), c.span[1]));
    c.parts.push(
      `<rect x="${x - 4}" y="${plotBottom + 8}" width="8" height="8" fill="none" stroke="${COLORS.change}" stroke-width="2"><title>lock lost</title></rect>`,
    );
  }
  return c.svg('lock waits and fencing refusals');
}

function legend(
  items: readonly [string, string, 'bar' | 'line' | 'dash' | 'dot' | 'tri' | 'box'][],
): string {
  return `<div class="legend">${items
    .map(([color, label, kind]) => {
      const swatch =
        kind === 'bar'
          ? `<rect x="0" y="2" width="14" height="10" fill="${color}"/>`
          : kind === 'line'
            ? `<line x1="0" x2="14" y1="7" y2="7" stroke="${color}" stroke-width="3"/>`
            : kind === 'dash'
              ? `<line x1="0" x2="14" y1="7" y2="7" stroke="${color}" stroke-width="2" stroke-dasharray="4 2"/>`
              : kind === 'dot'
                ? `<circle cx="7" cy="7" r="4" fill="${color}"/>`
                : kind === 'box'
                  ? `<rect x="3" y="3" width="8" height="8" fill="none" stroke="${color}" stroke-width="2"/>`
                  : `<path d="M7 1 l6 12 h-12 z" fill="${color}"/>`;
      return `<span><svg width="14" height="14">${swatch}</svg>${esc(label)}</span>`;
    })
    .join('')}</div>`;
}

const CSS = `
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:${COLORS.ink};background:#f5f7fa;margin:0;padding:24px}
main{max-width:1180px;margin:0 auto}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:16px;margin:0 0 2px}
.sub{color:${COLORS.muted};margin:0 0 16px}
.verdict{display:inline-block;padding:4px 12px;border-radius:14px;font-weight:600;color:#fff;margin-left:8px;font-size:14px;vertical-align:middle}
.ok{background:${COLORS.closed}}.bad{background:${COLORS.open}}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin:0 0 16px}
.tile{background:#fff;border-radius:8px;padding:10px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.tile b{display:block;font-size:20px;white-space:nowrap}
.tile span{color:${COLORS.muted};font-size:12px}
section{background:#fff;border-radius:8px;padding:14px 16px 8px;margin:0 0 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
section p{margin:0 0 6px;color:${COLORS.muted};font-size:13px}
svg{display:block;width:100%;height:auto}
.legend svg{display:inline-block;width:14px;height:14px;margin-right:5px;vertical-align:-2px}
.tick{font-size:11px;fill:${COLORS.muted}}
.mark{font-size:11px;font-weight:600}
.lane{font-size:12px;fill:${COLORS.ink}}
.legend{display:flex;flex-wrap:wrap;gap:16px;font-size:12px;color:${COLORS.muted};margin:4px 0 6px}
table{border-collapse:collapse;width:100%;font-size:13px}
td,th{text-align:left;padding:5px 8px;border-bottom:1px solid ${COLORS.grid}}
th{color:${COLORS.muted};font-weight:600}
.pass{color:${COLORS.closed};font-weight:700}.fail{color:${COLORS.open};font-weight:700}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:14px}
.cols>*{min-width:0}
pre{font-size:12px;background:#f5f7fa;padding:8px;border-radius:6px;overflow:auto;margin:0 0 8px;white-space:pre-wrap;overflow-wrap:anywhere}
`;

/** The page, as one HTML string. */
export function renderHtml(input: HtmlInput): string {
  const r = input.report;
  const span: [number, number] = [input.startedAt, Math.max(input.endedAt, input.startedAt + 1)];
  const x = (at: number): number => LEFT + ((at - span[0]) / (span[1] - span[0])) * PLOT;
  const markers = drillMarkers(input);
  const waits = input.timelines.flatMap((t) => t.lockWaits);
  const fenced = input.timelines.reduce((a, t) => a + t.fencedOff.length, 0);
  const lost = input.timelines.reduce((a, t) => a + t.locksLost.length, 0);
  const waitValues = waits.map((w) => w[1]);
  const tile = (value: string, label: string): string =>
    `<div class="tile"><b>${esc(value)}</b><span>${esc(label)}</span></div>`;
  const rejected = Object.entries(r.outcomes)
    .filter(([k]) => k.startsWith('rejected:'))
    .reduce((a, [, n]) => a + n, 0);
  const invariants = r.invariants
    .map(
      (i) =>
        `<tr><td class="${i.ok ? 'pass' : 'fail'}">${i.ok ? 'PASS' : 'FAIL'}</td><td>${esc(i.name)}</td><td>${esc(i.detail)}</td></tr>`,
    )
    .join('');
  const outcomes = Object.entries(r.outcomes)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `<tr><td>${esc(k)}</td><td>${fmt(n)}</td></tr>`)
    .join('');
  const killed = r.killed;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>Keel trading demo — ${r.ok ? 'all invariants hold' : 'INVARIANTS FAILED'}</title>
<style>${CSS}</style></head>
<body><main>
<h1>Keel trading demo — flash sale <span class="verdict ${r.ok ? 'ok' : 'bad'}">${r.ok ? 'all invariants hold' : 'invariants FAILED'}</span></h1>
<p class="sub">${esc(r.mode === 'redis' ? 'Redis mode (a process per instance)' : 'Embedded mode (one process)')} · seed ${r.seed} · ${fmt(r.buyers)} buyers, ${fmt(r.requests)} requests in ${fmt(r.durationMs / 1000, 1)} s · ${esc(new Date(input.startedAt).toISOString())}</p>
<div class="tiles">
${tile(`${fmt(r.ordersPerSecond)}/s`, 'buyers answered per second')}
${tile(`${seconds(r.latencyMs.p50)} / ${seconds(r.latencyMs.p99)}`, 'latency p50 / p99 per buyer')}
${tile(fmt(r.outcomes.confirmed ?? 0), `confirmed · ${fmt(rejected)} rejected`)}
${tile(fmt(r.oversold), `oversold (sold ${fmt(r.units.sold)} of ${fmt(r.units.initial)})`)}
${tile(killed.ejectedAfterMs === undefined ? 'n/a' : `${fmt(killed.ejectedAfterMs)} ms`, `${killed.id ?? 'killed instance'} ejected after`)}
${tile(fmt(r.fencing.staleWritesRefused), 'stale writes refused (fencing)')}
</div>
<section><h2>Throughput and p99 latency</h2>
<p>Buyers answered per second (bars) and the p99 latency of the buyers answered in each interval (line, right axis), with the drill's faults and the rebalance marked.</p>
${legend([
  [COLORS.throughput, 'answers/s', 'bar'],
  [COLORS.p99, 'p99 latency', 'line'],
  [COLORS.fault, 'fault', 'dash'],
  [COLORS.view, 'gateway reacts', 'dash'],
  [COLORS.change, 'rebalance', 'dash'],
  ['rgba(225,45,57,0.3)', 'payments outage', 'bar'],
])}
${throughputChart(input, new Chart(300, x, span, { top: 10, bottom: 26 }), markers)}
</section>
<section><h2>Circuit breaker per orders instance (payments)</h2>
<p>${r.breakerTransitions.length} transitions. Each orders instance has its own breaker in front of payments; it opens in the outage and half-open trials close it when payments is back.</p>
${legend([
  [COLORS.closed, 'closed', 'bar'],
  [COLORS.open, 'open', 'bar'],
  [COLORS.halfOpen, 'half-open', 'bar'],
])}
${breakerChart(input, new Chart(40 * Math.max(1, input.orders.length) + 34, x, span, { top: 6, bottom: 26 }), markers)}
</section>
<section><h2>The gateway's view of orders</h2>
<p>Instances in the gateway's discovery view, and those its balancer does not eject. ${esc(killed.id ?? 'The killed instance')} was ejected after ${killed.ejectedAfterMs === undefined ? 'n/a' : `${fmt(killed.ejectedAfterMs)} ms`} and left the view after ${killed.removedAfterMs === undefined ? 'n/a' : `${fmt(killed.removedAfterMs)} ms`} (its registration expired).</p>
${legend([
  [COLORS.view, 'in view', 'line'],
  [COLORS.healthy, 'in view and not ejected', 'dash'],
])}
${viewChart(input, new Chart(150, x, span, { top: 10, bottom: 26 }), markers)}
</section>
<section><h2>Lock waits and fencing refusals</h2>
<p>${fmt(waits.length)} lock acquisitions (inventory per SKU, orders per order; from the <code>keel:lock:acquire</code> diagnostics channel): wait p50 ${fmt(percentileOf([...waitValues], 0.5), 1)} ms, p99 ${fmt(percentileOf([...waitValues], 0.99), 1)} ms, ${fmt(waits.filter((w) => w[2] === 0).length)} gave up. ${fenced} stale write(s) refused by fencing tokens after ${r.fencing.stalls} stalled holder(s)${lost > 0 ? `; ${lost} lock(s) seen lost` : ''}.${r.mode === 'redis' && input.drill.killed !== undefined ? ` (${esc(input.drill.killed.id)}'s own record died with it.)` : ''}</p>
${legend([
  [COLORS.wait, 'wait of one acquisition', 'dot'],
  [COLORS.failed, 'acquisition that gave up', 'dot'],
  [COLORS.fault, 'stale write refused (fencing token)', 'tri'],
  [COLORS.change, 'lock seen lost', 'box'],
])}
${lockChart(input, new Chart(260, x, span, { top: 10, bottom: 26 }), markers)}
</section>
<section><h2>Invariants</h2>
<table><tr><th></th><th>invariant</th><th>evidence</th></tr>${invariants}</table>
</section>
<div class="cols">
<section><h2>Orders by outcome</h2><table>${outcomes}</table></section>
<section><h2>The drill</h2><pre>${esc(r.drill.join('\n'))}</pre>
<p>Rebalance: ${esc(r.rebalance.joined ?? 'no shard')} joined; ${r.rebalance.movedSkus ?? 'n/a'} of ${r.skus.length} SKUs moved (${r.rebalance.movedFraction === undefined ? 'n/a' : `${fmt(r.rebalance.movedFraction * 100, 1)} % of the hash space`}). Payments: ${fmt(r.charges.charged)} charges stand, ${fmt(r.charges.refunded)} refunded.</p></section>
</div>
</main></body></html>
`;
}
