"""Trino (the real server, from infra/local/trino.sh) against `floe catalog serve`, on a
local-folder warehouse and on the S3 server (Trino's native S3 file system, path-style).

What they hold floe to:
  * Trino reads every table of the energy example that floe ingested and transformed (bronze,
    silver, gold) with the same row count and, per column, the same checksum (sum of a
    number, count of distinct values otherwise, non-null count) as pyiceberg;
  * a `ts_utc` range of one UTC day is pruned to that day's files: the scan's constraint is on
    `ts_utc` and Trino reads that day's rows only;
  * Trino writes a day-partitioned table through floe's catalog (INSERT, row-level DELETE,
    UPDATE, MERGE, ADD COLUMN); a floe model reads it with Trino's delete files present, and
    Trino reads the model's table; floe compacts it with the delete files present,
    expires its snapshots and removes orphans; Trino and pyiceberg read the same rows after
    each step; Trino's own optimize, expire_snapshots and remove_orphan_files work on what
    floe left, and floe's maintenance on what Trino left;
  * Trino creates a table in a schema it created, as any user would, with no location given.

When Trino refuses something floe wrote, the failure names the table and Trino's message
(lib.TrinoRejected). Trino starts once per session (the `trino` fixture, conftest.py);
every wait is bounded and everything is on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import floe_testlib as lib
from test_transform import FIRST, LAST, energy_pipeline, explain, floe_ok, floe_run, transform, write_model

pytestmark = [pytest.mark.trino, pytest.mark.slow]

UTC = dt.timezone.utc
KINDS = ["local", pytest.param("s3", marks=pytest.mark.s3)]
EXAMPLE_NAMESPACES = ("bronze", "silver", "gold")
# Trino's minimum retentions (7 days) lowered for this session only, so its maintenance
# procedures act on a table a test just wrote.
NO_RETENTION = ("expire_snapshots_min_retention", "remove_orphan_files_min_retention")


def catalog_of(trino: lib.TrinoServer, kind: str) -> tuple[str, lib.CatalogServer]:
    return trino.catalogs[kind]


# ---------------------------------------------------------------------------------------
# checksums: one Trino query per table, the same figures from pyiceberg's Arrow table


def assert_trino_matches_pyiceberg(trino: lib.TrinoServer, kind: str, ident: str) -> int:
    """Trino's figures for `ident` equal pyiceberg's; returns the row count."""
    catalog, server = catalog_of(trino, kind)
    arrow = server.catalog().load_table(ident).scan().to_arrow()
    plan = lib.checksum_plan(arrow.schema)
    sql = f"SELECT {', '.join(expr for _, expr in plan)} FROM {catalog}.{ident}"
    (got,) = trino.rows(catalog, sql, about=f"{catalog}.{ident} ({kind} warehouse)")
    diffs = []
    for (label, _), value in zip(plan, got):
        want = lib.arrow_figure(arrow, label)
        if not lib.same(value, want):
            diffs.append(f"  {label}: Trino {value!r}, pyiceberg {want!r}")
    assert not diffs, f"{catalog}.{ident} ({kind}): Trino and pyiceberg disagree:\n" + "\n".join(diffs)
    return arrow.num_rows


# ---------------------------------------------------------------------------------------
# the energy example, ingested and transformed by floe, read by Trino


def example_tables(server: lib.CatalogServer) -> list[str]:
    cat = server.catalog()
    tables = [".".join(ident) for ns in EXAMPLE_NAMESPACES for ident in cat.list_tables(ns)]
    return sorted(tables)


def day_bounds(day: str) -> tuple[str, str]:
    start = dt.date.fromisoformat(day)
    return (f"TIMESTAMP '{start} 00:00:00 UTC'", f"TIMESTAMP '{start + dt.timedelta(days=1)} 00:00:00 UTC'")


def rows_on_day(server: lib.CatalogServer, ident: str, day: str) -> int:
    arrow = server.catalog().load_table(ident).scan(selected_fields=("ts_utc",)).to_arrow()
    start = dt.datetime.fromisoformat(day).replace(tzinfo=UTC)
    ts = arrow.column("ts_utc")
    mask = pc.and_(pc.greater_equal(ts, pa.scalar(start, pa.timestamp("us", tz="UTC"))),
                   pc.less(ts, pa.scalar(start + dt.timedelta(days=1), pa.timestamp("us", tz="UTC"))))
    return pc.sum(pc.cast(mask, pa.int64())).as_py() or 0


def assert_day_pruned(trino: lib.TrinoServer, kind: str, ident: str, day: str) -> None:
    """A one-day `ts_utc` range on a day(ts_utc) table: the plan's scan is constrained on
    ts_utc (the predicate went into the connector, no filter left above it: the day
    partitions enforce it), and Trino reads only that day's rows and fewer splits."""
    catalog, server = catalog_of(trino, kind)
    lo, hi = day_bounds(day)
    where = f"ts_utc >= {lo} AND ts_utc < {hi}"
    about = f"{catalog}.{ident} ({kind} warehouse)"
    plan = "\n".join(r[0] for r in trino.rows(catalog, f"EXPLAIN SELECT count(*) FROM {catalog}.{ident} WHERE {where}",
                                              about=about))
    scans = [line for line in plan.splitlines() if "TableScan" in line]
    assert scans, f"{about}: no TableScan in the plan:\n{plan}"
    assert "constraint on [ts_utc]" in plan, f"{about}: the ts_utc range did not reach the scan:\n{plan}"
    assert "ScanFilter" not in plan and "Filter[" not in plan, \
        f"{about}: a filter is left above the scan (the day partitions should enforce it):\n{plan}"

    want_day = rows_on_day(server, ident, day)
    (full,), full_stats = trino.query(catalog, f"SELECT count(*) FROM {catalog}.{ident}", about=about)
    (ranged,), ranged_stats = trino.query(catalog, f"SELECT count(*) FROM {catalog}.{ident} WHERE {where}",
                                          about=about)
    assert ranged[0] == want_day, f"{about}: {ranged[0]} rows on {day}, pyiceberg says {want_day}"
    assert 0 < want_day < full[0], f"{about}: {day} should hold some but not all of its {full[0]} rows"
    assert ranged_stats["processedRows"] == want_day, \
        f"{about}: Trino read {ranged_stats['processedRows']} rows for one day of {want_day} rows: not pruned"
    assert ranged_stats["totalSplits"] < full_stats["totalSplits"], \
        f"{about}: as many splits for one day ({ranged_stats['totalSplits']}) as for the table"


@pytest.mark.parametrize("kind", KINDS)
def test_trino_reads_the_energy_example(trino, kind, tmp_path):
    catalog, server = catalog_of(trino, kind)
    pipeline = energy_pipeline(tmp_path, server)
    floe_run(server, pipeline, FIRST, LAST)

    tables = example_tables(server)
    for layer in EXAMPLE_NAMESPACES:
        assert any(t.startswith(f"{layer}.") for t in tables), f"no {layer} table in {tables}"
    shown = {f"{r[0]}.{r[1]}" for r in trino.rows(
        catalog, "SELECT table_schema, table_name FROM information_schema.tables "
                 f"WHERE table_schema IN {tuple(EXAMPLE_NAMESPACES)}", about=f"{catalog}'s tables")}
    assert set(tables) <= shown, f"{catalog}: Trino does not list {sorted(set(tables) - shown)}"

    for ident in tables:
        rows = assert_trino_matches_pyiceberg(trino, kind, ident)
        assert rows > 0 or ident.endswith("__rejects"), f"{ident} is empty"

    for ident in ("bronze.demand", "bronze.weather", "silver.fact_observations"):
        assert_day_pruned(trino, kind, ident, "2024-03-31")


# ---------------------------------------------------------------------------------------
# Trino writes, floe maintains, both read


def trino_exec(trino: lib.TrinoServer, catalog: str, about: str, *statements: str) -> None:
    for sql in statements:
        trino.rows(catalog, sql, about=about, **{f"{catalog}.{p}": "0s" for p in NO_RETENTION})


def trino_state(trino: lib.TrinoServer, catalog: str, ident: str) -> dict[str, tuple]:
    """site_id -> (value, note, ts_utc); note is None before the column exists."""
    import trino as client

    conn = trino.connect(catalog)
    try:
        cur = conn.cursor()
        try:
            cur.execute(f"SELECT * FROM {catalog}.{ident}")
            rows = cur.fetchall()
        except client.exceptions.TrinoQueryError as exc:
            raise lib.TrinoRejected(f"Trino rejected {catalog}.{ident}: {exc.error_name}: {exc.message}") from None
        names = [d[0] for d in cur.description]
    finally:
        conn.close()
    return {r["site_id"]: (r["value"], r.get("note"), r["ts_utc"]) for r in (dict(zip(names, row)) for row in rows)}


def pyiceberg_state(server: lib.CatalogServer, ident: str) -> dict[str, tuple]:
    rows = server.catalog().load_table(ident).scan().to_arrow().to_pylist()
    return {r["site_id"]: (r["value"], r.get("note"), r["ts_utc"]) for r in rows}


def assert_readers_agree(trino: lib.TrinoServer, kind: str, ident: str, expected: dict[str, tuple], step: str):
    catalog, server = catalog_of(trino, kind)
    got = trino_state(trino, catalog, ident)
    differing = sorted(set(got.items()) ^ set(expected.items()), key=repr)[:10]
    assert got == expected, (f"{catalog}.{ident} after {step}: Trino reads {len(got)} rows, "
                             f"expected {len(expected)}; differing: {differing}")
    seen = pyiceberg_state(server, ident)
    assert seen == expected, f"{ident} after {step}: pyiceberg reads {len(seen)} rows, expected {len(expected)}"


def file_counts(trino: lib.TrinoServer, catalog: str, ident: str) -> dict[int, int]:
    ns, name = ident.split(".")
    rows = trino.rows(catalog, f'SELECT content, count(*) FROM {catalog}.{ns}."{name}$files" GROUP BY content',
                      about=f"{catalog}.{ident}$files")
    return {content: n for content, n in rows}


def floe_maint(server: lib.CatalogServer, cwd: Path, *args: str):
    return floe_ok(server, *args, "--catalog", server.uri, cwd=cwd)


@pytest.mark.parametrize("kind", KINDS)
def test_trino_writes_and_floe_maintains(trino, kind, tmp_path):
    catalog, server = catalog_of(trino, kind)
    ns = lib.unique("trino")
    ident = f"{ns}.readings"
    table = f"{catalog}.{ident}"
    about = f"{table} ({kind} warehouse)"
    trino_exec(trino, catalog, about,
               f"CREATE SCHEMA {catalog}.{ns}",
               f"CREATE TABLE {table} (ts_utc timestamp(6) with time zone, site_id varchar, value double) "
               "WITH (partitioning = ARRAY['day(ts_utc)'])")
    spec = server.catalog().load_table(ident).spec()
    assert [(f.name, str(f.transform)) for f in spec.fields] == [("ts_utc_day", "day")], spec

    # Six INSERTs over three UTC days: five or more small files per day for floe to compact.
    start = dt.datetime(2024, 3, 30, 0, 30, tzinfo=UTC)
    expected: dict[str, tuple] = {}
    for batch in range(6):
        values = []
        for i in range(12):
            ts = start + dt.timedelta(hours=6 * i + batch)
            site = f"s{batch:02d}{i:02d}"
            expected[site] = (float(batch * 100 + i), None, ts)
            values.append(f"(TIMESTAMP '{ts:%Y-%m-%d %H:%M:%S} UTC', '{site}', {batch * 100 + i}.0)")
        trino_exec(trino, catalog, about, f"INSERT INTO {table} VALUES {', '.join(values)}")
    assert_readers_agree(trino, kind, ident, expected, "six INSERTs")

    # Row-level changes: Trino writes position delete files (merge-on-read).
    trino_exec(trino, catalog, about,
               f"DELETE FROM {table} WHERE site_id LIKE 's00%' OR site_id = 's0105'",
               f"UPDATE {table} SET value = value + 0.5 WHERE site_id LIKE 's02%'",
               f"MERGE INTO {table} t USING (VALUES ('s0300', 1.25), ('new01', 2.5)) s(site_id, value) "
               "ON t.site_id = s.site_id WHEN MATCHED THEN UPDATE SET value = s.value "
               "WHEN NOT MATCHED THEN INSERT VALUES (TIMESTAMP '2024-03-31 12:00:00 UTC', s.site_id, s.value)",
               f"ALTER TABLE {table} ADD COLUMN note varchar",
               f"UPDATE {table} SET note = 'checked' WHERE site_id LIKE 's04%'")
    for site in [s for s in expected if s.startswith("s00")] + ["s0105"]:
        del expected[site]
    for site, (value, note, ts) in list(expected.items()):
        if site.startswith("s02"):
            expected[site] = (value + 0.5, note, ts)
        if site.startswith("s04"):
            expected[site] = (expected[site][0], "checked", ts)
    expected["s0300"] = (1.25, None, expected["s0300"][2])
    expected["new01"] = (2.5, None, dt.datetime(2024, 3, 31, 12, tzinfo=UTC))
    assert_readers_agree(trino, kind, ident, expected, "DELETE, UPDATE, MERGE, ADD COLUMN")
    files = file_counts(trino, catalog, ident)
    assert files.get(1, 0) > 0, f"{table}: Trino wrote no position delete files: {files}"

    # A floe model reads the table with Trino's delete files present; Trino reads the result.
    out_layer = f"{ns}_out"
    models = tmp_path / "models"
    write_model(models, out_layer, "readings", 'materialized = "table"',
                f"SELECT ts_utc, site_id, value, note FROM {ident}")
    out = transform(server, models, cwd=tmp_path)
    assert out.returncode == 0, f"floe transform from {table}" + explain(out)
    assert_readers_agree(trino, kind, f"{out_layer}.readings", expected, f"floe transform from {table}")

    # floe compacts with Trino's delete files present (they are applied), expires, removes orphans.
    floe_maint(server, tmp_path, "compact", ident)
    assert_readers_agree(trino, kind, ident, expected, "floe compact")
    after = file_counts(trino, catalog, ident)
    assert after.get(0, 0) < files[0], f"{table}: floe compact left {after} data files (was {files})"
    floe_maint(server, tmp_path, "expire-snapshots", ident, "--older-than", "0s", "--retain-last", "1")
    floe_maint(server, tmp_path, "remove-orphans", ident, "--older-than", "0s")
    assert_readers_agree(trino, kind, ident, expected, "floe expire-snapshots and remove-orphans")
    (snapshots,) = trino.rows(catalog, f'SELECT count(*) FROM {catalog}.{ns}."readings$snapshots"', about=about)
    assert snapshots[0] == 1, f"{table}: {snapshots[0]} snapshots after floe expire-snapshots --retain-last 1"

    # Trino maintains what floe left, then floe what Trino left.
    trino_exec(trino, catalog, about,
               f"INSERT INTO {table} VALUES (TIMESTAMP '2024-04-01 23:00:00 UTC', 'late01', 9.0, 'late')",
               f"ALTER TABLE {table} EXECUTE optimize",
               f"ALTER TABLE {table} EXECUTE expire_snapshots(retention_threshold => '0s')",
               f"ALTER TABLE {table} EXECUTE remove_orphan_files(retention_threshold => '0s')")
    expected["late01"] = (9.0, "late", dt.datetime(2024, 4, 1, 23, tzinfo=UTC))
    assert_readers_agree(trino, kind, ident, expected, "Trino optimize, expire_snapshots, remove_orphan_files")
    floe_maint(server, tmp_path, "maintain", ident)
    floe_maint(server, tmp_path, "status", ident)
    assert_readers_agree(trino, kind, ident, expected, "floe maintain")
    assert_trino_matches_pyiceberg(trino, kind, ident)


@pytest.mark.parametrize("kind", KINDS)
def test_trino_creates_a_table_in_a_plain_schema(trino, kind):
    """CREATE SCHEMA and CREATE TABLE with no location, as users write them. Trino asks the
    catalog for the schema's `location` property to place the table (floe's catalog reports
    the namespace's warehouse folder when none was set); without one Trino would create the
    table outright and then refuse it, since the location is no longer empty."""
    catalog, server = catalog_of(trino, kind)
    ns = lib.unique("plain")
    table = f"{catalog}.{ns}.t"
    about = f"{table} ({kind} warehouse)"
    trino_exec(trino, catalog, about, f"CREATE SCHEMA {catalog}.{ns}",
               f"CREATE TABLE {table} (ts_utc timestamp(6) with time zone, value double) "
               "WITH (partitioning = ARRAY['day(ts_utc)'])",
               f"INSERT INTO {table} VALUES (TIMESTAMP '2024-03-31 12:00:00 UTC', 1.0)")
    assert trino.rows(catalog, f"SELECT count(*) FROM {table}", about=about) == [[1]]


# ---------------------------------------------------------------------------------------
# floe and Trino writing the same table at once


def gated_api(gate: threading.Event, values: dict[str, float]):
    """An API script that answers a day's readings only once `gate` is set (bounded wait):
    the floe run has opened its table and waits on the answer while Trino writes."""
    from test_http_sources import Reply

    def script(req):
        if not gate.wait(60):
            return Reply(500, {"error": "the test never opened the gate"})
        day = req.query["day"]
        return Reply(200, [{"t": f"{day}T{h:02d}:00:00Z", "site": site, "v": value}
                           for h in range(24) for site, value in values.items()])
    return script


def api_job(ns: str, base: str) -> dict:
    return {"name": "readings", "table": f"{ns}.readings",
            "source": {"api": "json", "url": f"{base}/readings", "params": {"day": "{date}"},
                       "pagination": {"kind": "none"}, "timeout": "90s"},
            "event_time": {"kind": "offset", "column": "t"},
            "columns": [{"name": "site_id", "type": "string", "required": True, "from": "site"},
                        {"name": "value", "type": "double", "from": "v"}]}


def trino_insert_day(trino: lib.TrinoServer, catalog: str, table: str, day: str, site: str, value: float) -> None:
    """Trino appends one row to `day`, floe's metadata columns filled as any engine must."""
    trino_exec(trino, catalog, table,
               f"INSERT INTO {table} (ts_utc, site_id, value, _ingest_time, _source, _hash) VALUES "
               f"(TIMESTAMP '{day} 12:30:00 UTC', '{site}', {value}, current_timestamp, 'trino', "
               "X'00000000000000000000000000000000')")


def per_day(trino: lib.TrinoServer, catalog: str, table: str) -> dict[str, int]:
    return {str(d): n for d, n in trino.rows(
        catalog, f"SELECT CAST(ts_utc AS date), count(*) FROM {table} GROUP BY 1", about=table)}


@pytest.mark.parametrize("kind", KINDS)
def test_floe_and_trino_write_the_same_table_at_once(trino, kind, tmp_path):
    """floe ingests a day while Trino inserts into another day of the same table: both land.
    When Trino writes into the day floe is replacing, floe refuses to drop that row: it
    exits 2 naming the day, and both Trino's row and the day's previous rows stay."""
    from test_http_sources import ApiServer
    from test_ingest import run_ingest

    catalog, server = catalog_of(trino, kind)
    ns = lib.unique("both")
    table = f"{catalog}.{ns}.readings"
    api = ApiServer()
    try:
        gate = threading.Event()
        gate.set()
        api.script = gated_api(gate, {"A": 1.0, "B": 2.0})
        pipeline = lib.write_pipeline(tmp_path / "floe.toml", server, [api_job(ns, api.base)])
        for day in ("2024-05-01", "2024-05-02"):
            floe_ok(server, "ingest", "--pipeline", pipeline, "--from", day, "--to", day, cwd=tmp_path)

        def floe_while_trino_writes(day: str, trino_day: str, value: float):
            gate.clear()
            api.script = gated_api(gate, {"A": value, "B": value})
            hits = api.hits
            result: dict = {}
            worker = threading.Thread(target=lambda: result.update(
                out=run_ingest(server, pipeline, day, day)), daemon=True)
            worker.start()
            lib.wait_until("floe asks the API", lambda: api.hits > hits, timeout=60)
            trino_insert_day(trino, catalog, table, trino_day, "T", 9.0)
            gate.set()
            worker.join(120)
            assert "out" in result, "the floe run did not finish"
            return result["out"]

        # Disjoint days: both writes land.
        out = floe_while_trino_writes("2024-05-01", "2024-05-03", 5.0)
        assert out.returncode == 0, "floe failed next to Trino's insert of another day" + explain(out)
        assert per_day(trino, catalog, table) == {"2024-05-01": 48, "2024-05-02": 48, "2024-05-03": 1}
        assert trino.rows(catalog, f"SELECT DISTINCT value FROM {table} WHERE ts_utc < "
                          "TIMESTAMP '2024-05-02 00:00:00 UTC'", about=table) == [[5.0]]

        # The same day: floe must not drop Trino's row; it fails loudly and changes nothing.
        out = floe_while_trino_writes("2024-05-02", "2024-05-02", 7.0)
        assert out.returncode == 2, "floe replaced a day Trino wrote to meanwhile" + explain(out)
        assert "another writer changed 2024-05-02" in out.stderr, explain(out)
        assert per_day(trino, catalog, table) == {"2024-05-01": 48, "2024-05-02": 49, "2024-05-03": 1}
        assert sorted(trino.rows(catalog, f"SELECT DISTINCT value FROM {table} WHERE ts_utc >= "
                                 "TIMESTAMP '2024-05-02 00:00:00 UTC' AND ts_utc < "
                                 "TIMESTAMP '2024-05-03 00:00:00 UTC'", about=table)) == [[1.0], [2.0], [9.0]]
        assert_trino_matches_pyiceberg(trino, kind, f"{ns}.readings")
    finally:
        api.close()


@pytest.mark.parametrize("kind", ["local"])
def test_floe_ingests_into_a_table_trino_created_and_trino_reads_nested_columns(trino, kind, tmp_path):
    """A table Trino created (its own columns only) takes floe's ingest once the job lets floe
    add its metadata columns (schema_drift = "evolve"); Trino reads floe's rows. Nested
    columns floe writes (struct, list, map) read in Trino with their values."""
    import json

    catalog, server = catalog_of(trino, kind)
    ns = lib.unique("mixed")
    table = f"{catalog}.{ns}.readings"
    trino_exec(trino, catalog, table, f"CREATE SCHEMA {catalog}.{ns}",
               f"CREATE TABLE {table} (ts_utc timestamp(6) with time zone, site_id varchar, value double) "
               "WITH (partitioning = ARRAY['day(ts_utc)'])",
               f"INSERT INTO {table} VALUES (TIMESTAMP '2024-05-01 00:00:00 UTC', 'X', 1.0)")
    data = tmp_path / "data"
    data.mkdir()
    (data / "2024-05-02.ndjson").write_text("".join(
        json.dumps({"t": f"2024-05-02T{h:02d}:00:00Z", "site": "A", "v": h,
                    "loc": {"lat": 51.5, "lon": -0.1}, "units": [{"id": h, "mw": 1.5}], "tags": {"k": h}}) + "\n"
        for h in range(24)))
    job = {"name": "readings", "table": f"{ns}.readings", "schema_drift": "evolve",
           "source": {"path": "data/{date}.ndjson", "format": "ndjson"},
           "event_time": {"kind": "offset", "column": "t"},
           "columns": [{"name": "site_id", "type": "string", "from": "site"},
                       {"name": "value", "type": "double", "from": "v"},
                       {"name": "loc", "type": "struct<lat: double, lon: double>"},
                       {"name": "units", "type": "list<struct<id: int, mw: double>>"},
                       {"name": "tags", "type": "map<string, long>"}]}
    pipeline = lib.write_pipeline(tmp_path / "floe.toml", server, [job])
    floe_ok(server, "ingest", "--pipeline", pipeline, "--from", "2024-05-02", "--to", "2024-05-02", cwd=tmp_path)
    assert per_day(trino, catalog, table) == {"2024-05-01": 1, "2024-05-02": 24}
    rows = trino.rows(catalog, f"SELECT site_id, loc.lat, loc.lon, cardinality(units), units[1].id, "
                      f"units[1].mw, tags['k'] FROM {table} WHERE site_id = 'A' ORDER BY value", about=table)
    assert rows[3] == ["A", 51.5, -0.1, 1, 3, 1.5, 3], rows[:4]
    assert_trino_matches_pyiceberg(trino, kind, f"{ns}.readings")
