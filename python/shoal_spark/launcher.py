"""Driver side of the Spark launcher: `run(df, script, ...)` runs one shoal job as one Spark barrier stage."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from . import task as _task
from .task import ShoalWorkerError

BACKENDS = ("ring", "ps", "hybrid")
TRANSPORTS = ("net", "nng", "shm")

#: The Spark DDL of the rows each barrier task returns (mirrors task.OUTPUT_SCHEMA).
OUTPUT_DDL = (
    "rank int, host string, executor string, exit_code int, result string, rows long, bytes long, batches long, "
    "feed_s double, wall_s double, timeline string"
)


@dataclass
class ShoalResult:
    """What `run` returns.

    result: the JSON object rank 0's script printed on its `SHOAL_RESULT {json}` line (metrics, model path), or None.
    ranks: one dict per rank (ascending): rank, host, executor (the task's executor address), exit_code, result (parsed, or None), rows, bytes, batches
           (what was streamed into that worker), feed_s (seconds spent streaming), wall_s (task time).
    wall_s: driver-side time of the whole Spark job.
    stages: with elastic=True, one dict per barrier stage run: stage (0, 1, ...), workers, error (why it failed,
            None for the stage that finished), wall_s (driver-side time of the stage); [] otherwise.
    timeline: with `timeline=PATH`, what the merge wrote to PATH: {"spans", "pids", "missing", "clockOffsets"}
              (clockOffsets: per rank measured against the store's host, {"offsetUs", "rttUs", "reference"}, plus
              "samples" and "driftPpm" when the rank measured again as it closed); else None.
    """

    result: Optional[Dict[str, Any]]
    ranks: List[Dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    stages: List[Dict[str, Any]] = field(default_factory=list)
    timeline: Optional[Dict[str, Any]] = None


def _repo_root() -> str:
    return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _node_resolve(node: str, request: str, cwd: str) -> Optional[str]:
    """Where Node, started in `cwd`, resolves `request` (a package's file), or None."""
    code = f"try {{ console.log(require.resolve({json.dumps(request)}, {{ paths: [process.cwd()] }})) }} catch {{ process.exit(3) }}"
    try:
        p = subprocess.run([node, "-e", code], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = p.stdout.strip()
    return out if p.returncode == 0 and out else None


def shoal_home(cwd: Optional[str] = None, node: str = "node") -> str:
    """The Node side's root, whose `run/dist/launcher/spark-store.js` serves a job's store. In order: $SHOAL_HOME
    (a checkout), the `@shoal/run` npm package installed where `cwd` (default: the working directory) resolves it
    (`npm install @shoal/run`: its folder is returned, the entry is then `dist/launcher/spark-store.js`), the
    checkout this package sits in."""
    if os.environ.get("SHOAL_HOME"):
        return os.environ["SHOAL_HOME"]
    pkg = _node_resolve(node, "@shoal/run/package.json", os.path.abspath(cwd or os.getcwd()))
    if pkg is not None:
        return os.path.dirname(pkg)
    root = _repo_root()
    if os.path.isfile(os.path.join(root, "run", "package.json")):
        return root
    raise ValueError("cannot find shoal's Node side: npm install @shoal/run in the working directory's project, "
                     "or set SHOAL_HOME to a shoal checkout")


def default_store_script(cwd: Optional[str] = None, node: str = "node") -> str:
    """The Node entry that serves a job's rendezvous store (see `shoal_home`)."""
    home = shoal_home(cwd, node)
    installed = os.path.join(home, "dist", "launcher", "spark-store.js")
    return installed if os.path.isfile(os.path.join(home, "package.json")) and os.path.isfile(installed) else os.path.join(home, "run", "dist", "launcher", "spark-store.js")


def _make_job_tls(node: str, store_script: str, job_id: str, cwd: str) -> str:
    """A new certificate and key for the job (`SHOAL_JOB_TLS`'s one line), made by the `job-tls.js` entry beside
    the store script. Raises ValueError when it cannot be made."""
    script = os.path.join(os.path.dirname(store_script), "job-tls.js")
    try:
        p = subprocess.run([node, script, job_id], cwd=cwd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ValueError(f"tls=True: cannot run {script}: {e}") from e
    line = p.stdout.strip()
    if p.returncode != 0 or "." not in line:
        raise ValueError(f"tls=True: {script} failed (exit {p.returncode}): {p.stderr.strip()[-500:]}")
    return line


def _tsx_loader(node: str, cwd: str, store_script: str) -> str:
    """`node --import` value for a TypeScript script: tsx as the script's project resolves it, else the tsx
    @shoal/run depends on (resolved from the store script's folder)."""
    from urllib.parse import quote

    for base in (cwd, os.path.dirname(store_script)):
        if os.path.isdir(base):
            pkg = _node_resolve(node, "tsx/package.json", base)
            if pkg is not None:
                return "file://" + quote(os.path.join(os.path.dirname(pkg), "dist", "loader.mjs"))
    raise ValueError(f"the script is TypeScript but tsx is not installed where {cwd!r} resolves it (npm install tsx), or compile it to .js")


def _merge_timeline(node: str, store_script: str, path: str, rows: Sequence[Any], cwd: str) -> Dict[str, Any]:
    """Write the parts the tasks returned beside `path` and merge them into it with the `timeline-merge.js` entry
    beside the store script (each rank shifted by its clock offset from the store's host). Raises ValueError when
    the merge fails."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    for r in rows:
        for who, text in json.loads(r["timeline"] or "{}").items():
            if not re.fullmatch(r"(rank|server)-\d+", who):
                raise ValueError(f"timeline: rank {r['rank']} returned a part named {who!r}")
            with open(f"{path}.{who}.jsonl", "w", encoding="utf-8") as f:
                f.write(text)
    script = os.path.join(os.path.dirname(store_script), "timeline-merge.js")
    try:
        p = subprocess.run([node, script, path], cwd=cwd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ValueError(f"timeline: cannot run {script}: {e}") from e
    if p.returncode != 0:
        raise ValueError(f"timeline: {script} failed (exit {p.returncode}): {p.stderr.strip()[-500:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


_ERR_RE = re.compile(r"ShoalWorkerError: rank (\d+): (.*)")


def _as_worker_error(exc: BaseException) -> Optional[ShoalWorkerError]:
    """Find the first rank's ShoalWorkerError inside a Spark job failure (its text travels in the Java error)."""
    text = str(exc)
    m = _ERR_RE.search(text)
    if m is None:
        return None
    rank, message = int(m.group(1)), m.group(2).strip()
    tail: List[str] = []
    for line in text[m.end():].splitlines()[1:]:
        if line.startswith("last log lines of rank"):
            continue
        if not line.startswith("  | "):
            break
        tail.append(line[4:])
    return ShoalWorkerError(rank, message, tail)


def run(
    df: Any,
    script: str,
    num_workers: Optional[int] = None,
    backend: str = "ring",
    args: Sequence[str] = (),
    timeout_s: float = 600.0,
    *,
    transport: str = "net",
    servers: int = 1,
    env: Optional[Mapping[str, str]] = None,
    node: str = "node",
    cwd: Optional[str] = None,
    job_id: Optional[str] = None,
    store_script: Optional[str] = None,
    net_timeout_s: float = 60.0,
    startup_timeout_s: float = 60.0,
    tail_lines: int = 40,
    require_result: bool = True,
    host: Optional[str] = None,
    ps_durable: Optional[str] = None,
    logdir: Optional[str] = None,
    tls: bool = False,
    elastic: bool = False,
    min_workers: Optional[int] = None,
    max_workers: Optional[int] = None,
    max_restarts: int = 3,
    elastic_dir: Optional[str] = None,
    timeline: Optional[str] = None,
) -> ShoalResult:
    """Train with `node <script> <args>` on every partition of `df`, as one shoal job of `num_workers` ranks.

    Preconditions: the cluster has at least `num_workers` free task slots at once (barrier mode gangs them);
    `script` (and `store_script`) exist at the same path on every executor (resolved against `cwd`, which defaults to
    the driver's working directory); `node` is on the executors' PATH.

    df is repartitioned to `num_workers` partitions if it has another count (default: its own count). Partition i
    becomes rank i: its rows reach the worker as an Arrow IPC stream on stdin (`SHOAL_INPUT=stdin`), in the order
    Spark produces them. The worker joins the job from the SHOAL_* environment (core/src/config.ts) through a TCP
    rendezvous store hosted in rank 0's task, and reports its result by printing one `SHOAL_RESULT {json}` line.

    `ps_durable` (ps and hybrid, as `shoal run --ps-durable DIR`): the servers checkpoint every update under
    `<ps_durable>/<job id>/` on rank 0's executor (removed when the job ends), a server that dies is restarted from
    it and the workers resend what it had not acknowledged, so the job ends with the weights of a run without the
    fault.

    `timeout_s` bounds each task from its first input batch to its worker's exit (the worker is killed then);
    `net_timeout_s` becomes SHOAL_TIMEOUT_MS, every network wait inside the job (rendezvous, collectives).

    `logdir` (as `shoal run --logdir`): TensorBoard runs in that folder, which every executor must reach at the same
    path (resolved against `cwd`): each worker gets SHOAL_LOGDIR (a Trainer given `worker.sync` writes `train/`,
    `val/`, `rank-<r>/`) and, with the ps and hybrid backends, each parameter server writes `server-<i>/`.
    `timeline` (as `shoal run --timeline`): every rank records a Chrome trace of its steps and sync ops (and, with
    the ps and hybrid backends, each parameter server its updates) into a part in a folder of its own task on the
    executor; the task returns its parts in its row and the driver merges them into `timeline` (resolved against
    `cwd`) with `node <store_script's folder>/timeline-merge.js`, each rank's spans shifted by its clock offset
    from the store's host (rank 0's executor), so ranks on executors whose clocks disagree line up. Open the file
    in ui.perfetto.dev or chrome://tracing. Parts of a failed job are not returned (the stage fails first).
    `tls=True` encrypts the job's TCP connections (the store, the net transport, the ps links) with TLS 1.3 under a
    certificate made on the driver for this job (`node <store_script's folder>/job-tls.js`, so the driver needs
    node) and pinned by every process; it reaches the executors with the job secret, in the task closure and then
    the processes' environment (`SHOAL_JOB_TLS`). Not with transport 'nng'.

    `elastic=True` (Horovod-on-Spark elastic's model; the worker's Trainer has `elastic: { commitEvery: K }`): a lost
    task or executor fails the barrier stage, and the driver starts a new one with the workers it can get now (as
    many task slots as the live executors hold, between `min_workers` and `max_workers`, both defaulting to
    `num_workers`), repartitioning `df` to that count, up to `max_restarts` times. Rank 0 hands every commit (weights,
    optimizer slots, position in the data, learning rate) to a store the driver serves for the job (a Node process
    on the driver, bound to spark.driver.host, that holds the last two commits, 256 MiB in all) or, with
    `elastic_dir`, to `<elastic_dir>/<job id>/` (a folder every executor reaches, for bigger states); the first
    rank 0 of the next stage starts from the last commit and broadcasts it, and the interrupted epoch goes on after
    the committed number of steps of the new partitions. Both are authenticated with the job secret (connections;
    a MAC on the folder's file), and the folder is removed when `run` returns.

    Returns a ShoalResult (rank 0's result plus per-rank feed figures). Raises ShoalWorkerError naming the failing
    rank, its error and the last lines of its log if any worker fails or the job exceeds `timeout_s`; ValueError on
    bad arguments.
    """
    from pyspark.sql.pandas.types import to_arrow_schema

    try:
        from pyspark import cloudpickle
    except ImportError:  # pragma: no cover
        import cloudpickle  # type: ignore[no-redef]

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {'|'.join(BACKENDS)}, got {backend!r}")
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {'|'.join(TRANSPORTS)}, got {transport!r}")
    if not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    if not isinstance(servers, int) or servers < 1:
        raise ValueError(f"servers must be an integer >= 1, got {servers!r}")
    if ps_durable is not None:
        if not isinstance(ps_durable, str) or ps_durable == "":
            raise ValueError(f"ps_durable must be a folder path, got {ps_durable!r}")
        if backend not in ("ps", "hybrid"):
            raise ValueError(f"ps_durable keeps parameter servers alive: it needs backend ps or hybrid, got {backend!r}")
    if any(not isinstance(a, str) for a in args):
        raise ValueError(f"args must be strings, got {list(args)!r}")
    if logdir is not None and (not isinstance(logdir, str) or logdir == "" or "\0" in logdir):
        raise ValueError(f"logdir must be a folder path, got {logdir!r}")
    if not isinstance(tls, bool):
        raise ValueError(f"tls must be True or False, got {tls!r}")
    if timeline is not None and (not isinstance(timeline, str) or timeline == "" or "\0" in timeline):
        raise ValueError(f"timeline must be a file path, got {timeline!r}")
    if tls and transport == "nng":
        raise ValueError("tls=True needs transport 'net' or 'shm': the nng transport has no TLS in shoal")
    if not isinstance(elastic, bool):
        raise ValueError(f"elastic must be True or False, got {elastic!r}")
    if not elastic and (min_workers is not None or max_workers is not None or elastic_dir is not None):
        raise ValueError("min_workers, max_workers and elastic_dir need elastic=True")
    if elastic and ps_durable is not None:
        raise ValueError("elastic=True restarts whole stages with fresh parameter servers: drop ps_durable")
    if not isinstance(max_restarts, int) or isinstance(max_restarts, bool) or max_restarts < 0:
        raise ValueError(f"max_restarts must be an integer >= 0, got {max_restarts!r}")
    if elastic_dir is not None and (not isinstance(elastic_dir, str) or elastic_dir == "" or "\0" in elastic_dir):
        raise ValueError(f"elastic_dir must be a folder path, got {elastic_dir!r}")

    spark = df.sparkSession
    sc = spark.sparkContext
    parts = df.rdd.getNumPartitions()
    n = parts if num_workers is None else num_workers
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"num_workers must be an integer >= 1, got {num_workers!r}")
    lo = n if min_workers is None else min_workers
    hi = n if max_workers is None else max_workers
    if elastic and not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= n <= hi):
        raise ValueError(f"elastic=True needs 1 <= min_workers ({min_workers!r}) <= num_workers ({n}) <= max_workers ({max_workers!r})")
    master = sc.master or ""
    if master.startswith("local") and n > sc.defaultParallelism:
        raise ValueError(
            f"num_workers={n} needs {n} task slots at once (barrier mode), but master {master!r} has "
            f"{sc.defaultParallelism}; use e.g. local[{n}]"
        )
    cwd = os.path.abspath(cwd or os.getcwd())
    script_path = os.path.join(cwd, script)
    if not os.path.isfile(script_path):
        raise ValueError(f"script {script_path!r} does not exist (resolved against cwd {cwd!r})")
    store = store_script if store_script is not None else default_store_script(cwd, node)
    node_args: List[str] = []
    if script_path.endswith((".ts", ".mts", ".cts")):
        node_args = ["--import", _tsx_loader(node, cwd, store)]
    if (n > 1 or backend != "ring" or elastic) and not os.path.isfile(store):
        raise ValueError(f"store_script {store!r} does not exist (build shoal first: npx tsc -b)")
    if parts != n:
        df = df.repartition(n)
    job_env = dict(env or {})
    job_id = job_id or f"spark-{uuid.uuid4().hex[:12]}"
    log_path = os.path.join(cwd, logdir) if logdir is not None else None
    if log_path is not None:
        job_env["SHOAL_LOGDIR"] = log_path
    timeline_path = os.path.join(cwd, timeline) if timeline is not None else None
    if timeline_path is not None and not os.path.isfile(os.path.join(os.path.dirname(store), "timeline-merge.js")):
        raise ValueError(f"timeline: {os.path.join(os.path.dirname(store), 'timeline-merge.js')} does not exist (build shoal first: npx tsc -b)")
    # With tls=True the job's TCP connections (store, net transport, ps links) are TLS 1.3 under a certificate
    # made here for this job and pinned by every process; it travels like the secret (closure, environment).
    job_tls = _make_job_tls(node, store, job_id, cwd) if tls and (n > 1 or backend != "ring" or elastic) else ""

    spec: Dict[str, Any] = {
        "script": script_path,
        "args": list(args),
        "node_args": node_args,
        "node": node,
        "cwd": cwd,
        "env": job_env,
        "logdir": log_path,
        "timeline": timeline_path is not None,
        "job_id": job_id,
        # The job secret (256 bits, made here on the driver): it reaches the executors inside the task closure,
        # as the rest of the spec does, and each task hands it to its store and worker processes in their
        # environment (SHOAL_JOB_SECRET), never on a command line. Every connection of the job proves it.
        "job_secret": secrets.token_hex(32),
        "job_tls": job_tls,
        "backend": backend,
        "transport": transport,
        "servers": servers,
        "timeout_s": float(timeout_s),
        "net_timeout_s": float(net_timeout_s),
        "startup_timeout_s": float(startup_timeout_s),
        "tail_lines": int(tail_lines),
        "require_result": bool(require_result),
        # with elastic=True a later stage may have more workers than the first: every stage gets the entry
        "store_script": store if n > 1 or backend != "ring" or elastic else "",
        "host": host,
        "ps_durable": os.path.abspath(ps_durable) if ps_durable is not None else None,
        "schema": to_arrow_schema(df.schema).serialize().to_pybytes(),
    }

    # Executors need not have shoal_spark installed: the task module travels inside the pickled closure.
    cloudpickle.register_pickle_by_value(_task)
    def merge(rows: Sequence[Any]) -> Optional[Dict[str, Any]]:
        return _merge_timeline(node, store, timeline_path, rows, cwd) if timeline_path is not None else None

    if elastic:
        return _run_elastic(df, spec, merge, n, lo, hi, max_restarts, elastic_dir, sc)
    return _run_stage(df, spec, merge)


def _run_stage(df: Any, spec: Dict[str, Any], merge: Any) -> ShoalResult:
    """One barrier stage over `df`'s partitions (one task per partition); `merge(rows)` merges the timeline parts
    (None without one). Raises ShoalWorkerError for a worker's failure."""
    run_task = _task.run_task

    def body(batches: Any) -> Any:
        return run_task(batches, spec)

    t0 = time.monotonic()
    try:
        rows = df.mapInArrow(body, OUTPUT_DDL, barrier=True).collect()
    except Exception as e:  # noqa: BLE001 - re-raised as the worker's own error when there is one
        err = _as_worker_error(e)
        if err is not None:
            raise err from e
        raise
    wall_s = time.monotonic() - t0

    merged = merge(rows)
    ranks = []
    for r in sorted(rows, key=lambda r: r["rank"]):
        d = r.asDict()
        del d["timeline"]  # the parts went into the merged file
        d["result"] = json.loads(d["result"]) if d["result"] is not None else None
        ranks.append(d)
    rank0 = next((r for r in ranks if r["rank"] == 0), None)
    return ShoalResult(result=rank0["result"] if rank0 else None, ranks=ranks, wall_s=wall_s, timeline=merged)


def _task_slots(sc: Any) -> int:
    """Tasks the live executors can run at once (what Spark checks a barrier stage against)."""
    jsc = sc._jsc.sc()
    try:
        return int(jsc.maxNumConcurrentTasks(jsc.resourceProfileManager().defaultResourceProfile()))
    except Exception:  # noqa: BLE001 - py4j surface differs between Spark versions
        return int(sc.defaultParallelism)


_TASK_RE = re.compile(r"ResultTask\(\d+, (\d+)\)")


def _lost_of(e: BaseException) -> Dict[str, Any]:
    """What a failed stage lost, for the next stage's workers (SHOAL_ELASTIC_LOST) and `ShoalResult.stages`."""
    if isinstance(e, ShoalWorkerError):
        return {"rank": e.rank, "workerId": e.rank, "reason": str(e).splitlines()[0].split(": ", 2)[-1][:300]}
    text = str(e)
    m = _TASK_RE.search(text)
    why = next((ln.strip() for ln in text.splitlines() if "ExecutorLost" in ln or "Lost executor" in ln or "exited" in ln), text.splitlines()[0] if text else type(e).__name__)
    rank = int(m.group(1)) if m else -1
    return {"rank": rank, "workerId": rank, "reason": why[:300]}


def _start_driver_store(spec: Dict[str, Any], host: str) -> Any:
    """The driver's store for an elastic job's commits: `node spark-store.js --host <spark.driver.host>` (no ps
    servers), authenticated with the job secret (TLS with the job's certificate when tls=True)."""
    argv = [spec["node"], spec["store_script"], "--host", host, "--timeout-ms", str(int(spec["net_timeout_s"] * 1000)), "--max-mb", "256"]
    env = dict(os.environ, SHOAL_JOB_ID=spec["job_id"], SHOAL_JOB_SECRET=spec["job_secret"])
    if spec.get("job_tls"):
        env["SHOAL_JOB_TLS"] = spec["job_tls"]
    store = _task._Child(argv, env, spec["cwd"], 0, "driver-store", spec["tail_lines"], _task.STORE_MARKER, stdin=True)
    if not store.marked_event.wait(spec["startup_timeout_s"]):
        store.kill()
        store.join_output(2)
        raise RuntimeError(f"the driver's commit store did not start: {store.last_error_line()}")
    return store


def _run_elastic(df: Any, spec: Dict[str, Any], merge: Any, n: int, lo: int, hi: int, max_restarts: int, elastic_dir: Optional[str], sc: Any) -> ShoalResult:
    """Stages until one finishes: after a failure, the next one gets min(hi, free task slots) workers (waiting up
    to startup_timeout_s for at least `lo`), with df repartitioned to that count. See `run`'s doc."""
    import shutil
    import sys

    store = None
    folder = None
    if elastic_dir is not None:
        folder = os.path.abspath(os.path.join(spec["cwd"], elastic_dir))
        commits = {"SHOAL_ELASTIC_DIR": folder}
    else:
        host = sc.getConf().get("spark.driver.host", "127.0.0.1")
        store = _start_driver_store(spec, host)
        commits = {"SHOAL_ELASTIC_STORE": (store.marked or "").strip()}
    stages: List[Dict[str, Any]] = []
    lost: List[Dict[str, Any]] = []
    source = df
    t0 = time.monotonic()
    try:
        for stage in range(max_restarts + 1):
            # The first stage waits (up to startup_timeout_s) for num_workers slots, a later one only for
            # min_workers; either takes what the live executors hold then, up to max_workers (num_workers first).
            want = n if stage == 0 else lo
            deadline = time.monotonic() + spec["startup_timeout_s"]
            while True:
                workers = min(n if stage == 0 else hi, _task_slots(sc))
                if workers >= want or time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
            if workers < lo:
                after = f" after stage {stage - 1} failed ({lost[-1]['reason']})" if lost else ""
                raise ShoalWorkerError(lost[-1]["rank"] if lost else 0, f"elastic job: {workers} task slot(s) left{after}, fewer than min_workers={lo}", [])
            if stage > 0:
                sys.stderr.write(f"shoal_spark: stage {stage - 1} failed ({lost[-1]['reason']}); stage {stage} starts with {workers} worker(s)\n")
            part = source if source.rdd.getNumPartitions() == workers else source.repartition(workers)
            env = dict(spec["env"], SHOAL_ELASTIC_STAGE=str(stage), **commits)
            if lost:
                env["SHOAL_ELASTIC_LOST"] = json.dumps(lost[-1:])
            st = dict(spec, env=env)
            ts = time.monotonic()
            try:
                res = _run_stage(part, st, merge)
            except Exception as e:  # noqa: BLE001 - any lost task or executor fails the stage; the next one restarts
                lost.append(_lost_of(e))
                stages.append({"stage": stage, "workers": workers, "error": lost[-1]["reason"], "wall_s": time.monotonic() - ts})
                if stage == max_restarts:
                    last = lost[-1]
                    tail = e.log_tail if isinstance(e, ShoalWorkerError) else []
                    raise ShoalWorkerError(max(0, last["rank"]), f"elastic job gave up after {max_restarts} restart(s); last failure: {last['reason']}", tail) from e
                continue
            stages.append({"stage": stage, "workers": workers, "error": None, "wall_s": time.monotonic() - ts})
            res.stages = stages
            res.wall_s = time.monotonic() - t0
            return res
        raise AssertionError("unreachable")
    finally:
        if store is not None:
            store.kill()
        if folder is not None:
            shutil.rmtree(os.path.join(folder, spec["job_id"]), ignore_errors=True)
