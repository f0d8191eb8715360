"""Acceptance tests of `floe ingest` with `format = "delta"`: source files in, Delta Lake tables
out at `<[delta] location>/<namespace levels>/<table>`, read back by the Python `deltalake`
package (delta-rs), on a local folder and on S3 (SeaweedFS).

What they hold floe to:
  * every input row lands exactly once, with a `day` DATE partition column equal to the UTC
    date of `ts_utc` (also across a DST change of the source's zone), and a reader prunes
    files on `day`;
  * a run commits ONE Delta `WRITE` (mode Overwrite, a replaceWhere predicate on the window's
    days) whose commitInfo carries `floe.run-id`, `floe.job`, `floe.window`; re-running a
    day replaces that day only; a retried run id does not commit again; two processes on
    disjoint windows of one S3 table both land;
  * past the reject threshold the run exits 1 and the table's version is unchanged; the
    rejects are in the Delta table `<table>__rejects` beside it, with the run id;
  * `--dry-run` creates nothing; `--report` gives the Delta version as `snapshot_id` and the
    table URL as `location`.

The catalog server is only there for the pipeline's [catalog] section: Delta tables do not go
through it. The `deltalake` package aborts the interpreter at exit after reading a table
("terminate called without an active exception"), so it is never imported here: every read
runs in a subprocess (`read_delta`) that prints JSON and leaves with os._exit.

Every process and request stays on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterable
from zoneinfo import ZoneInfo

import pytest

import floe_testlib as lib
from floe_testlib import toml_value, write_pipeline
from test_ingest import (
    INGEST_TIMEOUT_S,
    SITE_OFFSETS,
    assert_rejects,
    checksum,
    day_range,
    describe_run,
    in_window,
    ingest_cmd,
    micros,
    readings_job,
    sorted_rows,
    write_readings,
    write_with_rejects,
)

UTC = dt.timezone.utc
READ_TIMEOUT_S = 120.0


# ---------------------------------------------------------------------------------------
# pipeline files and runs


def delta_job(ns: str, **overrides: Any) -> dict:
    """test_ingest's readings job, written as a Delta table (no `sort`: Delta files keep the
    arrival order, and floe warns about it)."""
    job = readings_job(ns, format="delta", **overrides)
    job.pop("sort", None)
    return job


def write_delta_pipeline(path: Path, server: lib.CatalogServer, jobs: list[dict], location: str,
                         storage_options: dict[str, str] | None = None,
                         catalog_properties: dict[str, str] | None = None) -> Path:
    """write_pipeline plus a [delta] table (a top-level table may follow the [[job]]s)."""
    write_pipeline(path, server, jobs, catalog_properties=catalog_properties)
    lines = ["", "[delta]", f"location = {toml_value(location)}"]
    if storage_options:
        lines.append(f"storage_options = {toml_value(storage_options)}")
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")
    return path


def s3_properties(s3: lib.S3Server, *, credentials: bool) -> dict[str, str]:
    """[catalog] properties for a Delta location on the SeaweedFS bucket: the endpoint, region
    and path style, and the credentials too, or (credentials=False) the usual AWS way in the
    environment. (Without them, Delta jobs take the catalog's /v1/config settings:
    test_delta_takes_s3_settings_from_the_catalog.)"""
    props = {"s3.endpoint": s3.endpoint, "s3.region": s3.region, "s3.path-style-access": "true"}
    if credentials:
        props.update({"s3.access-key-id": s3.access_key, "s3.secret-access-key": s3.secret_key})
    return props


def floe_env(s3: lib.S3Server | None = None) -> dict[str, str]:
    extra = {"NO_COLOR": "1", "RUST_BACKTRACE": "0"}
    if s3 is not None:
        extra.update(AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key)
    return lib.clean_env(**extra)


def run_floe_ingest(pipeline: Path, frm: str, to: str, *args: str,
                    timeout: float = INGEST_TIMEOUT_S) -> subprocess.CompletedProcess:
    """`floe ingest` with no AWS_* variables (S3 settings come from the pipeline file)."""
    cmd = ingest_cmd(pipeline, frm, to, *args)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=floe_env(),
                             cwd=pipeline.parent, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s:\n{exc.stdout}\n{exc.stderr}")
    text = out.stdout + out.stderr
    assert "panicked" not in text, "floe panicked" + describe_run(out)
    return out


def ingest_ok(pipeline: Path, frm: str, to: str, *args: str, **kw) -> subprocess.CompletedProcess:
    out = run_floe_ingest(pipeline, frm, to, *args, **kw)
    assert out.returncode == 0, "floe ingest failed" + describe_run(out)
    return out


# ---------------------------------------------------------------------------------------
# reading Delta tables (in a subprocess: see the module docstring)

_READER = textwrap.dedent(r"""
    import datetime, json, os, sys, traceback

    def main(spec):
        import pyarrow as pa
        import pyarrow.dataset as ds
        from deltalake import DeltaTable

        def plain(table):
            cols = {}
            for field in table.schema:
                col = table.column(field.name)
                if pa.types.is_timestamp(field.type):
                    cols[field.name] = col.cast(pa.int64()).to_pylist()
                elif pa.types.is_date(field.type):
                    cols[field.name] = [d.isoformat() if d is not None else None for d in col.to_pylist()]
                elif pa.types.is_binary(field.type) or pa.types.is_fixed_size_binary(field.type):
                    cols[field.name] = [b.hex() if b is not None else None for b in col.to_pylist()]
                else:
                    cols[field.name] = col.to_pylist()
            return cols

        t = DeltaTable(spec["uri"], storage_options=spec.get("options") or None)
        schema = pa.schema(t.schema().to_arrow())
        out = {
            "version": t.version(),
            "table_uri": t.table_uri,
            "partition_columns": list(t.metadata().partition_columns),
            "schema": {f.name: str(f.type) for f in schema},
            "history": t.history(),
            "file_uris": sorted(t.file_uris()),
            "data": plain(t.to_pyarrow_table(columns=spec.get("columns"))),
        }
        adds = pa.table(t.get_add_actions(flatten=True)).to_pylist()
        out["files"] = sorted(
            ({"path": a["path"], "num_records": a["num_records"],
              "day": (a.get("partition.day").isoformat() if a.get("partition.day") is not None else None)}
             for a in adds), key=lambda a: a["path"])
        pruned = {}
        dataset = t.to_pyarrow_dataset() if spec.get("prune_days") else None
        for day in spec.get("prune_days") or []:
            date = datetime.date.fromisoformat(day)
            flt = ds.field("day") == date
            pruned[day] = {
                "file_uris": sorted(t.file_uris(file_pruning_predicate=[("day", "=", day)])),
                "fragments": sorted(f.path for f in dataset.get_fragments(filter=flt)),
                "data": plain(dataset.to_table(filter=flt, columns=spec.get("columns"))),
            }
        out["pruned"] = pruned
        return out

    try:
        result = main(json.loads(sys.argv[1]))
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        code = 0
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # deltalake aborts the interpreter at a normal exit
""")


def read_delta(uri: str, *, options: dict[str, str] | None = None, columns: list[str] | None = None,
               prune_days: Iterable[str] = ()) -> dict:
    """The Delta table at `uri` as the deltalake package sees it: version, partition columns,
    schema (name -> pyarrow type text), history (newest first), file URIs, add actions
    (path, num_records, day), the rows (`data`: column -> values; timestamps as UTC micros,
    dates as ISO text) and, per day of prune_days, what a `day` filter selects."""
    spec = {"uri": uri, "options": options or {}, "columns": columns, "prune_days": list(prune_days)}
    cmd = [sys.executable, "-c", _READER, json.dumps(spec)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=READ_TIMEOUT_S, env=lib.clean_env(),
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"reading the Delta table {uri} did not finish within {READ_TIMEOUT_S:.0f} s:\n{exc.stderr}")
    assert out.returncode == 0 and out.stdout.strip(), (
        f"reading the Delta table {uri} failed (exit {out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def delta_exists(uri: str, options: dict[str, str] | None = None) -> bool:
    script = textwrap.dedent("""
        import json, os, sys
        from deltalake import DeltaTable
        spec = json.loads(sys.argv[1])
        print(json.dumps(DeltaTable.is_deltatable(spec["uri"], storage_options=spec["options"] or None)))
        sys.stdout.flush()
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script, json.dumps({"uri": uri, "options": options or {}})],
                         capture_output=True, text=True, timeout=READ_TIMEOUT_S, env=lib.clean_env(),
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def rows_of(data: dict[str, list]) -> list[tuple]:
    """(ts_utc micros, site_id, value) of a reader result's `data`, sorted."""
    return sorted_rows(zip(data["ts_utc"], data["site_id"], data["value"]))


def utc_date_of(ts_micros: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=ts_micros)).date().isoformat()


def writes(history: list[dict]) -> list[dict]:
    """The WRITE commits of a history (newest first), oldest first."""
    return sorted((h for h in history if h.get("operation") == "WRITE"), key=lambda h: h["version"])


def assert_window_commit(commit: dict, run_id: str | None, first: str, last: str) -> None:
    """One floe run's commit: an Overwrite WRITE whose predicate names the window's days."""
    assert commit["operation"] == "WRITE", commit
    params = commit["operationParameters"]
    assert params["mode"] == "Overwrite", commit
    predicate = params.get("predicate") or ""
    assert "day" in predicate and first in predicate and last in predicate, commit
    assert json.loads(params["partitionBy"]) == ["day"], commit
    if run_id is not None:
        assert commit["floe.run-id"] == run_id, commit
    assert commit["floe.job"] == "readings", commit
    assert commit["floe.window"] == f"{first}/{last}", commit


def table_uri(location_root: Path | str, ns: str, table: str = "readings") -> str:
    root = location_root.as_uri() if isinstance(location_root, Path) else location_root.rstrip("/")
    return f"{root}/{ns}/{table}"


# ---------------------------------------------------------------------------------------
# 1. round trip on a local folder: rows, `day`, schema, history, re-runs, pruning


def test_delta_round_trip_local(local_server, ns: str, tmp_path):
    first, last = "2024-03-01", "2024-03-03"
    # UTC days around the window too: floe reads the neighbouring local-date files and must
    # skip their rows outside the window.
    rows = write_readings(tmp_path / "data", day_range("2024-02-29", "2024-03-04"))
    expected = in_window(rows, first, last)
    assert len(expected) == 3 * 48 * len(SITE_OFFSETS)
    root = tmp_path / "lake"
    pipeline = write_delta_pipeline(tmp_path / "pipeline.toml", local_server, [delta_job(ns)], str(root))
    uri = table_uri(root, ns)

    run1 = lib.unique("run")
    out = ingest_ok(pipeline, first, last, "--run-id", run1, "--report", str(tmp_path / "r1.json"))
    report = lib.job_report(lib.read_report(tmp_path / "r1.json"), "readings")
    assert report["status"] == "committed", describe_run(out)
    assert report["rows_written"] == len(expected), describe_run(out)
    assert report["snapshot_id"] == 1, report

    middle = "2024-03-02"
    got = read_delta(uri, prune_days=[middle])
    data_rows = rows_of(got["data"])
    assert len(data_rows) == len(expected)
    assert checksum(data_rows) == checksum(expected)
    assert data_rows == expected

    # `day`: the partition column, the UTC date of ts_utc on every row
    assert got["partition_columns"] == ["day"]
    days = got["data"]["day"]
    assert all(d == utc_date_of(ts) for d, ts in zip(days, got["data"]["ts_utc"])), "a `day` is not the UTC date"
    assert sorted(set(days)) == [d.isoformat() for d in day_range(first, last)]
    assert {f["day"] for f in got["files"]} == set(days)
    for f in got["files"]:
        assert f["path"].startswith(f"day={f['day']}/"), f

    # schema: UTC key, contract columns, bronze columns, the DATE partition
    schema = got["schema"]
    assert schema["ts_utc"] == "timestamp[us, tz=UTC]", schema
    assert schema["day"] == "date32[day]", schema
    assert schema["site_id"] == "string", schema
    assert schema["value"] == "double", schema
    for col in ("_ingest_time", "_source", "_hash"):
        assert col in schema, schema

    # one Overwrite WRITE, saying what produced it
    assert got["version"] == 1
    [commit] = writes(got["history"])
    assert commit["version"] == 1
    assert_window_commit(commit, run1, first, last)

    # pruning on `day`: only that day's files, and exactly that day's rows
    pruned = got["pruned"][middle]
    day_files = {f["path"] for f in got["files"] if f["day"] == middle}
    assert day_files and len(day_files) < len(got["files"])
    assert pruned["file_uris"] and all(f"/day={middle}/" in u for u in pruned["file_uris"]), pruned["file_uris"]
    assert {u.split(f"/{ns}/readings/", 1)[1] for u in pruned["file_uris"]} == day_files
    assert {p for p in pruned["fragments"]} == day_files, pruned["fragments"]
    assert rows_of(pruned["data"]) == in_window(rows, middle, middle)
    assert set(pruned["data"]["day"]) == {middle}
    assert sum(f["num_records"] for f in got["files"] if f["day"] == middle) == 48 * len(SITE_OFFSETS)

    # re-running one day: same rows, one more version, only that day's files replaced
    run2 = lib.unique("run")
    ingest_ok(pipeline, middle, middle, "--run-id", run2, "--report", str(tmp_path / "r2.json"))
    report2 = lib.job_report(lib.read_report(tmp_path / "r2.json"), "readings")
    again = read_delta(uri)
    assert rows_of(again["data"]) == expected, "re-running a day changed the rows (duplicates?)"
    assert again["version"] == 2
    assert report2["snapshot_id"] == 2
    assert [c["version"] for c in writes(again["history"])] == [1, 2]
    latest = writes(again["history"])[-1]
    assert_window_commit(latest, run2, middle, middle)
    assert latest["operationMetrics"]["num_removed_files"] == len(day_files), latest
    assert report2["replaced_files"] == len(day_files), report2
    other_before = {f["path"] for f in got["files"] if f["day"] != middle}
    other_after = {f["path"] for f in again["files"] if f["day"] != middle}
    assert other_after == other_before, "re-running one day touched the files of other days"
    assert not ({f["path"] for f in again["files"] if f["day"] == middle} & day_files)

    # a retry with the run id of a run that landed commits nothing
    out = ingest_ok(pipeline, middle, middle, "--run-id", run2, "--report", str(tmp_path / "r3.json"))
    report3 = lib.job_report(lib.read_report(tmp_path / "r3.json"), "readings")
    assert report3["status"] == "already-committed", describe_run(out)
    assert report3["snapshot_id"] == 2
    assert read_delta(uri, columns=["ts_utc"])["version"] == 2


# ---------------------------------------------------------------------------------------
# 2. a source in local settlement periods across the spring clock change

LONDON = ZoneInfo("Europe/London")


def write_settlement_periods(folder: Path, dates: list[dt.date]) -> list[tuple]:
    """Half-hourly settlement periods of each Europe/London date (46 on 2024-03-31), one file
    per settlement date. Returns (utc micros, settlement_date, period, demand_mw, utc date)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for d in dates:
        start = dt.datetime(d.year, d.month, d.day, tzinfo=LONDON).astimezone(UTC)
        nd = d + dt.timedelta(days=1)
        end = dt.datetime(nd.year, nd.month, nd.day, tzinfo=LONDON).astimezone(UTC)
        periods = int((end - start) / dt.timedelta(minutes=30))
        lines = []
        for p in range(1, periods + 1):
            utc = start + dt.timedelta(minutes=30 * (p - 1))
            demand = 20000.0 + d.day * 100 + p
            lines.append(json.dumps({"SETTLEMENT_DATE": d.isoformat(), "SETTLEMENT_PERIOD": p, "ND": demand}))
            rows.append((micros(utc), d.isoformat(), p, demand, utc.date()))
        (folder / f"{d.isoformat()}.ndjson").write_text("\n".join(lines) + "\n")
    return rows


def test_delta_dst_settlement_periods(local_server, ns: str, tmp_path):
    first, last = "2024-03-30", "2024-04-01"
    rows = write_settlement_periods(tmp_path / "demand", day_range("2024-03-29", "2024-04-02"))
    assert sum(1 for r in rows if r[1] == "2024-03-31") == 46
    job = {
        "name": "readings",
        "table": f"{ns}.demand",
        "format": "delta",
        "source": {"path": "demand/{date}.ndjson", "format": "ndjson"},
        "event_time": {"kind": "period", "date_column": "SETTLEMENT_DATE", "period_column": "SETTLEMENT_PERIOD",
                       "zone": "Europe/London"},
        "columns": [
            {"name": "settlement_date", "type": "date", "required": True, "from": "SETTLEMENT_DATE"},
            {"name": "settlement_period", "type": "int", "required": True, "from": "SETTLEMENT_PERIOD"},
            {"name": "demand_mw", "type": "double", "required": True, "from": "ND"},
        ],
        "reject_threshold": 0.0,
    }
    root = tmp_path / "lake"
    pipeline = write_delta_pipeline(tmp_path / "pipeline.toml", local_server, [job], str(root))
    ingest_ok(pipeline, first, last, "--report", str(tmp_path / "r.json"))

    got = read_delta(table_uri(root, ns, "demand"),
                     columns=["ts_utc", "settlement_date", "settlement_period", "demand_mw", "day"])
    data = got["data"]
    got_rows = sorted(zip(data["ts_utc"], data["settlement_date"], data["settlement_period"], data["demand_mw"],
                          data["day"]))
    lo, hi = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    expected = sorted((r[0], r[1], r[2], r[3], r[4].isoformat()) for r in rows if lo <= r[4] <= hi)
    assert got_rows == expected
    assert all(d == utc_date_of(ts) for ts, *_, d in got_rows)
    half_hour = 30 * 60 * 1_000_000
    for day in day_range(first, last):
        ts = sorted(r[0] for r in got_rows if r[4] == day.isoformat())
        day_start = micros(dt.datetime(day.year, day.month, day.day, tzinfo=UTC))
        assert ts == [day_start + k * half_hour for k in range(48)], f"{day}: not the 48 UTC half-hours"
    # UTC 2024-03-31 = 46 periods of its own settlement date + the first 2 of 2024-04-01
    d31 = [r for r in got_rows if r[4] == "2024-03-31"]
    assert sorted({(r[1], sum(1 for x in d31 if x[1] == r[1])) for r in d31}) == [("2024-03-31", 46),
                                                                                  ("2024-04-01", 2)]
    report = lib.job_report(lib.read_report(tmp_path / "r.json"), "readings")
    assert {d: v["rows_written"] for d, v in report["days"].items()} == {
        d.isoformat(): 48 for d in day_range(first, last)}


# ---------------------------------------------------------------------------------------
# 3. on S3: round trip, then two processes on disjoint windows at the same time


def s3_reader_options(s3: lib.S3Server) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_REGION": s3.region,
        "AWS_ALLOW_HTTP": "true",
    }


def run_at_once(pipeline: Path, windows: list[tuple[str, str]], run_ids: list[str], s3: lib.S3Server,
                tmp_path: Path, tag: str) -> tuple[list[int | None], str]:
    """One floe process per window, all started before any is waited for. Returns the exit
    codes and the processes' logs."""
    cmds = [ingest_cmd(pipeline, frm, to, "--run-id", run_ids[i], "--report", str(tmp_path / f"{tag}{i}.json"))
            for i, (frm, to) in enumerate(windows)]
    labels = [f"{tag}{i} ({a}..{b})" for i, (a, b) in enumerate(windows)]
    return lib.run_at_once(cmds, labels, tmp_path / tag, floe_env(s3), tmp_path, INGEST_TIMEOUT_S)


def assert_concurrent_commits(got: dict, windows: list[tuple[str, str]], run_ids: list[str], tmp_path: Path,
                              tag: str, logs: str) -> None:
    """Each run of run_at_once made one commit of its own window, and its report says which."""
    by_run = {c.get("floe.run-id"): c for c in writes(got["history"])}
    for i, (frm, to) in enumerate(windows):
        assert run_ids[i] in by_run, f"no commit of {run_ids[i]}\n" + logs
        commit = by_run[run_ids[i]]
        assert_window_commit(commit, run_ids[i], frm, to)
        rep = lib.job_report(lib.read_report(tmp_path / f"{tag}{i}.json"), "readings")
        assert rep["status"] == "committed", logs
        assert rep["snapshot_id"] == commit["version"], logs
        assert rep["data_files"] == commit["operationMetrics"]["num_added_files"], (rep, commit)
        assert rep["rows_written"] == commit["operationMetrics"]["num_added_rows"], (rep, commit)


@pytest.mark.s3
def test_delta_on_s3_and_concurrent_disjoint_windows(s3_catalog_server, ns: str, tmp_path):
    server = s3_catalog_server
    s3 = server.s3
    rows = write_readings(tmp_path / "data", day_range("2024-03-07", "2024-03-18"))
    root = f"s3://{s3.bucket}/{lib.unique('lake')}/delta"
    uri = table_uri(root, ns)
    options = s3_reader_options(s3)

    # credentials in [catalog] properties; the floe process has no AWS_* variables at all
    props_pipeline = write_delta_pipeline(tmp_path / "props.toml", server, [delta_job(ns)], root,
                                          catalog_properties=s3_properties(s3, credentials=True))
    run1 = lib.unique("run")
    out = run_floe_ingest(props_pipeline, "2024-03-08", "2024-03-09", "--run-id", run1,
                          "--report", str(tmp_path / "r1.json"))
    assert out.returncode == 0, "floe ingest to an S3 Delta table failed" + describe_run(out)
    report = lib.job_report(lib.read_report(tmp_path / "r1.json"), "readings")
    assert report["status"] == "committed", describe_run(out)
    assert report["location"].rstrip("/") == uri, report
    got = read_delta(uri, options=options, prune_days=["2024-03-09"])
    assert rows_of(got["data"]) == in_window(rows, "2024-03-08", "2024-03-09")
    assert got["partition_columns"] == ["day"]
    assert got["schema"]["ts_utc"] == "timestamp[us, tz=UTC]" and got["schema"]["day"] == "date32[day]"
    assert all(d == utc_date_of(ts) for d, ts in zip(got["data"]["day"], got["data"]["ts_utc"]))
    assert got["version"] == report["snapshot_id"] == 1
    assert_window_commit(writes(got["history"])[-1], run1, "2024-03-08", "2024-03-09")
    fragments = got["pruned"]["2024-03-09"]["fragments"]
    assert fragments and all("day=2024-03-09/" in p for p in fragments), fragments
    assert len(fragments) == sum(1 for f in got["files"] if f["day"] == "2024-03-09"), (fragments, got["files"])
    assert rows_of(got["pruned"]["2024-03-09"]["data"]) == in_window(rows, "2024-03-09", "2024-03-09")
    prefix = s3.key_of(uri) + "/"
    keys = s3.list_keys(prefix)
    assert any(k.endswith(".parquet") and "/day=2024-03-08/" in k for k in keys), keys
    first_commit = prefix + "_delta_log/00000000000000000000.json"
    assert first_commit in keys, keys

    # delta-rs commits on S3 with a conditional PUT (If-None-Match: *) of the next log file:
    # the store must refuse a second PUT of an existing commit
    client = s3.client()
    body = client.get_object(Bucket=s3.bucket, Key=first_commit)["Body"].read()
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=s3.bucket, Key=first_commit, Body=b"{}", IfNoneMatch="*")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412, refused.value.response
    assert client.get_object(Bucket=s3.bucket, Key=first_commit)["Body"].read() == body

    # two processes at once on disjoint windows; credentials the usual AWS way this time
    env_pipeline = write_delta_pipeline(tmp_path / "env.toml", server, [delta_job(ns)], root,
                                        catalog_properties=s3_properties(s3, credentials=False))
    windows = [("2024-03-10", "2024-03-11"), ("2024-03-12", "2024-03-13")]
    run_ids = [lib.unique("conc") for _ in windows]
    codes, logs = run_at_once(env_pipeline, windows, run_ids, s3, tmp_path, "pair")
    assert codes == [0, 0], "concurrent runs on disjoint windows of one S3 Delta table must both succeed\n" + logs
    got = read_delta(uri, options=options)
    data_rows = rows_of(got["data"])
    assert len(data_rows) == len(set(data_rows)), "duplicated rows\n" + logs
    assert data_rows == in_window(rows, "2024-03-08", "2024-03-13"), logs
    assert got["version"] == 3, logs
    assert [c["version"] for c in writes(got["history"])] == [1, 2, 3], logs
    assert_concurrent_commits(got, windows, run_ids, tmp_path, "pair", logs)

    # four at once, the endpoint in [delta] storage_options: two of them usually race for the
    # same log file (delta-rs logs "version already exists" and retries on the next one)
    opts_pipeline = write_delta_pipeline(
        tmp_path / "opts.toml", server, [delta_job(ns)], root,
        storage_options={"AWS_ENDPOINT_URL": s3.endpoint, "AWS_REGION": s3.region, "AWS_ALLOW_HTTP": "true"})
    windows4 = [(d.isoformat(), d.isoformat()) for d in day_range("2024-03-14", "2024-03-17")]
    run_ids4 = [lib.unique("four") for _ in windows4]
    codes, logs = run_at_once(opts_pipeline, windows4, run_ids4, s3, tmp_path, "four")
    assert codes == [0] * 4, "concurrent runs on disjoint windows of one S3 Delta table must all succeed\n" + logs
    got = read_delta(uri, options=options)
    data_rows = rows_of(got["data"])
    assert len(data_rows) == len(set(data_rows)), "duplicated rows\n" + logs
    assert data_rows == in_window(rows, "2024-03-08", "2024-03-17"), logs
    assert got["version"] == 7, logs
    assert [c["version"] for c in writes(got["history"])] == list(range(1, 8)), logs
    assert_concurrent_commits(got, windows4, run_ids4, tmp_path, "four", logs)


def test_delta_takes_s3_settings_from_the_catalog(s3_catalog_server, ns: str, tmp_path):
    """No S3 setting in the pipeline at all: the endpoint, region and path style come from the
    catalog server's /v1/config (as for Iceberg jobs), the credentials from the environment."""
    server = s3_catalog_server
    s3 = server.s3
    rows = write_readings(tmp_path / "data", day_range("2024-03-07", "2024-03-09"))
    root = f"s3://{s3.bucket}/{lib.unique('cfg')}/delta"
    pipeline = write_delta_pipeline(tmp_path / "cfg.toml", server, [delta_job(ns)], root)
    text = pipeline.read_text()
    assert "s3." not in text and "AWS_" not in text, text
    cmd = ingest_cmd(pipeline, "2024-03-08", "2024-03-09")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=INGEST_TIMEOUT_S, env=floe_env(s3),
                         cwd=pipeline.parent, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, "a Delta job on S3 with the catalog's settings failed" + describe_run(out)
    got = read_delta(table_uri(root, ns), options=s3_reader_options(s3))
    assert rows_of(got["data"]) == in_window(rows, "2024-03-08", "2024-03-09")


# ---------------------------------------------------------------------------------------
# 4. rejects past the threshold


def test_delta_rejects_threshold(local_server, ns: str, tmp_path):
    day = "2024-03-10"
    root = tmp_path / "lake"
    uri = table_uri(root, ns)
    clean = write_readings(tmp_path / "clean", [dt.date.fromisoformat(day)])
    clean_pipeline = write_delta_pipeline(tmp_path / "clean.toml", local_server,
                                          [delta_job(ns, path="clean/{date}.ndjson")], str(root))
    ingest_ok(clean_pipeline, day, day)
    before = read_delta(uri)
    assert rows_of(before["data"]) == in_window(clean, day, day)
    assert before["version"] == 1

    good, bad = write_with_rejects(tmp_path / "dirty", day)
    strict = write_delta_pipeline(tmp_path / "strict.toml", local_server,
                                  [delta_job(ns, path="dirty/{date}.ndjson")], str(root))
    run_id = lib.unique("strict")
    out = run_floe_ingest(strict, day, day, "--run-id", run_id, "--report", str(tmp_path / "strict.json"))
    assert out.returncode == 1, "rejects above the threshold must exit 1" + describe_run(out)
    report = lib.job_report(lib.read_report(tmp_path / "strict.json"), "readings")
    assert report["status"] == "failed", report
    assert report["rows_rejected"] == len(bad), describe_run(out)
    assert report["rows_read"] == len(good) + len(bad), describe_run(out)
    assert report["snapshot_id"] is None, report
    assert report["rejects_snapshot_id"] == 0, report

    after = read_delta(uri)
    assert after["version"] == before["version"], "a run over its reject threshold committed to the table"
    assert after["file_uris"] == before["file_uris"]
    assert rows_of(after["data"]) == rows_of(before["data"])
    assert not any(h.get("floe.run-id") == run_id for h in after["history"])
    log_dir = root / ns / "readings" / "_delta_log"
    # version 0 defines the table, version 1 is the clean run; nothing since
    assert sorted(p.name for p in log_dir.glob("*.json")) == [
        "00000000000000000000.json", "00000000000000000001.json"]

    # the rejects, with their reasons, in the Delta table beside it
    rejects_uri = table_uri(root, ns, "readings__rejects")
    rej = read_delta(rejects_uri)
    for col in ("_ingest_time", "job", "run_id", "source", "line", "reason", "raw"):
        assert col in rej["schema"], rej["schema"]
    records = [dict(zip(rej["data"], vals)) for vals in zip(*rej["data"].values())]
    mine = [r for r in records if r["run_id"] == run_id]
    assert len(mine) == len(records) == len(bad)
    assert_rejects(mine, bad, day)

    # a threshold above the ratio: the good rows land (one more version), rejects kept again
    lenient = write_delta_pipeline(tmp_path / "lenient.toml", local_server,
                                   [delta_job(ns, path="dirty/{date}.ndjson", reject_threshold=0.1)], str(root))
    run_id2 = lib.unique("lenient")
    ingest_ok(lenient, day, day, "--run-id", run_id2, "--report", str(tmp_path / "lenient.json"))
    report = lib.job_report(lib.read_report(tmp_path / "lenient.json"), "readings")
    assert report["rows_written"] == len(good)
    assert report["snapshot_id"] == 2
    final = read_delta(uri)
    assert rows_of(final["data"]) == good
    assert_window_commit(writes(final["history"])[-1], run_id2, day, day)
    rej = read_delta(rejects_uri, columns=["run_id", "line"])
    assert sorted(l for r, l in zip(rej["data"]["run_id"], rej["data"]["line"]) if r == run_id2) == sorted(bad)
    assert rej["version"] == 1


# ---------------------------------------------------------------------------------------
# 5. --dry-run and --report


def test_delta_dry_run_and_report(local_server, ns: str, tmp_path):
    first, last = "2024-03-10", "2024-03-11"
    rows = write_readings(tmp_path / "data", day_range(first, last))
    expected = in_window(rows, first, last)
    # a relative [delta] location is the pipeline file's folder's; namespace levels are folders
    job = delta_job(ns, table="sub.readings")  # -> {ns}.sub.readings
    pipeline = write_delta_pipeline(tmp_path / "pipeline.toml", local_server, [job], "lake")
    root = tmp_path / "lake"
    uri = f"{root.as_uri()}/{ns}/sub/readings"

    out = run_floe_ingest(pipeline, first, last, "--dry-run", "--report", str(tmp_path / "dry.json"))
    assert out.returncode == 0, describe_run(out)
    dry = lib.job_report(lib.read_report(tmp_path / "dry.json"), "readings")
    assert dry["status"] == "planned", dry
    assert dry["snapshot_id"] is None, dry
    assert (dry["location"] or "").rstrip("/") == uri, dry
    listed = sorted(str((tmp_path / "data" / f"{d}.ndjson").resolve()) for d in
                    ["2024-03-09", first, last, "2024-03-12"] if (tmp_path / "data" / f"{d}.ndjson").exists())
    assert sorted(lib.file_uri_to_path(u).as_posix() for u in dry["files_read"]) == listed, dry
    for f in listed:
        assert f in out.stdout, f"--dry-run does not list {f}" + describe_run(out)
    assert not root.exists(), f"--dry-run created {sorted(map(str, root.rglob('*')))}"
    assert not delta_exists(uri)

    run_id = lib.unique("run")
    out = ingest_ok(pipeline, first, last, "--run-id", run_id, "--report", str(tmp_path / "run.json"))
    whole = lib.read_report(tmp_path / "run.json")
    assert whole["run_id"] == run_id
    assert whole["window"] == {"from": first, "to": last}
    report = lib.job_report(whole, "readings")
    got = read_delta(uri)
    assert report["status"] == "committed", describe_run(out)
    assert report["location"].rstrip("/") == uri, report
    assert got["table_uri"].rstrip("/") == uri, got["table_uri"]
    assert report["snapshot_id"] == got["version"] == 1
    assert report["rows_written"] == len(expected) == len(rows_of(got["data"]))
    assert report["rows_rejected"] == 0
    assert report["data_files"] == len(got["files"]), (report, got["files"])
    assert {d: v["rows_written"] for d, v in report["days"].items()} == {
        d: sum(1 for x in got["data"]["day"] if x == d) for d in (first, last)}
    assert writes(got["history"])[-1]["floe.run-id"] == run_id

    # a second run: snapshot_id follows the Delta version
    ingest_ok(pipeline, last, last, "--report", str(tmp_path / "run2.json"))
    report2 = lib.job_report(lib.read_report(tmp_path / "run2.json"), "readings")
    assert report2["snapshot_id"] == read_delta(uri, columns=["ts_utc"])["version"] == 2
    assert report2["location"].rstrip("/") == uri
