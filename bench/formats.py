#!/usr/bin/env python3
"""Ingest by input format: floe against DuckDB and pyiceberg, alternating rounds.

    bench/formats.py [--sites 2000] [--days 60] [--pairs 3] [--formats ndjson,csv,parquet]
                     [--floe PATH] [--work DIR]

The data of bench/ingest.py (2000 sites x 60 days x 48 half-hours = 5.76M rows, one file
per day) as NDJSON, CSV (made once from the Parquet files) and Parquet. Per format, each
round runs every case once, each in its own process under /usr/bin/time -v, in turn:

  floe/FMT            floe ingest of the files into a day-partitioned Iceberg table
                      (local warehouse, `floe catalog serve`)
  duckdb/FMT          DuckDB's read_json / read_csv (the columns and types given, as floe's
                      job gives them) -> COPY ... (FORMAT parquet, PARTITION_BY (day),
                      COMPRESSION zstd): plain partitioned Parquet, no table format
  pyiceberg/FMT       pyarrow.json / pyarrow.csv (explicit schema) or pyarrow.parquet reading
                      every file, then ONE pyiceberg append of the whole dataset (its fastest
                      shape) into a day-partitioned table of the same catalog
  pyiceberg-days/parquet  one pyiceberg append per day (bench/ingest.py's shape)
  arrow-rs/parquet    bench/plain_copy.rs: arrow-rs reading each file and writing it again
                      (zstd level 1, one thread per core), no table format: the floor
                      (--plain-copy PATH; `cargo build --release --example plain_copy`)

Prints every run (wall, user+sys CPU, peak RSS, rows written, checked against the input)
and, per peer, the ratio peer wall / floe wall of each round and their median. Needs the
venv of bench/bench-env.sh (duckdb, pyiceberg, pyarrow) and a release build of floe.
"""
import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DEFAULT_FLOE, CatalogServer, day_after, exit_on_sigterm, generate, median,  # noqa: E402
                    parquet_rows, pipeline, quiet_env, timed_run)

COLUMNS = [("site_id", "VARCHAR"), ("region", "VARCHAR"), ("demand_mw", "DOUBLE"),
           ("temperature_c", "DOUBLE"), ("wind_speed_ms", "DOUBLE"), ("quality_flag", "INTEGER")]

DUCKDB = r'''
import sys, duckdb
src, dst, fmt = sys.argv[1], sys.argv[2], sys.argv[3]
cols = {"ts": "TIMESTAMPTZ", "site_id": "VARCHAR", "region": "VARCHAR", "demand_mw": "DOUBLE",
        "temperature_c": "DOUBLE", "wind_speed_ms": "DOUBLE", "quality_flag": "INTEGER"}
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
spec = "{" + ", ".join(f"'{k}': '{v}'" for k, v in cols.items()) + "}"
if fmt == "ndjson":
    reader = f"read_json('{src}/*.ndjson', format = 'newline_delimited', columns = {spec})"
else:
    reader = f"read_csv('{src}/*.csv', header = true, columns = {spec})"
con.execute(f"""COPY (SELECT ts AS ts_utc, site_id, region, demand_mw, temperature_c, wind_speed_ms,
                             quality_flag, CAST(ts AS DATE) AS day FROM {reader})
               TO '{dst}' (FORMAT parquet, PARTITION_BY (day), COMPRESSION zstd)""")
'''

PYICEBERG = r'''
import sys
from pathlib import Path
import pyarrow as pa, pyarrow.csv as pc, pyarrow.json as pj, pyarrow.parquet as pq
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform
from pyiceberg.types import DoubleType, IntegerType, NestedField, StringType, TimestamptzType
uri, folder, fmt, name, per_day = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1"
arrow = pa.schema([("ts_utc", pa.timestamp("us", tz="UTC")), ("site_id", pa.string()), ("region", pa.string()),
                   ("demand_mw", pa.float64()), ("temperature_c", pa.float64()), ("wind_speed_ms", pa.float64()),
                   ("quality_flag", pa.int32())])
text = pa.schema([("ts", pa.timestamp("us", tz="UTC"))] + list(arrow)[1:])
def read(f):
    if fmt == "parquet":
        return pq.read_table(f)
    if fmt == "ndjson":
        t = pj.read_json(f, parse_options=pj.ParseOptions(explicit_schema=text))
    else:
        t = pc.read_csv(f, convert_options=pc.ConvertOptions(column_types=text))
    return t.rename_columns(["ts_utc"] + t.column_names[1:]).cast(arrow)
cat = RestCatalog("bench", uri=uri)
cat.create_namespace_if_not_exists("bench")
schema = Schema(*[NestedField(i + 1, n, t, required=False) for i, (n, t) in enumerate([
    ("ts_utc", TimestamptzType()), ("site_id", StringType()), ("region", StringType()), ("demand_mw", DoubleType()),
    ("temperature_c", DoubleType()), ("wind_speed_ms", DoubleType()), ("quality_flag", IntegerType())])])
spec = PartitionSpec(PartitionField(1, 1000, DayTransform(), "ts_utc_day"))
table = cat.create_table(f"bench.{name}", schema=schema, partition_spec=spec,
                         properties={"write.parquet.compression-codec": "zstd"})
files = sorted(folder.glob(f"*.{fmt}"))
if per_day:
    for f in files:
        table.append(read(f))
else:
    table.append(pa.concat_tables([read(f) for f in files]))
'''


def make_csv(work: Path):
    """CSV files made once from the Parquet ones: `ts` as RFC 3339 UTC text, floats as
    pyarrow writes them."""
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq
    out = work / "csv"
    stamp = work / "csv.done"
    if stamp.exists():
        return
    out.mkdir(exist_ok=True)
    for f in sorted((work / "parquet").glob("*.parquet")):
        t = pq.read_table(f)
        ts = pc.strftime(t.column("ts_utc"), format="%Y-%m-%dT%H:%M:%SZ")
        t = t.set_column(0, "ts", ts)
        pcsv.write_csv(t, out / f"{f.stem}.csv")
    stamp.touch()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=2000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--pairs", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--formats", default="ndjson,csv,parquet")
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/floe/bench-ingest"))
    ap.add_argument("--floe", default=DEFAULT_FLOE)
    ap.add_argument("--plain-copy", default=str(Path(DEFAULT_FLOE).parent / "examples" / "plain_copy"),
                    help="the plain_copy example binary (the arrow-rs/parquet case is skipped without it)")
    args = ap.parse_args()
    exit_on_sigterm()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    generate(work, args.sites, args.days)
    formats = args.formats.split(",")
    if "csv" in formats:
        make_csv(work)
    rows = args.sites * args.days * 48
    first = "2024-01-01"
    last = day_after(first, args.days - 1)
    # Only the generated days (the folders may hold more from a bigger run).
    days = {day_after(first, d) for d in range(args.days)}
    wh = Path(tempfile.mkdtemp(prefix="floe-bench-wh-"))
    scratch = Path(tempfile.mkdtemp(prefix="floe-bench-formats-"))
    walls = {}
    try:
        with CatalogServer(args.floe, wh) as server:
            for fmt in formats:
                src = scratch / f"in-{fmt}"
                src.mkdir()
                for f in (work / fmt).glob(f"*.{fmt}"):
                    if f.stem in days:
                        os.symlink(f, src / f.name)
                cases = [f"floe/{fmt}", f"duckdb/{fmt}", f"pyiceberg/{fmt}"]
                if fmt == "parquet":
                    cases.remove("duckdb/parquet")
                    cases.append("pyiceberg-days/parquet")
                    if Path(args.plain_copy).exists():
                        cases.append("arrow-rs/parquet")
                for rnd in range(1, args.pairs + 1):
                    for case in cases:
                        name = f"{case.replace('/', '_').replace('-', '_')}_{rnd}"
                        out = scratch / name
                        if case.startswith("floe/"):
                            p = scratch / f"{name}.toml"
                            pipeline(p, server.uri, name, f"bench.{name}", fmt, src, sort=False)
                            t = timed_run([args.floe, "ingest", "--pipeline", p, "--from", first, "--to", last],
                                          quiet_env())
                            out = next(wh.glob(f"bench/{name}-*"))
                        elif case.startswith("duckdb/"):
                            t = timed_run([sys.executable, "-c", DUCKDB, src, out, fmt])
                        elif case.startswith("arrow-rs/"):
                            t = timed_run([args.plain_copy, src, out])
                        else:
                            per_day = "1" if case.startswith("pyiceberg-days") else "0"
                            t = timed_run([sys.executable, "-c", PYICEBERG, server.uri, src, fmt, name, per_day])
                            out = next(wh.glob(f"bench/{name}-*"))
                        written = parquet_rows(out / "data" if (out / "data").exists() else out)
                        check = "ok" if written == rows else f"WRONG: {written:,} rows"
                        walls.setdefault(case, []).append(t.wall)
                        print(f"round {rnd}  {case:24s} {t.wall:7.2f} s  cpu {t.user + t.sys:6.2f} s  "
                              f"{rows / t.wall / 1e6:5.2f} M rows/s  peak RSS {t.rss:6.0f} MiB  rows {check}",
                              flush=True)
                        shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(wh, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{rows:,} rows ({args.sites} sites x {args.days} days x 48); {args.pairs} alternating rounds")
    for case, ws in walls.items():
        if case.startswith("floe/"):
            continue
        fmt = case.split("/")[1]
        ratios = [w / f for w, f in zip(ws, walls[f"floe/{fmt}"])]
        shown = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"{case:24s} / floe/{fmt}: median {median(ratios):.2f}x  ({shown})")


if __name__ == "__main__":
    main()
