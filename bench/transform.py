#!/usr/bin/env python3
"""Transform benchmark: floe's silver + gold models over the 5.76M-row benchmark table,
side by side with the same SQL run by the same DataFusion over the same data as plain
Parquet files (the cost of the table layer).

    bench/transform.py [--runs 3] [--work DIR] [--floe PATH] [--plain PATH] [--trino]

Data: the generated daily Parquet files of bench/ingest.py (2000 sites x 60 days x 48
half-hours; cached in --work). The models are bench/transform/{silver,gold}/*.sql:
silver.observations (filter, clean, derive; 4.3M rows), gold.site_daily (120k rows) and
gold.region_daily (840 rows).

  floe         `floe transform --from D1 --to D60` through `floe catalog serve` on a
               local warehouse: bronze.observations (ingested once by floe, not timed)
               read as Iceberg, results written as day-partitioned Iceberg tables,
               staged on audit branches, tested (row_count), published per layer.
               The first run creates the tables; later runs overwrite all 60 days.
  datafusion   bench/plain_parquet.rs (same DataFusion 53): the Parquet files as a
               listing table, each result written as plain Parquet (zstd) and read
               back by the next model. No catalog, no snapshots, no tests.

  floe-trino   (with --trino) the same `floe transform`, every model with `--engine trino`:
               a single-node Trino (infra/local/trino.sh, on the same 2 cores) computes
               each model into a staging table, floe commits, tests and publishes as
               above. Trino starts once, before the runs (not timed).

Each case runs in its own process under /usr/bin/time (wall time, peak RSS; for
floe-trino the RSS is floe's, not Trino's JVM), the cases alternating, --runs times.
After the runs, both floe cases' last results are compared table by table (row counts
and per-column sums). Needs the venv of infra/local/python-env.sh and release builds:
cargo build --release --bin floe --example plain_parquet; for --trino, Trino installed by
infra/local/trino.sh install ~/.cache/floe.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CatalogServer, day_after, exit_on_sigterm, generate, pipeline, quiet_env, timed_run, wait_quiet  # noqa: E402
from trino_layout import start_trino  # noqa: E402

HERE = Path(__file__).resolve().parent
FIRST_DAY = "2024-01-01"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/floe/target"))
MODELS = [HERE / "transform" / "silver" / "observations.sql",
          HERE / "transform" / "gold" / "site_daily.sql",
          HERE / "transform" / "gold" / "region_daily.sql"]


def main():
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sites", type=int, default=2000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache/floe/bench-ingest")
    ap.add_argument("--floe", default=str(TARGET / "release" / "floe"))
    ap.add_argument("--plain", default=str(TARGET / "release" / "examples" / "plain_parquet"))
    ap.add_argument("--trino", action="store_true", help="also run every model on Trino (floe-trino)")
    ap.add_argument("--trino-home", default=os.environ.get("FLOE_TRINO_HOME",
                                                           str(Path.home() / ".cache/floe/trino-476")))
    args = ap.parse_args()
    for binary in (args.floe, args.plain):
        if not os.path.exists(binary):
            raise SystemExit(f"{binary} not found: cargo build --release --bin floe --example plain_parquet")

    generate(args.work, args.sites, args.days, formats=("parquet",))
    parquet = args.work / "parquet"
    last_day = day_after(FIRST_DAY, args.days - 1)
    tmp = Path(tempfile.mkdtemp(prefix="floe-bench-transform-"))
    try:
        with CatalogServer(args.floe, tmp / "wh", tmp / "catalog.log") as server:
            p = tmp / "ingest.toml"
            pipeline(p, server.uri, "observations", "bronze.observations", "parquet", parquet, sort=False)
            print(f"ingesting {args.days} days into bronze.observations (not timed)...", file=sys.stderr)
            timed_run([args.floe, "ingest", "--pipeline", p, "--from", FIRST_DAY, "--to", last_day], quiet_env())
            floe_cmd = [args.floe, "transform", "--catalog", server.uri, "--models", HERE / "transform",
                        "--from", FIRST_DAY, "--to", last_day]
            cases = ["floe", "datafusion"]
            trino_cmd = None
            if args.trino:
                trino_url = start_trino(args.trino_home, tmp / "trino", server.uri)
                on_trino = tmp / "trino.toml"
                on_trino.write_text(f'[catalog]\nuri = "{server.uri}"\n\n[transform]\nmodels = "{HERE / "transform"}"\n\n'
                                    f'[engines.trino]\nuri = "{trino_url}"\n')
                trino_cmd = [args.floe, "transform", "--pipeline", on_trino, "--engine", "trino",
                             "--from", FIRST_DAY, "--to", last_day]
                cases.append("floe-trino")
            results = {case: [] for case in cases}
            sums = {}
            for run in range(args.runs):
                for case in cases:
                    wait_quiet(20)
                    if case in ("floe", "floe-trino"):
                        t = timed_run(floe_cmd if case == "floe" else trino_cmd, quiet_env(), timeout=3600)
                        if run == args.runs - 1:
                            sums[case] = table_sums(server.uri)
                    else:
                        out = tmp / "plain"
                        shutil.rmtree(out, ignore_errors=True)
                        t = timed_run([args.plain, "--bronze", parquet, "--table", "bronze.observations",
                                       "--out", out, *MODELS], quiet_env(), timeout=1800)
                    results[case].append(t)
                    print(f"run {run + 1} {case:<10} {t.wall:6.2f} s  {t.rss:7.1f} MiB peak  "
                          f"(user {t.user:.1f} s, sys {t.sys:.1f} s)", flush=True)
            print(f"\n{args.sites} sites x {args.days} days = {args.sites * args.days * 48:,} bronze rows; "
                  f"{args.runs} runs each, alternating; median (min-max)")
            med = {}
            for case, ts in results.items():
                walls = [t.wall for t in ts]
                rss = [t.rss for t in ts]
                med[case] = statistics.median(walls)
                print(f"  {case:<10} {med[case]:6.2f} s ({min(walls):.2f}-{max(walls):.2f})  "
                      f"peak RSS {statistics.median(rss):6.1f} MiB ({min(rss):.0f}-{max(rss):.0f})")
            ratios = [f.wall / d.wall for f, d in zip(results["floe"], results["datafusion"])]
            print(f"  floe / datafusion: median {med['floe'] / med['datafusion']:.2f}x "
                  f"(run by run {', '.join(f'{r:.2f}' for r in ratios)})")
            if args.trino:
                ratios = [t.wall / f.wall for t, f in zip(results["floe-trino"], results["floe"])]
                print(f"  floe-trino / floe: median {med['floe-trino'] / med['floe']:.2f}x "
                      f"(run by run {', '.join(f'{r:.2f}' for r in ratios)})")
                same = sums["floe"] == sums["floe-trino"]
                print(f"  results of the last runs: {'the same' if same else 'DIFFERENT'} on both engines")
                for table, figures in sums["floe"].items():
                    print(f"    {table}: {figures}" + ("" if same else f" / trino {sums['floe-trino'][table]}"))
                if not same:
                    raise SystemExit("floe on Trino and floe on DataFusion published different tables")
            print("\nfloe's last run:\n" + results["floe"][-1].stdout)
            if args.trino:
                print("floe-trino's last run:\n" + results["floe-trino"][-1].stdout)
    finally:
        if args.trino:
            subprocess.run(["bash", str(HERE.parent / "infra/local/trino.sh"), "stop", str(tmp / "trino")],
                           capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


def table_sums(uri: str) -> dict:
    """Row count and, per numeric column, its sum rounded to 6 significant digits (a
    float sum's last bits depend on the order rows are added in), per model table."""
    from pyiceberg.catalog.rest import RestCatalog
    import pyarrow.compute as pc

    cat = RestCatalog("bench", uri=uri)
    out = {}
    for table in ("silver.observations", "gold.site_daily", "gold.region_daily"):
        arrow = cat.load_table(table).scan().to_arrow()
        figures = {"rows": arrow.num_rows}
        for field in arrow.schema:
            if str(field.type) in ("double", "float", "int32", "int64"):
                total = pc.sum(arrow.column(field.name)).as_py() or 0
                figures[field.name] = float(f"{total:.6g}")
        out[table] = figures
    return out


if __name__ == "__main__":
    main()
