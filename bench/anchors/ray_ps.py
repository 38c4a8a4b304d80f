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

Across hosts (`npm run bench -- cluster`, bench/src/cluster-ray.ts): `--address HOST:PORT` joins a running Ray
cluster instead of starting one, `--server-resource NAME` places every ParameterServer on the node holding that
custom resource and `--worker-resource-prefix P` DataWorker r on the node holding `P<r>`; `--round-timeout S`
bounds each round's `ray.get` (a timeout, or a lost node or actor, prints {"error": ...} and exits 3), and `--expect-nodes N` first waits as
long for N live nodes. `--small-iters 0` skips the small key.

usage: ray_ps.py --sizes 1048576,16777216 --rounds 20,8 --workers 2 --servers 2 [--small-iters 300] [--small-warmup 20]
                 [--address H:P --server-resource R --worker-resource-prefix P --round-timeout S]
"""
import argparse
import json
import re
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


ROUND_TIMEOUT = None


def run_rounds(servers, workers, weights, rounds):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        grads = [w.compute_gradients.options(num_returns=len(servers)).remote(*weights) for w in workers]
        if len(servers) == 1:
            grads = [[g] for g in grads]
        weights = [ps.apply_gradients.remote(*[g[i] for g in grads]) for i, ps in enumerate(servers)]
        ray.get(weights, timeout=ROUND_TIMEOUT)
        times.append(time.perf_counter() - t0)
    return weights, times


def cpu_of(actors):
    return sum(ray.get([a.cpu.remote() for a in actors], timeout=ROUND_TIMEOUT))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1048576,16777216,67108864")
    ap.add_argument("--rounds", default="30,10,5")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--small-iters", type=int, default=300)
    ap.add_argument("--small-warmup", type=int, default=20)
    ap.add_argument("--address", default=None)
    ap.add_argument("--server-resource", default=None)
    ap.add_argument("--worker-resource-prefix", default=None)
    ap.add_argument("--round-timeout", type=float, default=None)
    ap.add_argument("--expect-nodes", type=int, default=0)
    a = ap.parse_args()
    global ROUND_TIMEOUT
    ROUND_TIMEOUT = a.round_timeout
    try:
        return bench(a)
    except ray.exceptions.GetTimeoutError as e:
        print(json.dumps({"error": f"a Ray round did not complete within {a.round_timeout} s: {e}"}), flush=True)
        return 3
    except ray.exceptions.RayError as e:
        # A lost node or actor: its own lines (the cause last), without the Python stack.
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        lines = [x.strip() for x in text.splitlines() if x.strip() and not x.startswith(" ")]
        print(json.dumps({"error": f"Ray failed during the rounds ({type(e).__name__}): {' | '.join(lines[-3:])[:800]}"}), flush=True)
        return 3


def place(cls, resource):
    # 0 CPUs: placement is by the custom resource alone, so a node's CPU count cannot starve an actor.
    return cls.options(num_cpus=0, resources={resource: 0.01}) if resource else cls


def bench(a):
    sizes = [int(x) for x in a.sizes.split(",")]
    rounds = [int(x) for x in a.rounds.split(",")]
    if a.address:
        ray.init(address=a.address, logging_level="ERROR", log_to_driver=False)
        deadline = time.monotonic() + (a.round_timeout or 60)
        while sum(1 for n in ray.nodes() if n["Alive"]) < a.expect_nodes:
            if time.monotonic() > deadline:
                alive = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
                print(json.dumps({"error": f"{len(alive)} Ray nodes alive ({', '.join(alive)}), expected {a.expect_nodes}"}), flush=True)
                return 3
            time.sleep(0.2)
    else:
        ray.init(num_cpus=a.workers + a.servers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    wres = (lambda r: f"{a.worker_resource_prefix}{r}") if a.worker_resource_prefix else (lambda r: None)
    workers = [place(DataWorker, wres(r)).remote(r) for r in range(a.workers)]
    gsum = sum(r + 1 for r in range(a.workers))
    for size, nr in zip(sizes, rounds):
        n = size // 4
        ss = shard_sizes(n, a.servers)
        servers = [place(ParameterServer, a.server_resource).remote(k) for k in ss]
        ray.get([w.prepare.remote(ss) for w in workers], timeout=ROUND_TIMEOUT)
        weights = [ps.apply_gradients.remote(np.zeros(k, dtype=np.float32)) for ps, k in zip(servers, ss)]
        weights, _ = run_rounds(servers, workers, weights, a.warmup)
        ray.get(weights)
        w0, s0 = cpu_of(workers), cpu_of(servers)
        weights, times = run_rounds(servers, workers, weights, nr)
        w1, s1 = cpu_of(workers), cpu_of(servers)
        want = np.float32(-LR * gsum * (a.warmup + nr))
        verified = all(bool(np.all(w == want)) for w in ray.get(weights, timeout=ROUND_TIMEOUT))
        times.sort()
        avg = sum(times) / len(times)
        print(json.dumps({"impl": "ray", "kind": "dense", "bytes": size, "rounds": nr, "p50_us": times[len(times) // 2] * 1e6,
                          "avg_us": avg * 1e6, "rounds_per_s": 1.0 / avg, "verified": verified,
                          "worker_cpu_ms_per_round": (w1 - w0) * 1e3 / len(workers) / nr, "server_cpu_ms_per_round": (s1 - s0) * 1e3 / nr}), flush=True)
        for ps in servers:
            ray.kill(ps)
    if a.small_iters <= 0:
        ray.shutdown()
        return 0
    # small key: one float32 per server shard... a single 1-element key on one server, both workers pushing
    ps = place(ParameterServer, a.server_resource).remote(1)
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
