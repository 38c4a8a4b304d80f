#!/usr/bin/env python3
"""Anchor for the parameter-server rows of `npm run bench -- cluster` where Ray cannot run: synchronous parameter
averaging with torch.distributed's gloo allreduce, one rank per invocation (one process per namespace host).

    /usr/bin/python3 bench/anchors/gloo_average.py --rank R --n N --init tcp://ADDR:PORT --bytes 1048576
        [--layers 8] [--warmup 5] [--rounds 50]

A round is what a ps round does for a worker: its gradients (8 layers of `bytes / 8`, ones * (rank + 1)) are
summed over all ranks (one gloo allreduce per layer) and every rank applies SGD (w -= lr * sum, lr = 2^-10) to its
own copy of the weights. No server: every rank holds the whole model. Verified after warm-up and timed rounds:
every weight equals -lr * rounds * sum(rank + 1) exactly. Rank 0 prints {"impl": "torch-gloo-average", "bytes",
"rounds", "p50_us", "avg_us", "rounds_per_s", "verified"}; a round's time is the slowest rank's.
"""
import argparse
import json
import math
import os

LR = 1.0 / 1024


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--rank', type=int, required=True)
    p.add_argument('--n', type=int, required=True)
    p.add_argument('--init', required=True)
    p.add_argument('--bytes', type=int, required=True)
    p.add_argument('--layers', type=int, default=8)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--rounds', type=int, default=50)
    a = p.parse_args()
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    import time
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=a.init, rank=a.rank, world_size=a.n)
    per = a.bytes // 4 // a.layers
    weights = [torch.zeros(per) for _ in range(a.layers)]
    grads = [torch.empty(per) for _ in range(a.layers)]
    times = []
    for r in range(a.warmup + a.rounds):
        t0 = time.perf_counter()
        for g, w in zip(grads, weights):
            g.fill_(a.rank + 1)
            dist.all_reduce(g)
            w.add_(g, alpha=-LR)
        if r >= a.warmup:
            times.append((time.perf_counter() - t0) * 1e6)
    # exact check: every element equals the float32 sum of (warmup + rounds) steps of -lr * gsum
    step = torch.tensor(-LR * (a.n * (a.n + 1) // 2), dtype=torch.float32)
    acc = torch.zeros(1)
    for _ in range(a.warmup + a.rounds):
        acc.add_(step)
    verified = all(bool((w == acc[0]).all()) for w in weights)
    t = torch.tensor(times, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if a.rank == 0:
        us = sorted(t.tolist())
        avg = sum(us) / len(us)
        p50 = us[min(len(us) - 1, max(0, math.ceil(0.5 * len(us)) - 1))]
        print(json.dumps({'impl': 'torch-gloo-average', 'bytes': per * 4 * a.layers, 'rounds': len(us), 'p50_us': round(p50, 2),
                          'avg_us': round(avg, 2), 'rounds_per_s': round(1e6 / avg, 3), 'verified': verified}), flush=True)
    dist.destroy_process_group()


if __name__ == '__main__':
    main()
