/**
 * @shoal/core/telemetry: what every floor records while training runs, for a user to watch: the timeline
 * (Chrome trace events per rank, merged into one file) and TensorBoard event files (scalar curves).
 */
export { SERVER_PID_BASE, Timeline, timelinePartPath, type SpanArgs, type TimelineLane, type TimelineOptions } from './timeline.js';
export { mergeTimeline, type MergedTimeline } from './merge-timeline.js';
