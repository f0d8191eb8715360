"""What the catalog knows survives a restart: namespaces, properties, tables, snapshots."""

from __future__ import annotations

import pyarrow as pa
import pytest

import floe_testlib as lib


def _fill(server: lib.CatalogServer, ns: str) -> dict:
    cat = server.catalog()
    cat.create_namespace(ns, {"team": "grid"})
    cat.create_namespace((ns, "inner"))
    tbl = cat.create_table((ns, "t"), schema=lib.iceberg_schema(), partition_spec=lib.day_spec(),
                           properties={"floe.test": "yes"})
    a, b = lib.make_rows("a", 6), lib.make_rows("b", 6, base_value=50)
    tbl.append(a)
    tbl.append(b)
    cat.create_table((ns, "inner", "empty"), schema=lib.iceberg_schema())
    tbl = cat.load_table((ns, "t"))
    return {
        "rows": lib.rows_of(pa.concat_tables([a, b])),
        "snapshots": [s.snapshot_id for s in lib.snapshots_in_order(tbl)],
        "metadata_location": tbl.metadata_location,
    }


def _check(server: lib.CatalogServer, ns: str, expected: dict) -> None:
    cat = server.catalog()
    assert (ns,) in cat.list_namespaces()
    assert cat.list_namespaces((ns,)) == [(ns, "inner")]
    assert cat.load_namespace_properties(ns).get("team") == "grid"
    assert cat.list_tables(ns) == [(ns, "t")]
    assert cat.list_tables((ns, "inner")) == [(ns, "inner", "empty")]
    tbl = cat.load_table((ns, "t"))
    assert tbl.metadata_location == expected["metadata_location"]
    assert [s.snapshot_id for s in lib.snapshots_in_order(tbl)] == expected["snapshots"]
    assert tbl.properties.get("floe.test") == "yes"
    assert lib.rows_of(tbl.scan().to_arrow()) == expected["rows"]
    # and it still takes commits
    tbl.append(lib.make_rows("after", 2))
    assert len(cat.load_table((ns, "t")).snapshots()) == len(expected["snapshots"]) + 1


@pytest.mark.parametrize("db", ["default", "sqlite"])
def test_restart_sqlite(catalog_server, tmp_path, ns: str, db: str):
    opts = {} if db == "default" else {"db": f"sqlite://{tmp_path / 'elsewhere' / 'cat.db'}"}
    if db == "sqlite":
        (tmp_path / "elsewhere").mkdir()
    server = catalog_server(**opts)
    expected = _fill(server, ns)
    server.restart()
    _check(server, ns, expected)
    if db == "default":
        # the default SQLite file lives with a local warehouse
        assert (lib.file_uri_to_path(server.warehouse) / "floe-catalog.db").is_file()
    else:
        assert (tmp_path / "elsewhere" / "cat.db").is_file()


@pytest.mark.s3
def test_restart_s3(catalog_server, ns: str):
    server = catalog_server("s3")
    expected = _fill(server, ns)
    server.restart()
    _check(server, ns, expected)


@pytest.mark.postgres
def test_restart_postgres(catalog_server, fresh_postgres_db, ns: str):
    server = catalog_server(db=fresh_postgres_db)
    expected = _fill(server, ns)
    server.restart()
    _check(server, ns, expected)


@pytest.mark.postgres
def test_two_servers_share_postgres(catalog_server, fresh_postgres_db, tmp_path, ns: str):
    """Two servers on one database and warehouse see each other's commits."""
    first = catalog_server(db=fresh_postgres_db)
    second = catalog_server(db=fresh_postgres_db, warehouse=first.warehouse)
    expected = _fill(first, ns)
    tbl = second.catalog().load_table((ns, "t"))
    assert [s.snapshot_id for s in lib.snapshots_in_order(tbl)] == expected["snapshots"]
    tbl.append(lib.make_rows("second", 3))
    assert len(first.catalog().load_table((ns, "t")).snapshots()) == len(expected["snapshots"]) + 1
