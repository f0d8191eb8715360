"""Acceptance tests of `floe transform` and `floe run`: SQL models (`<models>/<layer>/<name>.sql`)
run by DataFusion over Iceberg tables, written back as the tables `<layer>.<name>`, tested on
an audit branch before they are published, and refreshed incrementally; read back by pyiceberg
through `floe catalog serve` on a local-folder warehouse (and once on S3).

What they hold floe to:
  * models run in dependency order (from the tables each query reads); the example's gold
    tables equal an independent pyarrow/Python computation over its silver table, and its
    silver fact table equals one over the bronze tables;
  * a re-run with no upstream change writes nothing ("up-to-date"); `--from/--to` recomputes
    those days with the same rows;
  * one changed bronze day recomputes (overwrites) only that day's partitions downstream, and
    the snapshot summaries say so (`floe.transform.refresh`, `floe.transform.days`,
    `floe.state.transform-inputs`);
  * a failing data test (not_null, also with a tolerated fraction, unique, accepted_values,
    relationships, cadence, regex, expression, a custom sql query) leaves the
    table's `main` as it was, drops the audit branch, skips the models downstream, exits 1 and
    prints the model, the test and sample rows;
  * the models of a layer are published together (one multi-table commit: when it is refused,
    none of them is);
  * SQL errors name the file, line and column and exit 2 with nothing committed; bad model
    headers name the file and line;
  * `--dry-run` creates nothing and prints the plan; `--select` picks MODEL, MODEL+, +MODEL.

The example pipeline tests need the fixed namespaces bronze/silver/gold, so each starts its own
catalog server (`catalog_server`); the others use the shared server with random layer names
(a layer is the models sub-folder's name). Every process and request stays on 127.0.0.1 and
every wait is bounded.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import math
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

import floe_testlib as lib
from floe_testlib import toml_value

UTC = dt.timezone.utc
FLOE_TIMEOUT_S = 240.0
ENERGY = lib.REPO_ROOT / "examples" / "energy"
SQL_DIR = lib.REPO_ROOT / "sql"

# The example's window and models.
FIRST, LAST = "2024-03-30", "2024-04-01"
SILVER = ["silver.dim_date", "silver.dim_site", "silver.fact_observations"]
GOLD = ["gold.daily_summary", "gold.site_daily_weather"]
ALL_MODELS = SILVER + GOLD
TABLE_MODELS = {"silver.dim_date", "silver.dim_site"}  # materialized = "table"
INCREMENTAL_MODELS = [m for m in ALL_MODELS if m not in TABLE_MODELS]

# The columns each model's rows are keyed by (unique in the table).
KEYS = {
    "silver.dim_date": ("settlement_date",),
    "silver.dim_site": ("site_id",),
    "silver.fact_observations": ("ts_utc", "site_id"),
    "gold.daily_summary": ("day",),
    "gold.site_daily_weather": ("day", "site_id"),
}


# ---------------------------------------------------------------------------------------
# running floe


def floe_env(server: lib.CatalogServer | None) -> dict[str, str]:
    """S3 credentials the usual AWS way when the warehouse is on S3; RUST_BACKTRACE off so
    errors are compared as users see them."""
    extra = {"NO_COLOR": "1", "RUST_BACKTRACE": "0"}
    if server is not None and server.s3 is not None:
        extra.update(AWS_ACCESS_KEY_ID=server.s3.access_key, AWS_SECRET_ACCESS_KEY=server.s3.secret_key)
    return lib.clean_env(**extra)


def run_floe(server: lib.CatalogServer | None, *args: str, cwd: Path,
             timeout: float = FLOE_TIMEOUT_S) -> subprocess.CompletedProcess:
    cmd = [lib.floe_bin(), *map(str, args)]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=floe_env(server),
                              cwd=cwd, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s:\n{exc.stdout}\n{exc.stderr}")


explain = lib.explain


def floe_ok(server: lib.CatalogServer | None, *args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    out = run_floe(server, *args, cwd=cwd, **kw)
    assert out.returncode == 0, "floe failed" + explain(out)
    assert "panicked" not in out.stderr, explain(out)
    return out


def no_panic(out: subprocess.CompletedProcess) -> None:
    text = (out.stdout or "") + (out.stderr or "")
    assert "panicked" not in text and "stack backtrace" not in text, "floe panicked" + explain(out)


def model_report(report: dict, model: str) -> dict:
    found = [m for m in report["models"] if m["model"] == model]
    assert len(found) == 1, f"model {model!r} not (once) in the report: {json.dumps(report, indent=1)[:4000]}"
    return found[0]


def statuses(report: dict) -> dict[str, str]:
    return {m["model"]: m["status"] for m in report["models"]}


# ---------------------------------------------------------------------------------------
# the example pipeline (examples/energy + sql/), on a test catalog server


def copy_models(dest: Path) -> Path:
    """A copy of the repository's sql/ models (tests never write into the repository)."""
    shutil.copytree(SQL_DIR, dest, ignore=lambda d, names: [n for n in names
                                                           if not n.endswith(".sql") and not (Path(d) / n).is_dir()])
    return dest


def energy_pipeline(root: Path, server: lib.CatalogServer, *, uri: str | None = None,
                    models: Path | None = None) -> Path:
    """examples/energy's data and floe.toml under root/energy, the [catalog] pointed at the
    test server (or `uri`, e.g. a proxy in front of it) and [transform] models at a copy of
    sql/. The jobs stay the example's own."""
    dest = root / "energy"
    shutil.copytree(ENERGY / "data", dest / "data")
    models = models or copy_models(root / "sql")
    text = (ENERGY / "floe.toml").read_text()
    embedded = 'embedded_warehouse = "warehouse"'
    assert embedded in text, "examples/energy/floe.toml no longer has its embedded_warehouse line"
    text = text.replace(embedded, f"uri = {toml_value(uri or server.uri)}\nwarehouse = {toml_value(server.name)}")
    text, n = re.subn(r"(?m)^models\s*=.*$", f"models = {toml_value(str(models))}", text)
    assert n == 1, "examples/energy/floe.toml no longer has one [transform] models line"
    pipeline = dest / "floe.toml"
    pipeline.write_text(text)
    return pipeline


def set_weather(pipeline: Path, ts: str, site: str, temperature: float, wind: float) -> None:
    """Rewrites one reading of the example's weather source file of that date."""
    csv = pipeline.parent / "data" / "weather" / f"{ts[:10]}.csv"
    lines = csv.read_text().splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith(f"{ts},{site},")]
    assert len(hits) == 1, f"the example's weather file {csv.name} changed shape"
    lines[hits[0]] = f"{ts},{site},{temperature},{wind}"
    csv.write_text("\n".join(lines) + "\n")


def floe_run(server: lib.CatalogServer, pipeline: Path, frm: str = FIRST, to: str = LAST, *args: str,
             report: Path | None = None) -> subprocess.CompletedProcess:
    extra = ["--report", str(report)] if report else []
    return floe_ok(server, "run", "--pipeline", pipeline, "--from", frm, "--to", to, *extra, *args,
                   cwd=pipeline.parent)


# ---------------------------------------------------------------------------------------
# reading tables back


def table_dicts(cat, ident: str, snapshot_id: int | None = None) -> list[dict]:
    tbl = cat.load_table(ident)
    scan = tbl.scan(snapshot_id=snapshot_id) if snapshot_id else tbl.scan()
    return scan.to_arrow().to_pylist()


def by_key(rows: Iterable[dict], key: tuple[str, ...]) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for r in rows:
        k = tuple(r[c] for c in key)
        assert k not in out, f"duplicate key {k}"
        out[k] = r
    return out


def close(a: Any, b: Any, tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=tol)
    return a == b


def assert_rows_match(got: list[dict], expected: list[dict], key: tuple[str, ...], what: str,
                      tolerances: dict[str, float] | None = None) -> None:
    """Row for row by key: every expected column equal (floats within a tolerance)."""
    tolerances = tolerances or {}
    g, e = by_key(got, key), by_key(expected, key)
    assert sorted(g) == sorted(e), f"{what}: keys differ: missing {sorted(set(e) - set(g))[:5]}, " \
                                   f"unexpected {sorted(set(g) - set(e))[:5]}"
    problems = []
    for k, want in e.items():
        have = g[k]
        for col, value in want.items():
            assert col in have, f"{what}: no column {col!r} (has {sorted(have)})"
            if not close(have[col], value, tolerances.get(col, 1e-9)):
                problems.append(f"{k} {col}: got {have[col]!r}, expected {value!r}")
    assert not problems, f"{what}: {len(problems)} value(s) differ, e.g.\n" + "\n".join(problems[:10])


def day_start(d: dt.date) -> dt.datetime:
    return dt.datetime(d.year, d.month, d.day, tzinfo=UTC)


def epoch_day(d: dt.date | str) -> int:
    if isinstance(d, str):
        d = dt.date.fromisoformat(d)
    return (d - dt.date(1970, 1, 1)).days


def expected_fact(cat) -> list[dict]:
    """silver.fact_observations from bronze: every demand half-hour x every weather site, with
    that site's hourly reading of the half-hour's hour (or none)."""
    demand = table_dicts(cat, "bronze.demand")
    weather = table_dicts(cat, "bronze.weather")
    sites = sorted({w["site_id"] for w in weather})
    at: dict[tuple, dict] = {}
    for w in weather:
        key = (w["site_id"], w["ts_utc"])
        assert key not in at, f"bronze.weather has two readings for {key}"
        at[key] = w
    rows = []
    for d in demand:
        hour = d["ts_utc"].replace(minute=0, second=0, microsecond=0)
        for s in sites:
            w = at.get((s, hour), {})
            rows.append({"ts_utc": d["ts_utc"], "site_id": s, "settlement_date": d["settlement_date"],
                         "settlement_period": d["settlement_period"], "demand_mw": d["demand_mw"],
                         "embedded_wind_mw": d["embedded_wind_mw"], "temperature_c": w.get("temperature_c"),
                         "wind_speed_ms": w.get("wind_speed_ms")})
    return rows


def _avg(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def expected_daily_summary(fact: list[dict]) -> list[dict]:
    """gold.daily_summary from silver rows: per UTC day, energy (each half-hour once), peak
    demand, temperature across the sites, share of missing half-hours."""
    days: dict[dt.date, list[dict]] = collections.defaultdict(list)
    for r in fact:
        days[r["ts_utc"].astimezone(UTC).date()].append(r)
    out = []
    for d, rows in sorted(days.items()):
        first_site: dict[dt.datetime, str] = {}
        for r in rows:
            first_site[r["ts_utc"]] = min(first_site.get(r["ts_utc"], r["site_id"]), r["site_id"])
        temps = [r["temperature_c"] for r in rows if r["temperature_c"] is not None]
        energy = [r["demand_mw"] for r in rows
                  if r["site_id"] == first_site[r["ts_utc"]] and r["demand_mw"] is not None]
        out.append({
            "ts_utc": day_start(d), "day": d,
            "energy_mwh": sum(energy) * 0.5 if energy else None,
            "peak_demand_mw": max(r["demand_mw"] for r in rows),
            "min_temperature_c": min(temps) if temps else None,
            "max_temperature_c": max(temps) if temps else None,
            "avg_temperature_c": _avg(temps),
            "missing_interval_pct": 100.0 * (48 - len(first_site)) / 48,
        })
    return out


def expected_site_daily_weather(fact: list[dict]) -> list[dict]:
    """gold.site_daily_weather from silver rows: per UTC day and site."""
    groups: dict[tuple, list[dict]] = collections.defaultdict(list)
    for r in fact:
        groups[(r["ts_utc"].astimezone(UTC).date(), r["site_id"])].append(r)
    out = []
    for (d, site), rows in sorted(groups.items()):
        temps = [r["temperature_c"] for r in rows if r["temperature_c"] is not None]
        winds = [r["wind_speed_ms"] for r in rows if r["wind_speed_ms"] is not None]
        out.append({
            "ts_utc": day_start(d), "day": d, "site_id": site,
            "min_temperature_c": min(temps) if temps else None,
            "max_temperature_c": max(temps) if temps else None,
            "avg_temperature_c": _avg(temps),
            "avg_wind_speed_ms": _avg(winds),
            "peak_demand_mw": max(r["demand_mw"] for r in rows),
            "missing_weather_pct": 100.0 * (48 - len(temps)) / 48,
        })
    return out


# The models round averages to 2 decimals.
ROUNDED = {"avg_temperature_c": 0.005 + 1e-9, "avg_wind_speed_ms": 0.005 + 1e-9}


def assert_example_results(cat) -> list[dict]:
    """silver.fact_observations equals the bronze computation; both gold tables equal the
    computation over silver.fact_observations as pyiceberg reads it. Returns the fact rows."""
    fact = table_dicts(cat, "silver.fact_observations")
    assert_rows_match(fact, expected_fact(cat), KEYS["silver.fact_observations"], "silver.fact_observations")
    assert_rows_match(table_dicts(cat, "gold.daily_summary"), expected_daily_summary(fact),
                      KEYS["gold.daily_summary"], "gold.daily_summary", ROUNDED)
    assert_rows_match(table_dicts(cat, "gold.site_daily_weather"), expected_site_daily_weather(fact),
                      KEYS["gold.site_daily_weather"], "gold.site_daily_weather", ROUNDED)
    return fact


def table_states(cat, models: Iterable[str] = ALL_MODELS) -> dict[str, tuple[int | None, int]]:
    """(current snapshot id, number of snapshots) per table."""
    out = {}
    for m in models:
        tbl = cat.load_table(m)
        snap = tbl.current_snapshot()
        out[m] = (snap.snapshot_id if snap else None, len(tbl.snapshots()))
    return out


def file_partitions(tbl, snapshot_id: int | None = None) -> dict[str, int | None]:
    """Data file path -> its day partition (days since the epoch; None when unpartitioned)."""
    scan = tbl.scan(snapshot_id=snapshot_id) if snapshot_id else tbl.scan()
    out = {}
    for task in scan.plan_files():
        part = task.file.partition
        out[task.file.file_path] = part[0] if part is not None and len(part) > 0 else None
    return out


def audit_refs(tbl) -> list[str]:
    return sorted(name for name in tbl.metadata.refs if name.startswith("floe-audit-"))


def inputs_of(snapshot) -> dict[str, int | None]:
    return json.loads(snapshot.summary["floe.state.transform-inputs"])


# ---------------------------------------------------------------------------------------
# 1. the example end to end through `floe run`


@pytest.mark.slow
def test_run_example_end_to_end(catalog_server, tmp_path):
    server = catalog_server()
    pipeline = energy_pipeline(tmp_path, server)
    run_id = lib.unique("run")
    out = floe_run(server, pipeline, FIRST, LAST, "--run-id", run_id, report=tmp_path / "run.json")
    report = lib.read_report(tmp_path / "run.json")
    cat = server.catalog()

    # the ingest jobs, then every model, published
    assert report["run_id"] == run_id
    assert {j["job"]: j["status"] for j in report["jobs"]} == {"demand": "committed", "weather": "committed"}
    assert statuses(report) == {m: "published" for m in ALL_MODELS}, explain(out)

    # dependency order: in the report (run order) ...
    order = [m["model"] for m in report["models"]]
    pos = order.index
    assert pos("silver.dim_site") < pos("silver.fact_observations") < pos("gold.daily_summary")
    assert pos("silver.fact_observations") < pos("gold.site_daily_weather")
    assert pos("silver.dim_date") < pos("gold.daily_summary")  # layers publish in order
    # ... and in what each model read: the snapshots its upstream models had just staged
    snaps = {m: cat.load_table(m).current_snapshot() for m in ALL_MODELS}
    bronze = {t: cat.load_table(t).current_snapshot().snapshot_id for t in ("bronze.demand", "bronze.weather")}
    assert inputs_of(snaps["silver.fact_observations"]) == {
        "bronze.demand": bronze["bronze.demand"], "bronze.weather": bronze["bronze.weather"],
        "silver.dim_site": snaps["silver.dim_site"].snapshot_id}
    assert inputs_of(snaps["silver.dim_site"]) == {"bronze.weather": bronze["bronze.weather"]}
    assert inputs_of(snaps["silver.dim_date"]) == {"bronze.demand": bronze["bronze.demand"]}
    for g in GOLD:
        assert inputs_of(snaps[g]) == {"silver.fact_observations": snaps["silver.fact_observations"].snapshot_id}
        assert snaps[g].timestamp_ms >= snaps["silver.fact_observations"].timestamp_ms
    assert snaps["silver.fact_observations"].timestamp_ms >= snaps["silver.dim_site"].timestamp_ms

    # one overwrite snapshot per model, saying what made it
    for m in ALL_MODELS:
        tbl = cat.load_table(m)
        assert len(tbl.snapshots()) == 1, (m, [s.summary for s in tbl.snapshots()])
        s = snaps[m]
        rep = model_report(report, m)
        assert s.snapshot_id == rep["snapshot_id"]
        assert s.summary.operation.value == "overwrite"
        assert s.summary["floe.job"] == f"transform:{m}"
        assert s.summary["floe.transform.refresh"] == "full"
        assert rep["refresh"] == "full"
        assert rep["rows_written"] == int(s.summary["total-records"])
        assert rep["tests"] and all(t["failures"] == 0 for t in rep["tests"]), rep["tests"]
        assert rep["location"] == tbl.location()
        assert audit_refs(tbl) == [], f"{m}: audit branch left behind"
        # incremental models are day-partitioned on ts_utc; the dimensions are not partitioned
        spec = tbl.spec()
        if m in TABLE_MODELS:
            assert not spec.fields, (m, spec)
        else:
            assert [type(f.transform).__name__ for f in spec.fields] == ["DayTransform"], (m, spec)
            assert spec.fields[0].source_id == tbl.schema().find_field("ts_utc").field_id
    assert set(model_report(report, "silver.fact_observations")["reads"]) == {
        "bronze.demand", "bronze.weather", "silver.dim_site"}

    # sort = ["site_id", "ts_utc"]: every data file of the fact table is sorted so
    fact_tbl = cat.load_table("silver.fact_observations")
    for path in file_partitions(fact_tbl):
        data = pq.read_table(lib.file_uri_to_path(path), columns=["site_id", "ts_utc"]).to_pylist()
        keys = [(r["site_id"], r["ts_utc"]) for r in data]
        assert keys == sorted(keys), f"{path} is not sorted by site_id, ts_utc"

    # the results, computed independently
    fact = assert_example_results(cat)
    assert len(fact) == 3 * 48 * 3  # three UTC days of half-hours, three sites
    assert {r["site_id"] for r in table_dicts(cat, "silver.dim_site")} == {"london", "manchester", "edinburgh"}
    dim_date = by_key(table_dicts(cat, "silver.dim_date"), ("settlement_date",))
    # the spring clock change: 46 settlement periods on Sunday 2024-03-31
    assert dim_date[(dt.date(2024, 3, 31),)]["settlement_periods"] == 46
    assert dim_date[(dt.date(2024, 3, 30),)]["settlement_periods"] == 48

    # `floe run` prints each gold table's location and its first rows
    for g in GOLD:
        location = cat.load_table(g).location()
        assert f"{g} ({location}):" in out.stdout, explain(out)
    assert re.search(r"(?m)^\| 2024-03-30T00:00:00Z +\| 2024-03-30 ", out.stdout), explain(out)
    for m in ALL_MODELS:
        assert re.search(rf"(?m)^{re.escape(m)}: published \(refresh full; \d+ rows", out.stdout), explain(out)


# ---------------------------------------------------------------------------------------
# 2. re-running: up-to-date; --from/--to recomputes the same rows


@pytest.mark.slow
def test_rerun_is_up_to_date_and_forced_days_give_same_rows(catalog_server, tmp_path):
    server = catalog_server()
    pipeline = energy_pipeline(tmp_path, server)
    floe_run(server, pipeline)
    cat = server.catalog()
    before = table_states(cat)
    rows_before = {m: table_dicts(cat, m) for m in ALL_MODELS}

    out = floe_ok(server, "transform", "--pipeline", pipeline, "--report", tmp_path / "again.json",
                  cwd=pipeline.parent)
    report = lib.read_report(tmp_path / "again.json")
    assert statuses(report) == {m: "up-to-date" for m in ALL_MODELS}, explain(out)
    for m in ALL_MODELS:
        assert model_report(report, m)["snapshot_id"] is None
        assert f"{m}: up-to-date (no input changed)" in out.stdout, explain(out)
    assert table_states(cat) == before, "a run with no input change committed snapshots"

    # forcing the window's days: the incremental models recompute them, with the same rows
    out = floe_ok(server, "transform", "--pipeline", pipeline, "--from", FIRST, "--to", LAST,
                  "--report", tmp_path / "forced.json", cwd=pipeline.parent)
    report = lib.read_report(tmp_path / "forced.json")
    days = ["2024-03-30", "2024-03-31", "2024-04-01"]
    after = table_states(cat)
    for m in INCREMENTAL_MODELS:
        rep = model_report(report, m)
        assert rep["status"] == "published", explain(out)
        assert rep["refresh"] == "days" and rep["days"] == days, rep
        tbl = cat.load_table(m)
        snap = tbl.current_snapshot()
        assert after[m][1] == before[m][1] + 1
        assert snap.parent_snapshot_id == before[m][0]
        assert snap.summary["floe.transform.refresh"] == "days"
        assert snap.summary["floe.transform.days"] == ",".join(days)
    for m in TABLE_MODELS:  # nothing changed upstream: not recomputed, or recomputed and not committed
        assert model_report(report, m)["status"] in ("up-to-date", "unchanged"), explain(out)
        assert after[m] == before[m]
    for m in ALL_MODELS:
        assert_rows_match(table_dicts(cat, m), rows_before[m], KEYS[m], f"{m} after --from/--to", ROUNDED)
    assert_example_results(cat)

    # and then nothing is left to do
    out = floe_ok(server, "transform", "--pipeline", pipeline, "--report", tmp_path / "third.json",
                  cwd=pipeline.parent)
    assert statuses(lib.read_report(tmp_path / "third.json")) == {m: "up-to-date" for m in ALL_MODELS}, explain(out)
    assert table_states(cat) == after


# ---------------------------------------------------------------------------------------
# 3. one changed bronze day flows downstream as that day only


@pytest.mark.slow
def test_changed_day_recomputes_only_that_day(catalog_server, tmp_path):
    server = catalog_server()
    pipeline = energy_pipeline(tmp_path, server)
    floe_run(server, pipeline)
    cat = server.catalog()
    before = table_states(cat)
    files_before = {m: file_partitions(cat.load_table(m)) for m in ALL_MODELS}
    rows_before = {m: table_dicts(cat, m) for m in ALL_MODELS}

    # London was much warmer at noon on 2024-03-31 than first reported
    changed_day = "2024-03-31"
    set_weather(pipeline, f"{changed_day}T12:00:00Z", "london", 30.0, 2.5)

    out = floe_run(server, pipeline, changed_day, changed_day, report=tmp_path / "day.json")
    report = lib.read_report(tmp_path / "day.json")
    assert {j["job"]: j["status"] for j in report["jobs"]} == {"demand": "committed", "weather": "committed"}
    assert re.search(rf"(?m)^silver\.fact_observations: published \(refresh days {changed_day}; 144 rows",
                     out.stdout), explain(out)

    # the dimensions: recomputed whole (an input changed) but identical, so not committed
    for m in TABLE_MODELS:
        assert model_report(report, m)["status"] == "unchanged", explain(out)
        assert table_states(cat, [m])[m] == before[m]
        tbl = cat.load_table(m)
        assert parquet_files_under(tbl) == referenced_files(tbl), f"{m}: the discarded result's files were left"
    for m in INCREMENTAL_MODELS:
        rep = model_report(report, m)
        assert rep["status"] == "published", explain(out)
        assert rep["refresh"] == "days" and rep["days"] == [changed_day], rep
        tbl = cat.load_table(m)
        snap = tbl.current_snapshot()
        assert snap.snapshot_id == rep["snapshot_id"]
        assert snap.parent_snapshot_id == before[m][0]
        assert len(tbl.snapshots()) == before[m][1] + 1
        summary = snap.summary
        assert summary.operation.value == "overwrite"
        assert summary["floe.transform.refresh"] == "days"
        assert summary["floe.transform.days"] == changed_day
        assert summary["floe.job"] == f"transform:{m}"
        assert int(summary["deleted-data-files"]) > 0 and int(summary["added-data-files"]) > 0, summary
        assert int(summary["total-records"]) == len(rows_before[m])
        # files replaced in that day's partition only; every other day's files untouched
        files_after = file_partitions(tbl)
        removed = set(files_before[m]) - set(files_after)
        added = set(files_after) - set(files_before[m])
        assert removed and added
        assert {files_before[m][f] for f in removed} == {epoch_day(changed_day)}, m
        assert {files_after[f] for f in added} == {epoch_day(changed_day)}, m
        kept_before = {f: p for f, p in files_before[m].items() if p != epoch_day(changed_day)}
        kept_after = {f: p for f, p in files_after.items() if p != epoch_day(changed_day)}
        assert kept_after == kept_before, f"{m}: files of other days changed"
    # the recorded inputs follow the new bronze snapshots
    fact_snap = cat.load_table("silver.fact_observations").current_snapshot()
    assert inputs_of(fact_snap)["bronze.weather"] == cat.load_table("bronze.weather").current_snapshot().snapshot_id
    for g in GOLD:
        assert inputs_of(cat.load_table(g).current_snapshot()) == {"silver.fact_observations": fact_snap.snapshot_id}

    # the new value arrived; the other days' rows are the same as before
    assert_example_results(cat)
    changed = dt.date.fromisoformat(changed_day)
    weather = by_key(table_dicts(cat, "gold.site_daily_weather"), ("day", "site_id"))
    assert weather[(changed, "london")]["max_temperature_c"] == 30.0
    summary_rows = by_key(table_dicts(cat, "gold.daily_summary"), ("day",))
    assert summary_rows[(changed,)]["max_temperature_c"] == 30.0
    for m in GOLD + ["silver.fact_observations"]:
        other = [r for r in table_dicts(cat, m) if r["ts_utc"].astimezone(UTC).date() != changed]
        other_before = [r for r in rows_before[m] if r["ts_utc"].astimezone(UTC).date() != changed]
        assert_rows_match(other, other_before, KEYS[m], f"{m}, days other than {changed_day}")


# ---------------------------------------------------------------------------------------
# own models over a small bronze table (random layer names on the shared server)

READINGS_ARROW = pa.schema([
    pa.field("ts_utc", pa.timestamp("us", tz="UTC")),
    pa.field("site_id", pa.string()),
    pa.field("value", pa.float64()),
    pa.field("status", pa.string()),
])
SITES_ARROW = pa.schema([pa.field("site_id", pa.string()), pa.field("site_name", pa.string())])
DAY1, DAY2 = dt.date(2024, 5, 1), dt.date(2024, 5, 2)


def create_bronze(cat, bronze: str, days: Iterable[dt.date] = (DAY1, DAY2)) -> None:
    """{bronze}.readings (half-hourly per site a and b, day-partitioned) and {bronze}.sites."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import DayTransform
    from pyiceberg.types import DoubleType, NestedField, StringType, TimestamptzType

    cat.create_namespace(bronze)
    readings = cat.create_table(
        f"{bronze}.readings",
        schema=Schema(NestedField(1, "ts_utc", TimestamptzType(), required=False),
                      NestedField(2, "site_id", StringType(), required=False),
                      NestedField(3, "value", DoubleType(), required=False),
                      NestedField(4, "status", StringType(), required=False)),
        partition_spec=PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=DayTransform(),
                                                    name="ts_utc_day")))
    readings.append(pa.Table.from_pylist([r for d in days for r in readings_of(d)], schema=READINGS_ARROW))
    sites = cat.create_table(f"{bronze}.sites",
                             schema=Schema(NestedField(1, "site_id", StringType(), required=False),
                                           NestedField(2, "site_name", StringType(), required=False)))
    sites.append(pa.Table.from_pylist([{"site_id": "a", "site_name": "Alpha"},
                                       {"site_id": "b", "site_name": "Beta"}], schema=SITES_ARROW))


def readings_of(d: dt.date) -> list[dict]:
    rows = []
    for k in range(48):
        for si, site in enumerate(("a", "b")):
            rows.append({"ts_utc": day_start(d) + dt.timedelta(minutes=30 * k), "site_id": site,
                         "value": round(si * 100 + d.day * 10 + k * 0.25, 2), "status": "est" if k % 5 == 0 else "ok"})
    return rows


def replace_day(cat, ident: str, d: dt.date, rows: list[dict]) -> None:
    """Replaces day d of the table with `rows` (a pyiceberg overwrite with a ts_utc filter)."""
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    nxt = d + dt.timedelta(days=1)
    day_filter = And(GreaterThanOrEqual("ts_utc", f"{d.isoformat()}T00:00:00+00:00"),
                     LessThan("ts_utc", f"{nxt.isoformat()}T00:00:00+00:00"))
    cat.load_table(ident).overwrite(pa.Table.from_pylist(rows, schema=READINGS_ARROW), overwrite_filter=day_filter)


def write_model(models: Path, layer: str, name: str, header: str, sql: str) -> Path:
    path = models / layer / f"{name}.sql"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (f"/* floe\n{header.strip()}\n*/\n" if header is not None else "") + sql.strip() + "\n"
    path.write_text(text)
    return path


def transform(server: lib.CatalogServer, models: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`floe transform --catalog URI --models DIR ...` (no pipeline file)."""
    return run_floe(server, "transform", "--catalog", server.uri, "--models", models, *args, cwd=cwd)


def parquet_files_under(tbl) -> set[str]:
    return {str(p) for p in lib.local_files_under(tbl.location()) if p.suffix == ".parquet"}


def referenced_files(tbl) -> set[str]:
    out = set()
    for s in tbl.snapshots():
        out |= {str(lib.file_uri_to_path(f)) for f in file_partitions(tbl, s.snapshot_id)}
    return out


# ---------------------------------------------------------------------------------------
# 4. failing data tests


def test_failing_tests_leave_main_untouched(local_server, tmp_path):
    server = local_server
    cat = server.catalog()
    bronze, silver, gold = lib.unique("bronze"), lib.unique("silver"), lib.unique("gold")
    create_bronze(cat, bronze)
    models = tmp_path / "models"
    select = f"SELECT ts_utc, site_id, value, status FROM {bronze}.readings"
    failing = {
        # model: (header, the test that will fail, offending rows, a word of the sample)
        "r_not_null": ('[tests]\nnot_null = ["ts_utc", "value"]', "not_null(value)", 1, "2024-05-02T10:00:00"),
        "r_unique": ('unique_key = ["ts_utc", "site_id"]', "unique(ts_utc, site_id)", 1, "2024-05-02T11:00:00"),
        "r_accepted": ('[tests]\naccepted_values = { status = ["ok", "est"] }', "accepted_values(status)", 1,
                       "bogus"),
        "r_rel": (f'[tests]\nrelationships = {{ site_id = "{bronze}.sites.site_id" }}',
                  f"relationships(site_id -> {bronze}.sites.site_id)", 1, "zz"),
        "r_cadence": ('[tests]\ncadence = { key = ["site_id"], interval = "30m" }', "cadence(", 1, "5400"),
        # one null in day 2's 98 rows: over a tolerated 0.5%, the share is shown
        "r_fraction": ('[tests]\nnot_null = ["ts_utc", { column = "value", max_fraction = 0.005 }]',
                       "not_null(value, max_fraction 0.005)", 1, "null_fraction"),
        "r_regex": ("[tests]\nregex = { status = '^(ok|est)$' }", 'regex(status ~ "^(ok|est)$")', 1, "bogus"),
        "r_expr": ('[tests]\nexpression = ["value >= 0", "site_id <> \'zz\'"]', "expression(site_id <> 'zz')", 1,
                   "zz"),
        "r_sql": ('[tests]\nsql = { name = "no_bogus", query = "SELECT * FROM {this} WHERE status = \'bogus\'" }',
                  "sql(no_bogus)", 1, "bogus"),
    }
    for name, (header, *_rest) in failing.items():
        sql = select + (" WHERE site_id IN ('a', 'b')" if name == "r_cadence" else "")
        write_model(models, silver, name, 'materialized = "incremental"\n' + header, sql)
    # passing models of the same layer (the cadence one tolerates a 2h gap), and one model
    # downstream of a failing and of a passing model
    write_model(models, silver, "r_ok", '[properties]\nowner = "floe-tests"\n[tests]\nnot_null = ["ts_utc"]',
                select + " WHERE site_id IN ('a', 'b')")
    write_model(models, silver, "r_cadence_2h",
                '[tests]\ncadence = { key = ["site_id"], interval = "30m", max_gap = "2h" }',
                select + " WHERE site_id IN ('a', 'b')")
    daily = ("SELECT date_trunc('day', ts_utc) AS ts_utc, site_id, count(*) AS n, sum(value) AS total "
             "FROM {src} GROUP BY date_trunc('day', ts_utc), site_id")
    write_model(models, gold, "daily_bad", 'unique_key = ["ts_utc", "site_id"]',
                daily.format(src=f"{silver}.r_not_null"))
    write_model(models, gold, "daily_ok", 'unique_key = ["ts_utc", "site_id"]', daily.format(src=f"{silver}.r_ok"))
    every = [f"{silver}.{n}" for n in [*failing, "r_ok", "r_cadence_2h"]] + [f"{gold}.daily_bad", f"{gold}.daily_ok"]

    # first run: every test passes
    out = transform(server, models, "--report", tmp_path / "first.json", cwd=tmp_path)
    assert out.returncode == 0, explain(out)
    assert statuses(lib.read_report(tmp_path / "first.json")) == {m: "published" for m in every}
    before = {m: cat.load_table(m) for m in every}
    assert before[f"{silver}.r_ok"].properties.get("owner") == "floe-tests", before[f"{silver}.r_ok"].properties
    rows_before = {m: table_dicts(cat, m) for m in every}

    # day 2 is replaced by data that breaks each test once
    bad = readings_of(DAY2)
    def at(hour: int, minute: int, site: str) -> int:
        ts = day_start(DAY2) + dt.timedelta(hours=hour, minutes=minute)
        return next(i for i, r in enumerate(bad) if r["site_id"] == site and r["ts_utc"] == ts)

    bad[at(10, 0, "a")]["value"] = None                       # not_null(value)
    bad.append(dict(bad[at(11, 0, "b")]))                     # unique(ts_utc, site_id)
    bad[at(12, 0, "a")]["status"] = "bogus"                   # accepted_values(status)
    bad.append({"ts_utc": day_start(DAY2) + dt.timedelta(hours=12), "site_id": "zz", "value": 1.0,
                "status": "ok"})                               # relationships(site_id)
    for m in (30, 0):                                          # cadence: b misses 15:00 and 15:30
        del bad[at(15, m, "b")]
    replace_day(cat, f"{bronze}.readings", DAY2, bad)

    run_id = lib.unique("run")
    out = transform(server, models, "--run-id", run_id, "--report", tmp_path / "second.json", cwd=tmp_path)
    no_panic(out)
    assert out.returncode == 1, "failing data tests must exit 1" + explain(out)
    report = lib.read_report(tmp_path / "second.json")
    text = out.stdout + out.stderr
    for name, (_h, test, failures, word) in failing.items():
        model = f"{silver}.{name}"
        rep = model_report(report, model)
        assert rep["status"] == "tests-failed", explain(out)
        assert rep["snapshot_id"] is None
        failed = [t for t in rep["tests"] if t["failures"] > 0]
        assert [t["test"][:len(test)] for t in failed] == [test], rep["tests"]
        assert failed[0]["failures"] == failures, failed
        sample = failed[0]["sample"]
        assert "+--" in sample and word in sample, sample
        # the output names the model, the test and shows the sample rows
        sample_lines = sample.splitlines()
        assert model in text and test in text, explain(out)
        assert sample_lines[1].strip() in text and sample_lines[3].strip() in text, explain(out)
        assert word in text
        # main as it was; the staged snapshot, its branch and its files gone
        tbl = cat.load_table(model)
        assert tbl.current_snapshot().snapshot_id == before[model].current_snapshot().snapshot_id
        assert len(tbl.snapshots()) == len(before[model].snapshots()), [s.summary for s in tbl.snapshots()]
        assert audit_refs(tbl) == [], f"{model}: audit branch left behind"
        assert not any(ref.startswith(f"floe-audit-{run_id}") for ref in tbl.metadata.refs)
        assert_rows_match(table_dicts(cat, model), rows_before[model], ("ts_utc", "site_id"), model)
        stray = parquet_files_under(tbl) - referenced_files(tbl)
        assert not stray, f"{model}: the dropped snapshot's data files were left: {sorted(stray)[:3]}"
    cadence = [t for t in model_report(report, f"{silver}.r_cadence")["tests"] if t["failures"]][0]
    assert re.search(r"\|\s*b\s*\|", cadence["sample"]) and "observed" in cadence["sample"], cadence

    # downstream of a failure: skipped, unchanged
    rep = model_report(report, f"{gold}.daily_bad")
    assert rep["status"] == "skipped", explain(out)
    assert f"{silver}.r_not_null" in (rep["error"] or ""), rep
    assert re.search(rf"(?m)^{re.escape(gold)}\.daily_bad: skipped", out.stdout), explain(out)
    tbl = cat.load_table(f"{gold}.daily_bad")
    assert tbl.current_snapshot().snapshot_id == before[f"{gold}.daily_bad"].current_snapshot().snapshot_id
    # the passing model of the layer, and its downstream, published day 2
    for m in (f"{silver}.r_ok", f"{silver}.r_cadence_2h", f"{gold}.daily_ok"):
        rep = model_report(report, m)
        assert rep["status"] == "published", explain(out)
        assert rep["days"] == [DAY2.isoformat()], rep
        assert cat.load_table(m).current_snapshot().snapshot_id == rep["snapshot_id"]
    ok_rows = table_dicts(cat, f"{gold}.daily_ok")
    assert sum(r["n"] for r in ok_rows if r["ts_utc"].date() == DAY2) == len(bad) - 1  # without zz

    # a model whose first run fails: no data lands in its table
    write_model(models, silver, "r_new", '[tests]\nnot_null = ["value"]', select)
    out = transform(server, models, "--select", f"{silver}.r_new", "--report", tmp_path / "new.json", cwd=tmp_path)
    assert out.returncode == 1, explain(out)
    assert statuses(lib.read_report(tmp_path / "new.json")) == {f"{silver}.r_new": "tests-failed"}
    if cat.table_exists(f"{silver}.r_new"):
        tbl = cat.load_table(f"{silver}.r_new")
        assert tbl.current_snapshot() is None and audit_refs(tbl) == []
        assert not parquet_files_under(tbl)


def test_relationship_to_a_model_of_the_same_run(local_server, tmp_path):
    """A relationships test whose parent is another model (not read by the query) runs
    against that model's table, also on the very first run."""
    server = local_server
    cat = server.catalog()
    bronze, silver = lib.unique("bronze"), lib.unique("silver")
    create_bronze(cat, bronze, [DAY1])
    models = tmp_path / "models"
    write_model(models, silver, "sites", 'materialized = "table"\nunique_key = ["site_id"]',
                f"SELECT DISTINCT site_id FROM {bronze}.readings")
    write_model(models, silver, "obs", f'[tests]\nrelationships = {{ site_id = "{silver}.sites.site_id" }}',
                f"SELECT ts_utc, site_id, value FROM {bronze}.readings")
    out = transform(server, models, "--report", tmp_path / "r.json", cwd=tmp_path)
    no_panic(out)
    assert out.returncode == 0, explain(out)
    assert statuses(lib.read_report(tmp_path / "r.json")) == {f"{silver}.sites": "published", f"{silver}.obs": "published"}


# ---------------------------------------------------------------------------------------
# 5. a layer is published together


class RecordingProxy:
    """A reverse proxy on 127.0.0.1 in front of a catalog server: records every request
    (method, path, JSON body) and, when told, refuses POST .../transactions/commit with 409
    itself (as a catalog does when another writer got there first)."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.requests: list[tuple[str, str, Any]] = []
        self.refuse_transactions = False
        self._lock = threading.Lock()
        self._local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                proxy._forward(self)

            do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.trust_env = False
        return s

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        path = h.path.split("?", 1)[0]
        with self._lock:
            self.requests.append((h.command, path, parsed))
        if h.command == "POST" and path.endswith("/transactions/commit") and self.refuse_transactions:
            status, headers, content = 409, {"Content-Type": "application/json"}, json.dumps({"error": {
                "message": "Requirement failed: refused by the test proxy", "type": "CommitFailedException",
                "code": 409}}).encode()
        else:
            skip = {"host", "content-length", "connection", "accept-encoding", "transfer-encoding"}
            headers = {k: v for k, v in h.headers.items() if k.lower() not in skip}
            headers["Accept-Encoding"] = "identity"
            resp = self._session().request(h.command, self.upstream + h.path, headers=headers, data=body or None,
                                           timeout=lib.HTTP_TIMEOUT_S, allow_redirects=False)
            status, content = resp.status_code, resp.content
            drop = {"content-length", "connection", "transfer-encoding", "content-encoding", "keep-alive"}
            headers = {k: v for k, v in resp.headers.items() if k.lower() not in drop}
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(content) if h.command != "HEAD" else 0))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(content)

    def transactions(self) -> list[list[str]]:
        """The tables of each POST .../transactions/commit, in order."""
        with self._lock:
            reqs = list(self.requests)
        return [sorted(".".join(c["identifier"]["namespace"] + [c["identifier"]["name"]])
                       for c in body["table-changes"])
                for method, path, body in reqs if method == "POST" and path.endswith("/transactions/commit")]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def recording_proxy():
    made: list[RecordingProxy] = []

    def make(upstream: str) -> RecordingProxy:
        p = RecordingProxy(upstream)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def test_layer_published_together(catalog_server, recording_proxy, tmp_path):
    server = catalog_server()
    proxy = recording_proxy(server.uri)
    pipeline = energy_pipeline(tmp_path, server, uri=proxy.uri)
    cat = server.catalog()

    run_id = lib.unique("run")
    out = floe_run(server, pipeline, FIRST, LAST, "--run-id", run_id, report=tmp_path / "run.json")
    assert statuses(lib.read_report(tmp_path / "run.json")) == {m: "published" for m in ALL_MODELS}, explain(out)
    # each model staged on its audit branch (single-table commits that never move main) ...
    staged = set()
    for method, path, body in proxy.requests:
        if method == "POST" and re.search(r"/namespaces/(silver|gold)/tables/", path) and body:
            for u in body.get("updates", []):
                if u.get("action") == "set-snapshot-ref":
                    assert u["ref-name"].startswith("floe-audit-"), (path, u)
                    staged.add(u["ref-name"])
    assert staged == {f"floe-audit-{run_id}-{m}" for m in ALL_MODELS}, staged
    # ... then one multi-table commit per layer, holding every model of it, each moving main to the
    # snapshot its model staged
    assert proxy.transactions() == [sorted(SILVER), sorted(GOLD)], proxy.transactions()
    for method, path, body in proxy.requests:
        if method == "POST" and path.endswith("/transactions/commit"):
            for change in body["table-changes"]:
                name = ".".join(change["identifier"]["namespace"] + [change["identifier"]["name"]])
                sets = [u for u in change["updates"] if u.get("action") == "set-snapshot-ref"]
                assert [u["ref-name"] for u in sets] == ["main"], change
                assert sets[0]["snapshot-id"] == cat.load_table(name).current_snapshot().snapshot_id
                removed = [u["ref-name"] for u in change["updates"] if u.get("action") == "remove-snapshot-ref"]
                assert removed == [f"floe-audit-{run_id}-{name}"], change
    g1, g2 = (cat.load_table(g).current_snapshot() for g in GOLD)
    assert inputs_of(g1) == inputs_of(g2)

    # a refused layer commit publishes none of its models
    before = table_states(cat, GOLD)
    proxy.refuse_transactions = True
    proxy.clear()
    out = run_floe(server, "transform", "--pipeline", pipeline, "--select", GOLD[0], "--select", GOLD[1],
                   "--from", FIRST, "--to", FIRST, "--report", tmp_path / "refused.json", cwd=pipeline.parent)
    no_panic(out)
    assert out.returncode == 2, explain(out)
    assert "floe: error: commit conflict" in out.stderr, explain(out)
    report = lib.read_report(tmp_path / "refused.json")
    assert statuses(report) == {g: "not-published" for g in GOLD}, explain(out)
    assert proxy.transactions() == [sorted(GOLD)]
    assert table_states(cat, GOLD) == before, "a refused layer commit changed a table"
    for g in GOLD:
        assert audit_refs(cat.load_table(g)) == [], f"{g}: audit branch left behind"


# ---------------------------------------------------------------------------------------
# 6. SQL errors


def assert_model_error(out: subprocess.CompletedProcess, path: Path, line: int, column: int, *words: str) -> str:
    """Exit 2, no panic, a `floe: error: model ...` line naming file:line:column."""
    no_panic(out)
    assert out.returncode == 2, "a SQL error must exit 2" + explain(out)
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("floe: error: ")]
    assert errors, "no `floe: error:` line" + explain(out)
    where = f"{path}:{line}:{column}: "
    hits = [ln for ln in errors if ln.startswith("floe: error: model ") and where in ln]
    assert hits, f"the error does not name {where!r}" + explain(out)
    for w in words:
        assert w.lower() in hits[0].lower(), f"the error does not mention {w!r}" + explain(out)
    return hits[0]


def position(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based line and column of the n-th occurrence of needle in text."""
    idx = -1
    for _ in range(occurrence):
        idx = text.index(needle, idx + 1)
    line = text.count("\n", 0, idx) + 1
    return line, idx - (text.rfind("\n", 0, idx) + 1) + 1


def namespace_tables(cat, ns: str) -> list:
    return cat.list_tables(ns) if (ns,) in cat.list_namespaces() else []


def test_sql_errors_name_file_line_column(local_server, tmp_path):
    server = local_server
    cat = server.catalog()
    bronze, silver, gold = lib.unique("bronze"), lib.unique("silver"), lib.unique("gold")
    create_bronze(cat, bronze, [DAY1])

    # a syntax error: the run stops before any model runs
    models = tmp_path / "syntax"
    write_model(models, silver, "good", 'materialized = "table"', f"SELECT DISTINCT site_id FROM {bronze}.readings")
    bad = write_model(models, silver, "bad", 'materialized = "table"',
                      f"SELECT site_id,\n       value\nFROM {bronze}.readings\nWHERE value > > 1")
    line, col = position(bad.read_text(), ">", 2)
    out = transform(server, models, cwd=tmp_path)
    assert_model_error(out, bad, line, col, "expected")
    assert namespace_tables(cat, silver) == [], "a run with a SQL error created tables"

    # an unknown column (known at planning): that model fails, the one reading it is skipped
    models = tmp_path / "column"
    bad = write_model(models, silver, "bad_column", 'materialized = "incremental"',
                      f"SELECT ts_utc,\n       site_id,\n       valeu\nFROM {bronze}.readings")
    write_model(models, gold, "after", None, f"SELECT ts_utc, site_id FROM {silver}.bad_column")
    line, col = position(bad.read_text(), "valeu")
    assert (line, col) == (6, 8)  # after the three header lines
    out = transform(server, models, "--report", tmp_path / "col.json", cwd=tmp_path)
    assert_model_error(out, bad, line, col, "valeu")
    report = lib.read_report(tmp_path / "col.json")
    assert statuses(report) == {f"{silver}.bad_column": "failed", f"{gold}.after": "skipped"}
    assert f"{bad}:{line}:{col}" in model_report(report, f"{silver}.bad_column")["error"]
    for ns in (silver, gold):
        for t in namespace_tables(cat, ns):
            assert cat.load_table(t).current_snapshot() is None, f"{t} got a snapshot"

    # a model that published once, then edited into an unknown column: main unchanged
    models = tmp_path / "edited"
    path = write_model(models, silver, "edited", 'materialized = "table"',
                       f"SELECT site_id, value FROM {bronze}.readings")
    assert transform(server, models, cwd=tmp_path).returncode == 0
    snap = cat.load_table(f"{silver}.edited").current_snapshot().snapshot_id
    path.write_text(path.read_text().replace("value FROM", "value,\n       nosuch FROM"))
    out = transform(server, models, cwd=tmp_path)
    line, col = position(path.read_text(), "nosuch")
    assert_model_error(out, path, line, col, "nosuch")
    tbl = cat.load_table(f"{silver}.edited")
    assert tbl.current_snapshot().snapshot_id == snap and len(tbl.snapshots()) == 1
    assert audit_refs(tbl) == []


def test_changed_model_columns_are_reported(local_server, tmp_path):
    """README: the table is created from the result's columns on the first run; if the query's
    columns change later, floe stops with a message naming them (and changes nothing)."""
    server = local_server
    cat = server.catalog()
    bronze, silver = lib.unique("bronze"), lib.unique("silver")
    create_bronze(cat, bronze, [DAY1])
    models = tmp_path / "models"
    path = write_model(models, silver, "obs", 'unique_key = ["ts_utc", "site_id"]',
                       f"SELECT ts_utc, site_id, value FROM {bronze}.readings")
    out = transform(server, models, cwd=tmp_path)
    assert out.returncode == 0, explain(out)
    tbl = cat.load_table(f"{silver}.obs")
    snap = tbl.current_snapshot().snapshot_id
    path.write_text(path.read_text().replace("value FROM", "value, status FROM"))

    # forced to recompute a day: stops, naming the new column
    out = transform(server, models, "--from", DAY1.isoformat(), "--to", DAY1.isoformat(), cwd=tmp_path)
    no_panic(out)
    assert out.returncode == 2 and "status" in out.stderr and str(path) in out.stderr, explain(out)
    assert cat.load_table(f"{silver}.obs").current_snapshot().snapshot_id == snap
    # a plain run (no upstream change) must not call the stale table up to date either
    out = transform(server, models, "--report", tmp_path / "plain.json", cwd=tmp_path)
    no_panic(out)
    assert out.returncode == 2 and "status" in out.stderr, \
        "the model's columns changed, yet the run exited 0" + explain(out)
    assert cat.load_table(f"{silver}.obs").current_snapshot().snapshot_id == snap


# ---------------------------------------------------------------------------------------
# 7. --dry-run and --select


def test_dry_run_on_a_fresh_warehouse(catalog_server, tmp_path):
    """Nothing has run yet: every model is planned (a full refresh), nothing is created."""
    server = catalog_server()
    pipeline = energy_pipeline(tmp_path, server)
    floe_ok(server, "ingest", "--pipeline", pipeline, "--from", FIRST, "--to", LAST, cwd=pipeline.parent)
    cat = server.catalog()
    out = run_floe(server, "transform", "--pipeline", pipeline, "--dry-run", "--report", tmp_path / "dry.json",
                   cwd=pipeline.parent)
    no_panic(out)
    # nothing created, whatever the outcome
    for ns in ("silver", "gold"):
        assert namespace_tables(cat, ns) == [], f"--dry-run created tables in {ns}"
    wh = lib.file_uri_to_path(server.warehouse)
    assert not [p for p in wh.rglob("*") if p.relative_to(wh).parts[0] in ("silver", "gold")], \
        "--dry-run wrote into the warehouse"
    assert out.returncode == 0, explain(out)
    report = lib.read_report(tmp_path / "dry.json")
    assert statuses(report) == {m: "planned" for m in ALL_MODELS}, explain(out)
    for m in ALL_MODELS:
        assert model_report(report, m)["refresh"] == "full"
        assert re.search(rf"(?m)^{re.escape(m)}: planned \(would refresh full", out.stdout), explain(out)


def test_dry_run_plans_changed_days_and_select(catalog_server, tmp_path):
    server = catalog_server()
    pipeline = energy_pipeline(tmp_path, server)
    cat = server.catalog()
    floe_ok(server, "ingest", "--pipeline", pipeline, "--from", FIRST, "--to", LAST, cwd=pipeline.parent)

    def transform_p(*args: str, name: str) -> tuple[subprocess.CompletedProcess, dict]:
        out = floe_ok(server, "transform", "--pipeline", pipeline, *args, "--report", tmp_path / f"{name}.json",
                      cwd=pipeline.parent)
        return out, lib.read_report(tmp_path / f"{name}.json")

    def exists() -> set[str]:
        return {m for m in ALL_MODELS if cat.table_exists(m)}

    # MODEL: that model only (by its bare name when unique)
    _, report = transform_p("--select", "dim_date", name="one")
    assert [m["model"] for m in report["models"]] == ["silver.dim_date"]
    assert exists() == {"silver.dim_date"}
    # +MODEL: it and everything upstream of it
    _, report = transform_p("--select", "+gold.daily_summary", name="up")
    assert [m["model"] for m in report["models"]] == ["silver.dim_site", "silver.fact_observations",
                                                      "gold.daily_summary"]
    assert statuses(report) == {m: "published" for m in report_models(report)}
    assert exists() == {"silver.dim_date", "silver.dim_site", "silver.fact_observations", "gold.daily_summary"}
    # MODEL+: it and everything downstream of it
    _, report = transform_p("--select", "silver.fact_observations+", name="down")
    assert report_models(report) == ["silver.fact_observations", "gold.daily_summary", "gold.site_daily_weather"]
    assert statuses(report) == {"silver.fact_observations": "up-to-date", "gold.daily_summary": "up-to-date",
                                "gold.site_daily_weather": "published"}
    assert exists() == set(ALL_MODELS)
    # an unknown selector names the models
    out = run_floe(server, "transform", "--pipeline", pipeline, "--select", "nosuch", cwd=pipeline.parent)
    no_panic(out)
    assert out.returncode == 2 and "nosuch" in out.stderr and "silver.dim_site" in out.stderr, explain(out)

    # a dry run after a changed bronze day: the plan names the day; nothing is committed
    before = table_states(cat)
    set_weather(pipeline, "2024-04-01T06:00:00Z", "edinburgh", -1.5, 3.0)
    floe_ok(server, "ingest", "--pipeline", pipeline, "--from", "2024-04-01", "--to", "2024-04-01", "weather",
            cwd=pipeline.parent)
    bronze_snap = cat.load_table("bronze.weather").current_snapshot().snapshot_id
    out, report = transform_p("--dry-run", name="dry")
    rep = model_report(report, "silver.fact_observations")
    assert rep["status"] == "planned" and rep["refresh"] == "days" and rep["days"] == ["2024-04-01"], rep
    assert rep["snapshot_id"] is None
    assert "bronze.weather" in rep["reason"], rep
    assert re.search(r"(?m)^silver\.fact_observations: planned \(would refresh days 2024-04-01: .*bronze\.weather",
                     out.stdout), explain(out)
    assert model_report(report, "silver.dim_site")["status"] == "planned"  # a table model: recomputed whole
    assert model_report(report, "silver.dim_site")["refresh"] == "full"
    assert model_report(report, "silver.dim_date")["status"] == "up-to-date"
    assert table_states(cat) == before, "--dry-run committed a snapshot"
    for m in ALL_MODELS:
        assert audit_refs(cat.load_table(m)) == []
    assert cat.load_table("bronze.weather").current_snapshot().snapshot_id == bronze_snap

    # --dry-run with --from/--to plans those days
    _, report = transform_p("--dry-run", "--from", "2024-03-30", "--to", "2024-03-31", "--select",
                            "gold.daily_summary", name="dry-window")
    rep = model_report(report, "gold.daily_summary")
    assert rep["status"] == "planned" and rep["days"] == ["2024-03-30", "2024-03-31"], rep
    assert table_states(cat) == before


def test_dry_run_plans_downstream_of_a_planned_model(catalog_server, tmp_path):
    """After one changed bronze day, a dry run plans what the real run then does: the models
    downstream of a planned model are planned too (they would read its new days)."""
    server = catalog_server()
    pipeline = energy_pipeline(tmp_path, server)
    floe_run(server, pipeline)
    set_weather(pipeline, "2024-04-01T06:00:00Z", "edinburgh", -1.5, 3.0)
    floe_ok(server, "ingest", "--pipeline", pipeline, "--from", "2024-04-01", "--to", "2024-04-01", "weather",
            cwd=pipeline.parent)
    cat = server.catalog()
    before = table_states(cat)
    out = floe_ok(server, "transform", "--pipeline", pipeline, "--dry-run", "--report", tmp_path / "dry.json",
                  cwd=pipeline.parent)
    dry = lib.read_report(tmp_path / "dry.json")
    assert table_states(cat) == before
    out_real = floe_ok(server, "transform", "--pipeline", pipeline, "--report", tmp_path / "real.json",
                       cwd=pipeline.parent)
    real = lib.read_report(tmp_path / "real.json")
    assert statuses(real) == {"silver.dim_date": "up-to-date", "silver.dim_site": "unchanged",
                              "silver.fact_observations": "published", "gold.daily_summary": "published",
                              "gold.site_daily_weather": "published"}, explain(out_real)
    for m in ["silver.fact_observations", *GOLD]:
        assert model_report(real, m)["days"] == ["2024-04-01"]
        rep = model_report(dry, m)
        assert rep["status"] == "planned", f"--dry-run said {m} is {rep['status']!r} ({rep['reason']}), " \
                                           f"but the run then refreshed it" + explain(out)


def report_models(report: dict) -> list[str]:
    return [m["model"] for m in report["models"]]


# ---------------------------------------------------------------------------------------
# 8. bad model headers


@pytest.mark.parametrize("header, line, words", [
    # line numbers are the file's: the header's TOML starts on line 2
    ('materialized = "table"\nunique_key = ["site_id"]\ncolour = "blue"', 4, ["unknown field", "colour"]),
    ('materialized = "table"\n\n[tests]\nnot_null = ["site_id"]\nnul_count = 3', 6, ["nul_count"]),
    ('materialized = "table"\n[tests]\ncadence = { key = ["site_id"], intervall = "30m" }', 4, ["intervall"]),
    ('materialized = "table\nunique_key = ["site_id"]', 2, []),  # an unterminated string
    ('unique_key = "site_id"', 2, []),  # a string where a list belongs
    ('materialized = "tabel"', 2, ["tabel"]),
], ids=["unknown-key", "unknown-test", "unknown-cadence-key", "bad-toml", "wrong-type", "bad-value"])
def test_bad_header_names_file_and_line(local_server, tmp_path, header, line, words):
    server = local_server
    cat = server.catalog()
    bronze, silver = lib.unique("bronze"), lib.unique("silver")
    create_bronze(cat, bronze, [DAY1])
    models = tmp_path / "models"
    write_model(models, silver, "fine", 'materialized = "table"', f"SELECT DISTINCT site_id FROM {bronze}.readings")
    bad = write_model(models, silver, "bad", header, f"SELECT DISTINCT site_id FROM {bronze}.readings")
    out = transform(server, models, cwd=tmp_path)
    no_panic(out)
    assert out.returncode == 2, explain(out)
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("floe: error: ")]
    assert errors and f"{bad}:{line}: " in errors[0], f"the error does not name {bad}:{line}" + explain(out)
    for w in words:
        assert w in errors[0], explain(out)
    assert namespace_tables(cat, silver) == [], "a run with a bad header created tables"


# ---------------------------------------------------------------------------------------
# the example on S3


@pytest.mark.s3
@pytest.mark.slow
def test_run_example_on_s3(catalog_server, tmp_path):
    server = catalog_server(kind="s3")
    pipeline = energy_pipeline(tmp_path, server)
    out = floe_run(server, pipeline, report=tmp_path / "run.json")
    assert statuses(lib.read_report(tmp_path / "run.json")) == {m: "published" for m in ALL_MODELS}, explain(out)
    cat = server.catalog()
    assert_example_results(cat)
    for m in ALL_MODELS:
        tbl = cat.load_table(m)
        assert tbl.location().startswith("s3://")
        keys = lib.files_under(tbl.location(), server.s3)
        assert any(k.endswith(".parquet") and "/data/" in k for k in keys), (m, keys)
    # a re-run: nothing to do
    out = floe_ok(server, "transform", "--pipeline", pipeline, "--report", tmp_path / "again.json",
                  cwd=pipeline.parent)
    assert statuses(lib.read_report(tmp_path / "again.json")) == {m: "up-to-date" for m in ALL_MODELS}, explain(out)
