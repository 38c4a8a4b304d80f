#!/usr/bin/env python3
"""Anchor for `npm run bench -- train`: the same two models trained by a plain PyTorch CPU loop, one thread.

    /usr/bin/python3 bench/anchors/train_torch.py [--steps-rec 20] [--steps-mlp 15] [--warmup 3]

Models as in bench/src/train-models.ts: `rec` = two 32-dim embeddings of 4000 rows (users, items), concatenated,
Linear 64 + ReLU, Linear 1 + sigmoid, binary cross-entropy, batch 1024; `mlp` = 784-512-256-10 with ReLU and
softmax cross-entropy, batch 256. SGD lr 0.01, synthetic data built the same way (user k*7919 % 4000, item
(k*104729+13) % 4000, label (user xor item) & 1; MLP inputs uniform [0,1), label k % 10). Dense embedding
gradients (sparse=False), like tfjs. torch.set_num_threads(1): the tfjs wasm engine is single-threaded too.
Prints one JSON line: {"torch": version, "rec": samples/s, "mlp": samples/s}.
Needs torch (Debian's python3-torch for /usr/bin/python3, or pip's torch).
"""
import argparse
import json
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--steps-rec', type=int, default=20)
    ap.add_argument('--steps-mlp', type=int, default=15)
    ap.add_argument('--warmup', type=int, default=3)
    a = ap.parse_args()
    import torch
    import torch.nn as nn

    torch.set_num_threads(1)
    torch.manual_seed(0)

    class Rec(nn.Module):
        def __init__(self):
            super().__init__()
            self.u = nn.Embedding(4000, 32)
            self.i = nn.Embedding(4000, 32)
            self.h = nn.Linear(64, 64)
            self.o = nn.Linear(64, 1)

        def forward(self, u, i):
            z = torch.cat([self.u(u), self.i(i)], dim=1)
            return torch.sigmoid(self.o(torch.relu(self.h(z))))

    def rec_data(n):
        k = torch.arange(n, dtype=torch.int64)
        u = (k * 7919) % 4000
        i = (k * 104729 + 13) % 4000
        y = ((u ^ i) & 1).float().unsqueeze(1)
        return (u, i), y

    mlp = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))

    def run(model, data, loss_fn, batch, steps):
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        xs, y = data
        t0 = 0.0
        for s in range(a.warmup + steps):
            if s == a.warmup:
                t0 = time.perf_counter()
            lo, hi = s * batch, (s + 1) * batch
            opt.zero_grad()
            out = model(*[x[lo:hi] for x in xs])
            loss = loss_fn(out, y[lo:hi])
            loss.backward()
            opt.step()
            loss.item()
        return steps * batch / (time.perf_counter() - t0)

    n_rec = 1024 * (a.warmup + a.steps_rec)
    rec = run(Rec(), rec_data(n_rec), nn.functional.binary_cross_entropy, 1024, a.steps_rec)
    n_mlp = 256 * (a.warmup + a.steps_mlp)
    mlp_data = ((torch.rand(n_mlp, 784),), torch.arange(n_mlp) % 10)
    mlp_sps = run(mlp, mlp_data, nn.functional.cross_entropy, 256, a.steps_mlp)
    print(json.dumps({'torch': torch.__version__, 'rec': rec, 'mlp': mlp_sps}), flush=True)


if __name__ == '__main__':
    main()
