import { lineChart, VEGA_LITE_SCHEMA, type ChartRow, type TopLevelSpec } from '@shoal/run/charts';
import type { TrainResult } from './job.js';
import type { RankingMetrics } from './metrics.js';

/**
 * The report's charts as Vega-Lite specs (rendered to PNG by `renderPng` of @shoal/run/charts), by file name:
 * loss and samples/s per epoch, HR@10 per epoch against the references (dashed rules), final HR@10 bars, and
 * with comparison runs samples/s and HR@10 per run.
 */
export function reportCharts(t: TrainResult, baselines: Record<string, RankingMetrics>, baskets: string, extraRuns?: Record<string, TrainResult>): Record<string, TopLevelSpec> {
  const ep = t.epochs;
  const run = `Model (${t.backend}, ${t.workers} workers)`;
  const charts: Record<string, TopLevelSpec> = {
    'loss.png': epochAxis(lineChart('Training loss per epoch', ep.map((e) => ({ epoch: e.epoch, loss: e.loss, run })), 'epoch', 'loss', 'run', 'Epoch', 'Sampled-softmax loss', false)),
    'samples-per-sec.png': epochAxis(lineChart('Training samples/s, all workers', ep.map((e) => ({ epoch: e.epoch, sps: e.samplesPerSec, run })), 'epoch', 'sps', 'run', 'Epoch', 'Samples/s', false)),
    'hr10-bars.png': bars('HR@10: model vs references', [['model', t.final.hr], ...Object.entries(baselines).map(([n, m]) => [n, m.hr] as [string, number])], 'HR@10', true),
  };
  // HR@10 per epoch when every epoch was evaluated, else the final figure; the references as dashed rules. The
  // model is first in the colour domain, so it is always the first colour of the scheme.
  const color = { field: 'who', type: 'nominal', title: null, legend: { labelLimit: 300 }, scale: { domain: ['model', ...Object.keys(baselines)] } } as const;
  const model: ChartRow[] = ep.every((e) => e.metrics !== null) ? ep.map((e) => ({ epoch: e.epoch, hr: e.metrics!.hr, who: 'model' })) : [{ epoch: ep[ep.length - 1]?.epoch ?? 1, hr: t.final.hr, who: 'model' }];
  charts['hr10.png'] = {
    $schema: VEGA_LITE_SCHEMA,
    title: `HR@10 on test ${baskets}`,
    width: 420,
    height: 260,
    layer: [
      {
        data: { values: model },
        mark: { type: 'line', point: true },
        encoding: {
          x: { field: 'epoch', type: 'quantitative', title: 'Epoch', axis: { format: 'd', tickMinStep: 1 } },
          y: { field: 'hr', type: 'quantitative', title: 'HR@10', axis: { format: '.0%' } },
          color,
        },
      },
      {
        data: { values: Object.entries(baselines).map(([who, m]) => ({ who, hr: m.hr })) },
        mark: { type: 'rule', strokeDash: [6, 4] },
        encoding: { y: { field: 'hr', type: 'quantitative' }, color },
      },
    ],
  };
  if (extraRuns) {
    const runs = Object.entries(extraRuns).map(([label, x]) => [label.replace(/ \(main run\)/, '*'), x] as const);
    charts['runs-samples-per-sec.png'] = bars('Samples/s by run (last epoch)', runs.map(([l, x]) => [l, x.epochs[x.epochs.length - 1]?.samplesPerSec ?? 0]), 'Samples/s', false);
    charts['runs-hr10.png'] = bars('HR@10 by run', runs.map(([l, x]) => [l, x.final.hr]), 'HR@10', true);
  }
  return charts;
}

/** Whole epochs on the x axis. */
function epochAxis(spec: TopLevelSpec): TopLevelSpec {
  const e = (spec as { encoding: { x: Record<string, unknown> } }).encoding;
  e.x = { ...e.x, axis: { format: 'd', tickMinStep: 1 } };
  return spec;
}

/** One bar per name (in the given order, names on the axis), the value printed above it; `share`: values are fractions, shown as %. */
function bars(title: string, rows: readonly (readonly [string, number])[], yTitle: string, share: boolean): TopLevelSpec {
  const values = rows.map(([name, value]) => ({ name, value, label: share ? `${(value * 100).toFixed(2)}%` : String(Math.round(value)) }));
  return {
    $schema: VEGA_LITE_SCHEMA,
    title,
    data: { values },
    width: { step: 110 },
    height: 240,
    encoding: {
      x: { field: 'name', type: 'nominal', title: null, sort: null, axis: { labelAngle: 0, labelLimit: 110 } },
      y: { field: 'value', type: 'quantitative', title: yTitle, ...(share ? { axis: { format: '.0%' } } : {}) },
    },
    layer: [
      { mark: 'bar', encoding: { color: { field: 'name', type: 'nominal', legend: null, scale: { domain: rows.map(([n]) => n) } } } },
      { mark: { type: 'text', dy: -6 }, encoding: { text: { field: 'label' } } },
    ],
  };
}
