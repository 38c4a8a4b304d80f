#!/usr/bin/env python3
"""Models and PyTorch anchor for `npm run bench -- onnx`.

    /usr/bin/python3 bench/anchors/onnx_torch.py --export DIR [--threads 1] [--steps 30] [--warmup 5]

Exports the three bench models with torch.onnx.export (opset 13, training mode) into DIR, so shoal trains exactly
these graphs, then times a plain PyTorch CPU training loop on each with `--threads` intra-op threads and prints
one JSON line: {"torch": version, "threads": n, "models": {name: {"batch", "step_ms" (median), "cpu_ms_per_step"
(process CPU time over the timed steps / steps), "samples_per_sec"}}}.

- mlp: 784-512-256-10, ReLU, softmax cross-entropy, batch 128.
- cnn: [1, 28, 28] -> Conv 8 3x3 pad 1, ReLU, MaxPool 2 -> Conv 16 3x3 pad 1, ReLU, MaxPool 2 -> Linear 784-10,
  softmax cross-entropy, batch 64.
- rec: user and item embeddings (4000 x 32 each), concatenated, Linear 64 + ReLU, Linear 1, BCE with logits,
  batch 1024 (dense embedding gradients, like shoal's one-worker path).
SGD lr 0.01; synthetic data as in bench/src/onnx.ts.
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 512), nn.Linear(512, 256), nn.Linear(256, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1), nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.c1(x)), 2)
        h = F.max_pool2d(F.relu(self.c2(h)), 2)
        return self.fc(torch.flatten(h, 1))


class Rec(nn.Module):
    def __init__(self):
        super().__init__()
        self.users, self.items = nn.Embedding(4000, 32), nn.Embedding(4000, 32)
        self.h, self.o = nn.Linear(64, 64), nn.Linear(64, 1)

    def forward(self, user, item):
        return self.o(F.relu(self.h(torch.cat([self.users(user), self.items(item)], dim=1))))


def data(name, n):
    k = torch.arange(n, dtype=torch.int64)
    if name == "rec":
        u, i = (k * 7919) % 4000, (k * 104729 + 13) % 4000
        return (u, i), ((u ^ i) & 1).float().unsqueeze(1)
    g = torch.Generator().manual_seed(11)
    shape = (n, 784) if name == "mlp" else (n, 1, 28, 28)
    return (torch.rand(shape, generator=g),), k % 10


SPECS = {"mlp": (Mlp, 128, ["x"], F.cross_entropy), "cnn": (Cnn, 64, ["x"], F.cross_entropy),
         "rec": (Rec, 1024, ["user", "item"], F.binary_cross_entropy_with_logits)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.makedirs(a.export, exist_ok=True)
    out = {"torch": torch.__version__, "threads": a.threads, "models": {}}
    for name, (cls, batch, inputs, loss_fn) in SPECS.items():
        torch.manual_seed(0)
        model = cls()
        xs, y = data(name, batch * (a.warmup + a.steps))
        model.train()
        torch.onnx.export(model, tuple(x[:batch] for x in xs), os.path.join(a.export, f"{name}.onnx"), input_names=inputs,
                          output_names=["out"], opset_version=13, do_constant_folding=False,
                          training=torch.onnx.TrainingMode.TRAINING, dynamic_axes={n: {0: "batch"} for n in inputs + ["out"]})
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        times = []
        cpu0 = 0.0
        for s in range(a.warmup + a.steps):
            if s == a.warmup:
                cpu0 = time.process_time()
            t0 = time.perf_counter()
            lo, hi = s * batch, (s + 1) * batch
            opt.zero_grad()
            loss = loss_fn(model(*[x[lo:hi] for x in xs]), y[lo:hi])
            loss.backward()
            opt.step()
            loss.item()
            if s >= a.warmup:
                times.append((time.perf_counter() - t0) * 1000)
        cpu_ms = (time.process_time() - cpu0) * 1000 / a.steps
        ms = statistics.median(times)
        out["models"][name] = {"batch": batch, "step_ms": ms, "cpu_ms_per_step": cpu_ms, "samples_per_sec": batch * 1000 / ms}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
