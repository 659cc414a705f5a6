import { describe, expect, it } from 'vitest';
import { escapeHtml, renderHtml, type HtmlSuite } from '../../bench/html.js';

const spread = (median: number, min = median, max = median) => ({ median, min, max });

const suite = (overrides: Partial<HtmlSuite> = {}): HtmlSuite => ({
  name: 'lock',
  description: 'Redlock <vs> node-redlock & friends',
  date: '2026-12-04T10:00:00.000Z',
  node: 'v20.20.2',
  command: 'npm run bench -- lock',
  quick: false,
  runs: 3,
  tasks: [
    {
      name: 'keel acquire',
      kind: 'keel',
      opsPerSec: spread(1000),
      comparisons: [
        { compareTo: 'redlock acquire', ...spread(1.5, 1.2, 1.8) },
        { compareTo: 'raw SET NX', ...spread(0.5, 0.4, 0.6) },
      ],
    },
    { name: 'redlock acquire', kind: 'peer', opsPerSec: spread(700) },
  ],
  reports: [{ title: 'handoff <ms>', rows: [{ case: 'a<b', p50: 1.25, p99: 3 }] }],
  ...overrides,
});

describe('bench --html page', () => {
  it('escapes everything it takes from the results', () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe(
      '&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;',
    );
    const page = renderHtml([suite()], 'now');
    expect(page).not.toContain('<vs>');
    expect(page).toContain('Redlock &lt;vs&gt; node-redlock &amp; friends');
    expect(page).toContain('<td>a&lt;b</td>');
  });

  it('draws one bar per comparison, coloured by which side is faster, with the spread', () => {
    const page = renderHtml([suite()], 'now');
    expect(page.match(/<rect /g)).toHaveLength(2);
    expect(page.match(/class="faster"/g)).toHaveLength(1);
    expect(page.match(/class="slower"/g)).toHaveLength(1);
    expect(page).toContain('×1.50 (×1.20–×1.80)');
    expect(page).toContain('×0.50 (×0.40–×0.60)');
    expect(page).toContain('3 runs');
  });

  it('is self-contained: no script, no external resource', () => {
    const page = renderHtml([suite(), suite({ name: 'breaker', quick: true, runs: 1 })], 'now');
    expect(page).not.toMatch(/<script|<link|src=|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
    expect(page).toContain('quick mode: smoke numbers, not a measurement');
    expect(page).toContain('href="#breaker"');
  });

  it('says so when a suite has no comparisons, and skips non-positive ratios', () => {
    const page = renderHtml(
      [
        suite({
          tasks: [
            {
              name: 'x',
              kind: 'keel',
              opsPerSec: spread(1),
              comparisons: [{ compareTo: 'y', ...spread(0) }],
            },
          ],
        }),
      ],
      'now',
    );
    expect(page).toContain('No comparisons in this suite.');
  });
});
