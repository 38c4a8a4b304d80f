/** @shoal/wrappers/testing: fixtures for tests (a tiny Dense+ReLU ONNX model built in memory). */
export { denseReluOnnx } from '../onnx/tiny-onnx.js';
export { onRingRanks, outputCollector, rejects, toyData, toyModel } from './toy.js';
