"""Acceptance tests of `floe ingest`: source files in, day-partitioned Iceberg tables out, read
back by pyiceberg (and Spark), on a local-folder warehouse and on S3 (SeaweedFS).

What they hold floe to (design.md, invariants 1-4 and 6):
  * every input row lands exactly once, keyed by a UTC `ts_utc`, in `day(ts_utc)` partitions
    that a reader prunes on;
  * a run commits ONE `overwrite` snapshot replacing the window's days; re-running a window
    never duplicates; two runs on disjoint windows of one table both succeed;
  * a run killed with SIGKILL leaves the table at its previous snapshot;
  * bad records go to `<table>__rejects` with their reason; past the threshold the run exits 1
    and the target is untouched;
  * `--dry-run` creates nothing; `--report` writes the run's figures.

Every process and request stays on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import floe_testlib as lib
from floe_testlib import write_pipeline

UTC = dt.timezone.utc
INGEST_TIMEOUT_S = 180.0

# Each site writes its timestamps with its own UTC offset: floe must convert them all to UTC.
SITE_OFFSETS = [("Z", 0), ("+01:00", 60), ("-05:00", -300), ("+05:30", 330), ("-03:30", -210)]

READINGS_COLUMNS = [
    {"name": "site_id", "type": "string", "required": True},
    {"name": "value", "type": "double", "from": "v"},
]


# ---------------------------------------------------------------------------------------
# pipeline files (write_pipeline: floe_testlib)


def readings_job(ns: str, *, name: str = "readings", table: str = "readings", path: str = "data/{date}.ndjson",
                 **overrides: Any) -> dict:
    job = {
        "name": name,
        "table": f"{ns}.{table}",
        "source": {"path": path, "format": "ndjson"},
        "event_time": {"kind": "offset", "column": "ts"},
        "columns": READINGS_COLUMNS,
        "sort": ["site_id", "ts_utc"],
        "reject_threshold": 0.0,
    }
    job.update(overrides)
    return job


def ingest_env(server: lib.CatalogServer) -> dict[str, str]:
    """The floe process's environment: S3 credentials the usual AWS way when the warehouse is
    on S3 (the catalog's /v1/config hands out the endpoint, region and path style)."""
    extra = {"NO_COLOR": "1"}
    if server.s3 is not None:
        extra.update(AWS_ACCESS_KEY_ID=server.s3.access_key, AWS_SECRET_ACCESS_KEY=server.s3.secret_key)
    return lib.clean_env(**extra)


def ingest_cmd(pipeline: Path, frm: str, to: str, *args: str) -> list[str]:
    return [lib.floe_bin(), "ingest", "--pipeline", str(pipeline), "--from", frm, "--to", to, *args]


def run_ingest(server: lib.CatalogServer, pipeline: Path, frm: str, to: str, *args: str,
               timeout: float = INGEST_TIMEOUT_S) -> subprocess.CompletedProcess:
    cmd = ingest_cmd(pipeline, frm, to, *args)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ingest_env(server),
                              cwd=pipeline.parent, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s:\n{exc.stdout}\n{exc.stderr}")


def describe_run(out: subprocess.CompletedProcess) -> str:
    return (f"\n--- command\n{' '.join(map(str, out.args))}\n--- exit {out.returncode}"
            f"\n--- stdout\n{out.stdout[-6000:]}\n--- stderr\n{out.stderr[-10000:]}\n")


def ingest_ok(server: lib.CatalogServer, pipeline: Path, frm: str, to: str, *args: str,
              timeout: float = INGEST_TIMEOUT_S) -> subprocess.CompletedProcess:
    out = run_ingest(server, pipeline, frm, to, *args, timeout=timeout)
    assert out.returncode == 0, "floe ingest failed" + describe_run(out)
    return out


# ---------------------------------------------------------------------------------------
# input data


def day_range(first: str, last: str) -> list[dt.date]:
    d, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    out = []
    while d <= end:
        out.append(d)
        d += dt.timedelta(days=1)
    return out


def micros(t: dt.datetime) -> int:
    delta = t - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def epoch_day(d: dt.date) -> int:
    return (d - dt.date(1970, 1, 1)).days


def write_readings(folder: Path, utc_days: Iterable[dt.date], *, tag: str = "s", seed: int = 7,
                   value_base: float = 0.0) -> list[tuple]:
    """Readings every 30 minutes of each UTC day for every site of SITE_OFFSETS, each written
    with its site's UTC offset into the file of its *local* date (`<date>.ndjson`), lines
    shuffled. Returns (utc micros, site_id, value, utc date) per row; a few values are null."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = {}
    rows = []
    for di, day in enumerate(utc_days):
        start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
        for si, (suffix, offset_min) in enumerate(SITE_OFFSETS):
            site = f"{tag}-{si:02d}"
            for k in range(48):
                utc = start + dt.timedelta(minutes=30 * k)
                local = utc + dt.timedelta(minutes=offset_min)
                value = None if (k + si + di) % 23 == 0 else value_base + si * 1000 + di * 48 + k * 0.25 + 0.125
                record = {"ts": local.strftime("%Y-%m-%dT%H:%M:%S") + suffix, "site_id": site, "v": value}
                files.setdefault(local.strftime("%Y-%m-%d"), []).append(json.dumps(record))
                rows.append((micros(utc), site, value, day))
    rng = random.Random(seed)
    for date, lines in files.items():
        rng.shuffle(lines)
        (folder / f"{date}.ndjson").write_text("\n".join(lines) + "\n")
    return rows


def in_window(rows: Iterable[tuple], first: str, last: str) -> list[tuple]:
    lo, hi = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return sorted_rows((r[0], r[1], r[2]) for r in rows if lo <= r[3] <= hi)


def sorted_rows(rows: Iterable[tuple]) -> list[tuple]:
    return sorted(rows, key=lambda r: (r[0], r[1], r[2] is None, r[2] or 0.0))


def assert_rejects(rows: list[dict], bad: dict, day: str) -> None:
    """The rejects table rows of one run are exactly the `bad` lines of `dirty/<day>.ndjson`
    (line -> (raw text, a word its reason must contain)), each with its reason."""
    assert sorted(r["line"] for r in rows) == sorted(bad), rows
    for r in rows:
        text, word = bad[r["line"]]
        assert r["job"] == "readings"
        assert r["source"].endswith(f"dirty/{day}.ndjson"), r
        assert (r["raw"] or "").strip() == text, r
        assert r["reason"], r
        if word:
            assert word in r["reason"].lower(), r


def checksum(rows: Iterable[tuple]) -> str:
    h = hashlib.sha256()
    for ts, site, value in sorted_rows(rows):
        h.update(f"{ts}|{site}|{value!r}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# reading back


def table_rows(tbl, row_filter=None) -> list[tuple]:
    """(ts_utc as UTC micros, site_id, value) of every row pyiceberg reads, sorted."""
    scan = tbl.scan(selected_fields=("ts_utc", "site_id", "value"),
                    **({"row_filter": row_filter} if row_filter is not None else {}))
    data = scan.to_arrow()
    ts = data.column("ts_utc").cast(pa.int64()).to_pylist()
    return sorted_rows(zip(ts, data.column("site_id").to_pylist(), data.column("value").to_pylist()))


def current_state(cat, ident: str) -> tuple[int | None, int, list[tuple]]:
    tbl = cat.load_table(ident)
    snap = tbl.current_snapshot()
    return (snap.snapshot_id if snap else None), len(tbl.snapshots()), table_rows(tbl)


def local_table_files(tbl) -> list[Path]:
    return sorted(lib.local_files_under(tbl.location()))


def day_filter(day: str):
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    d = dt.date.fromisoformat(day)
    nxt = d + dt.timedelta(days=1)
    return And(GreaterThanOrEqual("ts_utc", f"{d.isoformat()}T00:00:00+00:00"),
               LessThan("ts_utc", f"{nxt.isoformat()}T00:00:00+00:00"))


# ---------------------------------------------------------------------------------------
# 1. round trip on a local folder and on S3


def test_ingest_round_trip(warehouse_server, ns: str, tmp_path):
    server = warehouse_server
    first, last = "2024-03-10", "2024-03-12"
    # UTC days around the window too: their rows sit in the neighbouring files floe also reads,
    # and must be skipped, while window rows written in a neighbouring local date must land.
    rows = write_readings(tmp_path / "data", day_range("2024-03-09", "2024-03-13"))
    expected = in_window(rows, first, last)
    assert len(expected) == 3 * 48 * len(SITE_OFFSETS)
    pipeline = write_pipeline(tmp_path / "pipeline.toml", server, [readings_job(ns)])

    run_id = lib.unique("run")
    out = ingest_ok(server, pipeline, first, last, "--run-id", run_id, "--report", str(tmp_path / "report.json"))
    report = lib.job_report(lib.read_report(tmp_path / "report.json"), "readings")
    assert report["rows_written"] == len(expected), describe_run(out)

    cat = server.catalog()
    tbl = cat.load_table(f"{ns}.readings")
    got = table_rows(tbl)
    assert len(got) == len(expected)
    assert checksum(got) == checksum(expected)
    assert got == expected

    # schema: UTC key, contract columns, bronze columns
    schema = tbl.schema()
    assert str(schema.find_field("ts_utc").field_type) == "timestamptz"
    assert schema.find_field("ts_utc").required
    assert str(schema.find_field("site_id").field_type) == "string"
    assert str(schema.find_field("value").field_type) == "double"
    for col in ("_ingest_time", "_source", "_hash"):
        schema.find_field(col)
    assert tbl.format_version >= 2

    # hidden day partitioning on ts_utc
    spec = tbl.spec()
    assert len(spec.fields) == 1
    assert spec.fields[0].source_id == schema.find_field("ts_utc").field_id
    assert type(spec.fields[0].transform).__name__ == "DayTransform"

    # one overwrite snapshot, saying what produced it
    snaps = lib.snapshots_in_order(tbl)
    assert len(snaps) == 1
    snap = tbl.current_snapshot()
    assert snap.snapshot_id == report["snapshot_id"]
    assert snap.summary.operation.value == "overwrite"
    assert snap.summary["floe.run-id"] == run_id
    assert snap.summary["floe.job"] == "readings"
    assert snap.summary["floe.window"] == f"{first}/{last}"
    assert int(snap.summary["added-records"]) == len(expected)

    # a one-day ts_utc range plans only that day's files
    all_tasks = list(tbl.scan().plan_files())
    assert {t.file.partition[0] for t in all_tasks} == {epoch_day(d) for d in day_range(first, last)}
    middle = "2024-03-11"
    tasks = list(tbl.scan(row_filter=day_filter(middle)).plan_files())
    assert tasks, "the one-day scan planned no file"
    assert {t.file.partition[0] for t in tasks} == {epoch_day(dt.date.fromisoformat(middle))}
    assert len(tasks) < len(all_tasks)
    assert sum(t.file.record_count for t in tasks) == 48 * len(SITE_OFFSETS)
    day_rows = table_rows(tbl, day_filter(middle))
    assert day_rows == in_window(rows, middle, middle)

    # the source of every row is one of the files floe read
    sources = set(tbl.scan(selected_fields=("_source",)).to_arrow().column("_source").to_pylist())
    assert sources <= set(report["files_read"]), sources


@pytest.mark.s3
def test_s3_credentials_from_pipeline_properties(s3_catalog_server, ns: str, tmp_path):
    """S3 credentials in [catalog].properties instead of the environment: the floe process has
    no AWS_* variables at all."""
    server = s3_catalog_server
    day = "2024-03-10"
    rows = write_readings(tmp_path / "data", [dt.date.fromisoformat(day)])
    pipeline = write_pipeline(tmp_path / "pipeline.toml", server, [readings_job(ns)], catalog_properties={
        "s3.access-key-id": server.s3.access_key, "s3.secret-access-key": server.s3.secret_key})
    cmd = ingest_cmd(pipeline, day, day)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=INGEST_TIMEOUT_S,
                         env=lib.clean_env(NO_COLOR="1"), cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, describe_run(out)
    tbl = server.catalog().load_table(f"{ns}.readings")
    assert table_rows(tbl) == in_window(rows, day, day)
    assert tbl.location().startswith("s3://")
    keys = lib.files_under(tbl.location(), server.s3)
    assert any(k.endswith(".parquet") and "/data/" in k for k in keys), keys


# ---------------------------------------------------------------------------------------
# 2. re-running a window


def test_rerun_same_window_replaces_it(local_server, ns: str, tmp_path):
    server = local_server
    first, last = "2024-03-10", "2024-03-12"
    rows = write_readings(tmp_path / "data", day_range(first, last))
    expected = in_window(rows, first, last)
    pipeline = write_pipeline(tmp_path / "pipeline.toml", server, [readings_job(ns)])
    cat = server.catalog()

    run1 = lib.unique("run")
    ingest_ok(server, pipeline, first, last, "--run-id", run1)
    snap1, count1, got1 = current_state(cat, f"{ns}.readings")
    assert got1 == expected

    run2 = lib.unique("run")
    ingest_ok(server, pipeline, first, last, "--run-id", run2, "--report", str(tmp_path / "r2.json"))
    tbl = cat.load_table(f"{ns}.readings")
    assert table_rows(tbl) == expected, "re-running the window changed its rows (duplicates?)"
    snaps = lib.snapshots_in_order(tbl)
    assert len(snaps) == count1 + 1
    snap = tbl.current_snapshot()
    assert snap.snapshot_id != snap1
    assert snap.parent_snapshot_id == snap1
    assert snap.summary.operation.value == "overwrite"
    assert snap.summary["floe.run-id"] == run2
    assert int(snap.summary.get("deleted-data-files", "0")) > 0, dict(snap.summary.additional_properties)
    assert int(snap.summary.get("deleted-records", "0")) == len(expected), dict(snap.summary.additional_properties)
    assert int(snap.summary["total-records"]) == len(expected)
    report = lib.job_report(lib.read_report(tmp_path / "r2.json"), "readings")
    assert report["replaced_files"] > 0
    assert report["snapshot_id"] == snap.snapshot_id

    # a retry with the run id of a run that landed does not commit again
    out = ingest_ok(server, pipeline, first, last, "--run-id", run2, "--report", str(tmp_path / "r3.json"))
    report = lib.job_report(lib.read_report(tmp_path / "r3.json"), "readings")
    assert report["status"] == "already-committed", describe_run(out)
    assert report["snapshot_id"] == snap.snapshot_id
    tbl = cat.load_table(f"{ns}.readings")
    assert tbl.current_snapshot().snapshot_id == snap.snapshot_id
    assert len(tbl.snapshots()) == count1 + 1

    # re-running a part of the window replaces that day only
    ingest_ok(server, pipeline, "2024-03-11", "2024-03-11", "--run-id", lib.unique("run"))
    tbl = cat.load_table(f"{ns}.readings")
    assert table_rows(tbl) == expected
    assert tbl.current_snapshot().summary["floe.window"] == "2024-03-11/2024-03-11"
    assert int(tbl.current_snapshot().summary["deleted-records"]) == 48 * len(SITE_OFFSETS)


def test_extra_partition_fields_are_read_and_pruned_by_pyiceberg(local_server, ns: str, tmp_path):
    """partition = [day(ts_utc), bucket(4, site_id)]: pyiceberg sees the spec, reads every row,
    and a site_id filter plans only the files of that site's bucket (floe's bucket values agree
    with Iceberg's)."""
    from pyiceberg.expressions import EqualTo

    server = local_server
    first, last = "2024-03-10", "2024-03-11"
    rows = write_readings(tmp_path / "data", day_range(first, last))
    expected = in_window(rows, first, last)
    job = readings_job(ns, partition=["day(ts_utc)", "bucket(4, site_id)"])
    pipeline = write_pipeline(tmp_path / "pipeline.toml", server, [job])
    ingest_ok(server, pipeline, first, last)
    tbl = server.catalog().load_table(f"{ns}.readings")
    assert [(f.name, str(f.transform)) for f in tbl.spec().fields] == [
        ("ts_utc_day", "day"), ("site_id_bucket", "bucket[4]")]
    assert table_rows(tbl) == expected
    all_files = list(tbl.scan().plan_files())
    site = expected[0][1]
    planned = list(tbl.scan(row_filter=EqualTo("site_id", site)).plan_files())
    assert 0 < len(planned) < len(all_files), (len(planned), len(all_files))
    got = table_rows(tbl, EqualTo("site_id", site))
    assert got == [r for r in expected if r[1] == site]
    # re-running a day replaces it, bucket files and all
    ingest_ok(server, pipeline, first, first)
    assert table_rows(server.catalog().load_table(f"{ns}.readings")) == expected


# ---------------------------------------------------------------------------------------
# 3. two runs on disjoint windows of one table at the same time


@pytest.mark.parametrize("table_exists,runs", [(True, 2), (False, 2), (True, 4)],
                         ids=["existing-table", "new-table", "existing-table-4-runs"])
def test_concurrent_disjoint_windows(local_server, ns: str, tmp_path, table_exists: bool, runs: int):
    server = local_server
    rows = write_readings(tmp_path / "data", day_range("2024-03-07", "2024-03-17"))
    pipeline = write_pipeline(tmp_path / "pipeline.toml", server, [readings_job(ns)])
    cat = server.catalog()
    before = 0
    if table_exists:  # an earlier day, so that the table is there when they start
        ingest_ok(server, pipeline, "2024-03-08", "2024-03-08")
        before = len(cat.load_table(f"{ns}.readings").snapshots())

    # disjoint windows of two days each, from 2024-03-09 on
    first = dt.date(2024, 3, 9)
    windows = [((first + dt.timedelta(days=2 * i)).isoformat(), (first + dt.timedelta(days=2 * i + 1)).isoformat())
               for i in range(runs)]
    cmds = [ingest_cmd(pipeline, frm, to, "--report", str(tmp_path / f"r{i}.json")) for i, (frm, to) in enumerate(windows)]
    labels = [f"run {i} ({a}..{b})" for i, (a, b) in enumerate(windows)]
    codes, logs = lib.run_at_once(cmds, labels, tmp_path / "run", ingest_env(server), tmp_path, INGEST_TIMEOUT_S)
    assert codes == [0] * runs, "concurrent runs on disjoint windows must all succeed\n" + logs

    tbl = cat.load_table(f"{ns}.readings")
    expected = sorted_rows(in_window(rows, windows[0][0], windows[-1][1])
                           + (in_window(rows, "2024-03-08", "2024-03-08") if table_exists else []))
    got = table_rows(tbl)
    assert len(got) == len(set(got)), "duplicated rows"
    assert got == expected, logs
    snaps = lib.snapshots_in_order(tbl)
    assert len(snaps) == before + runs, logs
    assert {s.summary["floe.window"] for s in snaps[-runs:]} == {f"{a}/{b}" for a, b in windows}
    assert all(s.summary.operation.value == "overwrite" for s in snaps[-runs:])
    for i in range(runs):
        assert lib.job_report(lib.read_report(tmp_path / f"r{i}.json"), "readings")["status"] == "committed", logs


# ---------------------------------------------------------------------------------------
# 4. SIGKILL midway


def write_big_readings(folder: Path, days: list[dt.date], per_day: int, sites: int = 50) -> tuple[int, float]:
    """per_day NDJSON records per day (one file per UTC day, `Z` timestamps). Returns (rows,
    sum of values)."""
    folder.mkdir(parents=True, exist_ok=True)
    total, value_sum = 0, 0.0
    clock = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
    for day in days:
        date = day.isoformat()
        step = max(1, 86_400 // per_day)
        with open(folder / f"{date}.ndjson", "w") as f:
            chunk = []
            for i in range(per_day):
                chunk.append(f'{{"ts":"{date}T{clock[(i * step) % 86_400]}Z","site_id":"b-{i % sites:03d}","v":{i}.5}}\n')
                if len(chunk) >= 50_000:
                    f.write("".join(chunk))
                    chunk.clear()
            f.write("".join(chunk))
        total += per_day
        value_sum += per_day * (per_day - 1) / 2 + 0.5 * per_day
    return total, value_sum


def aggregates(tbl) -> tuple[int, float, int, int]:
    data = tbl.scan(selected_fields=("ts_utc", "value")).to_arrow()
    ts = data.column("ts_utc").cast(pa.int64())
    return (data.num_rows, pc.sum(data.column("value")).as_py() or 0.0,
            pc.min(ts).as_py(), pc.max(ts).as_py())


@pytest.mark.slow
@pytest.mark.parametrize("when", ["after-1s", "data-files-written"])
def test_sigkill_leaves_previous_snapshot(local_server, ns: str, tmp_path, when: str):
    server = local_server
    first, last = "2024-03-10", "2024-03-12"
    days = day_range(first, last)
    small = write_readings(tmp_path / "small", days)
    small_pipeline = write_pipeline(tmp_path / "small.toml", server, [readings_job(ns, path="small/{date}.ndjson")])
    big_pipeline = write_pipeline(tmp_path / "big.toml", server, [readings_job(ns, path="big/{date}.ndjson")])
    cat = server.catalog()
    ident = f"{ns}.readings"
    ingest_ok(server, small_pipeline, first, last)
    assert current_state(cat, ident)[2] == in_window(small, first, last)

    per_day = 60_000
    killed_run = None
    for attempt in range(4):  # bounded: grow the input until the run is still going when killed
        before = current_state(cat, ident)
        table_dir = lib.file_uri_to_path(cat.load_table(ident).location())
        write_big_readings(tmp_path / "big", days, per_day)
        run_id = lib.unique("killed")
        log_path = tmp_path / f"killed{attempt}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(ingest_cmd(big_pipeline, first, last, "--run-id", run_id), stdout=log,
                                    stderr=subprocess.STDOUT, env=ingest_env(server), cwd=tmp_path,
                                    stdin=subprocess.DEVNULL)
        try:
            if when == "after-1s":
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.02)
            else:  # as soon as the run's first data file is on disk (files are named after the run id)
                deadline = time.monotonic() + INGEST_TIMEOUT_S
                while time.monotonic() < deadline and proc.poll() is None:
                    if any(run_id in p.name for p in table_dir.rglob("*.parquet")):
                        break
                    time.sleep(0.005)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                assert proc.wait(timeout=30) == -signal.SIGKILL
                killed_run = run_id
                break
            assert proc.returncode == 0, f"the run failed before it was killed:\n{log_path.read_text()[-6000:]}"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        per_day *= 4  # it finished first: more input
    assert killed_run is not None, "could not catch the ingest run before it finished"
    if when == "data-files-written":
        assert any(killed_run in p.name for p in table_dir.rglob("*.parquet")), "no data file of the killed run"

    after = current_state(cat, ident)
    assert after[0] == before[0], "the killed run changed the table's current snapshot"
    assert after[1] == before[1], "the killed run added a snapshot"
    assert after[2] == before[2], "the killed run changed the table's rows"
    assert not any(s.summary.get("floe.run-id") == killed_run for s in cat.load_table(ident).snapshots())

    # the retry (same run id, as a scheduler would) runs to completion
    out = ingest_ok(server, big_pipeline, first, last, "--run-id", killed_run, "--report", str(tmp_path / "r.json"),
                    timeout=600)
    report = lib.job_report(lib.read_report(tmp_path / "r.json"), "readings")
    assert report["status"] == "committed", describe_run(out)
    tbl = cat.load_table(ident)
    assert tbl.current_snapshot().summary["floe.run-id"] == killed_run
    assert tbl.current_snapshot().parent_snapshot_id == before[0]
    rows, value_sum = len(days) * per_day, sum(
        per_day * (per_day - 1) / 2 + 0.5 * per_day for _ in days)
    n, s, lo, hi = aggregates(tbl)
    assert n == rows
    assert s == pytest.approx(value_sum)
    assert lo >= micros(dt.datetime(2024, 3, 10, tzinfo=UTC))
    assert hi < micros(dt.datetime(2024, 3, 13, tzinfo=UTC))
    assert report["rows_written"] == rows


# ---------------------------------------------------------------------------------------
# 5. rejects


BAD_LINES = [
    # (line text, what the reason must mention (lower case), or None)
    ('{"ts": "2024-03-10T01:00:00Z", "site_id": "bad-1", "v": 1.0', None),  # truncated JSON
    ("this is not json", None),
    ('{"ts": "2024-03-10T02:00:00Z", "site_id": "bad-2", "v": "abc"}', "abc"),  # not a number
    ('{"ts": "2024-03-10T03:00:00Z", "v": 2.0}', "site_id"),  # required field missing
    ('{"ts": "2024-03-10T04:00:00Z", "site_id": null, "v": 2.0}', "site_id"),  # required field null
    ('{"ts": "yesterday at noon", "site_id": "bad-3", "v": 3.0}', "yesterday at noon"),  # event time unparseable
    ('{"site_id": "bad-4", "v": 4.0}', "ts"),  # event time missing
]


def write_with_rejects(folder: Path, day: str, good_rows: int = 100) -> tuple[list[tuple], dict[int, tuple]]:
    """One day's file: good records with the BAD_LINES spread among them. Returns the good rows
    and {line number: (bad line, reason word)}."""
    folder.mkdir(parents=True, exist_ok=True)
    start = dt.datetime.fromisoformat(day).replace(tzinfo=UTC)
    lines: list[str] = []
    good: list[tuple] = []
    bad: dict[int, tuple] = {}
    bad_every = good_rows // len(BAD_LINES)
    for i in range(good_rows):
        ts = start + dt.timedelta(minutes=10 * i)
        value = i * 1.5
        lines.append(json.dumps({"ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "site_id": f"ok-{i % 3}", "v": value}))
        good.append((micros(ts), f"ok-{i % 3}", value))
        if i % bad_every == bad_every // 2 and len(bad) < len(BAD_LINES):
            text, word = BAD_LINES[len(bad)]
            lines.append(text)
            bad[len(lines)] = (text, word)
    assert len(bad) == len(BAD_LINES)
    (folder / f"{day}.ndjson").write_text("\n".join(lines) + "\n")
    return sorted_rows(good), bad


def test_rejects_threshold(local_server, ns: str, tmp_path):
    server = local_server
    day = "2024-03-10"
    cat = server.catalog()
    ident = f"{ns}.readings"

    # a clean first run
    clean = write_readings(tmp_path / "clean", [dt.date.fromisoformat(day)])
    clean_pipeline = write_pipeline(tmp_path / "clean.toml", server, [readings_job(ns, path="clean/{date}.ndjson")])
    ingest_ok(server, clean_pipeline, day, day)
    before = current_state(cat, ident)
    assert before[2] == in_window(clean, day, day)

    good, bad = write_with_rejects(tmp_path / "dirty", day)
    strict = write_pipeline(tmp_path / "strict.toml", server, [readings_job(ns, path="dirty/{date}.ndjson")])
    run_id = lib.unique("strict")
    out = run_ingest(server, strict, day, day, "--run-id", run_id, "--report", str(tmp_path / "strict.json"))
    assert out.returncode == 1, "rejects above the threshold must exit 1" + describe_run(out)
    report = lib.job_report(lib.read_report(tmp_path / "strict.json"), "readings")
    assert report["rows_rejected"] == len(bad), describe_run(out)
    assert report["rows_read"] == len(good) + len(bad), describe_run(out)
    assert report["status"] == "failed"
    assert report["snapshot_id"] is None

    after = current_state(cat, ident)
    assert after == before, "a run over its reject threshold changed the target table"

    # the rejects, with their reasons
    rejects_tbl = cat.load_table(f"{ident}__rejects")
    rej_names = [f.name for f in rejects_tbl.schema().fields]
    for col in ("_ingest_time", "job", "run_id", "source", "line", "reason", "raw"):
        assert col in rej_names, rej_names
    rej = [r for r in rejects_tbl.scan().to_arrow().to_pylist() if r["run_id"] == run_id]
    assert_rejects(rej, bad, day)

    # a threshold above the ratio: the good rows land, the rejects are kept again
    lenient = write_pipeline(tmp_path / "lenient.toml", server,
                             [readings_job(ns, path="dirty/{date}.ndjson", reject_threshold=0.1)])
    run_id2 = lib.unique("lenient")
    out = ingest_ok(server, lenient, day, day, "--run-id", run_id2, "--report", str(tmp_path / "lenient.json"))
    report = lib.job_report(lib.read_report(tmp_path / "lenient.json"), "readings")
    assert report["rows_rejected"] == len(bad)
    assert report["rows_written"] == len(good)
    tbl = cat.load_table(ident)
    assert table_rows(tbl) == good
    assert tbl.current_snapshot().summary["floe.run-id"] == run_id2
    assert tbl.current_snapshot().summary.operation.value == "overwrite"
    rej2 = [r for r in cat.load_table(f"{ident}__rejects").scan().to_arrow().to_pylist() if r["run_id"] == run_id2]
    assert sorted(r["line"] for r in rej2) == sorted(bad)


def test_rejects_keep_bytes_that_are_not_utf8(local_server, ns: str, tmp_path):
    """A CSV row and an NDJSON line that are not UTF-8 are rejects whose exact bytes pyiceberg
    reads back from `raw_bytes` (binary); `raw` has their lossy text; other rejects have a null
    `raw_bytes`."""
    server = local_server
    day = "2024-03-10"
    cat = server.catalog()
    csv_bad = b'2024-03-10T02:00:00Z,"caf\xe9",2.0'
    nd_bad = b'{"ts": "2024-03-10T02:00:00Z", "site_id": "\xff\xfe", "v": 2.0}'
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / f"{day}.csv").write_bytes(
        b"ts,site_id,v\n2024-03-10T01:00:00Z,a,1.0\n" + csv_bad + b"\n2024-03-10T03:00:00Z,c,abc\n")
    (tmp_path / "nd").mkdir()
    (tmp_path / "nd" / f"{day}.ndjson").write_bytes(
        b'{"ts": "2024-03-10T01:00:00Z", "site_id": "a", "v": 1.0}\n' + nd_bad + b"\n")
    jobs = [
        readings_job(ns, name="csv", table="csv_readings", path="csv/{date}.csv", reject_threshold=1.0,
                     source={"path": "csv/{date}.csv", "format": "csv"}),
        readings_job(ns, name="nd", table="nd_readings", path="nd/{date}.ndjson", reject_threshold=1.0),
    ]
    pipeline = write_pipeline(tmp_path / "bytes.toml", server, jobs)
    ingest_ok(server, pipeline, day, day)

    rej = cat.load_table(f"{ns}.csv_readings__rejects")
    field = rej.schema().find_field("raw_bytes")
    assert str(field.field_type) == "binary" and not field.required, field
    rows = sorted(rej.scan().to_arrow().to_pylist(), key=lambda r: r["line"])
    assert [r["line"] for r in rows] == [3, 4], rows
    assert rows[0]["raw_bytes"] == csv_bad, rows[0]
    assert rows[0]["raw"] == csv_bad.decode("utf-8", "replace"), rows[0]
    assert "utf-8" in rows[0]["reason"].lower(), rows[0]
    assert rows[1]["raw_bytes"] is None and "abc" in rows[1]["raw"], rows[1]

    rows = cat.load_table(f"{ns}.nd_readings__rejects").scan().to_arrow().to_pylist()
    assert [(r["line"], r["raw_bytes"]) for r in rows] == [(2, nd_bad)], rows
    assert rows[0]["raw"] == nd_bad.decode("utf-8", "replace"), rows[0]


def test_one_big_csv_file_lands_every_record_once(local_server, ns: str, tmp_path):
    """A CSV file of several 4 MiB blocks (decoded on every core) lands exactly the records
    Python's csv module reads, with quoted line ends, doubled quotes, a quote inside an
    unquoted cell, CRLF, blank lines and bad rows anywhere, block edges included; each reject
    names the file's line its record starts on."""
    server = local_server
    day = "2024-03-10"
    base = dt.datetime(2024, 3, 10, tzinfo=dt.timezone.utc)
    out, line, expected, bad = [b"ts,site_id,v\r\n"], 1, [], {}
    straddled, written = False, [len(out[0])]

    def add(b: bytes) -> None:
        out.append(b)
        written[0] += len(b)

    for i in range(300_000):
        line += 1
        ts = (base + dt.timedelta(microseconds=i * 250_000)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        kind = i % 97
        if not straddled and written[0] + 1000 > 4 << 20:
            # The first block is read 4 MiB at a time: its last line end before then is
            # inside this quoted cell, not a record's end.
            straddled = True
            site = "".join(f"part {k}\n" for k in range(300))
            cell = f'"{site}"'
        elif kind == 3:
            site, cell = f'a "quoted"\nsite, {i}', f'"a ""quoted""\nsite, {i}"'
        elif kind == 5:
            site, cell = f'x"y{i}', f'x"y{i}'
        elif kind == 7:
            add(b"\r\n")
            line += 1
            site, cell = f"s{i}", f"s{i}"
        elif kind == 11:
            add(f"{ts},s{i}\r\n".encode())
            bad[line] = "fields"
            continue
        elif kind == 13:
            add(f"{ts},s{i},abc\r\n".encode())
            bad[line] = "number"
            continue
        elif kind == 17:
            add(ts.encode() + b',"caf\xe9",1.0\r\n')
            bad[line] = "utf-8"
            continue
        else:
            site, cell = f"s{i}", f"s{i}"
        add(f"{ts},{cell},{i}.5\r\n".encode())
        expected.append((int((base + dt.timedelta(microseconds=i * 250_000)).timestamp() * 1e6), site, i + 0.5))
        line += cell.count("\n")
    data = b"".join(out)
    assert len(data) > 3 * (4 << 20), len(data)
    assert straddled
    # What the csv module reads, to be sure of the expectation itself.
    with_csv = list(csv.reader(io.StringIO(data.decode("utf-8", "replace"), newline="")))
    assert sum(1 for r in with_csv if r) - 1 == len(expected) + len(bad)
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / f"{day}.csv").write_bytes(data)
    job = readings_job(ns, name="big", table="big_readings", reject_threshold=1.0, sort=[],
                       source={"path": "big/{date}.csv", "format": "csv"})
    pipeline = write_pipeline(tmp_path / "big.toml", server, [job])
    ingest_ok(server, pipeline, day, day)

    cat = server.catalog()
    assert table_rows(cat.load_table(f"{ns}.big_readings")) == sorted_rows(expected)
    rejects = cat.load_table(f"{ns}.big_readings__rejects").scan().to_arrow().to_pylist()
    assert sorted(r["line"] for r in rejects) == sorted(bad), "rejects at other lines"
    for r in rejects:
        want = bad[r["line"]]
        assert want in r["reason"].lower() or (want == "number" and "abc" in r["raw"]), r


# ---------------------------------------------------------------------------------------
# 6. Spark reads what floe wrote




@pytest.mark.spark
@pytest.mark.slow
def test_spark_reads_ingested_table(spark_env, local_server, ns: str, tmp_path):
    server = local_server
    first, last = "2024-03-10", "2024-03-12"
    rows = write_readings(tmp_path / "data", day_range("2024-03-09", "2024-03-13"))
    pipeline = write_pipeline(tmp_path / "pipeline.toml", server, [readings_job(ns)])
    ingest_ok(server, pipeline, first, last)
    py_rows = table_rows(server.catalog().load_table(f"{ns}.readings"))
    assert py_rows == in_window(rows, first, last)

    script = Path(__file__).parent / "helpers" / "spark_read.py"
    args = lib.spark_args(spark_env, server, table=f"{ns}.readings", day="2024-03-11")
    try:
        out = subprocess.run([spark_env["python"], str(script), json.dumps(args)], capture_output=True, text=True,
                             timeout=420, env=lib.spark_child_env(server), cwd=tmp_path,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("the Spark job did not finish within 420 s")
    assert out.returncode == 0, f"spark job failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-8000:]}"
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    spark_rows = sorted_rows(tuple(r) for r in seen["rows"])
    assert seen["count"] == len(py_rows)
    assert checksum(spark_rows) == checksum(py_rows)
    assert spark_rows == py_rows
    assert seen["day_count"] == 48 * len(SITE_OFFSETS)
    assert seen["partitions"] == 3
    assert seen["ts_type"] == "timestamp"  # Spark's name for timestamptz


# ---------------------------------------------------------------------------------------
# 7. --dry-run and --report


def write_meters_csv(folder: Path, days: list[dt.date]) -> list[tuple]:
    """A CSV source with epoch-seconds event times: hourly kWh for two meters."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for day in days:
        start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
        lines = ["epoch,meter,kwh"]
        for h in range(24):
            for m in ("m1", "m2"):
                t = start + dt.timedelta(hours=h)
                kwh = h * 0.5 + (1 if m == "m2" else 0)
                lines.append(f"{int(t.timestamp())},{m},{kwh}")
                rows.append((micros(t), m, kwh))
        (folder / f"meters-{day.isoformat()}.csv").write_text("\n".join(lines) + "\n")
    return rows


def test_dry_run_and_report(local_server, ns: str, tmp_path):
    server = local_server
    first, last = "2024-03-10", "2024-03-11"
    days = day_range(first, last)
    readings = write_readings(tmp_path / "data", days)
    meters = write_meters_csv(tmp_path / "meters", days)
    jobs = [
        readings_job(ns),
        {"name": "meters", "table": f"{ns}.meters", "source": {"path": "meters/meters-*.csv", "format": "csv"},
         "event_time": {"kind": "epoch_seconds", "column": "epoch"},
         "columns": [{"name": "meter", "type": "string", "required": True},
                     {"name": "kwh", "type": "double"}]},
    ]
    pipeline = write_pipeline(tmp_path / "pipeline.toml", server, jobs)
    cat = server.catalog()

    out = run_ingest(server, pipeline, first, last, "--dry-run", "--report", str(tmp_path / "dry.json"))
    assert out.returncode == 0, describe_run(out)
    expected_files = {
        "readings": sorted(str((tmp_path / "data" / f"{d}.ndjson").resolve()) for d in
                           [dt.date(2024, 3, 9), *days, dt.date(2024, 3, 12)]
                           if (tmp_path / "data" / f"{d}.ndjson").exists()),
        "meters": sorted(str((tmp_path / "meters" / f"meters-{d}.csv").resolve()) for d in days),
    }
    for name, files in expected_files.items():
        for f in files:
            assert f in out.stdout, f"--dry-run does not list {f}" + describe_run(out)
    dry = lib.read_report(tmp_path / "dry.json")
    for name, files in expected_files.items():
        rep = lib.job_report(dry, name)
        assert rep["status"] == "planned"
        assert rep["snapshot_id"] is None
        assert sorted(lib.file_uri_to_path(u).as_posix() for u in rep["files_read"]) == files
    assert (ns,) not in cat.list_namespaces(), "--dry-run created the namespace"
    for table in ("readings", "meters", "readings__rejects"):
        assert not cat.table_exists(f"{ns}.{table}"), f"--dry-run created {table}"
    wh = lib.file_uri_to_path(server.warehouse)
    assert not [p for p in wh.rglob("*") if ns in str(p)], "--dry-run wrote into the warehouse"

    # the real run and its report
    run_id = lib.unique("run")
    out = ingest_ok(server, pipeline, first, last, "--run-id", run_id, "--report", str(tmp_path / "run.json"))
    report = lib.read_report(tmp_path / "run.json")
    assert report["run_id"] == run_id
    assert report["window"] == {"from": first, "to": last}
    expected = {"readings": in_window(readings, first, last), "meters": sorted_rows(meters)}
    for name, rows in expected.items():
        rep = lib.job_report(report, name)
        tbl = cat.load_table(f"{ns}.{name}")
        assert rep["status"] == "committed", describe_run(out)
        assert rep["rows_written"] == len(rows)
        assert rep["rows_rejected"] == 0
        assert rep["rows_read"] >= len(rows)
        assert rep["snapshot_id"] == tbl.current_snapshot().snapshot_id
        assert tbl.current_snapshot().summary["floe.job"] == name
        assert sum(d["rows_written"] for d in rep["days"].values()) == len(rows)
        assert set(rep["days"]) == {d.isoformat() for d in days}
        assert tbl.scan().to_arrow().num_rows == len(rows)
    # the readings files of the days around the window were read; their other rows skipped
    rep = lib.job_report(report, "readings")
    assert rep["rows_read"] == rep["rows_written"] + rep["rows_outside_window"]
    meters_tbl = cat.load_table(f"{ns}.meters")
    data = meters_tbl.scan(selected_fields=("ts_utc", "meter", "kwh")).to_arrow()
    got = sorted_rows(zip(data.column("ts_utc").cast(pa.int64()).to_pylist(), data.column("meter").to_pylist(),
                          data.column("kwh").to_pylist()))
    assert got == sorted_rows(meters)

    # one job by name
    ingest_ok(server, pipeline, first, first, "meters", "--run-id", lib.unique("run"),
              "--report", str(tmp_path / "one.json"))
    one = lib.read_report(tmp_path / "one.json")
    assert [j["job"] for j in one["jobs"]] == ["meters"]
    assert cat.load_table(f"{ns}.readings").current_snapshot().snapshot_id == lib.job_report(report, "readings")["snapshot_id"]


# ---------------------------------------------------------------------------------------
# 8. sources on S3


def upload_folder(server, folder: Path, prefix: str):
    """Uploads every NDJSON file of `folder` under `prefix` of the test bucket; returns the client."""
    s3 = server.s3.client()
    for f in sorted(folder.glob("*.ndjson")):
        s3.upload_file(str(f), server.s3.bucket, f"{prefix}/{f.name}")
    return s3


def test_s3_source_files(s3_catalog_server, ns: str, tmp_path):
    """Per-day source objects under an s3:// prefix (the landing zone), read with the S3
    settings the catalog hands out plus the usual AWS credentials."""
    server = s3_catalog_server
    first, last = "2024-03-10", "2024-03-11"
    rows = write_readings(tmp_path / "data", day_range(first, last))
    prefix = f"landing/{ns}"
    upload_folder(server, tmp_path / "data", prefix)
    job = readings_job(ns, path=f"s3://{server.s3.bucket}/{prefix}/{{date}}.ndjson")
    pipeline = write_pipeline(tmp_path / "pipeline.toml", server, [job])
    ingest_ok(server, pipeline, first, last, "--report", str(tmp_path / "r.json"))
    tbl = server.catalog().load_table(f"{ns}.readings")
    assert table_rows(tbl) == in_window(rows, first, last)
    report = lib.job_report(lib.read_report(tmp_path / "r.json"), "readings")
    assert report["files_read"] and all(u.startswith("s3://") for u in report["files_read"]), report
    sources = set(tbl.scan(selected_fields=("_source",)).to_arrow().column("_source").to_pylist())
    assert sources and all(s.startswith(f"s3://{server.s3.bucket}/{prefix}/") for s in sources), sources


def test_s3_source_glob_and_prefix(s3_catalog_server, ns: str, tmp_path):
    """An s3:// glob lists the objects under its literal prefix and keeps the matching ones
    ('*' stops at '/'); a path ending in '/' takes every object under it."""
    server = s3_catalog_server
    first, last = "2024-03-10", "2024-03-11"
    rows = write_readings(tmp_path / "data", day_range(first, last))
    prefix = f"drop/{ns}"
    s3 = upload_folder(server, tmp_path / "data", prefix)
    # Not matched by the glob (another folder, another suffix).
    s3.put_object(Bucket=server.s3.bucket, Key=f"{prefix}/old/ignored.ndjson", Body=b"not json\n")
    s3.put_object(Bucket=server.s3.bucket, Key=f"{prefix}/readme.txt", Body=b"hello\n")
    job = readings_job(ns, path=f"s3://{server.s3.bucket}/{prefix}/*.ndjson")
    pipeline = write_pipeline(tmp_path / "glob.toml", server, [job])
    ingest_ok(server, pipeline, first, last, "--report", str(tmp_path / "r.json"))
    tbl = server.catalog().load_table(f"{ns}.readings")
    assert table_rows(tbl) == in_window(rows, first, last)
    report = lib.job_report(lib.read_report(tmp_path / "r.json"), "readings")
    assert not any("ignored" in u or "readme" in u for u in report["files_read"]), report["files_read"]

    # A prefix takes everything under it: here that includes the bad file and the text file,
    # whose lines become rejects (past a threshold of 0: exit 1, table unchanged).
    job = readings_job(ns, path=f"s3://{server.s3.bucket}/{prefix}/")
    pipeline = write_pipeline(tmp_path / "prefix.toml", server, [job])
    snap = tbl.current_snapshot().snapshot_id
    out = subprocess.run(ingest_cmd(pipeline, first, last), capture_output=True, text=True,
                         timeout=INGEST_TIMEOUT_S, env=ingest_env(server), cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert out.returncode == 1, describe_run(out)
    assert server.catalog().load_table(f"{ns}.readings").current_snapshot().snapshot_id == snap
