#!/usr/bin/env python3
"""The sink's events -> zstd Parquet path next to Arrow C++ (pyarrow) writing the same rows.

Each pair runs, on one core (`--cpu`, default 1), the sink's own code (`sink_encode`: events
-> Arrow record batch -> zstd Parquet, best of `--rounds`) and then pyarrow writing that very
batch, read back from the file the sink wrote, with the sink's writer settings: zstd level 1,
row groups of 262 144 rows, dictionaries on every column but `event_id` and `ts`, `ts`
delta-encoded, statistics and the page index, the sorting columns, a Bloom filter on
`event_id`. pyarrow times only Arrow -> Parquet: its rows are already in memory as Arrow.
Prints one line per pair and the ratios (sink rows/s over pyarrow rows/s).

    benches/sink_vs_pyarrow.py [--bin target/fast/sink_encode] [--rows 100000] [--pairs 5]
"""

import argparse
import io
import json
import os
import statistics
import subprocess
import tempfile
import time

import pyarrow.parquet as pq


def pyarrow_rate(path, rounds):
    table = pq.read_table(path)
    meta = pq.ParquetFile(path).metadata
    sorting = pq.SortingColumn.from_ordering(table.schema, [("ts", "ascending")])
    dictionary = [c for c in table.column_names if c not in ("event_id", "ts")]
    best = float("inf")
    size = 0
    for _ in range(rounds):
        sink = io.BytesIO()
        start = time.perf_counter()
        pq.write_table(
            table,
            sink,
            compression="zstd",
            compression_level=1,
            row_group_size=256 * 1024,
            use_dictionary=dictionary,
            column_encoding={"ts": "DELTA_BINARY_PACKED"},
            write_statistics=True,
            write_page_index=True,
            sorting_columns=sorting,
            bloom_filter_options={"event_id": {"ndv": 1_000_000, "fpp": 0.05}},
        )
        best = min(best, time.perf_counter() - start)
        size = sink.tell()
    return table.num_rows / best, size, meta.num_rows


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(here, "..", "target", "fast", "sink_encode"))
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--cpu", type=int, default=1)
    a = ap.parse_args()
    os.sched_setaffinity(0, {a.cpu})
    ratios, ours, theirs = [], [], []
    with tempfile.TemporaryDirectory(prefix="sink-vs-pyarrow-") as tmp:
        path = os.path.join(tmp, "visits.parquet")
        for pair in range(a.pairs):
            out = subprocess.run(
                ["taskset", "-c", str(a.cpu), a.bin, "--rows", str(a.rows),
                 "--rounds", str(a.rounds), "--parquet", path],
                check=True, capture_output=True, text=True,
            ).stdout
            r = json.loads(out)
            sink_rate = r["events_to_parquet_s"]["rows_per_s"]
            arrow_rate = r["arrow_to_parquet_s"]["rows_per_s"]
            py_rate, py_size, rows = pyarrow_rate(path, a.rounds)
            assert rows == a.rows, f"the sink's file holds {rows} rows, not {a.rows}"
            ratios.append(sink_rate / py_rate)
            ours.append(sink_rate)
            theirs.append(py_rate)
            print(
                f"pair {pair + 1}: sink events->Parquet {sink_rate / 1e6:.3f} M rows/s "
                f"(events->Arrow {r['events_to_arrow_s']['rows_per_s'] / 1e6:.3f} M, "
                f"Arrow->Parquet {arrow_rate / 1e6:.3f} M, {r['parquet_bytes']} bytes); "
                f"pyarrow Arrow->Parquet {py_rate / 1e6:.3f} M rows/s ({py_size} bytes); "
                f"ratio {sink_rate / py_rate:.2f}x",
                flush=True,
            )
    print(
        f"median: sink {statistics.median(ours) / 1e6:.3f} M rows/s, "
        f"pyarrow {statistics.median(theirs) / 1e6:.3f} M rows/s, "
        f"ratio {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}x)"
    )


if __name__ == "__main__":
    main()
