#!/usr/bin/env python3
"""Anchor for `npm run bench -- allreduce`: torch.distributed's gloo allreduce on the same sizes and n.

    /usr/bin/python3 bench/anchors/gloo_allreduce.py --n 2 --sizes 8,1024,... [--warmup 5] [--min-iters 20]
        [--min-time-ms 300] [--max-iters 1000]

Spawns n processes (torch.multiprocessing), one gloo process group over TCP loopback. Same method as the shoal
worker (bench/src/allreduce-worker.ts): float32 SUM; the first iteration is verified on unique small integers
per rank and element; then warm-up and timed iterations, each preceded by a 1-element MAX allreduce that acts as
the barrier and carries rank 0's go/stop decision; per iteration the slowest rank's time (a MAX allreduce of the
times at the end). Rank 0 prints one JSON line per size: {"row": {bytes, iters, p50_us, avg_us, p99_us,
algbw_gbps, busbw_gbps, verified}}, then {"done": true}.
Needs torch with gloo (Debian's python3-torch for /usr/bin/python3, or pip's torch).

One rank per invocation (the namespace-cluster suite, one process per host): `--rank R --init tcp://ADDR:PORT`
runs rank R only, joining the group whose rank 0 listens on ADDR:PORT (set GLOO_SOCKET_IFNAME to the host's
interface when its hostname does not resolve).
"""
import argparse
import json
import math
import os
import socket
import sys
import time


def pct(sorted_us, p):
    i = min(len(sorted_us) - 1, max(0, math.ceil(p / 100 * len(sorted_us)) - 1))
    return sorted_us[i]


def worker(rank, args, init):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=init, rank=rank, world_size=args.n)
    n = args.n
    ctl = torch.zeros(1, dtype=torch.float64)
    # global warm-up before the first size, same as the shoal worker
    warm, warm_big = torch.zeros(2), torch.zeros(16384)
    for i in range(3000):
        dist.all_reduce(warm if i % 10 else warm_big)
    for nbytes in args.sizes:
        count = nbytes // 4
        idx = torch.arange(count, dtype=torch.int64) % 4096
        data = ((rank + 1) * idx).to(torch.float32)
        dist.all_reduce(data)
        want = (n * (n + 1) // 2 * idx).to(torch.float32)
        if not torch.equal(data, want):
            bad = int((data != want).nonzero()[0])
            print(json.dumps({'error': f'verification failed at {nbytes} B: [{bad}] = {float(data[bad])}'}), flush=True)
            sys.exit(1)
        times = []
        t0 = time.perf_counter()
        it = 0
        while True:
            data.fill_(1)
            go = it < args.warmup + args.min_iters or ((time.perf_counter() - t0) * 1000 < args.min_time_ms and it < args.max_iters)
            ctl[0] = (1.0 if go else 0.0) if rank == 0 else 0.0
            dist.all_reduce(ctl, op=dist.ReduceOp.MAX)
            if ctl[0] == 0:
                break
            s = time.perf_counter()
            dist.all_reduce(data)
            e = time.perf_counter() - s
            if it >= args.warmup:
                times.append(e * 1e6)
            it += 1
        t = torch.tensor(times, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if rank == 0:
            us = sorted(t.tolist())
            avg = sum(us) / len(us)
            algbw = count * 4 / (avg / 1e6) / 1e9
            print(json.dumps({'row': {
                'bytes': count * 4, 'iters': len(us), 'p50_us': round(pct(us, 50), 2), 'avg_us': round(avg, 2),
                'p99_us': round(pct(us, 99), 2), 'algbw_gbps': round(algbw, 4),
                'busbw_gbps': round(algbw * 2 * (n - 1) / n, 4), 'verified': True}}), flush=True)
    if rank == 0:
        print(json.dumps({'done': True, 'torch': __import__('torch').__version__}), flush=True)
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--n', type=int, required=True)
    p.add_argument('--sizes', type=lambda s: [int(x) for x in s.split(',')], required=True)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--min-iters', type=int, default=20)
    p.add_argument('--min-time-ms', type=float, default=300)
    p.add_argument('--max-iters', type=int, default=1000)
    p.add_argument('--rank', type=int, help='run this rank only (with --init)')
    p.add_argument('--init', help='tcp://ADDR:PORT of rank 0 (with --rank)')
    args = p.parse_args()
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    if args.rank is not None:
        if not args.init:
            p.error('--rank needs --init tcp://ADDR:PORT')
        worker(args.rank, args, args.init)
        return
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(args, f'tcp://127.0.0.1:{port}'), nprocs=args.n, join=True)


if __name__ == '__main__':
    main()
