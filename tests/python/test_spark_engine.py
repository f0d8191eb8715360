"""Spark 3.5 (Iceberg 1.10.1's Spark runtime, Delta 3.3.2; infra/local/spark.sh) against
`floe catalog serve`, on a local-folder warehouse and on the S3 server (S3FileIO for Iceberg,
s3a for Delta, path style), with the session of infra/spark/spark-defaults.conf.

What they hold floe to:
  * Spark reads every table of the energy example that floe ingested and transformed (bronze,
    silver, gold) with the same row count and, per column, the same checksum (sum of a
    number, count of distinct values otherwise, non-null count) as pyiceberg; and the Delta
    table of a `format = ["iceberg", "delta"]` job, through delta-spark, with the same rows
    per day and the same sums as its Iceberg twin;
  * Spark writes a table floe ingested: INSERT, and row-level DELETE, UPDATE and MERGE in
    merge-on-read mode (position delete files); floe compacts it with those delete files
    present and expires its snapshots, and Spark reads floe's result; Spark's own
    rewrite_data_files and expire_snapshots work on floe's table, and floe then ingests into
    it and reads it (a model over it);
  * write-audit-publish: Spark writes to a branch (`spark.wap.branch`), floe's catalog keeps
    the branch and leaves main as it was (pyiceberg, and a floe model over the table), and
    after Spark's fast_forward floe reads the new rows; `floe maintain` then keeps the table
    and Spark reads the result.

When Spark refuses something floe wrote, the failure names the table and Spark's message
(lib.SparkRejected). One Spark JVM per test (lib.SparkSteps), paused while floe works.
Everything is on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

import floe_testlib as lib
from test_delta import write_delta_pipeline
from test_ingest import day_range, ingest_ok, micros, readings_job, write_readings
from test_transform import energy_pipeline, explain, floe_ok, floe_run, transform, write_model

pytestmark = [pytest.mark.spark, pytest.mark.slow]

UTC = dt.timezone.utc
KINDS = ["local", pytest.param("s3", marks=pytest.mark.s3)]
EXAMPLE_NAMESPACES = ("bronze", "silver", "gold")


@pytest.fixture
def server(request, kind) -> lib.CatalogServer:
    """The shared catalog server of the warehouse kind."""
    return request.getfixturevalue("local_server" if kind == "local" else "s3_catalog_server")


# ---------------------------------------------------------------------------------------
# checksums: one Spark query per table, the same figures from pyiceberg's Arrow table


def quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def checksum_diffs(plan: list[tuple[str, str]], arrow: pa.Table, got: list) -> list[str]:
    return [f"  {label}: Spark {value!r}, pyiceberg {lib.arrow_figure(arrow, label)!r}"
            for (label, _), value in zip(plan, got) if not lib.same(value, lib.arrow_figure(arrow, label))]


# ---------------------------------------------------------------------------------------
# table states: {(ts_utc micros, site_id): value}


def state_of(rows) -> dict[tuple[int, str], float | None]:
    out: dict[tuple[int, str], float | None] = {}
    for ts, site, value in rows:
        assert (ts, site) not in out, f"({ts}, {site}) twice"
        out[(ts, site)] = value
    return out


def pyiceberg_state(server: lib.CatalogServer, ident: str, snapshot_id: int | None = None) -> dict:
    tbl = server.catalog().load_table(ident)
    scan = tbl.scan(selected_fields=("ts_utc", "site_id", "value"),
                    **({"snapshot_id": snapshot_id} if snapshot_id is not None else {}))
    data = scan.to_arrow()
    return state_of(zip(data.column("ts_utc").cast(pa.int64()).to_pylist(), data.column("site_id").to_pylist(),
                        data.column("value").to_pylist()))


def assert_state(got: dict, expected: dict, what: str) -> None:
    differing = sorted(set(got.items()) ^ set(expected.items()), key=repr)[:10]
    assert got == expected, f"{what}: {len(got)} rows, expected {len(expected)}; differing: {differing}"


STATE_QUERY = "SELECT unix_micros(ts_utc), site_id, value FROM {t}"


def floe_maint(server: lib.CatalogServer, cwd: Path, *args: str):
    return floe_ok(server, *args, "--catalog", server.uri, cwd=cwd)


def floe_reads(server: lib.CatalogServer, ident: str, models: Path, cwd: Path) -> dict:
    """floe reads `ident`: a model that copies it, run by `floe transform`; the model's table
    as pyiceberg reads it."""
    layer = ident.split(".")[0] + "_copy"
    write_model(models, layer, "readings", 'materialized = "table"', f"SELECT ts_utc, site_id, value FROM {ident}")
    out = transform(server, models, cwd=cwd)
    assert out.returncode == 0, f"floe transform from {ident}" + explain(out)
    return pyiceberg_state(server, f"{layer}.readings")


# ---------------------------------------------------------------------------------------
# 1. Spark reads floe's tables: the energy example, and a Delta table beside its Iceberg twin


def example_tables(server: lib.CatalogServer) -> list[str]:
    cat = server.catalog()
    return sorted(".".join(ident) for ns in EXAMPLE_NAMESPACES for ident in cat.list_tables(ns))


@pytest.mark.parametrize("kind", KINDS)
def test_spark_reads_floe_tables(spark_env, catalog_server, kind, tmp_path):
    # The energy example (its namespaces are fixed: a fresh catalog server of our own).
    server = catalog_server(kind)
    pipeline = energy_pipeline(tmp_path, server)
    floe_run(server, pipeline)
    tables = example_tables(server)
    for layer in EXAMPLE_NAMESPACES:
        assert any(t.startswith(f"{layer}.") for t in tables), f"no {layer} table in {tables}"

    # The readings job, as an Iceberg table and its Delta twin.
    ns = lib.unique("twin")
    first, last = "2024-03-10", "2024-03-12"
    write_readings(tmp_path / "twin" / "data", day_range("2024-03-09", "2024-03-13"))
    if server.s3 is None:
        location = str(tmp_path / "delta")
        delta_path = f"{location}/{ns}/readings"
    else:
        prefix = f"{lib.unique('delta')}"
        location = f"s3://{server.s3.bucket}/{prefix}"
        delta_path = f"s3a://{server.s3.bucket}/{prefix}/{ns}/readings"
    twin = write_delta_pipeline(tmp_path / "twin" / "floe.toml", server,
                                [readings_job(ns, format=["iceberg", "delta"])], location)
    ingest_ok(server, twin, first, last)

    arrows = {ident: server.catalog().load_table(ident).scan().to_arrow() for ident in tables}
    plans = {ident: lib.checksum_plan(arrow.schema, quoted) for ident, arrow in arrows.items()}
    steps = [{"query": f"SELECT {', '.join(e for _, e in plans[ident])} FROM floe.{ident}",
              "about": f"floe.{ident} ({kind} warehouse)"} for ident in tables]
    per_day = "SELECT CAST({day} AS STRING), count(*), count(value), sum(value) FROM {t} GROUP BY 1 ORDER BY 1"
    steps += [
        {"query": per_day.format(day="day", t=f"spark_catalog.delta.`{delta_path}`"),
         "about": f"floe's Delta table {delta_path}"},
        {"query": per_day.format(day="to_date(ts_utc)", t=f"floe.{ns}.readings"),
         "about": f"floe.{ns}.readings ({kind} warehouse)"},
        {"query": f"SELECT unix_micros(ts_utc), site_id, value FROM spark_catalog.delta.`{delta_path}`",
         "about": f"floe's Delta table {delta_path}"},
    ]
    spark = lib.SparkSteps(spark_env, server, steps, tmp_path, app="floe-spark-reads")
    try:
        figures = {ident: spark.rows()[0] for ident in tables}
        delta_days, iceberg_days, delta_rows = spark.rows(), spark.rows(), spark.rows()
        spark.finish()
    finally:
        spark.close()

    for ident in tables:
        diffs = checksum_diffs(plans[ident], arrows[ident], figures[ident])
        assert not diffs, f"floe.{ident} ({kind}): Spark and pyiceberg disagree:\n" + "\n".join(diffs)
        assert arrows[ident].num_rows > 0 or ident.endswith("__rejects"), f"{ident} is empty"

    assert [d for d, *_ in iceberg_days] == [d.isoformat() for d in day_range(first, last)], iceberg_days
    assert delta_days == iceberg_days, (f"{delta_path}: Spark reads per day (day, rows, values, sum) "
                                        f"{delta_days} from Delta, {iceberg_days} from the Iceberg twin")
    assert_state(state_of(delta_rows), pyiceberg_state(server, f"{ns}.readings"),
                 f"Spark's rows of {delta_path} against pyiceberg's of {ns}.readings")


# ---------------------------------------------------------------------------------------
# 2. Spark writes floe's table, floe maintains it, Spark maintains it, WAP


def insert_values(columns: list[str], rows: list[tuple[dt.datetime, str, float]], source: str) -> str:
    """A SELECT of `rows` (ts_utc, site_id, value) with every column of floe's readings table
    in order: floe's metadata columns filled as floe would (a 16-byte `_hash`)."""
    exprs = {
        "ts_utc": "CAST(ts AS TIMESTAMP)",
        "site_id": "site",
        "value": "CAST(v AS DOUBLE)",
        "_ingest_time": "current_timestamp()",
        "_source": f"'{source}'",
        "_hash": "unhex(md5(concat(site, ts)))",
    }
    unknown = [c for c in columns if c not in exprs]
    assert not unknown, f"floe's readings table has columns this test does not fill: {unknown}"
    values = ", ".join(f"('{ts:%Y-%m-%d %H:%M:%S}', '{site}', {value!r})" for ts, site, value in rows)
    return f"SELECT {', '.join(f'{exprs[c]} AS {c}' for c in columns)} FROM VALUES {values} AS s(ts, site, v)"


def row(ts: dt.datetime, site: str, value: float) -> tuple[tuple[int, str], float]:
    return (micros(ts), site), value


@pytest.mark.parametrize("kind", KINDS)
def test_spark_writes_and_floe_maintains(spark_env, server, kind, tmp_path):
    ns = lib.unique("sparkw")
    ident = f"{ns}.readings"
    t = f"floe.{ident}"
    about = f"{t} ({kind} warehouse)"
    first, last = "2024-03-10", "2024-03-12"
    sources = write_readings(tmp_path / "data", day_range("2024-03-09", "2024-03-13"))
    pipeline = lib.write_pipeline(tmp_path / "floe.toml", server, [readings_job(ns)])
    ingest_ok(server, pipeline, first, last)
    expected = pyiceberg_state(server, ident)
    assert len(expected) == 3 * 48 * 5
    columns = [f.name for f in server.catalog().load_table(ident).schema().fields]

    day10 = dt.datetime(2024, 3, 10, tzinfo=UTC)
    new_rows = [(day10 + dt.timedelta(hours=h, minutes=15), f"sp-{h % 3}", 100.0 + h) for h in range(0, 72, 5)]
    merge_rows = [(day10 + dt.timedelta(hours=1), "s-02", 7.5),  # s-02 reads every 30 min: a match
                  (day10 + dt.timedelta(hours=30, minutes=45), "sp-merge", 8.25)]
    wap_rows = [(day10 + dt.timedelta(hours=h, minutes=5), "wap", 0.5 * h) for h in range(3)]
    ts = "TIMESTAMP '{:%Y-%m-%d %H:%M:%S}'"
    steps = [
        # Merge-on-read: row-level changes write position delete files.
        {"sql": f"ALTER TABLE {t} SET TBLPROPERTIES ('write.delete.mode'='merge-on-read', "
                "'write.update.mode'='merge-on-read', 'write.merge.mode'='merge-on-read')", "about": about},
        {"sql": f"INSERT INTO {t} {insert_values(columns, new_rows, 'spark')}", "about": about},
        {"sql": f"DELETE FROM {t} WHERE site_id = 's-00' AND ts_utc < {ts.format(day10 + dt.timedelta(days=1))}",
         "about": about},
        {"sql": f"UPDATE {t} SET value = value + 0.5 WHERE site_id = 's-01' AND value IS NOT NULL", "about": about},
        {"sql": f"MERGE INTO {t} d USING ({insert_values(columns, merge_rows, 'spark-merge')}) s "
                "ON d.site_id = s.site_id AND d.ts_utc = s.ts_utc "
                "WHEN MATCHED THEN UPDATE SET value = s.value WHEN NOT MATCHED THEN INSERT *", "about": about},
        {"query": STATE_QUERY.format(t=t), "about": about},
        {"query": f"SELECT content, count(*) FROM {t}.files GROUP BY content ORDER BY content", "about": about},
        {"wait": "floe compacts and expires"},
        {"sql": f"REFRESH TABLE {t}", "about": about},
        {"query": STATE_QUERY.format(t=t), "about": about},
        {"query": f"SELECT count(*) FROM {t}.snapshots", "about": about},
        # Spark's own maintenance of floe's table.
        {"query": f"CALL floe.system.rewrite_data_files(table => '{ident}', "
                  "options => map('rewrite-all', 'true'))", "about": about},
        {"query": f"CALL floe.system.expire_snapshots(table => '{ident}', "
                  "older_than => TIMESTAMP '2100-01-01 00:00:00', retain_last => 1)", "about": about},
        {"query": STATE_QUERY.format(t=t), "about": about},
        {"wait": "floe ingests"},
        # Write-audit-publish: the rows go to branch `audit`, main stays.
        {"sql": f"REFRESH TABLE {t}", "about": about},
        {"query": STATE_QUERY.format(t=t), "about": about},
        {"sql": f"ALTER TABLE {t} SET TBLPROPERTIES ('write.wap.enabled'='true')", "about": about},
        {"sql": f"ALTER TABLE {t} CREATE BRANCH audit", "about": about},
        {"sql": "SET spark.wap.branch = audit"},
        {"sql": f"INSERT INTO {t} {insert_values(columns, wap_rows, 'spark-wap')}", "about": about},
        {"sql": "RESET spark.wap.branch"},
        {"query": f"SELECT count(*) FROM {t}", "about": about},
        {"query": f"SELECT count(*) FROM {t} VERSION AS OF 'audit'", "about": about},
        {"wait": "floe sees the branch"},
        {"query": f"CALL floe.system.fast_forward('{ident}', 'main', 'audit')", "about": about},
        {"wait": "floe reads main"},
        {"sql": f"REFRESH TABLE {t}", "about": about},
        {"query": STATE_QUERY.format(t=t), "about": about},
    ]
    spark = lib.SparkSteps(spark_env, server, steps, tmp_path, app="floe-spark-writes")
    try:
        # Spark's INSERT, DELETE, UPDATE and MERGE.
        expected.update(row(*r) for r in new_rows)
        for key in [k for k in expected if k[1] == "s-00" and k[0] < micros(day10 + dt.timedelta(days=1))]:
            del expected[key]
        for key, value in list(expected.items()):
            if key[1] == "s-01" and value is not None:
                expected[key] = value + 0.5
        expected.update(row(*r) for r in merge_rows)
        assert_state(state_of(spark.rows()), expected, f"Spark reads {about} after its INSERT, DELETE, UPDATE, MERGE")
        files = dict(map(tuple, spark.rows()))
        assert files.get(1, 0) > 0, f"{about}: Spark wrote no position delete files: {files}"
        spark.wait_for("floe compacts and expires")
        assert_state(pyiceberg_state(server, ident), expected, f"pyiceberg reads {ident} after Spark's writes")

        # floe compacts with Spark's delete files present, then expires.
        floe_maint(server, tmp_path, "compact", ident)
        tbl = server.catalog().load_table(ident)
        assert tbl.current_snapshot().summary.operation.value == "replace", tbl.current_snapshot()
        floe_maint(server, tmp_path, "expire-snapshots", ident, "--older-than", "0s", "--retain-last", "1")
        assert_state(pyiceberg_state(server, ident), expected, f"pyiceberg reads {ident} after floe compact")
        spark.go()
        assert_state(state_of(spark.rows()), expected, f"Spark reads {about} after floe compact and expire")
        assert spark.rows() == [[1]], f"{about}: Spark sees other than one snapshot after floe expire-snapshots"

        # Spark's rewrite_data_files and expire_snapshots on floe's table.
        rewritten = spark.rows()[0]
        assert rewritten[0] > 0, f"{about}: Spark's rewrite_data_files rewrote nothing: {rewritten}"
        spark.rows()  # expire_snapshots' counts
        assert_state(state_of(spark.rows()), expected, f"Spark reads {about} after its rewrite and expire")
        spark.wait_for("floe ingests")
        assert len(server.catalog().load_table(ident).snapshots()) == 1

        # floe ingests into it (days 12 and 13 replaced from the source: Spark's rows of those days
        # go) and reads it.
        ingest_ok(server, pipeline, "2024-03-12", "2024-03-13")
        lo = micros(dt.datetime(2024, 3, 12, tzinfo=UTC))
        expected = {k: v for k, v in expected.items() if k[0] < lo}
        expected.update(((ts, site), value) for ts, site, value, day in sources
                        if day in (dt.date(2024, 3, 12), dt.date(2024, 3, 13)))
        assert_state(pyiceberg_state(server, ident), expected, f"pyiceberg reads {ident} after floe ingest")
        assert_state(floe_reads(server, ident, tmp_path / "models", tmp_path), expected,
                     f"floe's model over {ident} after Spark's maintenance")
        main_before = server.catalog().load_table(ident).current_snapshot().snapshot_id
        spark.go()

        # WAP: the branch holds the new rows, main does not.
        assert_state(state_of(spark.rows()), expected, f"Spark reads {about} after floe ingest")
        assert spark.rows() == [[len(expected)]], f"{about}: Spark's main changed by a WAP write"
        assert spark.rows() == [[len(expected) + len(wap_rows)]], f"{about}: branch audit lacks the WAP rows"
        spark.wait_for("floe sees the branch")
        tbl = server.catalog().load_table(ident)
        refs = tbl.metadata.refs
        assert "audit" in refs, f"{ident}: floe's catalog has no branch audit after Spark's WAP write: {refs}"
        assert tbl.current_snapshot().snapshot_id == main_before, f"{ident}: main moved on a WAP write"
        assert_state(pyiceberg_state(server, ident), expected, f"pyiceberg reads main of {ident} during WAP")
        with_wap = dict(expected)
        with_wap.update(row(*r) for r in wap_rows)
        assert_state(pyiceberg_state(server, ident, refs["audit"].snapshot_id), with_wap,
                     f"pyiceberg reads branch audit of {ident}")
        assert_state(floe_reads(server, ident, tmp_path / "models", tmp_path), expected,
                     f"floe's model over {ident} during WAP")
        spark.go()

        # Published: floe reads the new rows.
        spark.rows()  # fast_forward's refs
        spark.wait_for("floe reads main")
        tbl = server.catalog().load_table(ident)
        assert tbl.current_snapshot().snapshot_id == refs["audit"].snapshot_id, \
            f"{ident}: main is not at audit's snapshot after fast_forward"
        assert_state(floe_reads(server, ident, tmp_path / "models", tmp_path), with_wap,
                     f"floe's model over {ident} after fast_forward")
        # floe's whole maintenance on what Spark left (a branch among it); Spark reads the result.
        floe_maint(server, tmp_path, "maintain", ident)
        assert_state(pyiceberg_state(server, ident), with_wap, f"pyiceberg reads {ident} after floe maintain")
        spark.go()
        assert_state(state_of(spark.rows()), with_wap, f"Spark reads {about} after floe maintain")
        spark.finish()
    finally:
        spark.close()
