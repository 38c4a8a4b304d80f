/**
 * @shoal/run: how a shoal job starts. The `shoal` command (`launcher/cli.ts`), the launcher it drives
 * (`launch`), the worker side that joins the job (`initWorker`, which builds the engine SHOAL_BACKEND names,
 * and the lower-level `joinJob`), and the Spark side's helpers (`sparkInput`; the store entry
 * `launcher/spark-store.ts` is a script run by python/shoal_spark).
 */
export { initWorker, type InitWorkerOptions, type WorkerHandle } from './worker/init-worker.js';
export { connectEngine, type ConnectedEngine, type EngineOptions } from './worker/engine-factory.js';
export { joinJob, threadWorkerOptions, watchParent, type JobContext, type JoinJobOptions } from './worker/join-job.js';
export { ElasticSync } from './worker/elastic-sync.js';
export { sparkInput } from './worker/spark-input.js';
export { openWorkerData, reportResult, type WorkerDataOptions } from './worker/worker-data.js';
export { launch, PS_MAX_RESTARTS } from './launcher/launch.js';
export { pickRootCause, pickStalledRank, summarizeFailure } from './launcher/failure-report.js';
export type { LaunchOptions, LaunchResult } from './launcher/launch-options.js';
export { MAX_WORKERS, MAX_WORKERS_PER_CORE, parseRunArgs, parseRunCommand, RUN_COMMAND, type ParsedRun } from './launcher/run-args.js';
export { psServerListenUrl, startPsServerActors, type PsLink, type PsServerActorsOptions } from './launcher/ps-servers.js';
