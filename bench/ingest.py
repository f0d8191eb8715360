#!/usr/bin/env python3
"""Ingest benchmark: floe vs pyiceberg vs a plain Parquet write, same data.

    bench/ingest.py [--sites 2000] [--days 60] [--work DIR] [--floe PATH]

Generates (once, cached in --work) half-hourly data for SITES sites over DAYS
days (2000 x 60 x 48 = 5.76M rows; columns ts_utc, site_id, region (14 values),
demand_mw, temperature_c, wind_speed_ms, quality_flag) as one NDJSON and one
Parquet file per day. Then, each in its own process timed with /usr/bin/time
(wall time and peak RSS), against the same `floe catalog serve` on a local
warehouse:

  floe/parquet         floe ingest of the Parquet files, no sort order
  floe/parquet+sort    the same with sort = [site_id, ts_utc]
  floe/ndjson          floe ingest of the NDJSON files
  pyiceberg/parquet    pyiceberg appending each day's table (one append per day)
  pyarrow/plain        pyarrow writing the same rows as plain Parquet (zstd), no table format
  floe-delta/parquet   floe ingest of the Parquet files into a Delta table (format = "delta")
  deltalake/parquet    the Python deltalake package's write_deltalake of the same rows, with the
                       same `day` partition column, streamed in one call (one commit)

Prints rows/s, MB/s of Parquet written and peak RSS per case. Needs the venv of
infra/local/python-env.sh (pyiceberg, pyarrow) and a release build of floe.
"""
import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_FLOE, CatalogServer, day_after, exit_on_sigterm, generate, parquet_bytes, pipeline, quiet_env, timed  # noqa: E402


PYICEBERG = r'''
import sys, pyarrow.parquet as pq
from pathlib import Path
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import *
from pyiceberg.partitioning import PartitionSpec, PartitionField
from pyiceberg.transforms import DayTransform
uri, folder = sys.argv[1], Path(sys.argv[2])
cat = RestCatalog("bench", uri=uri)
cat.create_namespace_if_not_exists("bench")
schema = Schema(
    NestedField(1, "ts_utc", TimestamptzType(), required=False),
    NestedField(2, "site_id", StringType(), required=False),
    NestedField(3, "region", StringType(), required=False),
    NestedField(4, "demand_mw", DoubleType(), required=False),
    NestedField(5, "temperature_c", DoubleType(), required=False),
    NestedField(6, "wind_speed_ms", DoubleType(), required=False),
    NestedField(7, "quality_flag", IntegerType(), required=False))
spec = PartitionSpec(PartitionField(1, 1000, DayTransform(), "ts_utc_day"))
t = cat.create_table("bench.pyiceberg", schema=schema, partition_spec=spec,
                     properties={"write.parquet.compression-codec": "zstd"})
for f in sorted(folder.glob("*.parquet")):
    t.append(pq.read_table(f))
'''

DELTALAKE = r'''
import os, sys, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
from pathlib import Path
from deltalake import write_deltalake
src, dst = Path(sys.argv[1]), sys.argv[2]
files = sorted(src.glob("*.parquet"))
first = pq.read_schema(files[0])
schema = first.append(pa.field("day", pa.date32()))
def batches():
    for f in files:
        for b in pq.ParquetFile(f).iter_batches(batch_size=65536):
            yield pa.RecordBatch.from_arrays(b.columns + [pc.cast(b.column("ts_utc"), pa.date32())], schema=schema)
write_deltalake(dst, pa.RecordBatchReader.from_batches(schema, batches()), partition_by=["day"])
os._exit(0)  # deltalake's threads can abort the interpreter at exit
'''

PLAIN = r'''
import sys, pyarrow.parquet as pq
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for f in sorted(src.glob("*.parquet")):
    pq.write_table(pq.read_table(f), dst / f.name, compression="zstd")
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=2000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/floe/bench-ingest"))
    ap.add_argument("--floe", default=DEFAULT_FLOE)
    ap.add_argument("--cases", default="floe/parquet,floe/parquet+sort,floe/ndjson,pyiceberg/parquet,pyarrow/plain,floe-delta/parquet,deltalake/parquet")
    ap.add_argument("--generate-only", action="store_true")
    args = ap.parse_args()
    exit_on_sigterm()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    generate(work, args.sites, args.days)
    if args.generate_only:
        return
    rows = args.sites * args.days * 48
    first = "2024-01-01"
    last = day_after(first, args.days - 1)

    wh = Path(tempfile.mkdtemp(prefix="floe-bench-wh-"))
    try:
        with CatalogServer(args.floe, wh) as server:
            uri = server.uri
            results = []
            env = quiet_env()
            for case in args.cases.split(","):
                if case.startswith("floe/"):
                    fmt = "ndjson" if "ndjson" in case else "parquet"
                    table = case.replace("/", "_").replace("+", "_")
                    p = work / f"{table}.toml"
                    pipeline(p, uri, table, f"bench.{table}", fmt, work / fmt, sort="sort" in case)
                    secs, rss = timed([args.floe, "ingest", "--pipeline", str(p), "--from", first, "--to", last], env)
                    out = next(wh.glob(f"bench/{table}-*"))
                elif case == "floe-delta/parquet":
                    out = Path(tempfile.mkdtemp(prefix="floe-bench-delta-"))
                    p = work / "floe_delta.toml"
                    pipeline(p, uri, "floe_delta", "bench.floe_delta", "parquet", work / "parquet", sort=False,
                             delta=out)
                    secs, rss = timed([args.floe, "ingest", "--pipeline", str(p), "--from", first, "--to", last], env)
                elif case == "deltalake/parquet":
                    out = Path(tempfile.mkdtemp(prefix="floe-bench-deltalake-"))
                    secs, rss = timed([sys.executable, "-c", DELTALAKE, str(work / "parquet"), str(out / "t")])
                elif case == "pyiceberg/parquet":
                    secs, rss = timed([sys.executable, "-c", PYICEBERG, uri, str(work / "parquet")])
                    out = next(wh.glob("bench/pyiceberg*"))
                elif case == "pyarrow/plain":
                    out = Path(tempfile.mkdtemp(prefix="floe-bench-plain-"))
                    secs, rss = timed([sys.executable, "-c", PLAIN, str(work / "parquet"), str(out)])
                else:
                    raise SystemExit(f"unknown case {case}")
                mb = parquet_bytes(out) / 1e6
                results.append((case, secs, rows / secs, mb / secs, rss, mb))
                print(f"{case:20s} {secs:7.2f} s  {rows / secs / 1e6:6.2f} M rows/s  {mb / secs:7.1f} MB/s  peak RSS {rss:7.0f} MiB  ({mb:.0f} MB Parquet)", flush=True)
                if case in ("pyarrow/plain", "floe-delta/parquet", "deltalake/parquet"):
                    shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(wh, ignore_errors=True)
    print(f"rows: {rows:,} ({args.sites} sites x {args.days} days x 48)")


if __name__ == "__main__":
    main()
