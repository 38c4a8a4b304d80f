import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RingSync } from '@shoal/backends';
import { memoryGroups } from '@shoal/backends/testing';
import { OnnxModel, averageGradients } from './session.js';
import { denseReluOnnx } from './tiny-onnx.js';

const IN = 5;
const OUT = 3;
const w = Float32Array.from({ length: IN * OUT }, (_, i) => Math.sin(i) * 0.5);
const b = Float32Array.from({ length: OUT }, (_, i) => i * 0.1 - 0.1);

test('onnxruntime-node runs a model batch by batch and matches the reference math', async () => {
  const model = await OnnxModel.load(denseReluOnnx(w, b, IN, OUT));
  try {
    assert.equal(model.inputNames, ['x']);
    assert.equal(model.outputNames, ['y']);
    const rows = 37;
    const x = Float32Array.from({ length: rows * IN }, (_, i) => Math.cos(i * 0.3));
    const out = await model.predict({ x: { data: x, dims: [rows, IN] } }, 8);
    assert.equal(out.y!.dims, [rows, OUT]);
    for (let r = 0; r < rows; r++) {
      for (let o = 0; o < OUT; o++) {
        let z = b[o]!;
        for (let i = 0; i < IN; i++) z += x[r * IN + i]! * w[i * OUT + o]!;
        assert.ok(Math.abs((out.y!.data as Float32Array)[r * OUT + o]! - Math.max(0, z)) < 1e-5, `row ${r} col ${o}`);
      }
    }
    try {
      await model.predict({ z: { data: x, dims: [rows, IN] } });
      assert.unreachable();
    } catch (e) {
      assert.match((e as Error).message, /missing model input "x"/);
    }
  } finally {
    await model.close();
  }
});

test('a corrupt model is a clear ERR_DATA', async () => {
  try {
    await OnnxModel.load(Uint8Array.from([1, 2, 3, 4]));
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, /onnx model <4 bytes>: onnxruntime could not load it/);
  }
});

test('averageGradients averages user gradients over ranks (ring)', async () => {
  const groups = await memoryGroups(3, { timeoutMs: 10_000 });
  const syncs = groups.map((g) => new RingSync(g));
  try {
    const grads = syncs.map((_, r) => ({ w: Float32Array.from([r, 2 * r, 3]), b: Float32Array.from([r * r]) }));
    await Promise.all(syncs.map((s, r) => averageGradients(s, grads[r]!)));
    for (const g of grads) {
      assert.equal(Array.from(g.w), [1, 2, 3]);
      assert.ok(Math.abs(g.b[0]! - 5 / 3) < 1e-6);
    }
  } finally {
    await Promise.all(syncs.map((s) => s.close()));
  }
});

test.run();
