"""shoal's TensorBoard event files, read back by TensorBoard's own reader.

Driven by test/src/tensorboard-reader.test.ts, which trains with the `tensorBoard()` callback and writes what the
Trainer logged to SHOAL_TB_EXPECTED (JSON: run -> tag -> [[step, float32 value], ...]) for the runs under
SHOAL_TB_LOGDIR. Run alone, these tests skip.
"""

import glob
import json
import os
import shutil
import struct

import pytest

pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -r requirements.txt)")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.compat.tensorflow_stub import errors as tb_errors  # noqa: E402
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New  # noqa: E402

LOGDIR = os.environ.get("SHOAL_TB_LOGDIR")
EXPECTED = os.environ.get("SHOAL_TB_EXPECTED")
pytestmark = pytest.mark.skipif(not (LOGDIR and EXPECTED), reason="run by test/src/tensorboard-reader.test.ts")


def expected():
    with open(EXPECTED) as f:
        return json.load(f)


def scalars(run_dir):
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_rank0_runs_hold_exactly_the_logged_scalars():
    exp = expected()
    for run in ("train", "val"):
        got = scalars(os.path.join(LOGDIR, run))
        want = exp[run]
        assert sorted(got) == sorted(want), run
        for tag, points in want.items():
            assert got[tag] == [(s, v) for s, v in points], (run, tag)


def test_per_rank_runs_have_step_timing_and_system_metrics():
    exp = expected()
    for run, want in exp["ranks"].items():
        got = scalars(os.path.join(LOGDIR, run))
        for tag in want["tags"]:
            assert tag in got, (run, tag, sorted(got))
        steps = [s for s, _ in got["batch_step_time_ms"]]
        assert steps == list(range(1, want["steps"] + 1)), run
        assert all(v > 0 for _, v in got["batch_step_time_ms"]), run
        assert all(v > 10 for _, v in got["system/rss_mib"]), run
        assert got["epoch_bytes_sent"][-1][1] > 0, run


def test_server_runs_hold_the_load_curves_with_exact_totals():
    exp = expected()
    for run, want in exp["servers"].items():
        got = scalars(os.path.join(LOGDIR, run))
        for tag in (
            "server/rounds_per_sec",
            "server/apply_ms_per_round",
            "server/queue_depth_mean",
            "server/queue_depth_max",
            "server/bytes_in_per_sec",
            "server/bytes_out_per_sec",
            "system/cpu_percent",
            "system/rss_mib",
        ):
            assert tag in got, (run, tag, sorted(got))
        steps = [s for s, _ in got["server/rounds_total"]]
        assert len(steps) >= 2 and steps == sorted(steps), (run, steps)
        # the totals written last are what the server did (float32 holds these integers exactly)
        for tag in ("rounds_total", "bytes_in_total", "bytes_out_total"):
            assert got["server/" + tag][-1][1] == want[tag], (run, tag, got["server/" + tag][-1], want[tag])
        assert max(v for _, v in got["server/rounds_per_sec"]) > 0, run
        assert max(v for _, v in got["server/queue_depth_max"]) >= 1, run
        assert max(v for _, v in got["server/bytes_in_per_sec"]) > 0, run


def records(path):
    """(offset of data, length) of each TFRecord in an event file."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos : pos + 8])
        out.append((pos + 12, n))
        pos += 12 + n + 4
    assert pos == len(data)
    return out


def test_a_corrupted_record_fails_the_readers_crc_check(tmp_path):
    [src] = glob.glob(os.path.join(LOGDIR, "train", "events.out.tfevents.*"))
    recs = records(src)
    assert len(recs) >= 4
    # Control: the intact file reads through without a data-loss error.
    reader = PyRecordReader_New(src.encode())
    n = 0
    while True:
        try:
            reader.GetNext()
        except tb_errors.OutOfRangeError:
            break
        n += 1
    assert n == len(recs)
    # Flip one bit inside the third record's Event bytes (a scalar event).
    bad_dir = tmp_path / "train"
    bad_dir.mkdir()
    bad = str(bad_dir / os.path.basename(src))
    shutil.copy(src, bad)
    off, length = recs[2]
    with open(bad, "r+b") as f:
        f.seek(off + length - 1)
        b = f.read(1)[0]
        f.seek(off + length - 1)
        f.write(bytes([b ^ 0x01]))
    reader = PyRecordReader_New(bad.encode())
    reader.GetNext()
    reader.GetNext()
    with pytest.raises(tb_errors.DataLossError, match="crc32"):
        reader.GetNext()
    # TensorBoard's loader stops at the bad record: it never returns the corrupted value.
    got = scalars(str(bad_dir))
    want = scalars(os.path.join(LOGDIR, "train"))
    assert sum(len(v) for v in got.values()) < sum(len(v) for v in want.values())
    for tag, points in got.items():
        assert points == want[tag][: len(points)]
