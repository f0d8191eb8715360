"""A PostgreSQL table or query as a job's source, through the binary against a real server
(infra/local/postgres.sh, or FLOE_TEST_POSTGRES_URL), read back by pyiceberg:

  * window mode: the window's days of an event-time column are read (the server filters a
    day wider on each side; floe keeps the exact days), values exact: numeric as decimal
    with every digit, timestamptz as instants, jsonb as a struct, int[] as a list, uuid and
    text as strings; a value the contract refuses is a reject naming the field;
  * a query instead of a table;
  * a job without event_time replaces its table whole with the current rows;
  * the password comes from the environment, never from the file, and is never printed.

Every process and request stays on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest

import floe_testlib as lib
from floe_testlib import write_pipeline
from test_ingest import INGEST_TIMEOUT_S, ingest_cmd

pytestmark = pytest.mark.postgres

UTC = dt.timezone.utc
PASSWORD = "pg-pass-Xq81-not-shown"


def psql_cmd(url: str, sql: str) -> list[str]:
    m = re.match(r"postgres://(?P<user>[^@]+)@(?P<host>[^:/]+):(?P<port>\d+)/(?P<db>.+)$", url)
    assert m, url
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", m["host"], "-p", m["port"], "-U", m["user"],
           "-d", m["db"], "-c", sql]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def psql(url: str, sql: str) -> None:
    out = subprocess.run(psql_cmd(url, sql), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr


ORDERS = """
CREATE TABLE orders (
  id bigint PRIMARY KEY, created_at timestamptz NOT NULL, amount numeric(12, 3), customer uuid,
  attrs jsonb, tags int[], note text, paid boolean);
INSERT INTO orders VALUES
  (1, '2024-04-30 23:30:00+00', 1.5, NULL, NULL, NULL, 'the day before', true),
  (2, '2024-05-01 00:00:00+00', 12345678.12, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
      '{"channel": "web", "items": 3}', '{1,2,3}', 'first', true),
  (3, '2024-05-01 23:59:59.999999+00', 0.1, NULL, '{"channel": "shop"}', '{}', 'line1
line2 "quoted"', false),
  (4, '2024-05-02 10:00:00+02', 99.99, NULL, NULL, NULL, NULL, NULL),
  (5, '2024-05-02 12:00:00+00', 1.234, NULL, NULL, NULL, 'three decimals', true),
  (6, '2024-05-03 00:30:00+00', 7, NULL, NULL, NULL, 'the day after', true),
  (7, '2024-05-04 12:00:00+00', 8, NULL, NULL, NULL, 'two days after', true);
"""


def orders_job(ns: str, url: str, **extra) -> dict:
    return {
        "name": "orders", "table": f"{ns}.orders",
        "source": {"database": url, "table": "public.orders", "password_env": "FLOE_TEST_DB_PASSWORD"},
        "event_time": {"kind": "offset", "column": "created_at"},
        "reject_threshold": 0.5,
        "columns": [
            {"name": "id", "type": "long", "required": True},
            {"name": "amount", "type": "decimal(10, 2)"},
            {"name": "customer", "type": "string"},
            {"name": "attrs", "type": "struct<channel: string, items: int>"},
            {"name": "tags", "type": "list<int>"},
            {"name": "note", "type": "string"},
            {"name": "paid", "type": "boolean"},
        ],
        **extra,
    }


def run(server: lib.CatalogServer, pipeline: Path, frm: str, to: str, *args: str) -> subprocess.CompletedProcess:
    env = lib.clean_env(NO_COLOR="1", FLOE_TEST_DB_PASSWORD=PASSWORD, RUST_LOG="floe=debug")
    return subprocess.run(ingest_cmd(pipeline, frm, to, *args), capture_output=True, text=True,
                          timeout=INGEST_TIMEOUT_S, env=env, cwd=pipeline.parent, stdin=subprocess.DEVNULL)


def ok(out: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert out.returncode == 0, "floe ingest failed" + lib.explain(out)
    assert PASSWORD not in out.stdout + out.stderr, "the password was printed"
    return out


def test_a_table_window_lands_with_exact_values(local_server, fresh_postgres_db, ns: str, tmp_path):
    server = local_server
    psql(fresh_postgres_db, ORDERS)
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [orders_job(ns, fresh_postgres_db)])
    report = tmp_path / "report.json"
    ok(run(server, pipeline, "2024-05-01", "2024-05-02", "--report", str(report)))

    job = lib.job_report(lib.read_report(report), "orders")
    # The server sent the window one day wider each side (rows 1-6), not row 7.
    assert job["rows_read"] == 6, job
    assert job["rows_outside_window"] == 2, job
    assert job["rows_rejected"] == 1, job  # 1.234 does not fit decimal(10, 2)
    assert job["files_read"] == [f"{fresh_postgres_db} table public.orders"], job

    rows = {r["id"]: r for r in server.catalog().load_table(f"{ns}.orders").scan().to_arrow().to_pylist()}
    assert sorted(rows) == [2, 3, 4]
    assert rows[2]["amount"] == Decimal("12345678.12")
    assert rows[3]["amount"] == Decimal("0.10")
    assert rows[2]["customer"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert rows[2]["attrs"] == {"channel": "web", "items": 3}
    assert rows[3]["attrs"] == {"channel": "shop", "items": None}
    assert rows[2]["tags"] == [1, 2, 3] and rows[3]["tags"] == [] and rows[4]["tags"] is None
    assert rows[3]["note"] == 'line1\nline2 "quoted"'
    assert rows[2]["ts_utc"] == dt.datetime(2024, 5, 1, tzinfo=UTC)
    assert rows[3]["ts_utc"] == dt.datetime(2024, 5, 1, 23, 59, 59, 999999, tzinfo=UTC)
    assert rows[4]["ts_utc"] == dt.datetime(2024, 5, 2, 8, tzinfo=UTC)
    assert rows[4]["paid"] is None and rows[2]["paid"] is True

    rejects = server.catalog().load_table(f"{ns}.orders__rejects").scan().to_arrow().to_pylist()
    assert len(rejects) == 1 and "field amount" in rejects[0]["reason"], rejects
    assert "more decimal places" in rejects[0]["reason"], rejects
    assert json.loads(rejects[0]["raw"])["id"] == 5, rejects
    assert rejects[0]["source"] == f"{fresh_postgres_db} table public.orders", rejects

    # The window's rows changed in the database: a re-run replaces the days.
    psql(fresh_postgres_db, "DELETE FROM orders WHERE id = 3; UPDATE orders SET amount = 100 WHERE id = 2")
    ok(run(server, pipeline, "2024-05-01", "2024-05-02"))
    rows = {r["id"]: r for r in server.catalog().load_table(f"{ns}.orders").scan().to_arrow().to_pylist()}
    assert sorted(rows) == [2, 4] and rows[2]["amount"] == Decimal("100.00")


def test_a_query_and_a_reference_table_replaced_whole(local_server, fresh_postgres_db, ns: str, tmp_path):
    server = local_server
    psql(fresh_postgres_db, ORDERS + """
        CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, since date);
        INSERT INTO customers VALUES (1, 'Ada', '2020-01-31'), (2, 'Grace', NULL), (3, 'Edsger', '2021-06-01');
    """)
    paid = {"name": "paid", "table": f"{ns}.paid",
            "source": {"database": fresh_postgres_db,
                       "query": "SELECT id, created_at, amount::numeric(10, 2) AS amount FROM orders WHERE paid"},
            "event_time": {"kind": "offset", "column": "created_at"},
            "columns": [{"name": "id", "type": "long", "required": True},
                        {"name": "amount", "type": "decimal(10, 2)"}]}
    customers = {"name": "customers", "table": f"{ns}.customers",
                 "source": {"database": fresh_postgres_db, "table": "customers"},
                 "columns": [{"name": "id", "type": "int", "required": True},
                             {"name": "name", "type": "string", "required": True},
                             {"name": "since", "type": "date"}]}
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [paid, customers])
    ok(run(server, pipeline, "2024-05-01", "2024-05-04"))
    cat = server.catalog()
    got = sorted((r["id"], r["amount"]) for r in cat.load_table(f"{ns}.paid").scan().to_arrow().to_pylist())
    assert got == [(2, Decimal("12345678.12")), (5, Decimal("1.23")), (6, Decimal("7.00")), (7, Decimal("8.00"))]
    names = sorted(r["name"] for r in cat.load_table(f"{ns}.customers").scan().to_arrow().to_pylist())
    assert names == ["Ada", "Edsger", "Grace"]

    psql(fresh_postgres_db, "DELETE FROM customers WHERE id = 2")
    ok(run(server, pipeline, "2024-05-01", "2024-05-04"))
    table = cat.load_table(f"{ns}.customers")
    rows = table.scan().to_arrow().to_pylist()
    assert sorted((r["id"], r["name"], r["since"]) for r in rows) == [
        (1, "Ada", dt.date(2020, 1, 31)), (3, "Edsger", dt.date(2021, 6, 1))]
    assert table.current_snapshot().summary.operation.value == "overwrite"


def test_credentials_stay_out_of_the_file_and_the_output(local_server, fresh_postgres_db, ns: str, tmp_path):
    server = local_server
    with_password = fresh_postgres_db.replace("postgres://postgres@", f"postgres://postgres:{PASSWORD}@")
    pipeline = write_pipeline(tmp_path / "bad.toml", server, [orders_job(ns, with_password)])
    out = run(server, pipeline, "2024-05-01", "2024-05-01")
    assert out.returncode == 2, lib.explain(out)
    assert "password_env" in out.stderr and PASSWORD not in out.stdout + out.stderr, lib.explain(out)

    # A server that is not there: the error names the source (no password), exit 2.
    port = lib.free_port()
    gone = re.sub(r":\d+/", f":{port}/", fresh_postgres_db)
    pipeline = write_pipeline(tmp_path / "gone.toml", server, [orders_job(ns, gone)])
    out = run(server, pipeline, "2024-05-01", "2024-05-01")
    assert out.returncode == 2, lib.explain(out)
    assert f"{gone} table public.orders: cannot connect" in out.stderr, lib.explain(out)
    assert PASSWORD not in out.stdout + out.stderr

    # An unset password variable is named.
    env = lib.clean_env(NO_COLOR="1")
    pipeline = write_pipeline(tmp_path / "unset.toml", server, [orders_job(ns, fresh_postgres_db)])
    out = subprocess.run(ingest_cmd(pipeline, "2024-05-01", "2024-05-01"), capture_output=True, text=True,
                         timeout=INGEST_TIMEOUT_S, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "FLOE_TEST_DB_PASSWORD" in out.stderr, lib.explain(out)


def test_a_cursor_reads_only_changes_and_merges_them_by_key(local_server, fresh_postgres_db, ns: str, tmp_path):
    """cursor + mode = "merge": each run reads the rows past the committed cursor (of any
    day), and they replace the table's rows with the same key, in the days they touch; a
    run with nothing new commits nothing; a retried run id applies nothing twice."""
    server = local_server
    psql(fresh_postgres_db, """
        CREATE TABLE accounts (id int PRIMARY KEY, opened timestamptz NOT NULL, updated_at timestamptz NOT NULL,
                               balance numeric(10, 2));
        INSERT INTO accounts VALUES
          (1, '2024-05-01 09:00+00', '2024-06-01 10:00:00.000001+00', 10.00),
          (2, '2024-05-01 10:00+00', '2024-06-01 10:00:00.000002+00', 20.00),
          (3, '2024-05-02 10:00+00', '2024-06-01 10:00:00.000003+00', 30.00);
    """)
    job = {"name": "accounts", "table": f"{ns}.accounts", "mode": "merge", "unique_key": ["id"],
           "source": {"database": fresh_postgres_db, "table": "accounts", "cursor": "updated_at"},
           "event_time": {"kind": "offset", "column": "opened"},
           "columns": [{"name": "id", "type": "int", "required": True},
                       {"name": "balance", "type": "decimal(10, 2)"}]}
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [job])
    cat = server.catalog()

    def state() -> dict[int, Decimal]:
        rows = cat.load_table(f"{ns}.accounts").scan().to_arrow().to_pylist()
        assert len({r["id"] for r in rows}) == len(rows), f"a key landed twice: {rows}"
        return {r["id"]: r["balance"] for r in rows}

    def report_of(*args: str) -> dict:
        path = tmp_path / "report.json"
        ok(run(server, pipeline, "2024-06-01", "2024-06-01", "--report", str(path), *args))
        return lib.job_report(lib.read_report(path), "accounts")

    first = report_of()
    assert first["rows_read"] == 3 and first["cursor"] == "2024-06-01 10:00:00.000003+00", first
    assert state() == {1: Decimal("10.00"), 2: Decimal("20.00"), 3: Decimal("30.00")}

    # A late change to a row of May 1 and a new account of May 3.
    psql(fresh_postgres_db, """
        UPDATE accounts SET balance = 11.50, updated_at = '2024-06-02 08:00+00' WHERE id = 1;
        INSERT INTO accounts VALUES (4, '2024-05-03 12:00+00', '2024-06-02 09:00+00', 40.00);
    """)
    second = report_of("--run-id", "second")
    assert second["rows_read"] == 2, second
    assert second["merged_days"] == ["2024-05-01", "2024-05-03"], second
    assert state() == {1: Decimal("11.50"), 2: Decimal("20.00"), 3: Decimal("30.00"), 4: Decimal("40.00")}
    table = cat.load_table(f"{ns}.accounts")
    summary = table.current_snapshot().summary.additional_properties
    assert summary["floe.state.database.cursor"] == "2024-06-02 09:00:00+00", summary
    snapshot = table.current_snapshot().snapshot_id

    # The same run id again: found, not applied twice.
    again = report_of("--run-id", "second")
    assert again["status"] == "already-committed", again
    # Nothing past the cursor: nothing is committed.
    idle = report_of()
    assert idle["status"] == "up-to-date" and idle["rows_read"] == 0, idle
    assert cat.load_table(f"{ns}.accounts").current_snapshot().snapshot_id == snapshot

    # A cursor without merge is refused when the pipeline is read.
    bad = write_pipeline(tmp_path / "bad.toml", server, [{**job, "mode": "append", "unique_key": []}])
    out = run(server, bad, "2024-06-01", "2024-06-01")
    assert out.returncode == 2 and 'set mode = \\"merge\\"' in out.stderr.replace('"', '\\"'), lib.explain(out)


def test_parallel_reads_split_key_ranges_in_one_snapshot(local_server, fresh_postgres_db, ns: str, tmp_path):
    """parallel = 4: four connections read four ranges of `id` in the snapshot the first one
    exported. A writer keeps moving rows from the lowest ids to new, higher ones during the
    read: readers with snapshots of their own would read a moved row twice (before and
    after its move); one snapshot reads each row once. Rows whose key is NULL are read too."""
    server = local_server
    rows = 200_000
    psql(fresh_postgres_db, f"""
        CREATE TABLE meter (id bigint, uid int NOT NULL UNIQUE, at timestamptz NOT NULL, kwh numeric(8, 3));
        CREATE INDEX ON meter (id);
        INSERT INTO meter SELECT g, g, '2024-05-01'::timestamptz + (g % 86400) * interval '1 second', g % 1000
          FROM generate_series(1, {rows}) g;
        INSERT INTO meter VALUES (NULL, -1, '2024-05-01 12:00:00+00', 1), (NULL, -2, '2024-05-01 13:00:00+00', 2);
    """)
    # Moves a row per transaction for at most 60 s, until cancelled after the read.
    mover = subprocess.Popen(psql_cmd(fresh_postgres_db, """
        DO $$ /* floe-mover */ DECLARE stop timestamptz := clock_timestamp() + interval '60 seconds'; BEGIN
          WHILE clock_timestamp() < stop LOOP
            UPDATE meter SET id = id + 100000000 WHERE id = (SELECT min(id) FROM meter WHERE id < 100000000);
            COMMIT;
          END LOOP;
        END $$;"""), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    job = {"name": "meter", "table": f"{ns}.meter",
           "source": {"database": fresh_postgres_db, "table": "meter", "parallel": 4, "split_by": "id"},
           "event_time": {"kind": "offset", "column": "at"},
           "columns": [{"name": "id", "type": "long"}, {"name": "uid", "type": "int", "required": True},
                       {"name": "kwh", "type": "decimal(8, 3)"}]}
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [job])
    report = tmp_path / "report.json"
    time.sleep(0.5)  # the mover is under way
    try:
        out = ok(run(server, pipeline, "2024-05-01", "2024-05-01", "--report", str(report)))
        assert mover.poll() is None, "the writer stopped before the read ended: the test proves nothing"
    finally:
        psql(fresh_postgres_db, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                                "WHERE query LIKE '%floe-mover%' AND pid <> pg_backend_pid()")
        mover.wait(timeout=120)
    moved = subprocess.run(psql_cmd(fresh_postgres_db, "SELECT count(*) FROM meter WHERE id >= 100000000")
                           + ["-t", "-A"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert int(moved.stdout.strip() or 0) > 100, f"too few rows moved to mean anything: {moved.stdout}"
    assert "parts=4" in out.stderr, "not read by four connections" + lib.explain(out)
    assert lib.job_report(lib.read_report(report), "meter")["rows_read"] == rows + 2
    uids = [r["uid"] for r in server.catalog().load_table(f"{ns}.meter").scan(selected_fields=("uid",))
            .to_arrow().to_pylist()]
    dupes = len(uids) - len(set(uids))
    assert dupes == 0, f"{dupes} rows read twice: the readers did not share one snapshot"
    assert sorted(uids) == [-2, -1, *range(1, rows + 1)]

    # A split column that is not an integer is named in the error.
    bad = {**job, "source": {**job["source"], "split_by": "kwh"}}
    out = run(server, write_pipeline(tmp_path / "bad.toml", server, [bad]), "2024-05-01", "2024-05-01")
    assert out.returncode == 2 and "integer column" in out.stderr and '"kwh"' in out.stderr, lib.explain(out)
    # parallel without a split column or a one-column unique_key.
    bad = {**job, "source": {k: v for k, v in job["source"].items() if k != "split_by"}}
    out = run(server, write_pipeline(tmp_path / "bad2.toml", server, [bad]), "2024-05-01", "2024-05-01")
    assert out.returncode == 2 and "split_by" in out.stderr, lib.explain(out)


def test_a_connection_dropped_mid_read_fails_loudly_and_commits_nothing(local_server, fresh_postgres_db, ns: str,
                                                                        tmp_path):
    """The server ends floe's session while rows stream (a restart, a failover, an admin):
    the run fails naming the source, and the table keeps exactly what it had."""
    server = local_server
    psql(fresh_postgres_db, """
        CREATE TABLE big (id bigint PRIMARY KEY, at timestamptz NOT NULL, pad text);
        INSERT INTO big SELECT g, '2024-05-01'::timestamptz + (g % 86400) * interval '1 second', repeat('x', 200)
          FROM generate_series(1, 400000) g;
    """)
    job = {"name": "big", "table": f"{ns}.big", "source": {"database": fresh_postgres_db, "table": "big"},
           "event_time": {"kind": "offset", "column": "at"},
           "columns": [{"name": "id", "type": "long", "required": True}, {"name": "pad", "type": "string"}]}
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [job])
    env = lib.clean_env(NO_COLOR="1", RUST_LOG="floe=info")
    proc = subprocess.Popen(ingest_cmd(pipeline, "2024-05-01", "2024-05-01"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    killed = False
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and not killed:
            out = subprocess.run(psql_cmd(fresh_postgres_db, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                          "WHERE application_name = 'floe' AND state = 'active' "
                                          "AND query LIKE 'COPY %'") + ["-t", "-A"],
                                 capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            killed = out.stdout.strip() not in ("", "0")
            time.sleep(0.05)
        out, err = proc.communicate(timeout=INGEST_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert killed, "the read ended before it could be cut: the test proves nothing"
    assert proc.returncode != 0, f"floe exited 0 after its read was cut:\n{out}\n{err}"
    assert "the read failed" in err and "table big" in err, err
    assert not any(t[1] == "big" for t in server.catalog().list_tables(ns)), "a table was left or committed"


# ---------------------------------------------------------------------------------------
# MySQL/MariaDB: the same contract from another server


def mariadb_sql(url: str, password: str, sql: str) -> None:
    m = re.match(r"mysql://(?P<user>[^@]+)@(?P<host>[^:/]+):(?P<port>\d+)/(?P<db>.+)$", url)
    assert m, url
    out = subprocess.run(["mariadb", "--no-defaults", "-h", m["host"], "-P", m["port"], "-u", m["user"],
                          f"-p{password}", m["db"], "-e", sql], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr


@pytest.mark.mariadb
def test_a_mariadb_table_lands_with_exact_values_and_a_cursor(local_server, mariadb, ns: str, tmp_path):
    server = local_server
    url, password = mariadb
    table = f"sales_{ns}"
    mariadb_sql(url, password, f"""
        CREATE TABLE {table} (id BIGINT PRIMARY KEY, sold_at TIMESTAMP(6) NOT NULL, local_time DATETIME(3),
          amount DECIMAL(20, 4), attrs JSON, note VARCHAR(100), flag BOOLEAN, updated_at TIMESTAMP(6) NOT NULL);
        INSERT INTO {table} VALUES
          (1, '2024-05-01 00:00:00', '2024-05-01 02:00:00.125', 1234567890123456.7891, '{{"channel": "web"}}',
              'first', TRUE, '2024-06-01 10:00:00.000001'),
          (2, '2024-05-01 23:59:59.999999', NULL, 0.0001, NULL, 'line1\\nline2 "q"', FALSE,
              '2024-06-01 10:00:00.000002'),
          (3, '2024-05-03 12:00:00', NULL, 3, NULL, NULL, NULL, '2024-06-01 10:00:00.000003');
    """)
    env_password = {"FLOE_TEST_DB_PASSWORD": password}
    job = {"name": "sales", "table": f"{ns}.sales",
           "source": {"database": url, "table": table, "password_env": "FLOE_TEST_DB_PASSWORD"},
           "event_time": {"kind": "offset", "column": "sold_at"},
           "columns": [{"name": "id", "type": "long", "required": True},
                       {"name": "local_time", "type": "string"},
                       {"name": "amount", "type": "decimal(20, 4)"},
                       {"name": "attrs", "type": "struct<channel: string>"},
                       {"name": "note", "type": "string"},
                       {"name": "flag", "type": "boolean"}],
           "schema_drift": "ignore"}
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [job])
    report = tmp_path / "report.json"
    env = lib.clean_env(NO_COLOR="1", RUST_LOG="floe=debug", **env_password)
    out = subprocess.run(ingest_cmd(pipeline, "2024-05-01", "2024-05-01", "--report", str(report)),
                         capture_output=True, text=True, timeout=INGEST_TIMEOUT_S, env=env, cwd=tmp_path,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, lib.explain(out)
    assert password not in out.stdout + out.stderr, "the password was printed"
    assert lib.job_report(lib.read_report(report), "sales")["rows_read"] == 2  # the server filtered day 3
    rows = {r["id"]: r for r in server.catalog().load_table(f"{ns}.sales").scan().to_arrow().to_pylist()}
    assert sorted(rows) == [1, 2]
    assert rows[1]["amount"] == Decimal("1234567890123456.7891")
    assert rows[2]["amount"] == Decimal("0.0001")
    assert rows[1]["ts_utc"] == dt.datetime(2024, 5, 1, tzinfo=UTC)
    assert rows[2]["ts_utc"] == dt.datetime(2024, 5, 1, 23, 59, 59, 999999, tzinfo=UTC)
    assert rows[1]["local_time"] == "2024-05-01T02:00:00.125000"
    assert rows[1]["attrs"] == {"channel": "web"}
    assert rows[2]["note"] == 'line1\nline2 "q"'
    assert rows[1]["flag"] is True and rows[2]["flag"] is False

    # A cursor and a merge, as on PostgreSQL.
    merged = {**job, "name": "sales_changes", "table": f"{ns}.sales_changes", "mode": "merge",
              "unique_key": ["id"], "source": {**job["source"], "cursor": "updated_at"}}
    pipeline = write_pipeline(tmp_path / "merge.toml", server, [merged])
    cmd = ingest_cmd(pipeline, "2024-06-01", "2024-06-01")
    run_ok = lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=INGEST_TIMEOUT_S, env=env,  # noqa: E731
                                    cwd=tmp_path, stdin=subprocess.DEVNULL)
    out = run_ok()
    assert out.returncode == 0, lib.explain(out)
    mariadb_sql(url, password, f"UPDATE {table} SET amount = 5, updated_at = '2024-06-02 00:00:00' WHERE id = 3")
    out = run_ok()
    assert out.returncode == 0, lib.explain(out)
    got = {r["id"]: r["amount"] for r in server.catalog().load_table(f"{ns}.sales_changes").scan().to_arrow().to_pylist()}
    assert got == {1: Decimal("1234567890123456.7891"), 2: Decimal("0.0001"), 3: Decimal("5.0000")}


@pytest.mark.mariadb
def test_mariadb_parallel_reads_and_the_privilege_they_need(local_server, mariadb, ns: str, tmp_path):
    server = local_server
    url, password = mariadb
    table = f"parts_{ns}"
    mariadb_sql(url, password, f"""
        CREATE TABLE {table} (id INT UNSIGNED NULL, made_at DATETIME(6) NOT NULL, name VARCHAR(20));
        INSERT INTO {table} (id, made_at, name)
          SELECT seq, TIMESTAMP('2024-05-01') + INTERVAL (seq % 86400) SECOND, CONCAT('p', seq) FROM seq_1_to_5000;
        INSERT INTO {table} VALUES (NULL, '2024-05-01 01:00:00', 'no id');
        DROP USER IF EXISTS 'reader_{ns}'@'127.0.0.1';
        CREATE USER 'reader_{ns}'@'127.0.0.1' IDENTIFIED BY '{password}';
        GRANT SELECT ON *.* TO 'reader_{ns}'@'127.0.0.1';
    """)
    job = {"name": "parts", "table": f"{ns}.parts",
           "source": {"database": url, "table": table, "password_env": "FLOE_TEST_DB_PASSWORD", "parallel": 3,
                      "split_by": "id"},
           "event_time": {"kind": "local", "column": "made_at", "zone": "UTC"},
           "columns": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}]}
    env = lib.clean_env(NO_COLOR="1", RUST_LOG="floe=info", FLOE_TEST_DB_PASSWORD=password)
    go = lambda p: subprocess.run(ingest_cmd(p, "2024-05-01", "2024-05-01"), capture_output=True,  # noqa: E731
                                  text=True, timeout=INGEST_TIMEOUT_S, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    out = go(write_pipeline(tmp_path / "floe.toml", server, [job]))
    assert out.returncode == 0, lib.explain(out)
    assert "parts=3" in out.stderr, lib.explain(out)
    names = [r["name"] for r in server.catalog().load_table(f"{ns}.parts").scan().to_arrow().to_pylist()]
    assert sorted(names) == sorted([f"p{i}" for i in range(1, 5001)] + ["no id"])

    # A user without RELOAD: the error says what parallel reads need; parallel = 1 works.
    reader = url.replace("mysql://floe@", f"mysql://reader_{ns}@")
    weak = {**job, "name": "weak", "table": f"{ns}.weak", "source": {**job["source"], "database": reader}}
    out = go(write_pipeline(tmp_path / "weak.toml", server, [weak]))
    assert out.returncode == 2 and "RELOAD" in out.stderr, lib.explain(out)
    one = {**weak, "source": {**weak["source"], "parallel": 1}}
    out = go(write_pipeline(tmp_path / "one.toml", server, [one]))
    assert out.returncode == 0, lib.explain(out)
