"""Throughput of the query service's result writers (skyledger.api.service.formats).

Writes N rows (default 1,000,000) of 10 columns typical of a catalog query (int8, 2 x
float8, 2 x float4, int4, int2, bool, text, timestamptz; 1 row in 97 all NULL but its id)
in chunks of 10,000 rows, and prints rows/s (by wall clock and by the process's CPU time, steadier on a shared
machine) and the output size per format. The rows
are built before the clock starts, so only the writer is timed.

    .venv/bin/python benchmarks/result_formats.py [--rows N] [FORMAT ...]   # default: votable
"""

from __future__ import annotations

import argparse
import gc
import time
from datetime import UTC, datetime

from skyledger.api.service.formats import Field, resolve_format, stream_result

FIELDS = [
    Field("source_id", "int8"), Field("ra", "float8", "deg"), Field("dec", "float8", "deg"),
    Field("z", "float4"), Field("z_err", "float4"), Field("n_pix", "int4"), Field("flags", "int2"),
    Field("good", "bool"), Field("survey", "text"), Field("observed", "timestamptz"),
]  # fmt: skip


def make_chunks(n_rows: int, chunk: int) -> list[list[tuple]]:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        [
            (i, 10.0 + i * 1e-6, -5.0 + i * 1e-6, 0.1, 0.01, 4000 + i % 7, i % 3, i % 2 == 0,
             "desi-dr1" if i % 2 else "sdss", t0) if i % 97 else (i,) + (None,) * 9
            for i in range(start, min(start + chunk, n_rows))
        ]
        for start in range(0, n_rows, chunk)
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("formats", nargs="*", default=["votable"])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    args = parser.parse_args()
    chunks = make_chunks(args.rows, args.chunk)
    # The service never holds the whole result; here it is held, and the cyclic garbage
    # collector would walk its millions of tuples again and again: set them aside.
    gc.freeze()
    for name in args.formats:
        fmt = resolve_format(name)
        start, cpu_start, size = time.perf_counter(), time.process_time(), 0
        for piece in stream_result(fmt, FIELDS, chunks, overflow=False, infos={}):
            size += len(piece)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        print(
            f"{name:12s} {args.rows / elapsed:10,.0f} rows/s wall {elapsed:6.2f} s,"
            f" {args.rows / cpu:10,.0f} rows/s of CPU time, {size / 1e6:7.1f} MB"
        )


if __name__ == "__main__":
    main()
