import type * as tfjs from '@tensorflow/tfjs';

/**
 * The elastic tests' model (elastic-worker.ts, spark-elastic-worker.ts): a 4-8-1 tanh regression MLP with seeded
 * initializers, so every process and the one-process reference start from the same weights.
 */
export function elasticModel(tf: typeof tfjs): tfjs.LayersModel {
  return tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [4], units: 8, activation: 'tanh', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
      tf.layers.dense({ units: 1, kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
    ],
  });
}
