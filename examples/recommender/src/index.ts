/**
 * The recommender example's entry for its tests and for readers: what a user of the example calls, grouped by step
 * (README "The pieces"). The demo itself is `main.js` (and `worker.js` under `shoal run`); the library parts it
 * stands on are @shoal/backends (EmbeddingTables, LocalOptimizer), @shoal/wrappers (setupTfjs, ProgressBar,
 * EventFileWriter), @shoal/datasets (openCsv) and @shoal/run (launch, charts).
 */
// Data: config, cleaning, sessions, the time split
export { loadConfig, ONLINE_RETAIL, timestampParser, validateConfig, type DatasetConfig } from './config.js';
export { buildFeatures, buildTask, cleanRows, deriveSessions, prepare, type Baskets, type CleanRow, type Features, type Prepared, type TestBaskets, type TokenLists } from './prepare.js';
export { synthesizeLog, SYNTHETIC_CONFIG, SYNTHETIC_DEFAULTS } from './synthetic.js';
export { parseDemoOptions, type DemoOptions } from './cli-options.js';
// Evaluation and the references
export { bootstrapCi, evaluate, rankOfHidden, type RankingMetrics, type Recommender } from './metrics.js';
export { CoOccurrence, MostPopular, RepeatBuy } from './baselines.js';
export { cosineWeights, easeFromInverse, easeInverse, gramMatrix, ItemItem, spdInverse, spdInverseTf } from './item-item.js';
// The model and its training
export { historyLists, itemItemInverse, wideFeatures } from './features.js';
export { BasketModel, type ModelOptions } from './model.js';
export { epochExamples, trainModel, type EpochStats, type TrainOptions } from './train.js';
export { meanGradients, unionRows } from './accumulate.js';
export { DEFAULT_SPEC, runTraining, type JobSpec, type TrainResult } from './job.js';
// The report
export { writeReport, type ReportInput } from './report.js';
