/**
 * @shoal/wrappers: adapts TensorFlow.js and ONNX Runtime to the gradient engines of @shoal/backends. A worker
 * joins its job with `initWorker` (@shoal/run) and trains with `Trainer`. Test kits: @shoal/wrappers/testing.
 */
// TensorFlow.js
export { activeTfjsBackend, setupTfjs, wasmBinaryDir, type Tf, type TfjsBackendName, type TfjsRuntime, type TfjsRuntimeOptions } from './tfjs/runtime.js';
export { registerShoalKernels, type ShoalKernels } from './tfjs/kernels.js';
export { Trainer, type Callbacks, type EpochRecord, type FitOptions, type History, type Logs, type TrainerOptions } from './tfjs/trainer.js';
export { broadcastVariables, GradientBridge, type BridgeStats, type BridgeVariable } from './tfjs/gradient-bridge.js';
export { resolveLoss, resolveMetric, type LossFn, type LossName, type LossSpec, type Metric, type MetricSpec } from './tfjs/losses.js';
export { isBatchSource, type Batch, type BatchContext, type BatchSource, type TrainData } from './tfjs/data.js';
export { agreeStepsPerEpoch, datasetSource, type DatasetSourceOptions } from './tfjs/dataset-source.js';
export { loadCheckpoint, saveCheckpoint, type CheckpointState, type SavedArray } from './tfjs/checkpoint.js';
export { fmtLogs, ProgressBar, type LogSink } from './tfjs/progress.js';
// ONNX Runtime
export { averageGradients, OnnxModel, type OnnxInput } from './onnx/session.js';
