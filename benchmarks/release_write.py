"""Release writing: skyledger's streaming FITS + ECSV + Parquet writer against astropy `Table.write`.

One synthetic `lines` release table of N rows (the release's real column list, ~10 % NULLs
in the measured columns) is created in a private embedded PostgreSQL. Then, in the same run:

* skyledger: rows streamed out of PostgreSQL (COPY -> Arrow) into the three files with all
  metadata (TUNIT/TCOMM/TUCD, provenance and flag cards, ECSV/Parquet YAML), FITS
  CHECKSUM/DATASUM and the SHA-256 of every file (what `release create` does per table);
  the table's row digest (api/releases/digest.py) is timed apart as ``digest_seconds``;
* peer: astropy `Table.write` of the same rows, already in memory as a masked astropy
  Table (fetching them is timed apart), to FITS, ECSV and Parquet with no metadata.

Peak memory of the skyledger writer is measured in a fresh subprocess per size.

    python benchmarks/release_write.py --workdir /var/tmp/skyledger-release-bench
    python benchmarks/release_write.py --rows 1000000 --memory-rows 1000000,10000000
    python benchmarks/release_write.py --memory-only --memory-rows 1000000,10000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pyarrow as pa

from skyledger.api.releases.content import ReleaseInfo
from skyledger.api.releases.create import _write_table
from skyledger.api.releases.digest import table_digest
from skyledger.api.releases.freeze import table_content
from skyledger.api.releases.stream import stream_batches
from skyledger.api.releases.tables import release_table
from skyledger.schema import embedded
from skyledger.schema.database import upgrade
from sqlalchemy import create_engine

SCHEMA = "bench"
LINES = release_table("lines")


def fill(conninfo: str, rows: int) -> None:
    """A `lines`-shaped table of ``rows`` rows, 10 lines per spectrum, some NULLs."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(f"""
CREATE TABLE {SCHEMA}.lines AS
SELECT (g / 10)::bigint AS spectrum_id,
       (ARRAY['HA6563','HB4861','OIII5007','OIII4959','NII6584','NII6548','SII6716','SII6731','OII3726','OII3729'])[g % 10 + 1] AS line,
       0.05 + (g % 997) * 1e-4 AS z,
       CASE WHEN g % 10 = 3 THEN NULL ELSE sin(g) * 150 END AS velocity,
       CASE WHEN g % 10 = 3 THEN NULL ELSE 5 + abs(cos(g)) * 10 END AS velocity_err,
       CASE WHEN g % 11 = 0 THEN NULL ELSE 40 + abs(sin(g * 0.7)) * 80 END AS sigma,
       CASE WHEN g % 11 = 0 THEN NULL ELSE 2 + abs(cos(g * 0.3)) * 5 END AS sigma_err,
       abs(sin(g * 1.3)) * 1e-16 AS flux,
       abs(cos(g * 1.7)) * 1e-17 AS flux_err,
       CASE WHEN g % 7 = 0 THEN NULL ELSE abs(sin(g * 0.1)) * 50 END AS ew,
       CASE WHEN g % 7 = 0 THEN NULL ELSE abs(cos(g * 0.1)) * 3 END AS ew_err,
       abs(sin(g * 2.1)) * 40 AS snr,
       (g % 4)::integer AS flags,
       'lines'::text AS source_task,
       1::bigint AS run_id
FROM generate_series(0, {rows - 1}) AS g
""")
        conn.execute(f"VACUUM ANALYZE {SCHEMA}.lines")


def skyledger_write(conninfo: str, out: Path) -> dict:
    """One release table to three files, as `release create` writes it; returns timings."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    info = ReleaseInfo(SCHEMA, "current", dt.datetime.now(dt.timezone.utc), "skyledger benchmark", "0007", None)
    with psycopg.connect(conninfo) as conn:
        t0 = time.perf_counter()
        content = table_content(conn, SCHEMA, LINES)
        files = _write_table(conn, out, info, content)
        seconds = time.perf_counter() - t0
        # The row digest `release create` records per table (timed apart: not part of the files).
        t0 = time.perf_counter()
        digest = table_digest(conn, SCHEMA, "lines", LINES.key)
        digest_seconds = time.perf_counter() - t0
        assert digest.n_rows == content.n_rows
    return {"seconds": seconds, "rows": content.n_rows, "bytes": sum(f.size_bytes for f in files),
            "digest_seconds": digest_seconds, "peak_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    # VmHWM, not getrusage: ru_maxrss survives fork + exec, so a child would report its
    # parent's peak; VmHWM belongs to the address space that exec created.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def astropy_peer(conninfo: str, out: Path) -> dict:
    from astropy.table import MaskedColumn, Table

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with psycopg.connect(conninfo) as conn:
        t0 = time.perf_counter()
        arrow = pa.Table.from_batches(list(stream_batches(conn, SCHEMA, "lines", LINES.columns)))
        table = Table()
        for name in arrow.column_names:
            col = arrow[name]
            data = col.to_numpy() if col.null_count == 0 else col.fill_null(0 if pa.types.is_integer(col.type) else
                                                                           ("" if pa.types.is_string(col.type) else 0.0)).to_numpy()
            if data.dtype == object:
                data = data.astype(str)  # Arrow hands strings over as Python objects
            table[name] = MaskedColumn(data, mask=col.is_null().to_numpy(zero_copy_only=False)) if col.null_count else data
        fetch = time.perf_counter() - t0
    timings = {"fetch_seconds": fetch}
    t0 = time.perf_counter()
    for fmt, suffix in (("fits", "fits"), ("ascii.ecsv", "ecsv"), ("parquet", "parquet")):
        t1 = time.perf_counter()
        kwargs = {"delimiter": ","} if suffix == "ecsv" else {}
        table.write(out / f"lines.{suffix}", format=fmt, overwrite=True, **kwargs)
        timings[f"{suffix}_seconds"] = time.perf_counter() - t1
    timings["seconds"] = time.perf_counter() - t0
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/skyledger-release-bench"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--memory-rows", default="1000000,10000000", help="sizes for the peak-memory runs")
    parser.add_argument("--memory-only", action="store_true", help="skip the comparison, measure peak memory only")
    parser.add_argument("--child", choices=["skyledger"], help=argparse.SUPPRESS)
    parser.add_argument("--conninfo", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(skyledger_write(args.conninfo, args.workdir / "child")))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    server = embedded.start(args.workdir / "pgdata")
    engine = create_engine(server.url)
    upgrade(engine)
    engine.dispose()
    conninfo = server.conninfo()
    result: dict = {"rows": args.rows, "date": dt.date.today().isoformat(), "python": sys.version.split()[0],
                    "pyarrow": pa.__version__}
    if not args.memory_only:
        fill(conninfo, args.rows)
        result["skyledger"] = skyledger_write(conninfo, args.workdir / "skyledger")
        result["astropy"] = astropy_peer(conninfo, args.workdir / "astropy")
        result["ratio_write"] = result["skyledger"]["seconds"] / result["astropy"]["seconds"]
        result["ratio_fetch_and_write"] = result["skyledger"]["seconds"] / (
            result["astropy"]["seconds"] + result["astropy"]["fetch_seconds"])
    memory = {}
    for n in [int(x) for x in args.memory_rows.split(",") if x]:
        fill(conninfo, n)
        child = subprocess.run(
            [sys.executable, __file__, "--child", "skyledger", "--conninfo", conninfo, "--workdir", str(args.workdir)],
            capture_output=True, text=True, check=True)
        memory[n] = json.loads(child.stdout)
    result["memory"] = memory
    shutil.rmtree(args.workdir / "child", ignore_errors=True)
    print(json.dumps(result, indent=1))
    (args.workdir / "release_write.json").write_text(json.dumps(result, indent=1))
    embedded.stop(args.workdir / "pgdata")


if __name__ == "__main__":
    main()
