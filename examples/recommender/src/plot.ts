import { Canvas, type Rgb } from './png.js';

export const COLORS: Record<string, Rgb> = {
  blue: [31, 119, 180], orange: [255, 127, 14], green: [44, 160, 44], red: [214, 39, 40], purple: [148, 103, 189],
  gray: [127, 127, 127], brown: [140, 86, 75],
};
const INK: Rgb = [40, 40, 40], GRID: Rgb = [225, 225, 225];

export interface Series { name: string; color: Rgb; points: readonly (readonly [number, number])[]; dashed?: boolean }

function fmt(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(0)}K`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

/**
 * A line chart (title, axes with 5 y ticks and integer-ish x ticks, one polyline per series with markers, legend
 * below). Horizontal reference lines are series with two points spanning the x range and `dashed: true`.
 */
export function lineChart(title: string, xLabel: string, series: readonly Series[], w = 720, h = 420): Buffer {
  const cv = new Canvas(w, h);
  const L = 70, R = 20, T = 40, legendRows = Math.ceil(series.length / 3), B = 50 + legendRows * 18;
  const xs = series.flatMap((s) => s.points.map((p) => p[0])), ys = series.flatMap((s) => s.points.map((p) => p[1]));
  let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(0, ...ys), y1 = Math.max(...ys);
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) y1 = y0 + 1;
  y1 += (y1 - y0) * 0.08;
  const px = (x: number): number => L + ((x - x0) / (x1 - x0)) * (w - L - R);
  const py = (y: number): number => h - B - ((y - y0) / (y1 - y0)) * (h - T - B);
  cv.text((w - Canvas.textWidth(title, 3)) / 2, 10, title, INK, 3);
  for (let i = 0; i <= 5; i++) {
    const v = y0 + ((y1 - y0) * i) / 5, y = py(v);
    cv.line(L, y, w - R, y, GRID);
    const s = fmt(v);
    cv.text(L - 6 - Canvas.textWidth(s), y - 5, s, INK);
  }
  const xt = Math.min(10, Math.round(x1 - x0));
  for (let i = 0; i <= xt; i++) {
    const v = x0 + ((x1 - x0) * i) / xt, x = px(v), s = Number.isInteger(v) ? String(v) : fmt(v);
    cv.line(x, h - B, x, h - B + 4, INK);
    cv.text(x - Canvas.textWidth(s) / 2, h - B + 8, s, INK);
  }
  cv.line(L, T, L, h - B, INK, 2);
  cv.line(L, h - B, w - R, h - B, INK, 2);
  cv.text((w - Canvas.textWidth(xLabel)) / 2, h - B + 24, xLabel, INK);
  for (const s of series) {
    for (let i = 1; i < s.points.length; i++) {
      const a = s.points[i - 1]!, b = s.points[i]!;
      if (s.dashed) cv.dashed(px(a[0]), py(a[1]), px(b[0]), py(b[1]), s.color, 2);
      else cv.line(px(a[0]), py(a[1]), px(b[0]), py(b[1]), s.color, 3);
    }
    if (!s.dashed) for (const p of s.points) cv.rect(px(p[0]) - 3, py(p[1]) - 3, 7, 7, s.color);
  }
  series.forEach((s, i) => {
    const lx = L + (i % 3) * ((w - L) / 3), ly = h - B + 44 + Math.floor(i / 3) * 18;
    cv.rect(lx, ly, 14, 10, s.color);
    cv.text(lx + 20, ly, s.name, INK);
  });
  return cv.png();
}

/** A bar chart with the value printed above each bar. */
export function barChart(title: string, bars: readonly { name: string; value: number; color: Rgb }[], w = 720, h = 420): Buffer {
  const cv = new Canvas(w, h);
  const L = 70, R = 20, T = 40, B = 40;
  const y1 = Math.max(...bars.map((b) => b.value), 1e-9) * 1.15;
  const py = (y: number): number => h - B - (y / y1) * (h - T - B);
  cv.text((w - Canvas.textWidth(title, 3)) / 2, 10, title, INK, 3);
  for (let i = 0; i <= 5; i++) {
    const v = (y1 * i) / 5, y = py(v);
    cv.line(L, y, w - R, y, GRID);
    const s = fmt(v);
    cv.text(L - 6 - Canvas.textWidth(s), y - 5, s, INK);
  }
  const slot = (w - L - R) / bars.length, bw = Math.min(90, slot * 0.6);
  bars.forEach((b, i) => {
    const cx = L + slot * (i + 0.5);
    cv.rect(cx - bw / 2, py(b.value), bw, h - B - py(b.value), b.color);
    const v = fmt(b.value);
    cv.text(cx - Canvas.textWidth(v) / 2, py(b.value) - 14, v, INK);
    cv.text(cx - Canvas.textWidth(b.name) / 2, h - B + 8, b.name, INK);
  });
  cv.line(L, T, L, h - B, INK, 2);
  cv.line(L, h - B, w - R, h - B, INK, 2);
  return cv.png();
}
