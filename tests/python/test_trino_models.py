"""SQL models on Trino (`engine = "trino"`): floe plans, Trino computes and writes the files,
floe tests and publishes. Against the real single-node Trino of infra/local/trino.sh, whose
catalogs are `floe catalog serve`s (conftest.py's `trino` fixture).

What they hold floe to:
  * the energy and market examples give the same tables (schema and every row) on Trino as
    on DataFusion, one snapshot per model, the same run records in the summaries, Trino's
    files inside the table's location and no staging table left;
  * an incremental run after one day's input changed recomputes that day only on Trino,
    and equals a full DataFusion recompute;
  * failing data tests publish nothing (main and the staging tables as before);
  * floe killed while Trino runs the model, and Trino's query killed while floe waits,
    both leave `main` untouched; the next run drops what the dead run left and publishes;
  * Trino unreachable, Trino's catalog not floe's, and SQL Trino refuses each fail with a
    message naming what to fix (the model file and line for SQL);
  * `floe maintain` with `compact_engine = "trino"` has Trino's optimize rewrite the days floe
    picks (delete files applied), checks the result, and reports it.

Every wait is bounded and everything is on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import floe_testlib as lib
from test_market_example import FIRST as MARKET_FIRST, LAST as MARKET_LAST, copy_market
from test_transform import (ALL_MODELS, FIRST, LAST, copy_models, energy_pipeline, explain, floe_env, floe_ok,
                            floe_run, model_report, run_floe, set_weather, statuses, write_model)

pytestmark = [pytest.mark.trino, pytest.mark.slow]

KINDS = ["local", pytest.param("s3", marks=pytest.mark.s3)]
EXAMPLE_NAMESPACES = ("bronze", "silver", "gold")
MARKET_MODELS = ["silver.dim_company", "silver.prices", "gold.weekly_returns"]
STAGING_MARK = "__floe_staging_"
# How long a test waits for Trino to start a model's INSERT.
INSERT_WAIT_S = 60


# ---------------------------------------------------------------------------------------
# helpers


def on_trino(pipeline: Path, trino: lib.TrinoServer, catalog: str) -> Path:
    """The pipeline with [engines.trino] pointing at the test Trino's `catalog`."""
    with pipeline.open("a") as f:
        f.write(f'\n[engines.trino]\nuri = "{trino.url}"\ncatalog = "{catalog}"\n')
    return pipeline


def empty_namespaces(server: lib.CatalogServer, *namespaces: str) -> None:
    """Drops every table of `namespaces` with its files (the Trino catalogs are shared by the
    session's tests, which use the examples' fixed namespaces)."""
    cat = server.catalog()
    existing = {ns[0] for ns in cat.list_namespaces()}
    for ns in namespaces:
        if ns in existing:
            for ident in cat.list_tables(ns):
                cat.purge_table(ident)


def table_state(cat, ident: str) -> dict:
    """A table's schema, rows (sorted) and main's snapshots with their floe.* summary keys."""
    tbl = cat.load_table(ident)
    arrow = tbl.scan().to_arrow()
    rows = sorted((tuple(sorted(r.items())) for r in arrow.to_pylist()), key=repr)
    snapshots = []
    snapshot = tbl.current_snapshot()
    while snapshot is not None:
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        snapshots.append({"id": snapshot.snapshot_id,
                          "floe_keys": sorted(k for k in summary if k.startswith("floe."))})
        snapshot = tbl.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    return {"schema": str(arrow.schema), "rows": rows, "snapshots": snapshots, "location": tbl.location()}


def states(cat, idents: list[str]) -> dict[str, dict]:
    return {ident: table_state(cat, ident) for ident in idents}


def assert_same_tables(datafusion: dict[str, dict], trino: dict[str, dict], what: str) -> None:
    for ident, want in datafusion.items():
        got = trino[ident]
        assert got["schema"] == want["schema"], f"{what}: {ident}'s columns differ:\n{got['schema']}\n!=\n{want['schema']}"
        assert len(got["rows"]) == len(want["rows"]), \
            f"{what}: {ident} has {len(got['rows'])} rows on Trino, {len(want['rows'])} on DataFusion"
        diffs = [(g, w) for g, w in zip(got["rows"], want["rows"]) if g != w]
        assert not diffs, f"{what}: {ident} differs in {len(diffs)} row(s), e.g.\n  trino: {diffs[0][0]}\n  datafusion: {diffs[0][1]}"


def staging_tables(server: lib.CatalogServer, *namespaces: str) -> list[str]:
    cat = server.catalog()
    existing = {ns[0] for ns in cat.list_namespaces()}
    return [".".join(ident) for ns in namespaces if ns in existing
            for ident in cat.list_tables(ns) if STAGING_MARK in ident[-1]]


def data_files(tbl) -> list[str]:
    return [task.file.file_path for task in tbl.scan().plan_files()]


def report_of(path: Path) -> dict:
    report = json.loads(path.read_text())
    return report.get("transform", report)


def transform_on(server: lib.CatalogServer, pipeline: Path, *args: str) -> subprocess.CompletedProcess:
    return run_floe(server, "transform", "--pipeline", pipeline, *args, cwd=pipeline.parent)


# ---------------------------------------------------------------------------------------
# the examples: the same tables from both engines


@pytest.mark.parametrize("kind", KINDS)
def test_the_energy_example_on_trino_equals_datafusion(trino, kind, tmp_path):
    catalog, server = trino.catalogs[kind]
    empty_namespaces(server, *EXAMPLE_NAMESPACES)
    pipeline = on_trino(energy_pipeline(tmp_path, server), trino, catalog)
    floe_run(server, pipeline, FIRST, LAST)
    cat = server.catalog()
    datafusion = states(cat, ALL_MODELS)
    for ident in ALL_MODELS:
        cat.purge_table(ident)

    out = transform_on(server, pipeline, "--engine", "trino", "--report", tmp_path / "trino.json")
    assert out.returncode == 0, explain(out)
    report = report_of(tmp_path / "trino.json")
    assert statuses(report) == {m: "published" for m in ALL_MODELS}, explain(out)
    assert {model_report(report, m)["engine"] for m in ALL_MODELS} == {"trino"}
    on_trino_state = states(cat, ALL_MODELS)
    assert_same_tables(datafusion, on_trino_state, f"energy example ({kind})")

    for ident in ALL_MODELS:
        df_snaps, trino_snaps = datafusion[ident]["snapshots"], on_trino_state[ident]["snapshots"]
        assert len(trino_snaps) == 1, f"{ident}: {len(trino_snaps)} snapshots on main after one run, want one"
        assert trino_snaps[0]["floe_keys"] == df_snaps[0]["floe_keys"], \
            f"{ident}: the snapshot records differ: {trino_snaps[0]['floe_keys']} vs {df_snaps[0]['floe_keys']}"
        tbl = cat.load_table(ident)
        outside = [f for f in data_files(tbl) if not f.startswith(tbl.location().rstrip("/") + "/")]
        assert not outside, f"{ident}: Trino's files outside the table's location: {outside}"
        (count,) = trino.rows(catalog, f"SELECT count(*) FROM {catalog}.{ident}", about=ident)[0]
        assert count == len(on_trino_state[ident]["rows"]), f"{ident}: Trino counts {count}"
    assert staging_tables(server, *EXAMPLE_NAMESPACES) == []

    again = transform_on(server, pipeline, "--engine", "trino", "--report", tmp_path / "again.json")
    assert again.returncode == 0, explain(again)
    assert set(statuses(report_of(tmp_path / "again.json")).values()) == {"up-to-date"}, explain(again)


def test_the_market_example_on_trino_equals_datafusion(trino, tmp_path):
    catalog, server = trino.catalogs["local"]
    empty_namespaces(server, *EXAMPLE_NAMESPACES)
    market = copy_market(tmp_path)
    text = (market / "market.toml").read_text()
    embedded = 'embedded_warehouse = "warehouse"'
    assert embedded in text, "examples/market/market.toml no longer has its embedded_warehouse line"
    (market / "market.toml").write_text(text.replace(embedded, f'uri = "{server.uri}"\nwarehouse = "{server.name}"'))
    pipeline = on_trino(market / "market.toml", trino, catalog)
    floe_ok(server, "run", "--pipeline", pipeline, "--replay", "--from", MARKET_FIRST, "--to", MARKET_LAST,
            cwd=market)
    cat = server.catalog()
    datafusion = states(cat, MARKET_MODELS)
    for ident in MARKET_MODELS:
        cat.purge_table(ident)
    out = transform_on(server, pipeline, "--engine", "trino", "--report", tmp_path / "trino.json")
    assert out.returncode == 0, explain(out)
    assert statuses(report_of(tmp_path / "trino.json")) == {m: "published" for m in MARKET_MODELS}, explain(out)
    assert_same_tables(datafusion, states(cat, MARKET_MODELS), "market example")
    assert staging_tables(server, *EXAMPLE_NAMESPACES) == []


def test_one_changed_day_is_recomputed_on_trino_and_equals_a_full_datafusion_run(trino, tmp_path):
    catalog, server = trino.catalogs["local"]
    empty_namespaces(server, *EXAMPLE_NAMESPACES)
    pipeline = on_trino(energy_pipeline(tmp_path, server), trino, catalog)
    floe_run(server, pipeline, FIRST, LAST, "--engine", "trino")
    cat = server.catalog()
    fact = cat.load_table("silver.fact_observations")
    files_before = {f for f in data_files(fact) if "2024-03-31" not in f}

    set_weather(pipeline, "2024-03-31T12:00:00Z", "london", 31.5, 9.0)
    floe_run(server, pipeline, "2024-03-31", "2024-03-31", "--engine", "trino", report=tmp_path / "day.json")
    report = report_of(tmp_path / "day.json")
    fact_report = model_report(report, "silver.fact_observations")
    assert fact_report["status"] == "published" and fact_report["engine"] == "trino", fact_report
    assert (fact_report["refresh"], fact_report["days"]) == ("days", ["2024-03-31"]), fact_report
    fact = cat.load_table("silver.fact_observations")
    summary = fact.current_snapshot().summary.additional_properties
    assert summary.get("floe.transform.days") == "2024-03-31", summary
    assert files_before <= set(data_files(fact)), "the other days' files were rewritten"
    temps = [r["temperature_c"] for r in fact.scan(row_filter="site_id == 'london'").to_arrow().to_pylist()
             if r["ts_utc"].isoformat().startswith("2024-03-31T12:")]
    assert temps and set(temps) == {31.5}, temps

    incremental = states(cat, ALL_MODELS)
    for ident in ALL_MODELS:
        cat.purge_table(ident)
    out = transform_on(server, pipeline, "--engine", "datafusion")
    assert out.returncode == 0, explain(out)
    full = states(cat, ALL_MODELS)
    assert_same_tables(full, incremental, "incremental on Trino vs full on DataFusion")


# ---------------------------------------------------------------------------------------
# what must not publish


def test_failing_tests_on_trino_publish_nothing(trino, tmp_path):
    catalog, server = trino.catalogs["local"]
    empty_namespaces(server, *EXAMPLE_NAMESPACES)
    models = copy_models(tmp_path / "sql")
    pipeline = on_trino(energy_pipeline(tmp_path, server, models=models), trino, catalog)
    floe_run(server, pipeline, FIRST, LAST, "--engine", "trino")
    cat = server.catalog()
    before = {ident: cat.load_table(ident).current_snapshot().snapshot_id for ident in ALL_MODELS}

    dim_site = models / "silver" / "dim_site.sql"
    dim_site.write_text(dim_site.read_text().replace(
        "[tests]", '[tests]\naccepted_values = { site_id = ["nowhere"] }', 1))
    out = transform_on(server, pipeline, "--engine", "trino", "--report", tmp_path / "r.json")
    assert out.returncode == 1, "failing tests must exit 1" + explain(out)
    assert "accepted_values" in out.stderr + out.stdout, explain(out)
    report = report_of(tmp_path / "r.json")
    assert model_report(report, "silver.dim_site")["status"] == "tests-failed"
    after = {ident: cat.load_table(ident).current_snapshot().snapshot_id for ident in ALL_MODELS}
    assert after == before, "a run with failing tests moved main"
    refs = cat.load_table("silver.dim_site").metadata.refs
    assert set(refs) == {"main"}, f"branches left behind: {sorted(refs)}"
    assert staging_tables(server, *EXAMPLE_NAMESPACES) == []


HEAVY = """SELECT a.site_id, COUNT(*) AS n
FROM bronze.weather AS a
CROSS JOIN bronze.weather AS b
CROSS JOIN bronze.weather AS c
CROSS JOIN bronze.weather AS d
GROUP BY a.site_id"""
LIGHT = """SELECT a.site_id, COUNT(*) AS n
FROM bronze.weather AS a
CROSS JOIN bronze.weather AS b
GROUP BY a.site_id"""


def heavy_setup(trino, tmp_path) -> tuple[str, lib.CatalogServer, Path, Path]:
    """The energy example's bronze tables and one model, gold.load, published once (light)."""
    catalog, server = trino.catalogs["local"]
    empty_namespaces(server, *EXAMPLE_NAMESPACES)
    models = tmp_path / "models"
    write_model(models, "gold", "load", 'materialized = "table"\n[tests]\nmin_rows = 1', LIGHT)
    pipeline = on_trino(energy_pipeline(tmp_path, server, models=models), trino, catalog)
    floe_run(server, pipeline, FIRST, LAST, "--engine", "trino")
    return catalog, server, pipeline, models


def start_floe(server, pipeline: Path) -> subprocess.Popen:
    cmd = [lib.floe_bin(), "transform", "--pipeline", str(pipeline), "--engine", "trino"]
    return subprocess.Popen(cmd, cwd=pipeline.parent, env=floe_env(server), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, start_new_session=True)


def running_insert(trino: lib.TrinoServer, catalog: str, proc: subprocess.Popen) -> str:
    """The id of floe's INSERT once Trino runs it (bounded wait)."""
    deadline = time.monotonic() + INSERT_WAIT_S
    while time.monotonic() < deadline:
        rows = trino.rows(catalog, "SELECT query_id FROM system.runtime.queries WHERE state = 'RUNNING' "
                                   "AND query LIKE 'INSERT INTO %floe_staging%'", about="running queries")
        if rows:
            return rows[0][0]
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"floe ended (exit {proc.returncode}) before Trino ran its INSERT:\n{out}\n{err}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"Trino did not run floe's INSERT within {INSERT_WAIT_S} s")


def kill_query(trino: lib.TrinoServer, catalog: str, query_id: str) -> None:
    trino.rows(catalog, f"CALL system.runtime.kill_query(query_id => '{query_id}', message => 'killed by the test')",
               about="kill_query")


def test_floe_killed_while_trino_runs_leaves_main_untouched_and_the_next_run_cleans_up(trino, tmp_path):
    catalog, server, pipeline, models = heavy_setup(trino, tmp_path)
    cat = server.catalog()
    published = table_state(cat, "gold.load")

    write_model(models, "gold", "load", 'materialized = "table"\n[tests]\nmin_rows = 1', HEAVY)
    proc = start_floe(server, pipeline)
    query_id = running_insert(trino, catalog, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    kill_query(trino, catalog, query_id)
    assert table_state(cat, "gold.load") == published, "main moved although floe died mid-run"
    left = staging_tables(server, "gold")
    assert len(left) == 1, f"the dead run's staging table: {left}"

    write_model(models, "gold", "load", 'materialized = "table"\n[tests]\nmin_rows = 1',
                LIGHT.replace("COUNT(*) AS n", "COUNT(*) + 1 AS n"))
    out = transform_on(server, pipeline, "--engine", "trino")
    assert out.returncode == 0, explain(out)
    assert staging_tables(server, "gold") == [], "the next run did not drop the dead run's staging table"
    after = table_state(cat, "gold.load")
    assert len(after["snapshots"]) == len(published["snapshots"]) + 1
    assert {dict(r)["n"] for r in after["rows"]} == {dict(r)["n"] + 1 for r in published["rows"]}


def test_a_query_killed_in_trino_fails_the_model_and_publishes_nothing(trino, tmp_path):
    catalog, server, pipeline, models = heavy_setup(trino, tmp_path)
    cat = server.catalog()
    published = table_state(cat, "gold.load")
    model = write_model(models, "gold", "load", 'materialized = "table"\n[tests]\nmin_rows = 1', HEAVY)
    proc = start_floe(server, pipeline)
    query_id = running_insert(trino, catalog, proc)
    kill_query(trino, catalog, query_id)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("floe kept waiting for a query Trino killed")
    assert proc.returncode == 2, f"exit {proc.returncode}\n{out}\n{err}"
    assert str(model) in err and "killed by the test" in err and "nothing was committed" in err, err
    assert "panicked" not in err, err
    assert table_state(cat, "gold.load") == published, "main moved although the query was killed"
    assert staging_tables(server, "gold") == [], "the killed run's staging table is left"


# ---------------------------------------------------------------------------------------
# errors a user can act on


def test_sql_trino_refuses_names_the_model_file_and_line(trino, tmp_path):
    catalog, server = trino.catalogs["local"]
    empty_namespaces(server, *EXAMPLE_NAMESPACES)
    models = tmp_path / "models"
    # date_part is DataFusion's (and Postgres'); Trino has EXTRACT.
    model = write_model(models, "gold", "years", 'materialized = "table"',
                        "SELECT site_id,\n       date_part('year', ts_utc) AS y\nFROM bronze.weather")
    pipeline = on_trino(energy_pipeline(tmp_path, server, models=models), trino, catalog)
    floe_ok(server, "ingest", "--pipeline", pipeline, "--from", FIRST, "--to", LAST, cwd=pipeline.parent)
    out = transform_on(server, pipeline, "--engine", "trino")
    assert out.returncode == 2, explain(out)
    # The header is lines 1-3, the SELECT line 4: date_part is on line 5.
    assert f"{model}:5:" in out.stderr and "Trino:" in out.stderr and "date_part" in out.stderr, explain(out)
    assert "Models on Trino" in out.stderr, explain(out)
    assert "panicked" not in out.stderr
    assert staging_tables(server, "gold") == []
    assert ("gold", "years") not in server.catalog().list_tables("gold"), "the first run's failure left its table"


def test_trino_on_another_catalog_is_refused(trino, tmp_path):
    _, server = trino.catalogs["local"]
    other_catalog, _ = trino.catalogs["s3"]
    empty_namespaces(server, *EXAMPLE_NAMESPACES)
    pipeline = on_trino(energy_pipeline(tmp_path, server), trino, other_catalog)
    floe_ok(server, "ingest", "--pipeline", pipeline, "--from", FIRST, "--to", LAST, cwd=pipeline.parent)
    out = transform_on(server, pipeline, "--engine", "trino", "--select", "silver.dim_site")
    assert out.returncode == 2, explain(out)
    assert "is not floe's catalog" in out.stderr and other_catalog in out.stderr, explain(out)
    assert "snapshot" in out.stderr and "bronze.weather" in out.stderr, "checked before any model ran" + explain(out)
    assert staging_tables(server, *EXAMPLE_NAMESPACES) == []

    # A model that reads no table: the staging table floe made is the proof, checked
    # before Trino runs anything.
    models = tmp_path / "constant"
    write_model(models, "gold", "constant", 'materialized = "table"', "SELECT 1 AS x")
    text = pipeline.read_text()
    pipeline.write_text(text.replace(text.split("models = ", 1)[1].split("\n", 1)[0], f'"{models}"'))
    out = transform_on(server, pipeline, "--engine", "trino")
    assert out.returncode == 2, explain(out)
    assert "is not floe's catalog" in out.stderr and "constant__floe_staging_" in out.stderr, explain(out)
    assert staging_tables(server, "gold") == []
    assert ("gold", "constant") not in server.catalog().list_tables("gold")


@pytest.mark.parametrize("kind", ["local"])
def test_trino_unreachable_is_an_error_before_anything_is_written(local_server, kind, tmp_path):
    server = local_server
    (port,) = lib.free_ports(1)
    namespace = lib.unique("models")
    models = tmp_path / "models"
    write_model(models, namespace, "t", 'materialized = "table"', "SELECT 1 AS x")
    pipeline = tmp_path / "floe.toml"
    pipeline.write_text(f'[catalog]\nuri = "{server.uri}"\n\n[transform]\nmodels = "models"\nengine = "trino"\n\n'
                        f'[engines.trino]\nuri = "http://127.0.0.1:{port}"\n')
    out = run_floe(server, "transform", "--pipeline", pipeline, cwd=tmp_path)
    assert out.returncode == 2, explain(out)
    assert f"cannot reach Trino at http://127.0.0.1:{port}" in out.stderr, explain(out)
    assert "panicked" not in out.stderr
    assert (namespace,) not in server.catalog().list_namespaces(), "a table was made before Trino answered"

    pipeline.write_text(pipeline.read_text().split("[engines.trino]")[0])
    out = run_floe(server, "transform", "--pipeline", pipeline, cwd=tmp_path)
    assert out.returncode == 2 and "[engines.trino]" in out.stderr, explain(out)


# ---------------------------------------------------------------------------------------
# compaction handed to Trino


def test_maintain_hands_compaction_to_trino_and_checks_it(trino, tmp_path):
    catalog, server = trino.catalogs["local"]
    ns = lib.unique("maint")
    table = f"{catalog}.{ns}.readings"
    statements = [f"CREATE SCHEMA {catalog}.{ns}",
                  f"CREATE TABLE {table} (ts timestamp(6) with time zone, site varchar, v double) "
                  "WITH (partitioning = ARRAY['day(ts)'], format_version = 2)"]
    for batch in range(6):
        values = ", ".join(f"(TIMESTAMP '2024-03-{day:02d} {hour:02d}:00:00 UTC', 's{site}', {batch * 100 + hour + site / 10})"
                           for day in (30, 31) for hour in range(0, 24, 6) for site in range(3))
        statements.append(f"INSERT INTO {table} VALUES {values}")
    statements.append(f"INSERT INTO {table} VALUES (TIMESTAMP '2024-04-01 00:00:00 UTC', 'lone', 1.0)")
    statements.append(f"DELETE FROM {table} WHERE site = 's1' AND ts < TIMESTAMP '2024-03-31 00:00:00 UTC'")
    for sql in statements:
        trino.rows(catalog, sql, about=table)
    cat = server.catalog()

    def per_day():
        rows = cat.load_table(f"{ns}.readings").scan().to_arrow().to_pylist()
        out: dict[str, list] = {}
        for r in rows:
            out.setdefault(r["ts"].date().isoformat(), []).append((r["ts"], r["site"], r["v"]))
        return {d: sorted(v) for d, v in out.items()}

    def files_per_day():
        out: dict[str, int] = {}
        for f in data_files(cat.load_table(f"{ns}.readings")):
            day = next(p for p in f.split("/") if p.startswith("ts_day="))
            out[day] = out.get(day, 0) + 1
        return out

    want = per_day()
    assert len(want["2024-03-30"]) == 6 * 4 * 2, "the delete removed one site on 2024-03-30"
    files_before = files_per_day()
    assert files_before["ts_day=2024-03-30"] == 6 and files_before["ts_day=2024-04-01"] == 1, files_before
    snapshots_before = len(cat.load_table(f"{ns}.readings").snapshots())

    pipeline = tmp_path / "floe.toml"
    pipeline.write_text(f'[catalog]\nuri = "{server.uri}"\nwarehouse = "{server.name}"\n\n'
                        '[maintain]\ncompact_engine = "trino"\nmin_input_files = 2\n\n'
                        f'[engines.trino]\nuri = "{trino.url}"\ncatalog = "{catalog}"\n')
    planned = run_floe(server, "maintain", f"{ns}.readings", "--pipeline", pipeline, "--dry-run", "--json",
                       cwd=tmp_path)
    assert planned.returncode == 0, explain(planned)
    (outcome,) = json.loads(planned.stdout)["tables"]
    assert outcome["policy"]["compact_engine"] == "trino", outcome
    assert (outcome["compact"]["engine"], outcome["compact"]["status"]) == ("trino", "planned"), outcome
    assert len(cat.load_table(f"{ns}.readings").snapshots()) == snapshots_before, "a dry run changed the table"

    out = run_floe(server, "maintain", f"{ns}.readings", "--pipeline", pipeline, "--report", tmp_path / "r.json",
                   cwd=tmp_path)
    assert out.returncode == 0, explain(out)
    (outcome,) = json.loads((tmp_path / "r.json").read_text())["tables"]
    compact = outcome["compact"]
    assert outcome["status"] == "ok" and "compact" in outcome["actions"], outcome
    assert (compact["engine"], compact["status"]) == ("trino", "compacted"), compact
    assert compact["snapshots"] and compact["input_files"] >= 12 and compact["output_files"] < compact["input_files"], compact
    tbl = cat.load_table(f"{ns}.readings")
    for snapshot_id in compact["snapshots"]:
        assert tbl.snapshot_by_id(snapshot_id).summary.operation.value == "replace"
    assert per_day() == want, "Trino's compaction changed the rows"
    files_after = files_per_day()
    assert files_after["ts_day=2024-03-30"] == 1 and files_after["ts_day=2024-03-31"] == 1, files_after
    assert files_after["ts_day=2024-04-01"] == 1, "a day floe did not pick was rewritten"
    (count,) = trino.rows(catalog, f"SELECT count(*) FROM {table}", about=table)[0]
    assert count == sum(len(v) for v in want.values())
