"""Acceptance tests of SQL models written as Delta tables (`[transform] format = "delta"`): the
energy example (examples/energy + sql/) with every job and model in Delta form, run by the
floe binary and read back by the `deltalake` package in subprocesses (see test_delta).

What they hold floe to:
  * the Delta pipeline's tables (bronze, silver, gold) hold exactly the rows of the same
    pipeline in Iceberg form; models live at `<embedded warehouse>/delta/<layer>/<name>`,
    day-partitioned ones under `day=YYYY-MM-DD/` (the UTC day of `ts_utc`), dimensions
    unpartitioned; each model commit is one WRITE saying what made it;
  * a re-run with no upstream change commits nothing; one changed bronze day is recomputed
    downstream as that day only (one WRITE whose predicate names that day), as for Iceberg
    models (a table model whose full result did not change is not committed);
  * a failing data test commits nothing (same version, no stray files), exits 1, skips the
    models downstream and leaves the others alone;
  * `floe maintain --all` keeps every Delta table's rows while it vacuums removed files.

Every process stays on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import floe_testlib as lib
from floe_testlib import toml_value
from test_delta import read_delta, writes
from test_transform import (
    ALL_MODELS,
    ENERGY,
    FIRST,
    GOLD,
    KEYS,
    LAST,
    TABLE_MODELS,
    assert_example_results,
    by_key,
    copy_models,
    energy_pipeline,
    explain,
    floe_ok,
    floe_run,
    model_report,
    no_panic,
    run_floe,
    set_weather,
    statuses,
    table_dicts,
)

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
JOBS = {"demand": "bronze.demand", "weather": "bronze.weather"}
BRONZE = sorted(JOBS.values())
ALL_TABLES = BRONZE + ALL_MODELS
DAY_PARTITIONED = set(BRONZE) | {m for m in ALL_MODELS if m not in TABLE_MODELS}
WINDOW_DAYS = ["2024-03-30", "2024-03-31", "2024-04-01"]
BRONZE_KEYS = {"bronze.demand": ("ts_utc",), "bronze.weather": ("ts_utc", "site_id")}
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


# ---------------------------------------------------------------------------------------
# the energy example in Delta form


def delta_energy_pipeline(root: Path, *, models: Path | None = None, job_properties: dict[str, str] | None = None,
                          maintain: dict[str, str] | None = None) -> Path:
    """examples/energy's floe.toml and data under root/energy with every [[job]] written as a
    Delta table (their `sort` lines dropped: Iceberg-only, floe warns) and `[transform] format =
    "delta"` over a copy of sql/. The catalog stays the example's embedded warehouse, so the
    Delta tables are at the default place, root/energy/warehouse/delta/<namespace>/<table>."""
    dest = root / "energy"
    shutil.copytree(ENERGY / "data", dest / "data")
    models = models or copy_models(root / "sql")
    text = (ENERGY / "floe.toml").read_text()
    assert 'embedded_warehouse = "warehouse"' in text, "examples/energy/floe.toml lost its embedded warehouse"
    text, n = re.subn(r"(?m)^models\s*=.*$", f'models = {toml_value(str(models))}\nformat = "delta"', text)
    assert n == 1, "examples/energy/floe.toml no longer has one [transform] models line"
    job_lines = '[[job]]\nformat = "delta"'
    if job_properties:
        job_lines += f"\nproperties = {toml_value(job_properties)}"
    text, n = re.subn(r"(?m)^\[\[job\]\]$", job_lines, text)
    assert n == 2, "examples/energy/floe.toml no longer has two jobs"
    text, n = re.subn(r"(?m)^sort\s*=.*\n", "", text)
    assert n == 2, "examples/energy/floe.toml no longer sorts both jobs"
    for key, value in (maintain or {}).items():
        text, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {toml_value(value)}", text)
        assert n == 1, f"examples/energy/floe.toml has no [maintain] {key}"
    pipeline = dest / "floe.toml"
    pipeline.write_text(text)
    return pipeline


def table_dir(pipeline: Path, ident: str) -> Path:
    ns, name = ident.split(".")
    return pipeline.parent / "warehouse" / "delta" / ns / name


def table_uri(pipeline: Path, ident: str) -> str:
    return table_dir(pipeline, ident).as_uri()


def versions(pipeline: Path, idents: Iterable[str] = ALL_TABLES) -> dict[str, int | None]:
    """The newest Delta version of each table, from its log folder (None: no table)."""
    out = {}
    for ident in idents:
        log = table_dir(pipeline, ident) / "_delta_log"
        found = [int(p.name.split(".")[0]) for p in log.glob("*.json")] if log.is_dir() else []
        out[ident] = max(found) if found else None
    return out


def parquet_on_disk(pipeline: Path, ident: str) -> set[str]:
    """Data files under the table's folder (relative paths; the log's checkpoints left out)."""
    root = table_dir(pipeline, ident)
    if not root.exists():
        return set()
    return {p.relative_to(root).as_posix() for p in root.rglob("*.parquet") if "_delta_log" not in p.parts}


def read_all(pipeline: Path, idents: Iterable[str] = ALL_TABLES) -> dict[str, dict]:
    """read_delta of each table, a few subprocesses at a time."""
    idents = list(idents)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {i: pool.submit(read_delta, table_uri(pipeline, i)) for i in idents}
        return {i: f.result() for i, f in futures.items()}


def delta_rows(got: dict) -> list[dict]:
    """A read_delta result's rows as pyiceberg gives them: UTC datetimes, dates, bytes."""
    def ts(v):
        return None if v is None else EPOCH + dt.timedelta(microseconds=v)

    def date(v):
        return None if v is None else dt.date.fromisoformat(v)

    def binary(v):
        return None if v is None else bytes.fromhex(v)

    conv = {}
    for col, typ in got["schema"].items():
        if typ.startswith("timestamp"):
            conv[col] = ts
        elif typ.startswith("date32"):
            conv[col] = date
        elif "binary" in typ:
            conv[col] = binary
        else:
            conv[col] = lambda v: v
    data = got["data"]
    n = len(next(iter(data.values()))) if data else 0
    return [{c: conv[c](data[c][i]) for c in data} for i in range(n)]


class DeltaCatalog:
    """The part of a pyiceberg catalog test_transform's expected_* helpers use
    (`load_table(ident).scan().to_arrow().to_pylist()`), over rows read from Delta tables."""

    def __init__(self, got: dict[str, dict]):
        self.rows = {ident: delta_rows(g) for ident, g in got.items()}

    def load_table(self, ident: str) -> "_Rows":
        return _Rows(self.rows[ident])


class _Rows:
    def __init__(self, rows: list[dict]):
        self._rows = rows

    def scan(self, snapshot_id: int | None = None) -> "_Rows":
        assert snapshot_id is None
        return self

    def to_arrow(self) -> "_Rows":
        return self

    def to_pylist(self) -> list[dict]:
        return [dict(r) for r in self._rows]


def utc_day(ts: dt.datetime) -> dt.date:
    return ts.astimezone(UTC).date()


def last_write(got: dict) -> dict:
    return writes(got["history"])[-1]


def predicate_days(commit: dict) -> set[str]:
    predicate = commit["operationParameters"].get("predicate") or ""
    assert "day" in predicate, commit
    return set(DATE_RE.findall(predicate))


def floe_transform(pipeline: Path, *args: str, report: Path) -> subprocess.CompletedProcess:
    return run_floe(None, "transform", "--pipeline", pipeline, *args, "--report", report, cwd=pipeline.parent)


def header_property(models: Path, key: str, value: str) -> None:
    """Adds a [properties] entry to the header of every model under `models`."""
    for path in sorted(models.rglob("*.sql")):
        text = path.read_text()
        end = text.index("*/")
        path.write_text(text[:end] + f"\n[properties]\n{toml_value(key)} = {toml_value(value)}\n" + text[end:])


# ---------------------------------------------------------------------------------------
# 1. Delta end to end, equal to the Iceberg pipeline


def assert_same_rows(delta: list[dict], iceberg: list[dict], key: tuple[str, ...], what: str, *,
                     delta_only: set[str] = frozenset(), ignore: set[str] = frozenset()) -> None:
    """The same rows (every value equal, floats exactly): the Delta table has the Iceberg
    table's columns plus `delta_only`; columns in `ignore` are not compared."""
    assert delta and iceberg, f"{what}: no rows ({len(delta)} Delta, {len(iceberg)} Iceberg)"
    assert set(delta[0]) == set(iceberg[0]) | delta_only, \
        f"{what}: Delta columns {sorted(delta[0])}, Iceberg columns {sorted(iceberg[0])}"
    d, i = by_key(delta, key), by_key(iceberg, key)
    assert sorted(d) == sorted(i), f"{what}: keys differ: only in Delta {sorted(set(d) - set(i))[:5]}, " \
                                   f"only in Iceberg {sorted(set(i) - set(d))[:5]}"
    problems = [f"{k} {c}: Delta {d[k][c]!r}, Iceberg {v!r}"
                for k, row in i.items() for c, v in row.items() if c not in ignore and d[k][c] != v]
    assert not problems, f"{what}: {len(problems)} value(s) differ, e.g.\n" + "\n".join(problems[:10])


def normalize_source(rows: list[dict], pipeline: Path) -> list[dict]:
    prefix = pipeline.parent.as_uri() + "/"
    out = []
    for r in rows:
        assert r["_source"].startswith(prefix), (r["_source"], prefix)
        out.append({**r, "_source": r["_source"][len(prefix):]})
    return out


def test_delta_pipeline_equals_iceberg(catalog_server, tmp_path):
    # the same pipeline in Iceberg form, as the reference
    server = catalog_server()
    ice_pipeline = energy_pipeline(tmp_path / "iceberg", server)
    floe_run(server, ice_pipeline, report=tmp_path / "iceberg.json")
    assert statuses(lib.read_report(tmp_path / "iceberg.json")) == {m: "published" for m in ALL_MODELS}
    cat = server.catalog()
    iceberg = {t: table_dicts(cat, t) for t in ALL_TABLES}

    pipeline = delta_energy_pipeline(tmp_path / "delta")
    run_id = lib.unique("run")
    out = floe_run(None, pipeline, FIRST, LAST, "--run-id", run_id, report=tmp_path / "delta.json")
    report = lib.read_report(tmp_path / "delta.json")
    assert {j["job"]: j["status"] for j in report["jobs"]} == {"demand": "committed", "weather": "committed"}, \
        explain(out)
    assert statuses(report) == {m: "published" for m in ALL_MODELS}, explain(out)
    got = read_all(pipeline)

    # the jobs' Delta tables: the Iceberg bronze rows (the load time and the source folder aside)
    for job, ident in JOBS.items():
        rep = lib.job_report(report, job)
        assert rep["snapshot_id"] == got[ident]["version"] == 1, rep
        assert rep["location"].rstrip("/") == table_uri(pipeline, ident), rep
        assert_same_rows(normalize_source(delta_rows(got[ident]), pipeline),
                         normalize_source(iceberg[ident], ice_pipeline), BRONZE_KEYS[ident], ident,
                         delta_only={"day"}, ignore={"_ingest_time"})

    # every model: published as Delta at <warehouse>/delta/<layer>/<name>, one WRITE saying what made it
    for m in ALL_MODELS:
        rep = model_report(report, m)
        g = got[m]
        assert rep["format"] == "delta", rep
        assert rep["location"].rstrip("/") == table_uri(pipeline, m), rep
        assert rep["refresh"] == "full", rep
        assert rep["snapshot_id"] == g["version"], (rep, g["version"])
        assert rep["rows_written"] == len(delta_rows(g)) == len(iceberg[m]), rep
        assert rep["tests"] and all(t["failures"] == 0 for t in rep["tests"]), rep["tests"]
        [commit] = writes(g["history"])
        assert commit["version"] == g["version"]
        assert commit["operationParameters"]["mode"] == "Overwrite", commit
        assert commit["floe.job"] == f"transform:{m}", commit
        assert commit["floe.transform.refresh"] == "full", commit
        assert commit["floe.run-id"] == run_id, commit
    # what each model read: the versions its upstream tables had when it ran
    v = {t: got[t]["version"] for t in ALL_TABLES}
    inputs = {m: json.loads(last_write(got[m])["floe.state.transform-inputs"]) for m in ALL_MODELS}
    assert inputs["silver.dim_date"] == {"bronze.demand": v["bronze.demand"]}
    assert inputs["silver.dim_site"] == {"bronze.weather": v["bronze.weather"]}
    assert inputs["silver.fact_observations"] == {"bronze.demand": v["bronze.demand"],
                                                  "bronze.weather": v["bronze.weather"],
                                                  "silver.dim_site": v["silver.dim_site"]}
    for g in GOLD:
        assert inputs[g] == {"silver.fact_observations": v["silver.fact_observations"]}
        assert f"{g} ({table_uri(pipeline, g)}" in out.stdout, explain(out)

    # the models' rows are the Iceberg models' rows (gold tables have a `day` column of their own;
    # the day-partitioned silver table gets Delta's)
    for m in ALL_MODELS:
        extra = {"day"} if m == "silver.fact_observations" else set()
        assert_same_rows(delta_rows(got[m]), iceberg[m], KEYS[m], m, delta_only=extra)
    # and the independent computation of test_transform holds over the Delta tables too
    fact = assert_example_results(DeltaCatalog(got))
    assert len(fact) == 3 * 48 * 3

    # partitions: `day` = the UTC day of ts_utc, one folder per day; dimensions unpartitioned
    for ident in ALL_TABLES:
        g = got[ident]
        if ident in DAY_PARTITIONED:
            assert g["partition_columns"] == ["day"], (ident, g["partition_columns"])
            assert g["schema"]["day"] == "date32[day]", (ident, g["schema"])
            rows = delta_rows(g)
            bad = [r for r in rows if r["day"] != utc_day(r["ts_utc"])]
            assert not bad, f"{ident}: `day` is not the UTC day of ts_utc: {bad[:3]}"
            assert sorted({f["day"] for f in g["files"]}) == WINDOW_DAYS, (ident, g["files"])
            for f in g["files"]:
                assert f["path"].startswith(f"day={f['day']}/") and f["path"].count("/") == 1, (ident, f)
            per_day = {d: sum(f["num_records"] for f in g["files"] if f["day"] == d) for d in WINDOW_DAYS}
            assert per_day == {d: sum(1 for r in rows if r["day"].isoformat() == d) for d in WINDOW_DAYS}, ident
        else:
            assert g["partition_columns"] == [], (ident, g["partition_columns"])
            assert "day" not in g["schema"], (ident, g["schema"])
            assert g["files"] and all("/" not in f["path"] and f["day"] is None for f in g["files"]), g["files"]
    # nothing went to Iceberg tables in the embedded warehouse
    warehouse = pipeline.parent / "warehouse"
    assert sorted(p.name for p in warehouse.iterdir() if p.is_dir()) == ["delta"], sorted(warehouse.iterdir())


# ---------------------------------------------------------------------------------------
# 2. incremental: nothing changed, then one changed day


def files_by_day(got: dict) -> dict[str | None, set[str]]:
    out: dict[str | None, set[str]] = {}
    for f in got["files"]:
        out.setdefault(f["day"], set()).add(f["path"])
    return out


def assert_day_refresh(before: dict, after: dict, ident: str, day: str, run_id: str) -> dict:
    """One new version: a WRITE replacing exactly that day's files, saying so. Returns it."""
    assert after["version"] == before["version"] + 1, (ident, before["version"], after["version"])
    new = [c for c in writes(after["history"]) if c["version"] > before["version"]]
    assert len(new) == 1, (ident, new)
    commit = new[0]
    assert commit["operationParameters"]["mode"] == "Overwrite", commit
    assert predicate_days(commit) == {day}, f"{ident}: the commit replaces more than {day}: {commit}"
    assert commit["floe.transform.refresh"] == "days", commit
    assert commit["floe.transform.days"] == day, commit
    assert commit["floe.job"] == f"transform:{ident}", commit
    assert commit["floe.run-id"] == run_id, commit
    fb, fa = files_by_day(before), files_by_day(after)
    assert set(fa) == set(fb) == set(WINDOW_DAYS), (ident, fb, fa)
    for d in WINDOW_DAYS:
        if d == day:
            assert fa[d] and not fa[d] & fb[d], f"{ident}: the files of {day} were not replaced"
        else:
            assert fa[d] == fb[d], f"{ident}: the files of {d} changed"
    assert commit["operationMetrics"]["num_removed_files"] == len(fb[day]), commit
    assert commit["operationMetrics"]["num_added_files"] == len(fa[day]), commit
    return commit


def other_days(rows: list[dict], day: str) -> list[dict]:
    return [r for r in rows if utc_day(r["ts_utc"]).isoformat() != day]


def test_delta_models_refresh_only_changed_days(tmp_path):
    pipeline = delta_energy_pipeline(tmp_path)
    floe_run(None, pipeline, report=tmp_path / "first.json")
    first = versions(pipeline)
    assert first == {t: 1 for t in ALL_TABLES}, first

    # nothing changed: every model up to date, no new version anywhere
    out = floe_transform(pipeline, report=tmp_path / "again.json")
    assert out.returncode == 0, explain(out)
    report = lib.read_report(tmp_path / "again.json")
    assert statuses(report) == {m: "up-to-date" for m in ALL_MODELS}, explain(out)
    assert all(model_report(report, m)["snapshot_id"] is None for m in ALL_MODELS)
    assert versions(pipeline) == first, "a run with no input change committed to a Delta table"
    before = read_all(pipeline)

    # A: London was much warmer at noon on 2024-03-31; the fact table and what is downstream
    day_a = "2024-03-31"
    set_weather(pipeline, f"{day_a}T12:00:00Z", "london", 30.0, 2.5)
    run_a = lib.unique("runa")
    out = floe_run(None, pipeline, day_a, day_a, "--run-id", run_a, "--select", "silver.fact_observations+",
                   report=tmp_path / "a.json")
    report = lib.read_report(tmp_path / "a.json")
    assert {j["job"]: j["status"] for j in report["jobs"]} == {"demand": "committed", "weather": "committed"}
    assert [m["model"] for m in report["models"]] == ["silver.fact_observations", *GOLD], explain(out)
    after = read_all(pipeline)
    for m in ["silver.fact_observations", *GOLD]:
        rep = model_report(report, m)
        assert (rep["status"], rep["refresh"], rep["days"]) == ("published", "days", [day_a]), (rep, explain(out))
        assert rep["snapshot_id"] == after[m]["version"], rep
        assert_day_refresh(before[m], after[m], m, day_a, run_a)
    assert json.loads(last_write(after["silver.fact_observations"])["floe.state.transform-inputs"]) == {
        "bronze.demand": after["bronze.demand"]["version"], "bronze.weather": after["bronze.weather"]["version"],
        "silver.dim_site": before["silver.dim_site"]["version"]}
    for g in GOLD:
        assert json.loads(last_write(after[g])["floe.state.transform-inputs"]) == {
            "silver.fact_observations": after["silver.fact_observations"]["version"]}
    # the rows: the new reading arrived, as computed from bronze; other days as they were
    assert_example_results(DeltaCatalog(after))
    weather = by_key(delta_rows(after["gold.site_daily_weather"]), KEYS["gold.site_daily_weather"])
    assert weather[(dt.date.fromisoformat(day_a), "london")]["max_temperature_c"] == 30.0
    summary = by_key(delta_rows(after["gold.daily_summary"]), KEYS["gold.daily_summary"])
    assert summary[(dt.date.fromisoformat(day_a),)]["max_temperature_c"] == 30.0
    for m in ["silver.fact_observations", *GOLD]:
        assert by_key(other_days(delta_rows(after[m]), day_a), KEYS[m]) == \
               by_key(other_days(delta_rows(before[m]), day_a), KEYS[m]), f"{m}: rows of other days changed"

    # B: a plain `floe run` of one changed day runs every model. As with Iceberg models, the
    # dimensions are recomputed whole but, their rows being the same, not committed, so the
    # fact table and the gold tables recompute that day only.
    day_b = "2024-04-01"
    set_weather(pipeline, f"{day_b}T06:00:00Z", "edinburgh", -1.5, 3.0)
    mid = versions(pipeline)
    run_b = lib.unique("runb")
    out = floe_run(None, pipeline, day_b, day_b, "--run-id", run_b, report=tmp_path / "b.json")
    report = lib.read_report(tmp_path / "b.json")
    final = read_all(pipeline)
    # the rows first: right whatever was recomputed
    assert_example_results(DeltaCatalog(final))
    weather = by_key(delta_rows(final["gold.site_daily_weather"]), KEYS["gold.site_daily_weather"])
    assert weather[(dt.date.fromisoformat(day_b), "edinburgh")]["min_temperature_c"] == -1.5
    for m in ["silver.fact_observations", *GOLD]:
        assert by_key(other_days(delta_rows(final[m]), day_b), KEYS[m]) == \
               by_key(other_days(delta_rows(after[m]), day_b), KEYS[m]), f"{m}: rows of other days changed"
    for m in TABLE_MODELS:
        assert delta_rows(final[m]) and by_key(delta_rows(final[m]), KEYS[m]) == by_key(delta_rows(after[m]), KEYS[m])
    # then what was committed
    plan = {m["model"]: (m["status"], m["refresh"], m["days"], m["reason"]) for m in report["models"]}
    rep = model_report(report, "silver.fact_observations")
    assert (rep["refresh"], rep["days"]) == ("days", [day_b]), \
        f"one changed bronze day must refresh that day of silver.fact_observations; the run did {plan}" + explain(out)
    for m in TABLE_MODELS:
        assert model_report(report, m)["status"] == "unchanged", \
            f"{m} recomputed the same rows and must not commit them (README, Transform); the run did {plan}"
        assert versions(pipeline, [m]) == {m: mid[m]}
    for m in ["silver.fact_observations", *GOLD]:
        rep = model_report(report, m)
        assert (rep["status"], rep["refresh"], rep["days"]) == ("published", "days", [day_b]), (rep, plan)
        assert_day_refresh(after[m], final[m], m, day_b, run_b)


# ---------------------------------------------------------------------------------------
# 3. a failing data test commits nothing


PEAK_SQL = """/* floe
unique_key = ["day"]

[tests]
range = {{ peak_demand_mw = {{ {bounds} }} }}
*/
SELECT
    date_trunc('day', ts_utc) AS ts_utc,
    CAST(date_trunc('day', ts_utc) AS DATE) AS day,
    MAX({expr}) AS peak_demand_mw
FROM silver.fact_observations
GROUP BY date_trunc('day', ts_utc)
"""

AFTER_SQL = """/* floe
unique_key = ["day"]
*/
SELECT ts_utc, day, peak_demand_mw / 1000.0 AS peak_demand_gw
FROM silver.peak_check
"""


def test_delta_failing_test_commits_nothing(tmp_path):
    models = copy_models(tmp_path / "sql")
    peak = models / "silver" / "peak_check.sql"
    peak.write_text(PEAK_SQL.format(bounds="min = 0, max = 100000", expr="demand_mw"))
    (models / "gold" / "peak_after.sql").write_text(AFTER_SQL)
    pipeline = delta_energy_pipeline(tmp_path, models=models)
    every = ALL_MODELS + ["silver.peak_check", "gold.peak_after"]
    out = floe_run(None, pipeline, report=tmp_path / "first.json")
    assert statuses(lib.read_report(tmp_path / "first.json")) == {m: "published" for m in every}, explain(out)
    tables = BRONZE + every
    v0 = versions(pipeline, tables)
    before = read_all(pipeline, ["silver.peak_check", "gold.peak_after"])
    disk0 = {m: parquet_on_disk(pipeline, m) for m in every}

    # the model's SQL and its test change: a full refresh whose every row fails the test
    peak.write_text(PEAK_SQL.format(bounds="max = -1", expr="demand_mw + 0.0"))
    run_id = lib.unique("fail")
    out = floe_transform(pipeline, "--run-id", run_id, report=tmp_path / "fail.json")
    no_panic(out)
    assert out.returncode == 1, "a failing data test must exit 1" + explain(out)
    report = lib.read_report(tmp_path / "fail.json")
    rep = model_report(report, "silver.peak_check")
    assert rep["status"] == "tests-failed" and rep["refresh"] == "full", rep
    assert rep["snapshot_id"] is None, rep
    failed = [t for t in rep["tests"] if t["failures"]]
    assert [(t["test"], t["failures"]) for t in failed] == [("range(peak_demand_mw)", 3)], rep["tests"]
    text = out.stdout + out.stderr
    assert "silver.peak_check" in text and "range(peak_demand_mw)" in text, explain(out)
    after_rep = model_report(report, "gold.peak_after")
    assert after_rep["status"] == "skipped" and "silver.peak_check" in (after_rep["error"] or ""), after_rep
    assert statuses(report) == {**{m: "up-to-date" for m in ALL_MODELS},
                                "silver.peak_check": "tests-failed", "gold.peak_after": "skipped"}, explain(out)
    # nothing committed, nothing left behind
    assert versions(pipeline, tables) == v0, "a run whose data test failed committed to a Delta table"
    after = read_all(pipeline, ["silver.peak_check", "gold.peak_after"])
    for m in ("silver.peak_check", "gold.peak_after"):
        assert after[m]["file_uris"] == before[m]["file_uris"], m
        assert delta_rows(after[m]) == delta_rows(before[m]), m
        assert not any(c.get("floe.run-id") == run_id for c in after[m]["history"]), m
    for m in every:
        assert parquet_on_disk(pipeline, m) == disk0[m], f"{m}: the failed run left files " \
            f"{sorted(parquet_on_disk(pipeline, m) - disk0[m])[:3]}"

    # a forced day: the other models recompute and publish it, the failing one commits nothing
    day = "2024-03-31"
    run_id2 = lib.unique("fail")
    out = floe_transform(pipeline, "--from", day, "--to", day, "--run-id", run_id2, report=tmp_path / "day.json")
    no_panic(out)
    assert out.returncode == 1, explain(out)
    report = lib.read_report(tmp_path / "day.json")
    rep = model_report(report, "silver.peak_check")
    assert (rep["status"], rep["days"]) == ("tests-failed", [day]), rep
    assert [(t["test"], t["failures"]) for t in rep["tests"] if t["failures"]] == [("range(peak_demand_mw)", 1)]
    assert model_report(report, "gold.peak_after")["status"] == "skipped"
    now = versions(pipeline, tables)
    for m in ["silver.fact_observations", *GOLD]:
        r = model_report(report, m)
        assert (r["status"], r["days"]) == ("published", [day]), (r, explain(out))
        assert now[m] == v0[m] + 1 == r["snapshot_id"], (m, now[m], r)
    for m in ("silver.peak_check", "gold.peak_after", *TABLE_MODELS, *BRONZE):
        assert now[m] == v0[m], f"{m} was committed to: {v0[m]} -> {now[m]}"
    assert not any(run_id2 in p for p in parquet_on_disk(pipeline, "silver.peak_check")), "stray files"
    assert parquet_on_disk(pipeline, "silver.peak_check") == disk0["silver.peak_check"]

    # a new model failing its first run: no data lands
    (models / "silver" / "never_ok.sql").write_text(PEAK_SQL.format(bounds="max = -1", expr="demand_mw"))
    out = floe_transform(pipeline, "--select", "silver.never_ok", report=tmp_path / "new.json")
    no_panic(out)
    assert out.returncode == 1, explain(out)
    assert statuses(lib.read_report(tmp_path / "new.json")) == {"silver.never_ok": "tests-failed"}
    assert not parquet_on_disk(pipeline, "silver.never_ok"), "the failed first run left data files"
    if versions(pipeline, ["silver.never_ok"])["silver.never_ok"] is not None:
        got = read_delta(table_uri(pipeline, "silver.never_ok"))
        assert not got["files"] and not writes(got["history"]), got


# ---------------------------------------------------------------------------------------
# 4. maintenance keeps the data


ZERO_RETENTION = {"delta.deletedFileRetentionDuration": "interval 0 seconds"}


def test_delta_maintain_all_keeps_rows(tmp_path):
    # Removed files are vacuumed at once: every table (jobs' and models') allows a zero
    # deleted-file retention and the policy expires at 0s, so maintenance really deletes files
    # and the check is that it deletes only unreferenced ones.
    models = copy_models(tmp_path / "sql")
    header_property(models, *next(iter(ZERO_RETENTION.items())))
    pipeline = delta_energy_pipeline(tmp_path, models=models, job_properties=ZERO_RETENTION,
                                     maintain={"expire_older_than": "0s"})
    floe_run(None, pipeline, report=tmp_path / "one.json")
    set_weather(pipeline, "2024-03-31T12:00:00Z", "london", 30.0, 2.5)
    floe_run(None, pipeline, report=tmp_path / "two.json")
    before = read_all(pipeline)
    live = {t: {f["path"] for f in before[t]["files"]} for t in ALL_TABLES}
    removed = {t: parquet_on_disk(pipeline, t) - live[t] for t in ALL_TABLES}
    for t in BRONZE:
        assert len(removed[t]) == 3, (t, removed[t])  # the first run's files of each day
        assert before[t]["version"] == 2

    out = floe_ok(None, "maintain", "--all", "--pipeline", pipeline, "--report", tmp_path / "maintain.json",
                  cwd=pipeline.parent)
    report = lib.read_report(tmp_path / "maintain.json")
    outcomes = {t["table"]: t for t in report["tables"]}
    assert report["failed"] == 0, report
    after = read_all(pipeline)

    # the pipeline's jobs' tables: same rows, same live files, the removed ones vacuumed
    for t in BRONZE:
        assert outcomes.get(t, {}).get("status") == "ok", (t, outcomes.get(t), explain(out))
        assert delta_rows(after[t]) == delta_rows(before[t]), f"{t}: maintenance changed the rows"
        assert {f["path"] for f in after[t]["files"]} == live[t], t
        assert parquet_on_disk(pipeline, t) == live[t], \
            f"{t}: vacuum left {sorted(parquet_on_disk(pipeline, t) - live[t])} / deleted live files"
        assert outcomes[t]["files_deleted"] == len(removed[t]), outcomes[t]

    # README (Maintenance): `maintain --all` covers the pipeline's Delta tables, its jobs' and its
    # models', and reports their real figures. (A floe built before commit b714b4e, "Maintenance
    # covers the pipeline's Delta models and reports real figures", covers the jobs' tables only,
    # with zero figures, and fails here.)
    assert sorted(outcomes) == sorted(ALL_TABLES), f"maintain --all covered {sorted(outcomes)}" + explain(out)
    for t in ALL_TABLES:
        o = outcomes[t]
        assert o["status"] == "ok", o
        assert o["before"]["data_files"] == o["after"]["data_files"] == len(live[t]), o
        assert o["before"]["data_bytes"] > 0, o
        assert o["files_deleted"] == len(removed[t]), (o, removed[t])
        assert delta_rows(after[t]) == delta_rows(before[t]), f"{t}: maintenance changed the rows"
        assert parquet_on_disk(pipeline, t) == live[t], t

    # the incremental state survives: nothing to do afterwards
    out = floe_transform(pipeline, report=tmp_path / "after.json")
    assert out.returncode == 0, explain(out)
    # (the dimensions were recomputed identical after the weather change, so not committed: their
    # recorded inputs are still those of their last commit and they are recomputed, and again not
    # committed, as Iceberg models are)
    assert statuses(lib.read_report(tmp_path / "after.json")) == {
        m: ("unchanged" if m in TABLE_MODELS else "up-to-date") for m in ALL_MODELS}, explain(out)
