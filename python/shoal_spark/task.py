"""Executor side of `shoal_spark.run`: the body of one Spark barrier task.

One task = one shoal rank. The task

1. learns its rank (the partition id) and the world size from `BarrierTaskContext`;
2. on rank 0, starts the job's rendezvous store (a small Node process that prints its address);
3. exchanges `{rank, host, store}` with every task through `BarrierTaskContext.allGather`;
4. starts `node <script>` in its own process group with the `SHOAL_*` environment (core/src/config.ts), streams
   the partition's Arrow record batches into the child's stdin as one Arrow IPC stream (no temp file), and
   forwards the child's stdout/stderr lines to this task's stderr (the executor log);
5. waits for the child (bounded by the job's deadline), meets the other tasks at a final barrier, and yields one
   row: this rank's exit status, the result the script printed on its `SHOAL_RESULT {json}` line, and feed figures;
   with a timeline, also the timeline parts this task's processes wrote (in a folder of its own on the executor),
   which the driver merges.

A failing child raises `ShoalWorkerError` naming the rank, its error line and the last lines of its log, which fails
the barrier stage. The child and the store never outlive the task: they run in their own process group, killed in
`finally`, and carry PR_SET_PDEATHSIG(SIGKILL) so they die with this Python process even if Spark kills it hard.

This module is pickled by value into the executors (see launcher.py), so it must import only what an executor
has (pyspark, pyarrow and the standard library) and keep everything it needs inside functions.
"""

from __future__ import annotations

import collections
import ctypes
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

RESULT_MARKER = "SHOAL_RESULT "
STORE_MARKER = "SHOAL_STORE "
ERROR_TAG = "ShoalWorkerError"

# Errors that are consequences of another rank's failure (as run/src/launcher/launch.ts's pickRootCause reads
# them): a peer or the store that went away, a closed or aborted group.
CONSEQUENCE_RE = re.compile(r"\b(ERR_PEER_CLOSED|ERR_CLOSED|ERR_ABORTED)\b|peer closed the connection|went away")
# How long a task whose worker failed only as a consequence waits before failing: Spark reports the first task
# failure it hears of, and the root cause (raised at once by its own task) should be that one.
CONSEQUENCE_DELAY_S = 3.0


# A stack frame of a Node error, also when printed inside a quoted string ("'    at f (/x/errors.ts:64:5)\\n' +"):
# its path may say "errors", but it is no error message.
STACK_FRAME_RE = re.compile(r"""^['"]?\s*at\s.*:\d+:\d+\)?""")


def telling_line(tail: List[str]) -> str:
    """The most telling line of a log tail: the last one that looks like an error and is not a stack frame, else
    the last line."""
    lines = [ln.strip() for ln in tail if ln.strip()]
    for ln in reversed(lines):
        if ("Error" in ln or "error" in ln or "ERR_" in ln) and not STACK_FRAME_RE.match(ln):
            return ln
    return lines[-1] if lines else ""


def failed_as_consequence(tail: List[str]) -> bool:
    """True when the worker's log says it only noticed another rank's failure (a peer closed, the job aborted)."""
    return any(CONSEQUENCE_RE.search(ln) for ln in tail)


class ShoalWorkerError(RuntimeError):
    """A shoal worker (or the job's store) failed inside a Spark barrier task."""

    def __init__(self, rank: int, message: str, log_tail: List[str]):
        self.rank = rank
        self.log_tail = list(log_tail)
        tail = "\n".join(f"  | {line}" for line in self.log_tail)
        super().__init__(f"{ERROR_TAG}: rank {rank}: {message}" + (f"\nlast log lines of rank {rank}:\n{tail}" if tail else ""))


def _set_pdeathsig() -> None:
    """preexec_fn: the child gets SIGKILL when the thread that spawned it dies (Linux; no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


def _grow_pipe(fd: int, size: int = 1 << 20) -> None:
    """Best effort: a 1 MiB pipe (Linux F_SETPIPE_SZ; the default is 64 KiB) so each write moves a whole Arrow
    buffer with fewer context switches between the task and the worker."""
    try:
        import fcntl

        fcntl.fcntl(fd, 1031, size)  # F_SETPIPE_SZ
    except (OSError, ImportError):
        pass


class _Child:
    """A Node child in its own process group, its output lines pumped by two daemon threads.

    Lines go to `sys.stderr` with a `[shoal rank R]` prefix and into a bounded tail kept for error reports. A line
    on stdout starting with `marker` is captured (the last one wins) and not forwarded.
    """

    def __init__(self, argv: List[str], env: Dict[str, str], cwd: Optional[str], rank: int, name: str,
                 tail_lines: int, marker: str, stdin: bool):
        self.rank = rank
        self.name = name
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self.marked: Optional[str] = None
        self.marked_event = threading.Event()
        self._marker = marker
        self._lock = threading.Lock()
        self._group_killed = False
        try:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=cwd,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True, preexec_fn=_set_pdeathsig, bufsize=0,
            )
        except OSError as e:
            raise ShoalWorkerError(rank, f"cannot start {name} ({argv[0]}): {e}", []) from e
        if stdin:
            _grow_pipe(self.proc.stdin.fileno())
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream: Any, is_stdout: bool) -> None:
        prefix = f"[shoal {self.name} rank {self.rank}] "
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if is_stdout and line.startswith(self._marker):
                self.marked = line[len(self._marker):]
                self.marked_event.set()
                continue
            with self._lock:
                self.tail.append(line)
            try:
                sys.stderr.write(prefix + line + "\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
        stream.close()

    def join_output(self, timeout_s: float) -> None:
        """Wait (bounded) until both pipes hit EOF, so the tail and the marker are complete."""
        end = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))

    def tail_lines(self) -> List[str]:
        with self._lock:
            return list(self.tail)

    def last_error_line(self) -> str:
        """The most telling line of the tail (`telling_line`)."""
        return telling_line(self.tail_lines())

    def finish(self, timeout_s: float) -> None:
        """Close the child's stdin (the store's signal to stop its servers and exit) and wait, bounded, for it."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        """Kill the child's whole process group (idempotent) and reap the child.

        The group is signalled even when the leader already exited: what it started (the store's server actors)
        may still be in the group. A process group id is not reused while any member lives.
        """
        if not self._group_killed:
            self._group_killed = True
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:
                if self.proc.poll() is None:
                    self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass


class _Watchdog:
    """Kills a child when the job deadline passes; `fired` tells the caller why the child died."""

    def __init__(self, child: _Child, deadline: float):
        self.fired = False
        self._stop = threading.Event()
        self._child = child
        self._deadline = deadline
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        if not self._stop.wait(max(0.0, self._deadline - time.monotonic())):
            self.fired = True
            self._child.kill()

    def stop(self) -> None:
        self._stop.set()


def _start_store(spec: Dict[str, Any], rank: int, host: str, deadline: float) -> _Child:
    """Start the rendezvous store process and wait (bounded) for its `SHOAL_STORE tcp://host:port` line."""
    argv = [spec["node"], spec["store_script"], "--host", host, "--timeout-ms", str(int(spec["net_timeout_s"] * 1000))]
    if spec["backend"] in ("ps", "hybrid"):
        # rank 0's task also hosts the parameter-server shards (actor processes of the store's process group)
        argv += ["--ps-servers", str(spec["servers"]), "--workers", str(spec["world"])]
        if spec.get("ps_durable"):
            argv += ["--ps-durable", spec["ps_durable"]]
        if spec.get("logdir"):
            argv += ["--logdir", spec["logdir"]]
        if spec.get("timeline_file"):
            argv += ["--timeline", spec["timeline_file"]]
    # tags the store and its server actors with the job; the secret goes in the environment only
    env = dict(os.environ, SHOAL_JOB_ID=spec["job_id"], SHOAL_JOB_SECRET=spec["job_secret"])
    if spec.get("job_tls"):
        env["SHOAL_JOB_TLS"] = spec["job_tls"]
    store = _Child(argv, env, spec["cwd"], rank, "store", spec["tail_lines"], STORE_MARKER, stdin=True)
    wait_s = min(spec["startup_timeout_s"], max(0.0, deadline - time.monotonic()))
    if not store.marked_event.wait(wait_s):
        store.kill()
        store.join_output(2)
        code = store.proc.returncode
        why = f"exited with code {code}" if code is not None and code != -signal.SIGKILL else f"printed no address within {wait_s:.0f} s"
        raise ShoalWorkerError(rank, f"rendezvous store {why}: {store.last_error_line()}", store.tail_lines())
    return store


def _write_stream(child: _Child, batches: Iterator[Any], schema: Any, stats: Dict[str, float],
                  deadline: float, depth: int = 4) -> Optional[BaseException]:
    """Stream `batches` into the child's stdin as one Arrow IPC stream, then close it (EOF = end of data).

    Pipelined: this thread pulls batches from Spark while a writer thread writes the previous ones (a queue of at
    most `depth` batches; the pipe writes drop the GIL), so Spark's decoding and the pipe overlap. Returns the
    write error if the child stopped reading (it died, was killed at the deadline, or closed stdin early), else
    None. `stats` gets rows, bytes, batches written and feed_s (first pull to last write).
    """
    import queue

    import pyarrow as pa

    q: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
    end = object()
    failed = threading.Event()
    errors: List[BaseException] = []
    t0 = time.perf_counter()

    abort = object()

    def writer_loop() -> None:
        # Unbuffered pipe (bufsize=0): pyarrow hands each buffer straight to write(), which drops the GIL.
        sink = child.proc.stdin
        try:
            writer = pa.ipc.new_stream(sink, schema)
            while True:
                batch = q.get()
                if batch is end:
                    writer.close()  # the end-of-stream marker: only a complete stream gets one
                    break
                if batch is abort:
                    break  # the pipe closes without the marker: the worker sees a truncated stream
                writer.write_batch(batch)
                stats["rows"] += batch.num_rows
                stats["bytes"] += batch.nbytes
                stats["batches"] += 1
        except (BrokenPipeError, ConnectionResetError, OSError, ValueError, pa.ArrowException) as e:  # the child went away
            errors.append(e)
            failed.set()
        finally:
            try:
                sink.close()
            except (OSError, ValueError):
                pass

    writer_thread = threading.Thread(target=writer_loop, name="shoal-arrow-writer", daemon=True)
    writer_thread.start()

    def put(item: Any) -> bool:
        while not failed.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    try:
        for batch in batches:
            if batch.schema != schema:
                batch = pa.RecordBatch.from_arrays(batch.columns, schema=schema)
            if not put(batch):
                break
        put(end)
    except BaseException:
        # Spark's input failed (or the task is being killed): stop the writer without completing the stream.
        failed.set()
        while True:
            try:
                q.get_nowait()
            except queue.Empty:
                break
        q.put_nowait(abort)
        raise
    # The writer ends at EOF, or fails once the watchdog kills a child that stopped reading at the deadline.
    writer_thread.join(max(0.0, deadline - time.monotonic()) + 10.0)
    stats["feed_s"] = time.perf_counter() - t0
    if writer_thread.is_alive():
        return TimeoutError("the Arrow writer did not finish by the job deadline")
    return errors[0] if errors else None


def run_task(batches: Iterator[Any], spec: Dict[str, Any]) -> Iterator[Any]:
    """The barrier task body (the `mapInArrow` function). See the module doc. Yields one row for this rank."""
    import pyarrow as pa
    from pyspark import BarrierTaskContext

    t_start = time.monotonic()
    ctx = BarrierTaskContext.get()
    rank = ctx.partitionId()
    infos = ctx.getTaskInfos()
    world = len(infos)
    host = spec.get("host") or infos[rank].address.rsplit(":", 1)[0]

    store: Optional[_Child] = None
    worker: Optional[_Child] = None
    watchdog: Optional[_Watchdog] = None
    # With a timeline, this task's processes write their parts into a folder of its own on the executor; the row
    # carries them to the driver, which merges them (executors need share no folder with it).
    timeline_dir = tempfile.mkdtemp(prefix="shoal-timeline-") if spec.get("timeline") else None
    if timeline_dir is not None:
        spec = dict(spec, timeline_file=os.path.join(timeline_dir, "timeline.json"))
    try:
        # Wait for the partition's first batch before anything starts: a slow upstream stage then delays the whole
        # job's rendezvous (Spark's barrier waits without a deadline of ours) instead of timing out a started
        # worker's idle read. The schema is the first batch's (Spark's own Arrow types), or the DataFrame's for an
        # empty partition.
        first = next(batches, None)
        schema = first.schema if first is not None else pa.ipc.read_schema(pa.py_buffer(spec["schema"]))

        # The job's deadline runs from here: the input is flowing.
        deadline = time.monotonic() + spec["timeout_s"]
        store_url = ""
        if rank == 0 and spec["store_script"] and (world > 1 or spec["backend"] != "ring"):
            store = _start_store(dict(spec, world=world), rank, host, deadline)
            store_url = (store.marked or "").strip()
        peers = [json.loads(m) for m in ctx.allGather(json.dumps({"rank": rank, "host": host, "store": store_url}))]
        store_url = next((p["store"] for p in peers if p["rank"] == 0), "")

        env = dict(os.environ)
        env.update(spec["env"])
        env.update({
            "SHOAL_RANK": str(rank),
            "SHOAL_WORLD_SIZE": str(world),
            "SHOAL_LOCAL_RANK": str(sum(1 for p in peers if p["host"] == host and p["rank"] < rank)),
            "SHOAL_STORE": store_url,
            "SHOAL_JOB_ID": spec["job_id"],
            "SHOAL_BACKEND": spec["backend"],
            "SHOAL_TRANSPORT": spec["transport"],
            "SHOAL_SERVERS": str(spec["servers"]),
            "SHOAL_TIMEOUT_MS": str(int(spec["net_timeout_s"] * 1000)),
            "SHOAL_HOST": host,
            "SHOAL_INPUT": "stdin",
            "SHOAL_PARENT_PID": str(os.getpid()),
            "SHOAL_LAUNCHER": "spark",
            "SHOAL_JOB_SECRET": spec["job_secret"],
            **({"SHOAL_JOB_TLS": spec["job_tls"]} if spec.get("job_tls") else {}),
        })
        if timeline_dir is not None:
            env["SHOAL_TIMELINE"] = spec["timeline_file"]
        if spec.get("ps_durable"):
            env["SHOAL_PS_RESEND"] = "1"  # the servers restart from their checkpoints: resend what they lost
        argv = [spec["node"], *spec.get("node_args", []), spec["script"], *spec["args"]]
        worker = _Child(argv, env, spec["cwd"], rank, "worker", spec["tail_lines"], RESULT_MARKER, stdin=True)
        watchdog = _Watchdog(worker, deadline)

        def all_batches() -> Iterator[Any]:
            if first is not None:
                yield first
            yield from batches

        stats: Dict[str, float] = {"rows": 0, "bytes": 0, "batches": 0, "feed_s": 0.0}
        write_err = _write_stream(worker, all_batches(), schema, stats, deadline)
        try:
            code = worker.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            code = worker.proc.returncode
        watchdog.stop()
        worker.join_output(5)
        if watchdog.fired:
            raise ShoalWorkerError(rank, f"timed out after {spec['timeout_s']:.0f} s (worker killed)", worker.tail_lines())
        if code != 0:
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
            line = worker.last_error_line()
            if failed_as_consequence(worker.tail_lines()):
                # Another rank failed first and this one only noticed: let that rank's task report the cause.
                time.sleep(min(CONSEQUENCE_DELAY_S, max(0.0, deadline - time.monotonic())))
            raise ShoalWorkerError(rank, f"worker {how}: {line}", worker.tail_lines())
        if write_err is not None:
            raise ShoalWorkerError(rank, f"worker exited 0 but stopped reading its input early ({write_err})", worker.tail_lines())
        result = worker.marked
        if spec["require_result"] and rank == 0 and result is None:
            raise ShoalWorkerError(rank, f"worker printed no '{RESULT_MARKER.strip()} {{json}}' line", worker.tail_lines())
        if result is not None:
            try:
                json.loads(result)
            except ValueError as e:
                raise ShoalWorkerError(rank, f"bad {RESULT_MARKER.strip()} line (not JSON): {e}", worker.tail_lines()) from e

        # Rank 0 hosts the store: keep it until every rank's worker is done.
        ctx.barrier()
        if store is not None and (spec.get("logdir") or timeline_dir is not None):
            # the ps servers write their last TensorBoard sample and timeline spans when stopped, not when killed
            store.finish(10.0)
        timeline = _timeline_parts(timeline_dir) if timeline_dir is not None else None
        wall_s = time.monotonic() - t_start
        yield pa.RecordBatch.from_pydict(
            {
                "rank": [rank], "host": [host], "executor": [infos[rank].address], "exit_code": [int(code)], "result": [result],
                "rows": [int(stats["rows"])], "bytes": [int(stats["bytes"])], "batches": [int(stats["batches"])],
                "feed_s": [float(stats["feed_s"])], "wall_s": [float(wall_s)], "timeline": [timeline],
            },
            schema=OUTPUT_SCHEMA(),
        )
    finally:
        if watchdog is not None:
            watchdog.stop()
        if worker is not None:
            worker.kill()
        if store is not None:
            store.kill()
            if spec.get("ps_durable"):
                # the store is killed, not asked to stop: remove the job's server checkpoints here
                shutil.rmtree(os.path.join(spec["ps_durable"], spec["job_id"]), ignore_errors=True)
        if timeline_dir is not None:
            shutil.rmtree(timeline_dir, ignore_errors=True)


def _timeline_parts(folder: str) -> str:
    """The timeline parts in `folder` (`timeline.json.rank-<r>.jsonl`, `timeline.json.server-<i>.jsonl`) as one
    JSON object {part name: its JSON lines}, the row's `timeline` column."""
    parts: Dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        m = re.fullmatch(r"timeline\.json\.((?:rank|server)-\d+)\.jsonl", name)
        if m:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                parts[m.group(1)] = f.read()
    return json.dumps(parts)


def OUTPUT_SCHEMA() -> Any:
    """The Arrow schema of the rows `run_task` yields (mirrors launcher.OUTPUT_DDL)."""
    import pyarrow as pa

    return pa.schema([
        ("rank", pa.int32()), ("host", pa.string()), ("executor", pa.string()), ("exit_code", pa.int32()), ("result", pa.string()),
        ("rows", pa.int64()), ("bytes", pa.int64()), ("batches", pa.int64()),
        ("feed_s", pa.float64()), ("wall_s", pa.float64()), ("timeline", pa.string()),
    ])
