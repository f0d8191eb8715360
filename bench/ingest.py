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

Prints rows/s, MB/s of Parquet written and peak RSS per case. Needs the venv of
infra/local/python-env.sh (pyiceberg, pyarrow) and a release build of floe.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGIONS = [f"R{i:02d}" for i in range(14)]


def generate(work: Path, sites: int, days: int):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    stamp = work / f"data-{sites}x{days}.done"
    if stamp.exists():
        return
    for sub in ("ndjson", "parquet"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    start = np.datetime64("2024-01-01T00:00:00", "us")
    rng = np.random.default_rng(42)
    site_ids = np.array([f"S{i:05d}" for i in range(sites)])
    regions = np.array([REGIONS[i % 14] for i in range(sites)])
    for d in range(days):
        ts = start + np.timedelta64(d, "D") + np.arange(48) * np.timedelta64(30, "m")
        ts_all = np.repeat(ts[None, :], sites, axis=0).ravel()
        n = ts_all.size
        table = pa.table({
            "ts_utc": pa.array(ts_all, pa.timestamp("us", tz="UTC")),
            "site_id": pa.array(np.repeat(site_ids, 48)),
            "region": pa.array(np.repeat(regions, 48)),
            "demand_mw": pa.array(rng.normal(50, 10, n)),
            "temperature_c": pa.array(rng.normal(10, 5, n)),
            "wind_speed_ms": pa.array(rng.gamma(2, 3, n)),
            "quality_flag": pa.array(rng.integers(0, 4, n).astype("int32")),
        })
        day = (start + np.timedelta64(d, "D")).astype("datetime64[D]")
        pq.write_table(table, work / "parquet" / f"{day}.parquet", compression="zstd")
        with open(work / "ndjson" / f"{day}.ndjson", "w") as f:
            cols = table.to_pydict()
            iso = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in cols["ts_utc"]]
            for i in range(n):
                f.write(json.dumps({
                    "ts": iso[i], "site_id": cols["site_id"][i], "region": cols["region"][i],
                    "demand_mw": cols["demand_mw"][i], "temperature_c": cols["temperature_c"][i],
                    "wind_speed_ms": cols["wind_speed_ms"][i], "quality_flag": cols["quality_flag"][i],
                }) + "\n")
        print(f"  generated {day}", file=sys.stderr)
    stamp.touch()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def timed(cmd, env=None):
    """Runs cmd under /usr/bin/time -v; returns (seconds, peak RSS MiB)."""
    out = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
        raise SystemExit(f"benchmark step failed: {' '.join(cmd)}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", out.stderr)
    h, m, s = wall.groups()
    secs = int(h or 0) * 3600 + int(m) * 60 + float(s)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1)) / 1024
    return secs, rss


def parquet_bytes(folder: Path):
    return sum(p.stat().st_size for p in folder.rglob("*.parquet"))


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

PLAIN = r'''
import sys, pyarrow.parquet as pq
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for f in sorted(src.glob("*.parquet")):
    pq.write_table(pq.read_table(f), dst / f.name, compression="zstd")
'''


def pipeline(path: Path, uri: str, table: str, fmt: str, folder: Path, sort: bool):
    ev = '{ kind = "offset", column = "ts" }' if fmt == "ndjson" else '{ kind = "offset", column = "ts_utc" }'
    ts_field = "" if fmt == "ndjson" else ""
    path.write_text(f'''[catalog]
uri = "{uri}"

[[job]]
name = "{table}"
table = "bench.{table}"
source = {{ path = "{folder}/{{date}}.{fmt}", format = "{fmt}" }}
event_time = {ev}
columns = [
  {{ name = "site_id", type = "string", required = true }},
  {{ name = "region", type = "string" }},
  {{ name = "demand_mw", type = "double" }},
  {{ name = "temperature_c", type = "double" }},
  {{ name = "wind_speed_ms", type = "double" }},
  {{ name = "quality_flag", type = "int" }},
]
sort = {'["site_id", "ts_utc"]' if sort else "[]"}
schema_drift = "ignore"
{ts_field}''')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=2000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/floe/bench-ingest"))
    ap.add_argument("--floe", default=str(ROOT / "target" / "release" / "floe"))
    ap.add_argument("--cases", default="floe/parquet,floe/parquet+sort,floe/ndjson,pyiceberg/parquet,pyarrow/plain")
    ap.add_argument("--generate-only", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    generate(work, args.sites, args.days)
    if args.generate_only:
        return
    rows = args.sites * args.days * 48
    first = "2024-01-01"
    last = time.strftime("%Y-%m-%d", time.gmtime(time.mktime(time.strptime(first, "%Y-%m-%d")) + (args.days - 1) * 86400 + 43200))

    wh = Path(tempfile.mkdtemp(prefix="floe-bench-wh-"))
    port = free_port()
    server = subprocess.Popen([args.floe, "catalog", "serve", "--listen", f"127.0.0.1:{port}", "--warehouse", str(wh)],
                              stderr=subprocess.DEVNULL, env={**os.environ, "FLOE_LOG": "warn"})
    uri = f"http://127.0.0.1:{port}"
    try:
        import urllib.request
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{uri}/v1/config", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        results = []
        env = {**os.environ, "FLOE_LOG": "warn"}
        for case in args.cases.split(","):
            if case.startswith("floe/"):
                fmt = "ndjson" if "ndjson" in case else "parquet"
                table = case.replace("/", "_").replace("+", "_")
                p = work / f"{table}.toml"
                pipeline(p, uri, table, fmt, work / fmt, sort="sort" in case)
                secs, rss = timed([args.floe, "ingest", "--pipeline", str(p), "--from", first, "--to", last], env)
                out = next(wh.glob(f"bench/{table}-*"))
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
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        shutil.rmtree(wh, ignore_errors=True)
    print(f"rows: {rows:,} ({args.sites} sites x {args.days} days x 48)")


if __name__ == "__main__":
    main()
