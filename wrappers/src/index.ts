/**
 * @shoal/wrappers: adapts TensorFlow.js and ONNX Runtime to the gradient engines of @shoal/backends. A worker
 * joins its job with `initWorker` (@shoal/run) and trains with `Trainer`. Test kits: @shoal/wrappers/testing.
 */
// TensorFlow.js
export { activeTfjsBackend, setupTfjs, wasmBinaryDir, type Tf, type TfjsBackendName, type TfjsRuntime, type TfjsRuntimeOptions } from './tfjs/runtime.js';
export { registerShoalKernels, type ShoalKernels } from './tfjs/kernels.js';
export { Trainer, type EpochRecord, type History, type TrainerOptions } from './tfjs/trainer.js';
export { epochOrder } from './tfjs/data.js';
export { elasticBatchRows, type ElasticOptions, type ElasticPosition, type ElasticTrainer } from './tfjs/elastic.js';
export type { CheckpointOptions, FitOptions, TensorData, ValidationData } from './tfjs/fit-options.js';
export {
  earlyStopping,
  learningRateScheduler,
  modelCheckpoint,
  reduceLROnPlateau,
  type Callbacks,
  type EarlyStoppingOptions,
  type Logs,
  type ModelCheckpointOptions,
  type ReduceLROnPlateauOptions,
} from './tfjs/callbacks.js';
export { getLearningRate, schedules, setLearningRate, type LearningRateSchedule } from './tfjs/schedules.js';
export { nodeFileSystem, registerFileRouters } from './tfjs/model-io.js';
export { tensorBoard, TensorBoardCallback, type TensorBoardOptions } from './tfjs/tensorboard/tensorboard.js';
export { EventFileWriter, encodeEvent, frameRecord, maskedCrc32c, type EventFileWriterOptions } from '@shoal/core/telemetry';
export { SystemSampler, type SystemSample } from './tfjs/tensorboard/system-metrics.js';
export { broadcastVariables, GradientBridge, type BridgeStats, type BridgeVariable } from './tfjs/gradient-bridge.js';
export { resolveLoss, resolveMetric, type LossFn, type LossName, type LossSpec, type Metric, type MetricSpec } from './tfjs/losses.js';
export { isBatchSource, type Batch, type BatchContext, type BatchSource, type TrainData } from './tfjs/data.js';
export { agreeStepsPerEpoch, datasetSource, type DatasetSourceOptions } from './tfjs/dataset-source.js';
export { loadCheckpoint, saveCheckpoint, type CheckpointState, type SavedArray } from './tfjs/checkpoint.js';
export { fmtLogs, ProgressBar, type LogSink } from './tfjs/progress.js';
// ONNX Runtime
export { averageGradients, OnnxModel, type OnnxInput } from './onnx/session.js';
export { OnnxTrainer, type OnnxTrainerOptions, type OnnxTrainData, type OnnxFitOptions, type OnnxEpochRecord } from './onnx/onnx-trainer.js';
export type { OptimizerSpec } from './onnx/optimizer.js';
export type { LossKind } from './onnx/losses.js';
export { SUPPORTED_OPS as ONNX_TRAINABLE_OPS } from './onnx/training-graph.js';
