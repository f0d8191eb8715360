#!/usr/bin/env python3
"""Database source benchmark: `floe ingest` of a PostgreSQL table vs dlt's sql_database
source (pyarrow backend) into its filesystem destination, same rows, same window.

    bench/database.py [--rows 10000000] [--pairs 3] [--floe PATH] [--pg-url URL]
                      [--cases floe,floe-parallel,dlt] [--json-out FILE]

The table, made once in SQL (generate_series) and kept in the PostgreSQL data folder
(--work/pg; reused while it holds --rows rows, so later runs skip it):

    readings(id bigint primary key, ts timestamptz, site_id text, region text,
             demand_mw double precision, temperature_c double precision, quality_flag int)

ROWS rows evenly over the 60 days from 2024-01-01 (2,000 sites, 14 regions, random
doubles). PostgreSQL is infra/local/postgres.sh's throwaway server (127.0.0.1, a free
port, fsync off) unless --pg-url names one that already holds (or may be given) the table.
The table is VACUUM FREEZE'd and ANALYZEd after loading, so no case pays for hint bits.

Cases, each a process under /usr/bin/time -v (wall time, peak RSS of the client process
only: the PostgreSQL server's memory is not counted; its CPU is reported apart, from
the postmaster's own and reaped children's CPU time, when the server is ours):

  floe           `floe ingest --from 2024-01-01 --to 2024-02-29` of a job
                 `source = { database = URL, table = "readings" }`, event_time offset on
                 ts, every column typed, into a fresh day-partitioned Iceberg table
                 (bench.<case>_<run>) through `floe catalog serve` on a local warehouse
  floe-parallel  the same with `parallel = 4, split_by = "id"` in the source (recorded as
                 skipped when the floe binary refuses the keys)
  dlt            dlt's sql_database `sql_table(..., backend="pyarrow")` with the same window
                 as a WHERE on ts (query_adapter_callback), `pipeline.run(...,
                 loader_file_format="parquet")` into the filesystem destination on a local
                 folder as an Iceberg table partitioned by day(ts) (`table_format="iceberg"`
                 + iceberg_adapter; --dlt-format parquet for plain Parquet files), in its
                 own venv (bench/bench-env.sh: ~/.cache/floe/venv-bench)

The cases alternate (floe, floe-parallel, dlt, floe, ...) for --pairs rounds; the ratio
floe/dlt is dlt's wall time over floe's within each round (how many times faster floe
is), reported per round and as the median. Rows written are checked after each run
(floe status; dlt's Parquet footers). Three reference reads through psql, to /dev/null,
run once before the rounds (--no-probes to skip): `COPY (SELECT row_to_json(t)::text
...) TO STDOUT` (the rows as JSON, which floe asked the server for from d9d0327 until
it read a COPY of the values and built the same lines itself; to_jsonb before that),
the same with to_jsonb, the window's values as floe now reads them (`COPY (SELECT *
... WHERE window) TO STDOUT`) and a plain `COPY readings TO STDOUT`.

Run it with the venv of infra/local/python-env.sh (pyarrow, to count rows); needs a
release build of floe, psql and pg_ctl (postgres.sh installs Debian's postgresql).
The PostgreSQL data folder is kept as the table's cache unless --clean.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DEFAULT_FLOE, ROOT, CatalogServer, day_after, exit_on_sigterm, free_port, quiet_env,  # noqa: E402
                    try_timed_run, wait_quiet, parquet_rows, du, median, add_round_args, Rounds,
                    floe_table_written, summarize, rss_goal)

FIRST_DAY = "2024-01-01"
DAYS = 60
LAST_DAY = day_after(FIRST_DAY, DAYS - 1)   # 2024-02-29
SITES = 2000
POSTGRES_SH = ROOT / "infra" / "local" / "postgres.sh"
BENCH_ENV = ROOT / "bench" / "bench-env.sh"

# One dlt run: argv = pg url, out folder, pipelines folder, first day, day after the
# last, iceberg|parquet, chunk size. Prints one JSON line with the rows dlt loaded.
DLT = r'''
import json, os, sys, datetime as dt
url, out, pipes, first, end, fmt, chunk = sys.argv[1:8]
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
import dlt
from dlt.sources.sql_database import sql_table
lo = dt.datetime.fromisoformat(first).replace(tzinfo=dt.timezone.utc)
hi = dt.datetime.fromisoformat(end).replace(tzinfo=dt.timezone.utc)
def window(query, table):
    return query.where(table.c.ts >= lo).where(table.c.ts < hi)
res = sql_table(credentials=url, table="readings", backend="pyarrow", chunk_size=int(chunk),
                query_adapter_callback=window, reflection_level="full_with_precision")
if fmt == "iceberg":
    from dlt.destinations.adapters import iceberg_adapter, iceberg_partition
    res.apply_hints(table_format="iceberg")
    res = iceberg_adapter(res, partition=iceberg_partition.day("ts"))
p = dlt.pipeline(pipeline_name="bench_db", pipelines_dir=pipes,
                 destination=dlt.destinations.filesystem(bucket_url="file://" + out),
                 dataset_name="bench")
info = p.run(res, loader_file_format="parquet")
info.raise_on_failed_jobs()
counts = p.last_trace.last_normalize_info.row_counts
print(json.dumps({"rows": counts.get("readings", 0), "dlt": dlt.__version__}))
'''


class Postgres:
    """infra/local/postgres.sh's server on a data folder, or a given URL. A context
    manager: stops the server it started, even on errors."""

    def __init__(self, data: Path, url: str | None):
        self.data, self.url, self.started = data, url, False

    def __enter__(self):
        if self.url:
            return self
        port = free_port()
        self.started = True
        out = subprocess.run(["bash", str(POSTGRES_SH), "start", str(self.data), str(port)], capture_output=True,
                             text=True, timeout=600, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-3000:])
            raise SystemExit("postgres.sh start failed")
        self.url = out.stdout.strip().splitlines()[-1]
        return self

    def __exit__(self, *exc):
        if self.started:
            subprocess.run(["bash", str(POSTGRES_SH), "stop", str(self.data)], timeout=120,
                           stdin=subprocess.DEVNULL)
            self.started = False

    def psql(self, sql: str, timeout=3600) -> str:
        out = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", self.url, "-c", sql],
                             capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip())
        return out.stdout.strip()

    def cpu(self) -> float | None:
        """CPU seconds of the postmaster and its reaped children (the backends of
        finished connections), when the server is ours."""
        if not self.started:
            return None
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return None
        # after ")": state is field 3, utime 14, stime 15, cutime 16, cstime 17 (1-based)
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
        return ticks / os.sysconf("SC_CLK_TCK")


def ensure_table(pg: Postgres, rows: int):
    """Creates `readings` with `rows` rows unless it already holds that many."""
    try:
        have = int(pg.psql("SELECT count(*) FROM readings"))
    except RuntimeError:
        have = -1
    if have == rows:
        print(f"readings holds {rows:,} rows (cached)", file=sys.stderr)
        return
    print(f"generating readings: {rows:,} rows over {DAYS} days (once)...", file=sys.stderr, flush=True)
    t = time.monotonic()
    step = DAYS * 86400.0 / rows
    pg.psql(f"""
SET maintenance_work_mem = '512MB';
DROP TABLE IF EXISTS readings;
CREATE TABLE readings(id bigint, ts timestamptz, site_id text, region text,
                      demand_mw double precision, temperature_c double precision, quality_flag int);
INSERT INTO readings
SELECT i,
       timestamptz '{FIRST_DAY} 00:00:00+00' + make_interval(secs => i * {step!r}),
       'S' || lpad((i % {SITES})::text, 5, '0'),
       'R' || lpad((i % {SITES} % 14)::text, 2, '0'),
       50 + 20 * random(),
       -5 + 25 * random(),
       floor(random() * 4)::int
FROM generate_series(0, {rows - 1}) AS i;
ALTER TABLE readings ADD PRIMARY KEY (id);
""", timeout=7200)
    pg.psql("VACUUM (FREEZE, ANALYZE) readings", timeout=3600)
    print(f"  generated in {time.monotonic() - t:.0f} s", file=sys.stderr)


def floe_job(path: Path, uri: str, url: str, table: str, parallel: int):
    par = f", parallel = {parallel}, split_by = \"id\"" if parallel > 1 else ""
    path.write_text(f'''[catalog]
uri = "{uri}"

[[job]]
name = "readings"
table = "{table}"
source = {{ database = "{url}", table = "readings"{par} }}
event_time = {{ kind = "offset", column = "ts" }}
columns = [
  {{ name = "id", type = "long", required = true }},
  {{ name = "site_id", type = "string" }},
  {{ name = "region", type = "string" }},
  {{ name = "demand_mw", type = "double" }},
  {{ name = "temperature_c", type = "double" }},
  {{ name = "quality_flag", type = "int" }},
]
''')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    add_round_args(ap)
    ap.add_argument("--cases", default="floe,floe-parallel,dlt")
    ap.add_argument("--parallel", type=int, default=4, help="floe-parallel's connections (default 4)")
    ap.add_argument("--floe", default=DEFAULT_FLOE)
    ap.add_argument("--pg-url", help="an existing PostgreSQL (no password in the URL) instead of postgres.sh's")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-db"),
                    help="PostgreSQL data folder (pg/) and scratch (default /tmp/bench-db)")
    ap.add_argument("--dlt-python", default=None,
                    help="python of the dlt venv (default: what bench/bench-env.sh sets up)")
    ap.add_argument("--dlt-format", choices=("iceberg", "parquet"), default="iceberg")
    ap.add_argument("--dlt-chunk-size", type=int, default=50_000, help="sql_table chunk_size (dlt's default)")
    ap.add_argument("--no-probes", action="store_true", help="skip the reference reads through psql")
    ap.add_argument("--clean", action="store_true", help="delete the PostgreSQL data folder at the end")
    ap.add_argument("--generate-only", action="store_true", help="make the table (if needed) and stop")
    args = ap.parse_args()
    exit_on_sigterm()
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in ("floe", "floe-parallel", "dlt"):
            raise SystemExit(f"unknown case {c}")
    if any(c.startswith("floe") for c in cases) and not os.path.exists(args.floe):
        raise SystemExit(f"{args.floe} not found: cargo build --release --bin floe (or --floe PATH)")
    dlt_python = args.dlt_python
    if "dlt" in cases and dlt_python is None:
        out = subprocess.run(["bash", str(BENCH_ENV)], capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            sys.stderr.write(out.stderr)
            raise SystemExit("bench/bench-env.sh failed")
        dlt_python = out.stdout.strip().splitlines()[-1]
    # A copy of the binary: a rebuild during the run cannot mix two builds.
    args.work.mkdir(parents=True, exist_ok=True)
    os.chmod(args.work, 0o755)
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=args.work))
    floe = tmp / "floe"
    if os.path.exists(args.floe):
        shutil.copy2(args.floe, floe)
    end_day = day_after(LAST_DAY, 1)
    results = {c: [] for c in cases}
    skipped, probes, notes = {}, {}, []
    rounds = Rounds(args, notes)
    try:
        with Postgres(args.work / "pg", args.pg_url) as pg, CatalogServer(str(floe), tmp / "wh", tmp / "catalog.log") as cat:
            ensure_table(pg, args.rows)
            if args.generate_only:
                return
            dlt_url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", pg.url)
            if not args.no_probes:
                window = (f"WHERE ts >= '{FIRST_DAY}T00:00:00Z' AND ts < '{end_day}T00:00:00Z'")
                for name, sql in (
                        ("pg row_to_json", f"COPY (SELECT row_to_json(t)::text FROM (SELECT * FROM readings {window}) AS t) TO STDOUT"),
                        ("pg to_jsonb", f"COPY (SELECT to_jsonb(t)::text FROM (SELECT * FROM readings {window}) AS t) TO STDOUT"),
                        ("pg COPY window", f"COPY (SELECT * FROM readings {window}) TO STDOUT"),
                        ("pg COPY", "COPY readings TO STDOUT")):
                    cpu0 = pg.cpu()
                    with open(os.devnull, "w") as null:
                        t, err = try_timed_run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", pg.url, "-c", sql],
                                           timeout=args.timeout, stdout=null)
                    time.sleep(0.5)
                    if t is None:
                        notes.append(f"probe {name} failed: {err.strip()[-300:]}")
                        continue
                    pg_cpu = None if cpu0 is None else pg.cpu() - cpu0
                    probes[name] = {"wall_s": t.wall, "client_cpu_s": t.user + t.sys, "pg_cpu_s": pg_cpu}
                    print(f"probe {name:<14} {t.wall:7.2f} s  {args.rows / t.wall / 1e6:5.2f} M rows/s  "
                          f"PostgreSQL CPU {pg_cpu if pg_cpu is not None else float('nan'):6.1f} s  "
                          f"(psql CPU {t.user + t.sys:.1f} s)", flush=True)
            for rnd in rounds:
                for case in cases:
                    if case in skipped:
                        continue
                    cpu0 = pg.cpu()
                    busy = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
                    run_tmp = Path(tempfile.mkdtemp(prefix=f"{case}-", dir=tmp))
                    if case.startswith("floe"):
                        table = f"bench.{case.replace('-', '_')}_{rnd}"
                        job = run_tmp / "job.toml"
                        floe_job(job, cat.uri, pg.url, table, args.parallel if case == "floe-parallel" else 1)
                        t, err = try_timed_run([floe, "ingest", "--pipeline", job, "--from", FIRST_DAY, "--to", LAST_DAY],
                                           quiet_env(), timeout=args.timeout)
                        if t is None:
                            if case == "floe-parallel" and ("parallel" in err or "split_by" in err):
                                why = err.strip().splitlines()[-1]
                                skipped[case] = why.split(", expected")[0][:300] + ("..." if ", expected" in why else "")
                                print(f"{case}: refused by this floe, skipped: {skipped[case]}", flush=True)
                                continue
                            sys.stderr.write(err)
                            raise SystemExit(f"{case} failed: floe ingest --pipeline {job}")
                        rows, size = floe_table_written(str(floe), cat.uri, tmp / "wh", table)
                    else:
                        out_dir = run_tmp / "out"
                        t, err = try_timed_run([dlt_python, "-c", DLT, dlt_url, out_dir, run_tmp / "pipelines", FIRST_DAY,
                                            end_day, args.dlt_format, args.dlt_chunk_size],
                                           {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false"}, timeout=args.timeout)
                        if t is None:
                            sys.stderr.write(err)
                            raise SystemExit("dlt failed")
                        rows = parquet_rows(out_dir)
                        size = du(out_dir)
                    time.sleep(0.5)   # the backends exit and are reaped
                    pg_cpu = None if cpu0 is None else pg.cpu() - cpu0
                    shutil.rmtree(run_tmp, ignore_errors=True)
                    r = {"round": rnd, "wall_s": t.wall, "rss_mib": t.rss, "cpu_s": t.user + t.sys,
                         "pg_cpu_s": pg_cpu, "rows": rows, "bytes": size, "busy_before": busy}
                    if case.startswith("floe"):
                        r["report"] = t.stdout[-3000:]
                    if rows != args.rows:
                        notes.append(f"{case} round {rnd} wrote {rows:,} rows, not {args.rows:,}")
                    results[case].append(r)
                    print(f"round {rnd} {case:<14} {t.wall:7.2f} s  {args.rows / t.wall / 1e6:5.2f} M rows/s  "
                          f"peak RSS {t.rss:6.0f} MiB  CPU {t.user + t.sys:6.1f} s  PostgreSQL CPU "
                          f"{pg_cpu if pg_cpu is not None else float('nan'):6.1f} s  {rows:,} rows  "
                          f"{size / 1e6:.0f} MB" + (f"  (machine {busy:.0%} busy before)" if busy is not None else ""), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if args.clean and not args.pg_url:
            shutil.rmtree(args.work / "pg", ignore_errors=True)

    print(f"\n{args.rows:,} rows over {DAYS} days; {rounds.done} alternating rounds; dlt into "
          f"{'an Iceberg table partitioned by day(ts)' if args.dlt_format == 'iceberg' else 'plain Parquet files'}")
    summary = summarize(results, args.rows, "rows", "rows_per_s", 14)
    ratios = {}
    if "dlt" in results and results["dlt"]:
        for case in ("floe", "floe-parallel"):
            if results.get(case):
                rs = [d["wall_s"] / f["wall_s"] for f, d in zip(results[case], results["dlt"])]
                ratios[case] = {"per_round": rs, "median": median(rs)}
                print(f"  {case} vs dlt (speed, dlt wall / floe wall): median {median(rs):.2f}x "
                      f"(round by round {', '.join(f'{x:.2f}' for x in rs)})")
    for case, why in skipped.items():
        print(f"  {case}: skipped ({why})")
    for n in notes:
        print(f"  note: {n}")
    for case in ("floe", "floe-parallel"):
        if case in ratios:
            ok = ratios[case]["median"] >= 3
            print(f"  goal floe >= 3x dlt ({case}): {'met' if ok else 'missed'} ({ratios[case]['median']:.2f}x)")
        if case in summary:
            rss_goal(summary, case)
    if args.json_out:
        args.json_out.write_text(json.dumps({
            "rows": args.rows, "days": DAYS, "window": [FIRST_DAY, LAST_DAY], "rounds": rounds.done,
            "dlt_format": args.dlt_format, "dlt_chunk_size": args.dlt_chunk_size, "parallel": args.parallel,
            "probes": probes, "runs": results, "summary": summary, "ratios": ratios, "skipped": skipped,
            "notes": notes, "floe": args.floe}, indent=2))


if __name__ == "__main__":
    main()
