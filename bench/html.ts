/**
 * `npm run bench -- --html`: a self-contained page of the stored results (issue 16, item 5).
 *
 * One section per suite, from the newest invocation recorded in `bench/results/<suite>.json`:
 * every comparison as a bar on a log scale — the median ratio of the runs, with a whisker from
 * the lowest to the highest run, and the line at 1× where Keel and the peer are equal — then
 * the suite's report tables. Inline SVG and CSS only: no script, no network, so the file can be
 * mailed, attached to a CI run or opened from disk.
 *
 * @packageDocumentation
 */

/** A figure over the runs. */
export interface HtmlSpread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

/** One task of a suite, as `bench/results/<suite>.json` stores it. */
export interface HtmlTask {
  readonly name: string;
  readonly kind: string;
  readonly opsPerSec: HtmlSpread;
  readonly comparisons?: readonly (HtmlSpread & { readonly compareTo: string })[];
}

/** One suite's newest invocation. */
export interface HtmlSuite {
  readonly name: string;
  readonly description: string;
  readonly date: string;
  readonly node: string;
  readonly command: string;
  readonly quick: boolean;
  readonly runs: number;
  readonly tasks: readonly HtmlTask[];
  readonly reports: readonly {
    readonly title: string;
    readonly rows: readonly Record<string, string | number>[];
  }[];
}

/** Text for HTML element content and attribute values. */
export function escapeHtml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

function ratioText(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  return value >= 100
    ? `×${value.toFixed(0)}`
    : value >= 10
      ? `×${value.toFixed(1)}`
      : `×${value.toFixed(2)}`;
}

function cellText(value: string | number | undefined): string {
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) return String(value);
    return Number.isInteger(value) ? String(value) : value.toPrecision(4);
  }
  return value ?? '';
}

const ROW = 26;
const LABEL = 430;
const PLOT = 420;
const RIGHT = 150;

/** One bar chart: every comparison of the suite, ratio = this task's ops/s ÷ the peer's. */
function chart(suite: HtmlSuite): string {
  const bars = suite.tasks.flatMap((task) =>
    (task.comparisons ?? []).map((c) => ({ label: `${task.name} vs ${c.compareTo}`, ...c })),
  );
  const valid = bars.filter((b) => b.min > 0 && b.max > 0 && b.median > 0);
  if (valid.length === 0) return '<p class="none">No comparisons in this suite.</p>';
  // Log scale, in whole decades around every value and 1×.
  const low = Math.floor(Math.log10(Math.min(1, ...valid.map((b) => b.min))));
  const high = Math.max(low + 1, Math.ceil(Math.log10(Math.max(1, ...valid.map((b) => b.max)))));
  const x = (v: number): number => LABEL + ((Math.log10(v) - low) / (high - low)) * PLOT;
  const height = ROW * valid.length + 30;
  const width = LABEL + PLOT + RIGHT;
  const parts: string[] = [];
  for (let d = low; d <= high; d++) {
    const px = x(10 ** d).toFixed(1);
    parts.push(
      `<line x1="${px}" y1="0" x2="${px}" y2="${height - 22}" class="grid"/>`,
      `<text x="${px}" y="${height - 6}" class="axis">×${escapeHtml(String(10 ** d))}</text>`,
    );
  }
  const one = x(1).toFixed(1);
  parts.push(`<line x1="${one}" y1="0" x2="${one}" y2="${height - 22}" class="one"/>`);
  valid.forEach((b, i) => {
    const y = i * ROW + 4;
    const mid = y + ROW / 2 - 2;
    const from = Math.min(x(1), x(b.median));
    const to = Math.max(x(1), x(b.median));
    const cls = b.median >= 1 ? 'faster' : 'slower';
    const spread = b.min === b.max ? '' : ` (${ratioText(b.min)}–${ratioText(b.max)})`;
    parts.push(
      `<g><title>${escapeHtml(`${b.label}: median ${ratioText(b.median)}${spread}`)}</title>`,
      `<text x="${LABEL - 8}" y="${mid + 4}" class="label">${escapeHtml(b.label.length > 60 ? `${b.label.slice(0, 57)}…` : b.label)}</text>`,
      `<rect x="${from.toFixed(1)}" y="${y + 4}" width="${Math.max(1, to - from).toFixed(1)}" height="${ROW - 12}" class="${cls}"/>`,
      `<line x1="${x(b.min).toFixed(1)}" y1="${mid}" x2="${x(b.max).toFixed(1)}" y2="${mid}" class="whisker"/>`,
      `<text x="${LABEL + PLOT + 8}" y="${mid + 4}" class="value">${escapeHtml(ratioText(b.median) + spread)}</text>`,
      '</g>',
    );
  });
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeHtml(`${suite.name}: ratios`)}">` +
    parts.join('') +
    '</svg>'
  );
}

function reportTable(report: HtmlSuite['reports'][number]): string {
  const first = report.rows[0];
  if (first === undefined) return '';
  const header = Object.keys(first);
  const head = header.map((h) => `<th>${escapeHtml(h)}</th>`).join('');
  const body = report.rows
    .map(
      (row) => `<tr>${header.map((h) => `<td>${escapeHtml(cellText(row[h]))}</td>`).join('')}</tr>`,
    )
    .join('\n');
  return `<h3>${escapeHtml(report.title)}</h3>\n<table><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

const STYLE = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1040px; color: #1d2330; }
h1 { font-size: 1.6em; } h2 { margin-top: 2.2em; border-bottom: 1px solid #d8dce3; }
h3 { font-size: 1em; margin: 1.4em 0 .4em; }
.meta, .none { color: #5b6475; }
.quick { color: #a15c00; font-weight: 600; }
svg { display: block; margin: .6em 0; }
svg .label { text-anchor: end; font-size: 12px; fill: #1d2330; }
svg .value { font-size: 12px; fill: #1d2330; }
svg .axis { text-anchor: middle; font-size: 11px; fill: #5b6475; }
svg .grid { stroke: #e5e8ee; } svg .one { stroke: #1d2330; stroke-dasharray: 3 3; }
svg .faster { fill: #3f8f5f; } svg .slower { fill: #c0563f; }
svg .whisker { stroke: #1d2330; stroke-width: 1.5; }
table { border-collapse: collapse; font-size: 12px; margin-bottom: 1em; }
th, td { border: 1px solid #d8dce3; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f1f3f7; }
`;

/** The whole page for `suites` (each its newest recorded invocation). */
export function renderHtml(suites: readonly HtmlSuite[], generated: string): string {
  const sections = suites.map((suite) => {
    const runs = `${suite.runs} run${suite.runs === 1 ? '' : 's'}`;
    return [
      `<h2 id="${escapeHtml(suite.name)}">${escapeHtml(suite.name)}</h2>`,
      `<p>${escapeHtml(suite.description)}</p>`,
      `<p class="meta">${escapeHtml(`${suite.date} · Node ${suite.node} · ${runs} · ${suite.command}`)}` +
        (suite.quick
          ? ' · <span class="quick">quick mode: smoke numbers, not a measurement</span>'
          : '') +
        '</p>',
      chart(suite),
      ...suite.reports.map(reportTable),
    ].join('\n');
  });
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Keel benchmarks</title>
<style>${STYLE}</style>
</head>
<body>
<h1>Keel benchmarks</h1>
<p>Each bar is Keel's ops/s ÷ the peer's (or baseline's), measured in the same process: the
median over the runs, with a whisker from the lowest to the highest run. Right of the dashed
1× line Keel is faster. Every run is its own fresh Node process. Generated ${escapeHtml(generated)}.</p>
<nav>${suites.map((s) => `<a href="#${escapeHtml(s.name)}">${escapeHtml(s.name)}</a>`).join(' · ')}</nav>
${sections.join('\n')}
</body>
</html>
`;
}
