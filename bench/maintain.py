#!/usr/bin/env python3
"""Maintenance benchmark: `floe compact` and `floe expire-snapshots` vs Spark 3.5's
rewrite_data_files and expire_snapshots (Iceberg 1.10), same table.

    bench/maintain.py [--floe PATH] [--min-input-files 5,2] [--repeat 3] [--spark-repeat 1]
                      [--scale 10] [--cases floe,spark,scale] [--wait-quiet S] [--json-out FILE]

The table (built once per run in a fresh warehouse, through `floe catalog serve`):
  - one `floe ingest` of the 60 daily Parquet files of bench/ingest.py (2000 sites x
    60 days x 48 half-hours = 5.76M rows): 60 files, one per day partition, 1 snapshot;
  - then --appends (300) tiny pyiceberg appends of --append-rows (30) rows, each into one
    day (seeded random days by default, --spread even for 5 per day): 301 snapshots,
    360 files.
The warehouse folder (metadata, data and the catalog's SQLite file) is then copied
aside with the server stopped, and put back at the same path before every case, so
each case starts from an identical table.

Cases, each process timed with /usr/bin/time -v (wall time, peak RSS, CPU):
  floe      `floe compact` (+ `--min-input-files N`), then `floe expire-snapshots
            --older-than 0s --retain-last 1`; --repeat times (median reported), plus
            one `floe compact --dry-run` (planning only)
  spark     per --min-input-files value, --spark-repeat spark-submit runs (local[2],
            --spark-driver-memory 2g; median reported): rewrite_data_files with options
            min-input-files=N and target-file-size-bytes=134217728 (floe's default;
            Spark's own is 512 MiB: both make one file per day here), then
            expire_snapshots(older_than => now, retain_last => 1); each procedure timed
            inside the driver once the session is up and has loaded the table (bench/
            maintain_spark.py); peak RSS of the whole process (the JVM)
  scale     the table --scale (10) times larger: --scale x 60 days of the same
            generator (one floe ingest) and the same appends repeated in every 60-day
            block (each append then writes --scale files): the floe cases again
            (--repeat times), for compaction's peak RSS at 1x vs Nx

The floe binary is copied aside at the start (a rebuild during the run cannot mix two
builds). --wait-quiet waits, before each timed step, for other processes to go idle.

Needs the venv of infra/local/python-env.sh (pyiceberg, pyarrow), a release build of
floe, and for the Spark cases a python with pyspark 3.5 (--spark-python, its
spark-submit next to it), the Iceberg runtime and AWS bundle jars from Maven Central
(--spark-jars, comma-separated; default: $FLOE_SPARK_JARS, else what
`infra/local/spark.sh install ~/.cache/floe` prints) and Java 17.
"""
import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_FLOE, CatalogServer, day_after, exit_on_sigterm, generate, pipeline, quiet_env, timed_run, wait_quiet  # noqa: E402

HERE = Path(__file__).resolve().parent
FIRST_DAY = "2024-01-01"
SITES = 2000
BASE_DAYS = 60
TABLE = "bench.demand"
TARGET_FILE_SIZE = 134217728  # floe's default; passed to Spark too
CACHE = Path(os.path.expanduser("~/.cache/floe"))


def append_days(appends: int, days: int, spread: str, seed: int = 7):
    """The day (0-based) each tiny append goes to."""
    if spread == "even":
        return [i % days for i in range(appends)]
    rng = random.Random(seed)
    return [rng.randrange(days) for _ in range(appends)]


def tiny_appends(uri: str, days_of: list, scale: int, rows: int):
    """One pyiceberg append per entry of days_of, `rows` rows into that day of every
    60-day block (scale blocks): the table's own Arrow schema, so the floe columns
    (_ingest_time, _source, _hash) are filled too."""
    import numpy as np
    import pyarrow as pa
    from pyiceberg.catalog.rest import RestCatalog

    table = RestCatalog("bench", uri=uri).load_table(TABLE)
    schema = table.schema().as_arrow()
    rng = np.random.default_rng(11)
    start = np.datetime64(f"{FIRST_DAY}T00:00:00", "us")
    for i, day in enumerate(days_of):
        blocks = [day + BASE_DAYS * k for k in range(scale)]
        n = rows * len(blocks)
        ts = np.concatenate([start + np.timedelta64(d, "D")
                             + rng.integers(0, 48, rows) * np.timedelta64(30, "m") for d in blocks])
        sites = rng.integers(0, SITES, n)
        now = np.datetime64(int(time.time() * 1e6), "us")
        batch = pa.table({
            "ts_utc": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "site_id": pa.array([f"S{s:05d}" for s in sites], pa.large_string()),
            "region": pa.array([f"R{s % 14:02d}" for s in sites], pa.large_string()),
            "demand_mw": pa.array(rng.normal(50, 10, n)),
            "temperature_c": pa.array(rng.normal(10, 5, n)),
            "wind_speed_ms": pa.array(rng.gamma(2, 3, n)),
            "quality_flag": pa.array(rng.integers(0, 4, n).astype("int32")),
            "_ingest_time": pa.array(np.full(n, now), pa.timestamp("us", tz="UTC")),
            "_source": pa.array([f"bench/maintain append {i}"] * n, pa.large_string()),
            "_hash": pa.array([rng.bytes(16) for _ in range(n)], pa.binary(16)),
        }, schema=schema)
        table.append(batch)
        if (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(days_of)} appends", file=sys.stderr, flush=True)


def status(floe: str, uri: str) -> dict:
    st = json.loads(timed_run([floe, "status", TABLE, "--catalog", uri, "--json"], quiet_env()).stdout)[0]
    return {k: st[k] for k in ("snapshots", "data_files", "data_bytes", "records", "partitions",
                               "max_files_per_partition", "metadata_file_bytes")}


def files_on_disk(wh: Path) -> dict:
    """Files under the tables' data/ and metadata/ folders, counted on disk (without
    the hidden .crc files Spark's Hadoop file system writes next to its own)."""
    out = {}
    for kind in ("data", "metadata"):
        files = [p for p in wh.glob(f"*/*/{kind}/**/*") if p.is_file() and not p.name.startswith(".")]
        out[kind] = len(files)
        out[f"{kind}_bytes"] = sum(p.stat().st_size for p in files)
    return out


def restore(snapshot: Path, wh: Path):
    """Puts the pristine warehouse back at the same path (metadata holds absolute paths)."""
    shutil.rmtree(wh, ignore_errors=True)
    subprocess.run(["cp", "-a", str(snapshot), str(wh)], check=True)


def build(args, data: Path, days: int, scale: int, wh: Path, snapshot: Path, log: Path) -> dict:
    """Builds the table in a fresh warehouse and copies it aside; returns its figures."""
    shutil.rmtree(wh, ignore_errors=True)
    shutil.rmtree(snapshot, ignore_errors=True)
    with CatalogServer(args.floe, wh, log) as server:
        p = wh.parent / f"pipeline-{scale}x.toml"
        pipeline(p, server.uri, "demand", TABLE, "parquet", data, sort=False)
        ing = timed_run([args.floe, "ingest", "--pipeline", p, "--from", FIRST_DAY,
                         "--to", day_after(FIRST_DAY, days - 1)], quiet_env(), timeout=1800)
        print(f"  floe ingest of {days} days: {ing.wall:.1f} s, peak RSS {ing.rss:.0f} MiB", file=sys.stderr)
        t = time.monotonic()
        tiny_appends(server.uri, append_days(args.appends, BASE_DAYS, args.spread), scale, args.append_rows)
        appends_s = time.monotonic() - t
        print(f"  {args.appends} pyiceberg appends: {appends_s:.1f} s", file=sys.stderr)
        st = status(args.floe, server.uri)
    subprocess.run(["cp", "-a", str(wh), str(snapshot)], check=True)
    st.update(ingest_s=round(ing.wall, 2), ingest_rss_mib=round(ing.rss), appends_s=round(appends_s, 1),
              days=days, appends=args.appends, rows_per_append=args.append_rows * scale,
              files_on_disk=files_on_disk(wh))
    return st


def floe_cases(args, min_input: int, wh: Path, snapshot: Path, log: Path, label: str, repeat: int) -> list:
    """compact (+ expire) --repeat times on a fresh copy each; one row per command, median run."""
    runs, busy = [], []
    for _ in range(repeat):
        restore(snapshot, wh)
        with CatalogServer(args.floe, wh, log) as server:
            before = status(args.floe, server.uri)
            cmd_c = [args.floe, "compact", TABLE, "--catalog", server.uri, "--min-input-files", min_input, "--json"]
            cmd_e = [args.floe, "expire-snapshots", TABLE, "--catalog", server.uri, "--older-than", "0s",
                     "--retain-last", "1", "--json"]
            busy.append(wait_quiet(args.wait_quiet))
            c = timed_run(cmd_c, quiet_env(), timeout=3600)
            crep = json.loads(c.stdout)
            mid = status(args.floe, server.uri)
            busy.append(wait_quiet(args.wait_quiet))
            e = timed_run(cmd_e, quiet_env(), timeout=3600)
            erep = json.loads(e.stdout)
            after = status(args.floe, server.uri)
        runs.append((c, crep, e, erep, before, mid, after, files_on_disk(wh)))
    rows = []
    order = sorted(range(repeat), key=lambda i: runs[i][0].wall)
    c, crep, _, _, before, mid, _, _ = runs[order[repeat // 2]]
    rows.append({
        "case": f"{label} floe compact --min-input-files {min_input}", "tool": "floe", "step": "compact",
        "scale": label, "min_input_files": min_input, "wall_s": c.wall, "rss_mib": c.rss, "cpu_s": c.user + c.sys,
        "walls_s": [r[0].wall for r in runs], "rss_all_mib": [r[0].rss for r in runs],
        "inner_s": crep["duration_ms"] / 1000, "files_before": before["data_files"], "files_after": mid["data_files"],
        "rows_before": before["records"], "rows_after": mid["records"], "bytes_after": mid["data_bytes"],
        "snapshots_committed": len(crep["snapshots"]), "partitions_compacted": crep["partitions_compacted"],
        "cmd": " ".join(map(str, cmd_c)), "busy_before": busy[0::2],
    })
    order = sorted(range(repeat), key=lambda i: runs[i][2].wall)
    _, _, e, erep, _, mid, after, disk = runs[order[repeat // 2]]
    rows.append({
        "case": f"{label} floe expire-snapshots (after compact --min-input-files {min_input})", "tool": "floe",
        "step": "expire", "scale": label, "min_input_files": min_input, "wall_s": e.wall, "rss_mib": e.rss,
        "cpu_s": e.user + e.sys, "walls_s": [r[2].wall for r in runs], "rss_all_mib": [r[2].rss for r in runs],
        "inner_s": erep["duration_ms"] / 1000, "snapshots_before": erep["snapshots_before"],
        "snapshots_expired": len(erep["expired"]), "snapshots_after": after["snapshots"],
        "data_files_deleted": erep["data_files_deleted"],
        "metadata_files_deleted": erep["manifests_deleted"] + erep["manifest_lists_deleted"],
        "files_after": after["data_files"], "rows_after": after["records"], "files_on_disk_after": disk,
        "cmd": " ".join(map(str, cmd_e)), "busy_before": busy[1::2],
    })
    return rows


def floe_plan_case(args, wh: Path, snapshot: Path, log: Path, label: str, min_input: int) -> dict:
    restore(snapshot, wh)
    with CatalogServer(args.floe, wh, log) as server:
        cmd = [args.floe, "compact", TABLE, "--catalog", server.uri, "--min-input-files", min_input,
               "--dry-run", "--json"]
        busy = wait_quiet(args.wait_quiet)
        d = timed_run(cmd, quiet_env(), timeout=600)
    rep = json.loads(d.stdout)
    return {"case": f"{label} floe compact --dry-run --min-input-files {min_input} (plan only)", "tool": "floe",
            "step": "plan", "scale": label, "min_input_files": min_input, "wall_s": d.wall, "rss_mib": d.rss,
            "cpu_s": d.user + d.sys, "inner_s": rep["duration_ms"] / 1000, "files_before": rep["files_before"],
            "input_files": rep["input_files"], "groups_planned": rep["groups_planned"],
            "cmd": " ".join(map(str, cmd)), "busy_before": [busy]}


def spark_case(args, min_input: int, wh: Path, snapshot: Path, log: Path, label: str, repeat: int) -> list:
    """One spark-submit per run on a fresh copy; per procedure, the run of median time."""
    spark_bin = Path(args.spark_python).parent
    env = {**os.environ, "PYSPARK_PYTHON": args.spark_python, "PYSPARK_DRIVER_PYTHON": args.spark_python,
           "SPARK_LOCAL_IP": "127.0.0.1", "PATH": f"{spark_bin}:{os.environ.get('PATH', '')}"}
    runs = []
    for _ in range(repeat):
        restore(snapshot, wh)
        with CatalogServer(args.floe, wh, log) as server:
            before = status(args.floe, server.uri)
            job = {"jars": args.spark_jars, "uri": server.uri, "warehouse": "floe", "table": TABLE,
                   "options": {"min-input-files": str(min_input), "target-file-size-bytes": str(TARGET_FILE_SIZE)}}
            cmd = [spark_bin / "spark-submit", "--master", "local[2]", "--driver-memory", args.spark_driver_memory,
                   "--jars", args.spark_jars, "--conf", "spark.ui.enabled=false", HERE / "maintain_spark.py",
                   json.dumps(job)]
            busy = wait_quiet(args.wait_quiet)
            t0 = time.time()
            s = timed_run(cmd, env, timeout=1800, cwd=wh.parent)
            out = json.loads(s.stdout.strip().splitlines()[-1])
            after = status(args.floe, server.uri)
        runs.append({"s": s, "out": out, "before": before, "after": after, "disk": files_on_disk(wh), "busy": busy,
                     "jvm": out["session_ready"] - t0,
                     "cmd": " ".join(map(str, cmd[:-1])) + " '" + json.dumps(job) + "'"})

    def common(r):
        return {"tool": "spark", "scale": label, "min_input_files": min_input, "rss_mib": r["s"].rss,
                "rss_all_mib": [x["s"].rss for x in runs], "process_wall_s": r["s"].wall,
                "process_cpu_s": r["s"].user + r["s"].sys, "jvm_start_s": r["jvm"],
                "jvm_start_all_s": [x["jvm"] for x in runs], "driver_memory": args.spark_driver_memory,
                "busy_before": [x["busy"] for x in runs], "cmd": r["cmd"]}

    r = sorted(runs, key=lambda x: x["out"]["rewrite_s"])[repeat // 2]
    rw, before = r["out"]["rewrite"], r["before"]
    rows = [{**common(r), "case": f"{label} spark rewrite_data_files min-input-files={min_input}", "step": "compact",
             "wall_s": r["out"]["rewrite_s"], "walls_s": [x["out"]["rewrite_s"] for x in runs],
             "files_before": before["data_files"],
             "files_after": before["data_files"] - rw.get("rewritten_data_files_count", 0) + rw.get("added_data_files_count", 0),
             "rows_before": before["records"], "rewrite": rw}]
    r = sorted(runs, key=lambda x: x["out"]["expire_s"])[repeat // 2]
    ex, out, after = r["out"]["expire"], r["out"], r["after"]
    rows.append({**common(r), "case": f"{label} spark expire_snapshots (after rewrite min-input-files={min_input})",
                 "step": "expire", "wall_s": out["expire_s"], "walls_s": [x["out"]["expire_s"] for x in runs],
                 "snapshots_before": out["snapshots_before_expire"], "snapshots_after": after["snapshots"],
                 "snapshots_expired": out["snapshots_before_expire"] - after["snapshots"],
                 "data_files_deleted": ex.get("deleted_data_files_count"),
                 "metadata_files_deleted": ex.get("deleted_manifest_files_count", 0) + ex.get("deleted_manifest_lists_count", 0),
                 "files_after": after["data_files"], "rows_after": after["records"], "spark_rows_after": out["rows_after"],
                 "files_on_disk_after": r["disk"], "expire": ex})
    return rows


def fmt_row(r: dict) -> str:
    files = f"{r['files_before']} → {r['files_after']}" if "files_before" in r and r.get("step") != "plan" else ""
    if r.get("step") == "plan":
        files = f"{r['input_files']} planned"
    exp = str(r.get("snapshots_expired", ""))
    deleted = (f"{r['data_files_deleted']} data + {r['metadata_files_deleted']} meta"
               if r.get("data_files_deleted") is not None else "")
    return (f"| {r['case']} | {r['wall_s']:.2f} | {r['rss_mib']:.0f} | {r.get('cpu_s', r.get('process_cpu_s', 0)):.1f} "
            f"| {files} | {exp} | {deleted} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--floe", default=DEFAULT_FLOE)
    ap.add_argument("--data", default=str(CACHE / "bench-ingest"),
                    help="bench/ingest.py's work folder (the 60 daily Parquet files, generated if missing)")
    ap.add_argument("--work", default=str(CACHE / "bench-maintain"),
                    help="cache for the larger table's daily files (parquet only)")
    ap.add_argument("--tmp", default=None, help="folder for the warehouses (default: a new temp folder, removed at the end)")
    ap.add_argument("--appends", type=int, default=300)
    ap.add_argument("--append-rows", type=int, default=30, help="rows per append and day")
    ap.add_argument("--spread", choices=["random", "even"], default="random",
                    help="days of the appends: seeded random, or round-robin (5 per day)")
    ap.add_argument("--min-input-files", default="5,2", help="variants, comma-separated")
    ap.add_argument("--repeat", type=int, default=3, help="floe runs per case (median)")
    ap.add_argument("--spark-repeat", type=int, default=1, help="spark-submit runs per case (median)")
    ap.add_argument("--scale", type=int, default=10, help="size of the larger table (0: skip)")
    ap.add_argument("--cases", default="floe,spark,scale", help="which of floe, spark, scale to run")
    ap.add_argument("--no-spark", action="store_true", help="same as leaving spark out of --cases")
    ap.add_argument("--spark-python", default=str(CACHE / "venv-spark" / "bin" / "python"))
    ap.add_argument("--spark-jars", default=os.environ.get("FLOE_SPARK_JARS"),
                    help="comma-separated jars (default: $FLOE_SPARK_JARS, else infra/local/spark.sh install)")
    ap.add_argument("--spark-driver-memory", default="2g")
    ap.add_argument("--wait-quiet", type=float, default=0,
                    help="before each timed step, wait up to this many seconds for other processes to go idle")
    ap.add_argument("--json-out", help="also write the results as JSON to this file")
    ap.add_argument("--keep", action="store_true", help="keep the warehouses")
    args = ap.parse_args()
    exit_on_sigterm()
    variants = [int(v) for v in args.min_input_files.split(",")]
    data = Path(args.data)
    generate(data, SITES, BASE_DAYS)
    cases = set(args.cases.split(","))
    spark = "spark" in cases and not args.no_spark
    if spark and not args.spark_jars:
        out = subprocess.run(["bash", str(HERE.parent / "infra/local/spark.sh"), "install", str(CACHE)],
                             capture_output=True, text=True, timeout=1800)
        args.spark_jars = next((line.split("=", 1)[1] for line in out.stdout.splitlines()
                                if line.startswith("FLOE_SPARK_JARS=")), None)
    jars_there = bool(args.spark_jars) and all(Path(j).exists() for j in args.spark_jars.split(","))
    if spark and not (jars_there and (Path(args.spark_python).parent / "spark-submit").exists()):
        print(f"Spark cases skipped: jars {args.spark_jars!r} or spark-submit next to {args.spark_python} missing",
              file=sys.stderr)
        spark = False

    base = Path(args.tmp or tempfile.mkdtemp(prefix="floe-bench-maintain-"))
    base.mkdir(parents=True, exist_ok=True)
    log = base / "catalog.log"
    # A private copy: a rebuild during the run must not mix two builds in one report.
    build_info = {"path": args.floe, "mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(Path(args.floe).stat().st_mtime)),
                  "sha256": hashlib.sha256(Path(args.floe).read_bytes()).hexdigest()[:16],
                  "git_head": subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
                                             capture_output=True, text=True).stdout.strip()}
    newest = max((f for f in (HERE.parent / "src").rglob("*.rs")), key=lambda f: f.stat().st_mtime)
    build_info["sources_newer"] = newest.stat().st_mtime > Path(args.floe).stat().st_mtime
    if build_info["sources_newer"]:
        print(f"warning: {newest} is newer than {args.floe}: the build may be stale", file=sys.stderr)
    shutil.copy2(args.floe, base / "floe")
    args.floe = str(base / "floe")
    print(f"floe build: {json.dumps(build_info)}", file=sys.stderr)
    results, tables = [], {}
    try:
        wh, snap = base / "wh", base / "snap-1x"
        print("building the table ...", file=sys.stderr)
        tables["1x"] = build(args, data / "parquet", BASE_DAYS, 1, wh, snap, log)
        print(f"  table: {json.dumps(tables['1x'])}", file=sys.stderr)

        def add(rows):
            for r in rows:
                results.append(r)
                print(fmt_row(r), flush=True)

        print("| case | wall s | peak RSS MiB | CPU s | files before → after | snapshots expired | files deleted |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        if "floe" in cases:
            for m in variants:
                add(floe_cases(args, m, wh, snap, log, "1x", args.repeat))
            add([floe_plan_case(args, wh, snap, log, "1x", variants[0])])
        if spark:
            for m in variants:
                add(spark_case(args, m, wh, snap, log, "1x", args.spark_repeat))
        if not args.keep:
            shutil.rmtree(wh, ignore_errors=True)

        if args.scale > 1 and "scale" in cases:
            days = BASE_DAYS * args.scale
            big = Path(args.work) / f"d{days}"
            print(f"generating {days} days (cached in {big}) ...", file=sys.stderr)
            generate(big, SITES, days, formats=("parquet",))
            label = f"{args.scale}x"
            wh10, snap10 = base / f"wh-{label}", base / f"snap-{label}"
            print(f"building the {label} table ...", file=sys.stderr)
            tables[label] = build(args, big / "parquet", days, args.scale, wh10, snap10, log)
            print(f"  table: {json.dumps(tables[label])}", file=sys.stderr)
            if not args.keep:
                shutil.rmtree(snap, ignore_errors=True)
            for m in variants:
                add(floe_cases(args, m, wh10, snap10, log, label, args.repeat))
            add([floe_plan_case(args, wh10, snap10, log, label, variants[0])])
    finally:
        if args.keep:
            pass
        elif args.tmp is None:
            shutil.rmtree(base, ignore_errors=True)
        else:  # a folder the user named: only what this script put there
            for child in base.iterdir():
                if child.name.startswith(("wh", "snap-", "pipeline-")) or child.name in ("floe", "catalog.log"):
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        if args.keep:
            print(f"warehouses kept in {base}", file=sys.stderr)

    summary = compare(results, variants, spark)
    for line in summary["lines"]:
        print(line)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
              "command": " ".join(sys.argv), "floe": build_info, "spark_driver_memory": args.spark_driver_memory if spark else None,
              "tables": tables, "results": results, "targets": summary["targets"]}
    print(json.dumps(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")


def compare(results: list, variants: list, spark: bool) -> dict:
    """floe vs Spark per variant: speed-up (target 5x per procedure, JVM start not
    counted) and memory (target: floe at most 1/8 of Spark's peak RSS); compaction's
    peak RSS 1x vs the larger table."""
    lines, targets = [], []

    def pick(scale, tool, step, m):
        return next((r for r in results if r["scale"] == scale and r["tool"] == tool and r["step"] == step
                     and r["min_input_files"] == m), None)

    for m in variants:
        fc, fe = pick("1x", "floe", "compact", m), pick("1x", "floe", "expire", m)
        sc, se = pick("1x", "spark", "compact", m), pick("1x", "spark", "expire", m)
        if spark and sc and se and fc and fe:
            t = {"min_input_files": m, "compact_speedup": sc["wall_s"] / fc["wall_s"],
                 "expire_speedup": se["wall_s"] / fe["wall_s"],
                 "memory_ratio": sc["rss_mib"] / max(fc["rss_mib"], fe["rss_mib"])}
            t["met"] = t["compact_speedup"] >= 5 and t["expire_speedup"] >= 5 and t["memory_ratio"] >= 8
            targets.append(t)
            lines.append(f"min-input-files {m}: compact {t['compact_speedup']:.1f}x faster than rewrite_data_files, "
                         f"expire {t['expire_speedup']:.1f}x faster than expire_snapshots (target 5x each); "
                         f"Spark's peak RSS is {t['memory_ratio']:.1f}x floe's (target 8x): "
                         f"{'met' if t['met'] else 'NOT met'}")
        for r in results:
            if (fc and r["tool"] == "floe" and r["step"] == "compact" and r["scale"] != "1x"
                    and r["min_input_files"] == m):
                lines.append(f"min-input-files {m}: floe compact peak RSS {fc['rss_mib']:.0f} MiB at 1x, "
                             f"{r['rss_mib']:.0f} MiB at {r['scale']} ({r['files_before']} files)")
    return {"lines": lines, "targets": targets}


if __name__ == "__main__":
    main()
