/**
 * @shoal/core/telemetry: what every floor records while training runs, for a user to watch: the timeline
 * (Chrome trace events per rank, merged into one file) and TensorBoard event files (scalar curves), written by the
 * Trainer's callback (wrappers) and by the parameter servers (backends) alike.
 */
export { SERVER_PID_BASE, Timeline, timelinePartPath, traceIf, type SpanArgs, type TimelineLane, type TimelineOptions } from './timeline.js';
export { estimateClockOffset, type ClockOffset, type ClockOffsetOptions } from './clock-offset.js';
export { mergeTimeline, type MergedTimeline } from './merge-timeline.js';
export { encodeEvent, EventFileWriter, frameRecord, maskedCrc32c, type EventFields, type EventFileWriterOptions } from './event-file.js';
