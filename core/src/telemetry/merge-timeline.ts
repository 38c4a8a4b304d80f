import { readFile, rm, writeFile } from 'node:fs/promises';
import { Errors } from '../errors.js';
import { CLOCK_OFFSET_EVENT } from './timeline.js';

export interface MergedTimeline {
  /** Complete events (spans) in the merged file. */
  spans: number;
  /** Chrome trace pids found (ranks, then servers), sorted. */
  pids: number[];
  /** Part files that were missing (a rank that never started its timeline), not an error. */
  missing: string[];
  /** Per pid that recorded one (`Timeline.clockOffset`): the offset added to its spans and its round trip, in µs. */
  clockOffsets: Record<number, { offsetUs: number; rttUs: number; reference: string }>;
}

/**
 * Join the ranks' part files (`Timeline`'s JSON lines) into one Chrome trace file, the JSON object format
 * (`{"traceEvents": [...], "displayTimeUnit": "ms"}`) chrome://tracing and Perfetto open: one process per rank,
 * the lanes named, spans in timestamp order. A part cut short by a killed process keeps every complete line (the
 * torn last line is dropped); a missing part is listed in `missing`. With `remove`, the parts are deleted once the
 * merged file is written. Throws ERR_DATA naming the part and line of a line that is not an event.
 *
 * Clocks: a part that recorded its clock offset from the job's reference clock (`Timeline.clockOffset`, the last
 * one wins) has that offset added to each of its spans, so ranks on hosts whose clocks disagree line up; the
 * offsets are kept in the file's `metadata.shoal_clock_offsets` (by pid) and returned.
 */
export async function mergeTimeline(file: string, parts: readonly string[], opts: { remove?: boolean } = {}): Promise<MergedTimeline> {
  const meta: Array<Record<string, unknown>> = [];
  const spans: Array<{ ts: number; line: string }> = [];
  const clockOffsets: MergedTimeline['clockOffsets'] = {};
  const pids = new Set<number>();
  const missing: string[] = [];
  const found: string[] = [];
  for (const part of parts) {
    let text: string;
    try {
      text = await readFile(part, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        missing.push(part);
        continue;
      }
      throw e;
    }
    found.push(part);
    const own: Array<{ ts: number; line: string; e: Record<string, unknown> }> = [];
    let offsetUs = 0;
    const lines = text.split('\n');
    const torn = !text.endsWith('\n') ? lines.length - 1 : -1;
    lines.forEach((line, i) => {
      if (line === '' || i === torn) return;
      let e: { ph?: unknown; ts?: unknown; pid?: unknown };
      try {
        e = JSON.parse(line) as typeof e;
      } catch {
        throw Errors.data(`${part}:${i + 1}`, 'is not a JSON trace event');
      }
      if (typeof e.pid !== 'number') throw Errors.data(`${part}:${i + 1}`, 'trace event without a numeric pid');
      pids.add(e.pid);
      if (e.ph === 'M' && (e as { name?: unknown }).name === CLOCK_OFFSET_EVENT) {
        const a = (e as { args?: { offset_us?: unknown; rtt_us?: unknown; reference?: unknown } }).args;
        if (typeof a?.offset_us !== 'number' || typeof a.rtt_us !== 'number') throw Errors.data(`${part}:${i + 1}`, 'clock offset without numeric offset_us and rtt_us');
        offsetUs = a.offset_us;
        clockOffsets[e.pid] = { offsetUs, rttUs: a.rtt_us, reference: String(a.reference ?? '') };
      } else if (e.ph === 'M') meta.push(e as Record<string, unknown>);
      else if (typeof e.ts === 'number') own.push({ ts: e.ts, line, e: e as Record<string, unknown> });
      else throw Errors.data(`${part}:${i + 1}`, 'trace event without a numeric ts');
    });
    for (const s of own) {
      if (offsetUs === 0) spans.push({ ts: s.ts, line: s.line });
      else spans.push({ ts: s.ts + offsetUs, line: JSON.stringify({ ...s.e, ts: Math.round((s.ts + offsetUs) * 10) / 10 }) });
    }
  }
  spans.sort((a, b) => a.ts - b.ts);
  const body = [...meta.map((m) => JSON.stringify(m)), ...spans.map((s) => s.line)].join(',\n');
  const metadata = Object.keys(clockOffsets).length ? `"metadata":${JSON.stringify({ shoal_clock_offsets: clockOffsets })},\n` : '';
  await writeFile(file, `{"displayTimeUnit":"ms",${metadata}"traceEvents":[\n${body}\n]}\n`);
  if (opts.remove) await Promise.all(found.map((p) => rm(p, { force: true })));
  return { spans: spans.length, pids: [...pids].sort((a, b) => a - b), missing, clockOffsets };
}
