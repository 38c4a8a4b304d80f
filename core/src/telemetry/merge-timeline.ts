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
  /**
   * Per pid that recorded one (`Timeline.clockOffset`): the last offset and its round trip, in µs; with two or more
   * offsets measured at different moments, also how many (`samples`) and the drift between the first and the
   * last in parts per million of elapsed time (`driftPpm`), which the merge took out by interpolating.
   */
  clockOffsets: Record<number, ClockOffsetSummary>;
}

export interface ClockOffsetSummary {
  offsetUs: number;
  rttUs: number;
  reference: string;
  samples?: number;
  driftPpm?: number;
}

interface OffsetSample {
  offsetUs: number;
  rttUs: number;
  reference: string;
  atUs?: number;
}

/**
 * The offset to add at local time `ts`: the last sample's when fewer than two carry a moment; else linear between
 * the two samples around `ts` (sorted by moment), held at the first before it and at the last after it.
 */
function offsetAt(timed: readonly OffsetSample[], last: OffsetSample, ts: number): number {
  if (timed.length < 2) return last.offsetUs;
  if (ts <= timed[0]!.atUs!) return timed[0]!.offsetUs;
  for (let i = 1; i < timed.length; i++) {
    const a = timed[i - 1]!, b = timed[i]!;
    if (ts <= b.atUs!) return a.offsetUs + ((b.offsetUs - a.offsetUs) * (ts - a.atUs!)) / (b.atUs! - a.atUs!);
  }
  return timed[timed.length - 1]!.offsetUs;
}

function summary(timed: readonly OffsetSample[], last: OffsetSample): ClockOffsetSummary {
  const base = { offsetUs: last.offsetUs, rttUs: last.rttUs, reference: last.reference };
  if (timed.length < 2) return base;
  const a = timed[0]!, b = timed[timed.length - 1]!;
  return { ...base, samples: timed.length, driftPpm: Math.round(((b.offsetUs - a.offsetUs) / (b.atUs! - a.atUs!)) * 1e6 * 100) / 100 };
}

/**
 * Join the ranks' part files (`Timeline`'s JSON lines) into one Chrome trace file, the JSON object format
 * (`{"traceEvents": [...], "displayTimeUnit": "ms"}`) chrome://tracing and Perfetto open: one process per rank,
 * the lanes named, spans in timestamp order. A part cut short by a killed process keeps every complete line (the
 * torn last line is dropped); a missing part is listed in `missing`. With `remove`, the parts are deleted once the
 * merged file is written. Throws ERR_DATA naming the part and line of a line that is not an event.
 *
 * Clocks: a part that recorded its clock offset from the job's reference clock (`Timeline.clockOffset`) has it
 * added to each of its spans, so ranks on hosts whose clocks disagree line up: one offset (the last recorded)
 * shifts the whole part; offsets measured at two or more moments are interpolated at each span's time, which takes
 * out the drift between them. The offsets are kept in the file's `metadata.shoal_clock_offsets` (by pid) and
 * returned.
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
    const samples: OffsetSample[] = [];
    let offsetPid = 0;
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
        const a = (e as { args?: { offset_us?: unknown; rtt_us?: unknown; reference?: unknown; at_us?: unknown } }).args;
        if (typeof a?.offset_us !== 'number' || typeof a.rtt_us !== 'number') throw Errors.data(`${part}:${i + 1}`, 'clock offset without numeric offset_us and rtt_us');
        if (a.at_us !== undefined && typeof a.at_us !== 'number') throw Errors.data(`${part}:${i + 1}`, 'clock offset with a non-numeric at_us');
        offsetPid = e.pid;
        samples.push({ offsetUs: a.offset_us, rttUs: a.rtt_us, reference: String(a.reference ?? ''), ...(a.at_us === undefined ? {} : { atUs: a.at_us }) });
      } else if (e.ph === 'M') meta.push(e as Record<string, unknown>);
      else if (typeof e.ts === 'number') own.push({ ts: e.ts, line, e: e as Record<string, unknown> });
      else throw Errors.data(`${part}:${i + 1}`, 'trace event without a numeric ts');
    });
    const last = samples[samples.length - 1];
    const timed = samples.filter((x) => x.atUs !== undefined).sort((x, y) => x.atUs! - y.atUs!);
    if (last !== undefined) clockOffsets[offsetPid] = summary(timed, last);
    for (const s of own) {
      const offsetUs = last === undefined ? 0 : offsetAt(timed, last, s.ts);
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
