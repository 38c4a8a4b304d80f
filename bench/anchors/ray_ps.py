#!/usr/bin/env python3
"""Anchor for `npm run bench -- ps`: Ray's parameter-server pattern (docs.ray.io, "Parameter Server" example),
synchronous version, on the same model sizes and worker/server counts as shoal's ps bench.

- `num_servers` ParameterServer actors (`@ray.remote`), each owning one contiguous shard of a float32 model;
  `apply_gradients(*grads)` sums the workers' gradient shards, applies SGD (`w -= lr * sum`) and returns the new
  weights shard (as in the docs, where the PS sums gradients and steps its optimizer).
- `num_workers` DataWorker actors; `compute_gradients(*weight_shards)` returns one gradient shard per server
  (`num_returns=num_servers`): ones * (rank + 1), i.e. no model compute, so the figure is the framework cost.
- One round (the docs' training loop): every worker computes gradients from the current weights, every server
  applies the gradients of all workers; the driver waits for the new weights (`ray.get`).

Verified: after warm-up and timed rounds, every weight equals -lr * rounds * sum(rank + 1) exactly (lr = 2^-10).
Prints one JSON line per size: {"impl": "ray", "bytes", "rounds", "p50_us", "avg_us", "rounds_per_s",
"verified", "worker_cpu_ms_per_round", "server_cpu_ms_per_round"} (CPU of the DataWorker / ParameterServer actor
processes; the raylet and its object store are not counted), and one for the small-key latency ("kind": "small").
Ray's start-up is not timed.

usage: ray_ps.py --sizes 1048576,16777216 --rounds 20,8 --workers 2 --servers 2 [--small-iters 300] [--small-warmup 20]
"""
import argparse
import json
import sys
import time

import numpy as np
import ray

LR = 1.0 / 1024


@ray.remote
class ParameterServer:
    def __init__(self, n):
        self.w = np.zeros(n, dtype=np.float32)

    def apply_gradients(self, *grads):
        s = np.sum(grads, axis=0, dtype=np.float32) if len(grads) > 1 else grads[0]
        self.w -= np.float32(LR) * s
        return self.w

    def cpu(self):
        return time.process_time()


@ray.remote
class DataWorker:
    def __init__(self, rank):
        self.rank = rank
        self.grads = []

    def prepare(self, shard_sizes):
        self.grads = [np.full(n, self.rank + 1, dtype=np.float32) for n in shard_sizes]
        return True

    def cpu(self):
        return time.process_time()

    def compute_gradients(self, *weights):
        # A real worker would run the model on `weights`; touching them keeps the data dependency honest.
        assert len(weights) == len(self.grads)
        return tuple(self.grads) if len(self.grads) > 1 else self.grads[0]


def shard_sizes(n, s):
    return [(i + 1) * n // s - i * n // s for i in range(s)]


def run_rounds(servers, workers, weights, rounds):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        grads = [w.compute_gradients.options(num_returns=len(servers)).remote(*weights) for w in workers]
        if len(servers) == 1:
            grads = [[g] for g in grads]
        weights = [ps.apply_gradients.remote(*[g[i] for g in grads]) for i, ps in enumerate(servers)]
        ray.get(weights)
        times.append(time.perf_counter() - t0)
    return weights, times


def cpu_of(actors):
    return sum(ray.get([a.cpu.remote() for a in actors]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1048576,16777216,67108864")
    ap.add_argument("--rounds", default="30,10,5")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--small-iters", type=int, default=300)
    ap.add_argument("--small-warmup", type=int, default=20)
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    rounds = [int(x) for x in a.rounds.split(",")]
    ray.init(num_cpus=a.workers + a.servers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    workers = [DataWorker.remote(r) for r in range(a.workers)]
    gsum = sum(r + 1 for r in range(a.workers))
    for size, nr in zip(sizes, rounds):
        n = size // 4
        ss = shard_sizes(n, a.servers)
        servers = [ParameterServer.remote(k) for k in ss]
        ray.get([w.prepare.remote(ss) for w in workers])
        weights = [ps.apply_gradients.remote(np.zeros(k, dtype=np.float32)) for ps, k in zip(servers, ss)]
        weights, _ = run_rounds(servers, workers, weights, a.warmup)
        ray.get(weights)
        w0, s0 = cpu_of(workers), cpu_of(servers)
        weights, times = run_rounds(servers, workers, weights, nr)
        w1, s1 = cpu_of(workers), cpu_of(servers)
        want = np.float32(-LR * gsum * (a.warmup + nr))
        verified = all(bool(np.all(w == want)) for w in ray.get(weights))
        times.sort()
        avg = sum(times) / len(times)
        print(json.dumps({"impl": "ray", "kind": "dense", "bytes": size, "rounds": nr, "p50_us": times[len(times) // 2] * 1e6,
                          "avg_us": avg * 1e6, "rounds_per_s": 1.0 / avg, "verified": verified,
                          "worker_cpu_ms_per_round": (w1 - w0) * 1e3 / len(workers) / nr, "server_cpu_ms_per_round": (s1 - s0) * 1e3 / nr}), flush=True)
        for ps in servers:
            ray.kill(ps)
    # small key: one float32 per server shard... a single 1-element key on one server, both workers pushing
    ps = ParameterServer.remote(1)
    ray.get([w.prepare.remote([1]) for w in workers])
    weights = [ps.apply_gradients.remote(np.zeros(1, dtype=np.float32))]
    weights, _ = run_rounds([ps], workers, weights, a.small_warmup)
    w0, s0 = cpu_of(workers), cpu_of([ps])
    weights, times = run_rounds([ps], workers, weights, a.small_iters)
    w1, s1 = cpu_of(workers), cpu_of([ps])
    times.sort()
    print(json.dumps({"impl": "ray", "kind": "small", "bytes": 4, "rounds": a.small_iters, "p50_us": times[len(times) // 2] * 1e6,
                      "avg_us": sum(times) / len(times) * 1e6, "rounds_per_s": len(times) / sum(times), "verified": True,
                      "worker_cpu_ms_per_round": (w1 - w0) * 1e3 / len(workers) / a.small_iters, "server_cpu_ms_per_round": (s1 - s0) * 1e3 / a.small_iters}), flush=True)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
