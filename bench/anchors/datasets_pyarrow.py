#!/usr/bin/env python3
"""Anchor for `npm run bench -- datasets`: the same files read with pyarrow 17 into the same training batches
(numpy float32 features [batch, 16], int32 user/item, float32 label), in this process, single-threaded where
pyarrow lets us choose (use_threads=False), so the figure is comparable with shoal's per-thread numbers.

usage: datasets_pyarrow.py DIR ROWS BATCH REPS   -> JSON { rows: [ {source, codec, rows, bytes, seconds, ...} ] }
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

ROW_BYTES = 76
F = 16


def to_batches(record_batches, batch):
    """Slice record batches into training batches (views when a batch lies inside one record batch)."""
    rows = 0
    pend = []
    pend_n = 0
    for rb in record_batches:
        user = rb.column('user').to_numpy()
        item = rb.column('item').to_numpy()
        label = rb.column('label').to_numpy()
        if 'features' in rb.schema.names:
            feats = rb.column('features').values.to_numpy().reshape(-1, F)
        else:
            feats = np.stack([rb.column(f'f{j}').to_numpy() for j in range(F)], axis=1).astype(np.float32)
        n = rb.num_rows
        at = 0
        while at < n:
            if pend_n == 0 and n - at >= batch:
                _b = (feats[at:at + batch], user[at:at + batch], item[at:at + batch], label[at:at + batch])
                rows += batch
                at += batch
                continue
            k = min(batch - pend_n, n - at)
            pend.append((feats[at:at + k], user[at:at + k], item[at:at + k], label[at:at + k]))
            pend_n += k
            at += k
            if pend_n == batch:
                _b = tuple(np.concatenate([p[i] for p in pend]) for i in range(4))
                rows += batch
                pend, pend_n = [], 0
    if pend_n:
        _b = tuple(np.concatenate([p[i] for p in pend]) for i in range(4))
        rows += pend_n
    return rows


def parts(d):
    return sorted(os.path.join(d, n) for n in os.listdir(d) if not n.startswith(('_', '.')))


def main():
    d, rows, batch, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    ro = pcsv.ReadOptions(use_threads=False)
    cases = [
        ('pyarrow-arrow-stream-file', 'none', lambda: to_batches(ipc.open_stream(pa.OSFile(os.path.join(d, 'table.arrows'))), batch)),
        ('pyarrow-arrow-file', 'none', lambda: to_batches((lambda r: (r.get_batch(i) for i in range(r.num_record_batches)))(ipc.open_file(pa.memory_map(os.path.join(d, 'table.arrow')))), batch)),
    ]
    for codec in ('uncompressed', 'snappy', 'zstd'):
        p = os.path.join(d, f'parquet-{codec}')
        cases.append(('pyarrow-parquet', codec, (lambda p=p: to_batches((b for f in parts(p) for b in pq.ParquetFile(f).iter_batches(batch_size=1 << 20, use_threads=False)), batch))))
    cases.append(('pyarrow-csv', 'none', lambda: to_batches((b for f in parts(os.path.join(d, 'csv')) for b in pcsv.read_csv(f, read_options=ro).to_batches()), batch)))
    out = []
    for source, codec, fn in cases:
        n = fn()
        assert n == rows, (source, n)
        ts = []
        cs = []
        for _ in range(reps):
            c = time.process_time()
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
            cs.append(time.process_time() - c)
        s = statistics.median(ts)
        cpu = statistics.median(cs)
        b = rows * ROW_BYTES
        out.append({'source': source, 'codec': codec, 'rows': rows, 'bytes': b, 'seconds': round(s, 4),
                    'rows_per_s': round(rows / s), 'mb_per_s': round(b / s / 1e6, 1), 'threads': 1, 'reps': reps,
                    'cpu_seconds': round(cpu, 4), 'mb_per_cpu_s': round(b / max(cpu, 1e-9) / 1e6, 1),
                    'note': f'pyarrow {pa.__version__}, use_threads=False'})
    json.dump({'rows': out}, sys.stdout)


if __name__ == '__main__':
    main()
