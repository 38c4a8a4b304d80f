/**
 * Charts for reports (`@shoal/run/charts`): Vega-Lite specs compiled to Vega, rendered to SVG by vega's headless
 * view and to PNG by resvg (its binary ships in the npm package; no canvas, no browser). Used by the bench
 * report and the recommender demo. Titles are plain text in the caller's case.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

export type { TopLevelSpec } from 'vega-lite';
export type ChartRow = Record<string, unknown>;

/** The Vega-Lite schema the builders here write. */
export const VEGA_LITE_SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';

/** Render a Vega-Lite spec to SVG text. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Render a Vega-Lite spec to `file` (PNG at 2x, white background; the folder is created). */
export async function renderPng(spec: TopLevelSpec, file: string): Promise<void> {
  const svg = await renderSvg(spec);
  const png = new Resvg(svg, { fitTo: { mode: 'zoom', value: 2 }, font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' }, background: 'white' }).render().asPng();
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, png);
}

/**
 * Lines with points: `y` against `x` (quantitative; log2 scale when `logX`), one line per value of `color`,
 * optionally one panel per value of `column` (independent y scales).
 */
export function lineChart(title: string, values: ChartRow[], x: string, y: string, color: string, xTitle: string, yTitle: string, logX = true, column?: string): TopLevelSpec {
  return {
    $schema: VEGA_LITE_SCHEMA,
    title,
    data: { values },
    mark: { type: 'line', point: true },
    width: 320,
    height: 220,
    encoding: {
      x: { field: x, type: 'quantitative', title: xTitle, scale: logX ? { type: 'log', base: 2 } : {} },
      y: { field: y, type: 'quantitative', title: yTitle },
      color: { field: color, type: 'nominal', title: null, legend: { labelLimit: 400 } },
      ...(column ? { column: { field: column, type: 'nominal', title: null } } : {}),
    },
    ...(column ? { resolve: { scale: { y: 'independent' } } } : {}),
  };
}

/** Grouped bars: `y` per nominal `x`, one bar per value of `color` side by side, optionally one panel per `column`. */
export function barChart(title: string, values: ChartRow[], x: string, y: string, color: string, yTitle: string, column?: string): TopLevelSpec {
  return {
    $schema: VEGA_LITE_SCHEMA,
    title,
    data: { values },
    mark: 'bar',
    width: { step: 28 },
    height: 220,
    encoding: {
      x: { field: x, type: 'nominal', title: null },
      xOffset: { field: color },
      y: { field: y, type: 'quantitative', title: yTitle },
      color: { field: color, type: 'nominal', title: null, legend: { labelLimit: 400 } },
      ...(column ? { column: { field: column, type: 'nominal', title: null } } : {}),
    },
    ...(column ? { resolve: { scale: { y: 'independent' } } } : {}),
  };
}
