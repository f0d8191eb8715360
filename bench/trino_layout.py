#!/usr/bin/env python3
"""Trino over floe's tables vs the same tables written by Trino: does floe's file layout
(day partitions, file sizes, row groups, statistics, zstd) make Trino slower?

    bench/trino_layout.py [--runs 5] [--sites 1000] [--days 30] [--floe PATH] [--trino-home DIR]

Data: bench/ingest.py's generated daily Parquet files (cached in --work). floe ingests
them into bronze.observations and runs bench/transform's models (silver.observations,
gold.site_daily, gold.region_daily) through `floe catalog serve` (local warehouse): not
timed. Trino (infra/local/trino.sh, one node) then copies bronze.observations and
gold.site_daily with CREATE TABLE AS, partitioned as floe's are (day(ts_utc)), so the
twins hold the same rows written by Trino's own writer.

Timed: each query runs on floe's table and on Trino's twin, alternating, --runs times
after one warm-up each; the figure is Trino's own elapsed time for the query
(queryStats.elapsedTime, so client overhead is out). The ratio is floe's median over
Trino's median per query; the target is at most 1.10.

Needs the venv of infra/local/python-env.sh (with the `trino` client) and Trino installed
(infra/local/trino.sh install ~/.cache/floe). Any floe build works (the floe steps are
not timed); a release build prepares the data faster.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CatalogServer, day_after, exit_on_sigterm, free_port, generate, pipeline, quiet_env, timed_run  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIRST_DAY = "2024-01-01"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/floe/target"))

# (name, table key, SQL with {t} for the table): the shapes dashboards send.
QUERIES = [
    ("bronze: full aggregate by region", "bronze",
     "SELECT region, count(*), avg(demand_mw), max(temperature_c) FROM {t} GROUP BY region"),
    ("bronze: one UTC day", "bronze",
     "SELECT site_id, max(demand_mw) FROM {t} WHERE ts_utc >= TIMESTAMP '{d} 00:00:00 UTC' "
     "AND ts_utc < TIMESTAMP '{d} 00:00:00 UTC' + INTERVAL '1' DAY GROUP BY site_id"),
    ("bronze: one site, all days", "bronze",
     "SELECT date_trunc('day', ts_utc), avg(demand_mw) FROM {t} WHERE site_id = 'S00042' GROUP BY 1"),
    ("bronze: top readings of a week", "bronze",
     "SELECT site_id, ts_utc, demand_mw FROM {t} WHERE ts_utc >= TIMESTAMP '{d} 00:00:00 UTC' "
     "AND ts_utc < TIMESTAMP '{d} 00:00:00 UTC' + INTERVAL '7' DAY ORDER BY demand_mw DESC LIMIT 20"),
    ("gold: region energy per day", "gold",
     "SELECT ts_utc, region, sum(energy_mwh) FROM {t} GROUP BY 1, 2"),
    ("gold: one site's month", "gold",
     "SELECT * FROM {t} WHERE site_id = 'S00042' ORDER BY ts_utc"),
]
TABLES = {"bronze": ("bronze.observations", "twin.observations"),
          "gold": ("gold.site_daily", "twin.site_daily")}


def canonical(rows: list) -> list[str]:
    """Rows comparable across layouts: floats to 9 significant digits (a sum's last bits
    depend on the order files are read in)."""
    def cell(v):
        return f"{v:.9g}" if isinstance(v, float) else repr(v)
    return sorted("|".join(cell(v) for v in row) for row in rows)


def trino_run(conn, sql: str) -> tuple[list, float]:
    """Rows and Trino's elapsed seconds for the query."""
    cur = conn.cursor()
    cur.execute(sql)
    rows = cur.fetchall()
    stats = cur.stats
    elapsed = stats.get("elapsedTimeMillis")
    if elapsed is None:
        raise SystemExit(f"no elapsed time in Trino's stats: {stats}")
    return rows, elapsed / 1000


def start_trino(home: str, work: Path, uri: str) -> str:
    port = free_port()
    out = subprocess.run(["bash", str(ROOT / "infra/local/trino.sh"), "start", str(work), str(port), uri,
                          "warehouse=floe"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "FLOE_TRINO_HOME": home, "TRINO_HEAP": "3G"})
    if out.returncode != 0:
        raise SystemExit(f"trino.sh start failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout.strip().splitlines()[-1]


def main():
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache/floe/bench-ingest")
    ap.add_argument("--floe", default=str(TARGET / "release" / "floe"))
    ap.add_argument("--trino-home", default=os.environ.get("FLOE_TRINO_HOME",
                                                           str(Path.home() / ".cache/floe/trino-476")))
    args = ap.parse_args()
    if not os.path.exists(args.floe):
        raise SystemExit(f"{args.floe} not found (cargo build --bin floe, and pass --floe)")
    import trino

    generate(args.work, args.sites, args.days, formats=("parquet",))
    last_day = day_after(FIRST_DAY, args.days - 1)
    mid_day = day_after(FIRST_DAY, args.days // 2)
    tmp = Path(tempfile.mkdtemp(prefix="floe-bench-trino-"))
    trino_work = tmp / "trino"
    try:
        with CatalogServer(args.floe, tmp / "wh", tmp / "catalog.log") as server:
            p = tmp / "ingest.toml"
            pipeline(p, server.uri, "observations", "bronze.observations", "parquet", args.work / "parquet",
                     sort=False)
            print(f"floe: ingesting {args.days} days and running the models (not timed)...", file=sys.stderr)
            for cmd in ([args.floe, "ingest", "--pipeline", p, "--from", FIRST_DAY, "--to", last_day],
                        [args.floe, "transform", "--catalog", server.uri, "--models", HERE / "transform",
                         "--from", FIRST_DAY, "--to", last_day]):
                timed_run(cmd, quiet_env(), timeout=3600)
            url = start_trino(args.trino_home, trino_work, server.uri)
            host, port = url.removeprefix("http://").split(":")
            conn = trino.dbapi.connect(host=host, port=int(port), user="bench", catalog="iceberg")
            # The coordinator answers before its own worker has announced itself.
            deadline = time.monotonic() + 120
            while True:
                try:
                    trino_run(conn, "SELECT count(*) FROM system.runtime.nodes")
                    break
                except trino.exceptions.TrinoQueryError as e:
                    if e.error_name != "NO_NODES_AVAILABLE" or time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            print("trino: writing the twins with CREATE TABLE AS (not timed)...", file=sys.stderr)
            trino_run(conn, "CREATE SCHEMA IF NOT EXISTS twin")
            for floe_table, twin in TABLES.values():
                trino_run(conn, f"CREATE TABLE {twin} WITH (partitioning = ARRAY['day(ts_utc)']) "
                                f"AS SELECT * FROM {floe_table}")
            layout = {}
            for key, (floe_table, twin) in TABLES.items():
                for t in (floe_table, twin):
                    ns, name = t.split(".")
                    files, rows, size = trino_run(
                        conn, f'SELECT count(*), sum(record_count), sum(file_size_in_bytes) '
                              f'FROM {ns}."{name}$files"')[0][0]
                    layout[t] = (files, rows, size)
            results: dict[str, dict[str, list[float]]] = {}
            for name, key, sql in QUERIES:
                floe_table, twin = TABLES[key]
                results[name] = {"floe": [], "trino": []}
                texts = {case: sql.format(t=t, d=mid_day) for case, t in (("floe", floe_table), ("trino", twin))}
                answers = {}
                for case, text in texts.items():  # warm-up, and the answers must agree
                    answers[case] = canonical(trino_run(conn, text)[0])
                if answers["floe"] != answers["trino"]:
                    raise SystemExit(f"{name}: floe's table and Trino's twin answer differently")
                for _ in range(args.runs):
                    for case, text in texts.items():
                        results[name][case].append(trino_run(conn, text)[1])
                f, tr = (statistics.median(results[name][c]) for c in ("floe", "trino"))
                print(f"{name:<36} floe {f * 1000:7.0f} ms  trino {tr * 1000:7.0f} ms  ratio {f / tr:5.2f}",
                      flush=True)
            print(f"\n{args.sites} sites x {args.days} days = {args.sites * args.days * 48:,} bronze rows; "
                  f"{args.runs} runs each, alternating; Trino's elapsed time, median")
            print("\nlayout (files, rows, bytes):")
            for t, (files, rows, size) in layout.items():
                print(f"  {t:<22} {files:5d} files  {rows:10,d} rows  {size / 2**20:8.1f} MiB")
            ratios = []
            for name, r in results.items():
                f, tr = statistics.median(r["floe"]), statistics.median(r["trino"])
                ratios.append(f / tr)
            print(f"\nfloe / trino per query: {', '.join(f'{x:.2f}' for x in ratios)}; "
                  f"geometric mean {statistics.geometric_mean(ratios):.2f}")
    finally:
        subprocess.run(["bash", str(ROOT / "infra/local/trino.sh"), "stop", str(trino_work)],
                       capture_output=True, timeout=120)
        time.sleep(1)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
