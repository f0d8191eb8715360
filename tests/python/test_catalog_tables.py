"""Tables through pyiceberg (and raw HTTP where pyiceberg hides the wire): the full life of a
day-partitioned table on a local-folder warehouse and on S3, the errors clients map to their
own exceptions, staged creates, registration and the snapshot modes of LoadTable."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NamespaceNotEmptyError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)

import floe_testlib as lib
from floe_testlib import assert_error, describe, table_path


def create_day_table(catalog, ns: str, name: str, **kw):
    return catalog.create_table((ns, name), schema=lib.iceberg_schema(), partition_spec=lib.day_spec(), **kw)


def test_table_lifecycle(warehouse_server: lib.CatalogServer, ns: str):
    server = warehouse_server
    cat = server.catalog()
    cat.create_namespace(ns, {"owner": "acceptance"})
    assert (ns,) in cat.list_namespaces()
    assert cat.load_namespace_properties(ns).get("owner") == "acceptance"

    tbl = create_day_table(cat, ns, "readings")
    location = tbl.location()
    warehouse = server.warehouse.rstrip("/")
    assert location.startswith(f"{warehouse}/{ns}/readings-"), (location, warehouse)
    assert tbl.spec().fields[0].transform.__class__.__name__ == "DayTransform"
    assert str(tbl.schema().find_field("ts_utc").field_type) == "timestamptz"

    first = lib.make_rows("a", 12)
    second = lib.make_rows("b", 7, base_value=100.0)
    tbl.append(first)
    tbl.append(second)

    reloaded = cat.load_table((ns, "readings"))
    got = reloaded.scan().to_arrow()
    assert lib.rows_of(got) == lib.rows_of(pa.concat_tables([first, second]))

    snapshots = lib.snapshots_in_order(reloaded)
    assert len(snapshots) == 2
    assert [s.summary.operation.value for s in snapshots] == ["append", "append"]
    assert snapshots[1].parent_snapshot_id == snapshots[0].snapshot_id
    assert reloaded.current_snapshot().snapshot_id == snapshots[1].snapshot_id
    # several day partitions were written
    partitions = {tuple(p.values()) if isinstance(p, dict) else p for p in
                  reloaded.inspect.partitions().column("partition").to_pylist()}
    assert len(partitions) >= 3

    assert cat.list_tables(ns) == [(ns, "readings")]

    # rename: old name gone, new name loads the same data and history
    cat.rename_table((ns, "readings"), (ns, "readings_v2"))
    assert not cat.table_exists((ns, "readings"))
    with pytest.raises(NoSuchTableError):
        cat.load_table((ns, "readings"))
    renamed = cat.load_table((ns, "readings_v2"))
    assert lib.rows_of(renamed.scan().to_arrow()) == lib.rows_of(got)
    assert [s.snapshot_id for s in lib.snapshots_in_order(renamed)] == [s.snapshot_id for s in snapshots]
    assert cat.list_tables(ns) == [(ns, "readings_v2")]

    # files exist before the purge ...
    assert lib.files_under(location, server.s3), f"no files under {location}"
    cat.purge_table((ns, "readings_v2"))
    assert not cat.table_exists((ns, "readings_v2"))
    # ... and are gone after it (a purge may finish asynchronously: bounded wait)
    lib.wait_until(f"files under {location} to be deleted by the purge",
                   lambda: not lib.files_under(location, server.s3), timeout=20, interval=0.5)

    cat.drop_namespace(ns)
    assert (ns,) not in cat.list_namespaces()


def test_rename_across_namespaces(local_server: lib.CatalogServer, ns: str):
    cat = local_server.catalog()
    other = ns + "_dst"
    cat.create_namespace(ns)
    cat.create_namespace(other)
    tbl = create_day_table(cat, ns, "t")
    tbl.append(lib.make_rows("x", 5))
    cat.rename_table((ns, "t"), (other, "moved"))
    assert cat.list_tables(ns) == []
    assert cat.list_tables(other) == [(other, "moved")]
    assert lib.rows_of(cat.load_table((other, "moved")).scan().to_arrow()) == lib.rows_of(lib.make_rows("x", 5))

    # renaming onto an existing table or into a missing namespace fails
    create_day_table(cat, ns, "t2")
    with pytest.raises(TableAlreadyExistsError):
        cat.rename_table((ns, "t2"), (other, "moved"))
    with pytest.raises((NoSuchNamespaceError, NoSuchTableError)):
        cat.rename_table((ns, "t2"), (ns + "_missing", "t2"))
    with pytest.raises(NoSuchTableError):
        cat.rename_table((ns, "absent"), (ns, "whatever"))
    assert cat.table_exists((ns, "t2"))


def test_errors_map_to_pyiceberg_exceptions(local_server: lib.CatalogServer, ns: str):
    cat = local_server.catalog()
    with pytest.raises(NoSuchNamespaceError):
        cat.load_namespace_properties(ns)
    with pytest.raises(NoSuchNamespaceError):
        cat.list_tables(ns)
    with pytest.raises(NoSuchNamespaceError):
        cat.drop_namespace(ns)
    with pytest.raises(NoSuchNamespaceError):
        create_day_table(cat, ns, "t")

    cat.create_namespace(ns)
    with pytest.raises(NamespaceAlreadyExistsError):
        cat.create_namespace(ns)
    with pytest.raises(NoSuchTableError):
        cat.load_table((ns, "missing"))
    with pytest.raises(NoSuchTableError):
        cat.drop_table((ns, "missing"))

    # no client-side retries (pyiceberg retries appends 4 times by default): we want the 409
    tbl = create_day_table(cat, ns, "t", properties={"commit.retry.num-retries": "0"})
    with pytest.raises(TableAlreadyExistsError):
        create_day_table(cat, ns, "t")
    with pytest.raises(NamespaceNotEmptyError):
        cat.drop_namespace(ns)
    assert cat.table_exists((ns, "t"))

    # stale commit: two clients load the same version, both append; the second must lose
    a = cat.load_table((ns, "t"))
    b = local_server.catalog().load_table((ns, "t"))
    a.append(lib.make_rows("a", 3))
    with pytest.raises(CommitFailedException):
        b.append(lib.make_rows("b", 3))
    after = cat.load_table((ns, "t"))
    assert len(after.snapshots()) == 1
    assert lib.rows_of(after.scan().to_arrow()) == lib.rows_of(lib.make_rows("a", 3))
    # and a client that reloads succeeds
    b = cat.load_table((ns, "t"))
    b.append(lib.make_rows("b", 3))
    assert len(cat.load_table((ns, "t")).snapshots()) == 2
    del tbl


def test_error_types_on_the_wire(local_server: lib.CatalogServer, ns: str):
    """The ErrorModel `type` names Java clients (Spark) branch on."""
    api = local_server.api()
    assert_error(api.get(f"/v1/namespaces/{ns}"), 404, "NoSuchNamespaceException")
    assert_error(api.get(f"/v1/namespaces/{ns}/tables"), 404, "NoSuchNamespaceException")
    api.create_namespace(ns)
    assert_error(api.post("/v1/namespaces", json={"namespace": [ns]}), 409, "AlreadyExistsException")
    assert_error(api.get(table_path(ns, "missing")), 404, "NoSuchTableException")
    api.create_table(ns, "t")
    assert_error(api.post(f"/v1/namespaces/{ns}/tables", json={"name": "t", "schema": lib.RAW_SCHEMA}),
                 409, "AlreadyExistsException")
    assert_error(api.delete(f"/v1/namespaces/{ns}"), 409, "NamespaceNotEmptyException")
    # Spark resolves `db.t.snapshots` by first loading table `snapshots` in namespace `db.t`,
    # and falls back to the metadata table only on a NoSuchTableException.
    assert_error(api.get(table_path([ns, "t"], "snapshots")), 404, "NoSuchTableException")


def test_load_table_snapshot_modes(local_server: lib.CatalogServer, ns: str):
    cat = local_server.catalog()
    cat.create_namespace(ns)
    tbl = create_day_table(cat, ns, "t")
    tbl.append(lib.make_rows("a", 4))
    tbl.append(lib.make_rows("b", 4))
    api = local_server.api()

    full = api.load_table(ns, "t", snapshots="all")
    default = api.load_table(ns, "t")
    refs = api.load_table(ns, "t", snapshots="refs")
    all_ids = [s["snapshot-id"] for s in full["metadata"]["snapshots"]]
    assert len(all_ids) == 2
    assert sorted(s["snapshot-id"] for s in default["metadata"]["snapshots"]) == sorted(all_ids), \
        "the default must be `all`"

    ref_targets = {r["snapshot-id"] for r in refs["metadata"].get("refs", {}).values()}
    current = full["metadata"]["current-snapshot-id"]
    assert ref_targets == {current}
    refs_ids = [s["snapshot-id"] for s in refs["metadata"]["snapshots"]]
    assert set(refs_ids) == ref_targets, f"snapshots=refs should return only referenced snapshots: {refs_ids}"
    assert refs["metadata-location"] == full["metadata-location"]

    resp = api.get(table_path(ns, "t"), params={"snapshots": "bogus"})
    assert_error(resp, 400)


def test_stage_create_then_commit(local_server: lib.CatalogServer, ns: str):
    cat = local_server.catalog()
    cat.create_namespace(ns)
    api = local_server.api()

    # raw: a staged table is not visible until its create is committed
    resp = api.post(f"/v1/namespaces/{ns}/tables",
                    json={"name": "staged_raw", "schema": lib.RAW_SCHEMA, "stage-create": True})
    assert resp.status_code == 200, describe(resp)
    staged = resp.json()
    assert staged["metadata"]["location"].startswith(local_server.warehouse.rstrip("/") + f"/{ns}/staged_raw")
    assert api.head(table_path(ns, "staged_raw")).status_code == 404
    assert_error(api.get(table_path(ns, "staged_raw")), 404, "NoSuchTableException")
    assert cat.list_tables(ns) == []

    # pyiceberg: a create transaction that also appends data commits as one create
    rows = lib.make_rows("staged", 9)
    with cat.create_table_transaction((ns, "staged_py"), schema=lib.iceberg_schema(),
                                      partition_spec=lib.day_spec()) as txn:
        txn.append(rows)
    assert cat.list_tables(ns) == [(ns, "staged_py")]
    tbl = cat.load_table((ns, "staged_py"))
    assert lib.rows_of(tbl.scan().to_arrow()) == lib.rows_of(rows)
    assert len(tbl.snapshots()) == 1

    # a second staged create of the same name can no longer be committed (assert-create)
    with pytest.raises((CommitFailedException, TableAlreadyExistsError)):
        with cat.create_table_transaction((ns, "staged_py"), schema=lib.iceberg_schema()) as txn:
            txn.set_properties(x="y")
    assert "x" not in cat.load_table((ns, "staged_py")).properties


def test_register_table(warehouse_server: lib.CatalogServer, ns: str):
    server = warehouse_server
    cat = server.catalog()
    cat.create_namespace(ns)
    tbl = create_day_table(cat, ns, "orig")
    rows = lib.make_rows("r", 10)
    tbl.append(rows)
    tbl = cat.load_table((ns, "orig"))
    metadata_location = tbl.metadata_location
    snapshot_ids = [s.snapshot_id for s in lib.snapshots_in_order(tbl)]

    cat.drop_table((ns, "orig"))  # no purge: files stay
    assert not cat.table_exists((ns, "orig"))
    assert lib.files_under(tbl.location(), server.s3), "a drop without purge deleted files"

    registered = cat.register_table((ns, "again"), metadata_location)
    assert registered.metadata_location == metadata_location
    again = cat.load_table((ns, "again"))
    assert [s.snapshot_id for s in lib.snapshots_in_order(again)] == snapshot_ids
    assert lib.rows_of(again.scan().to_arrow()) == lib.rows_of(rows)

    # registering over an existing name fails; a bogus metadata location is a client error
    with pytest.raises(TableAlreadyExistsError):
        cat.register_table((ns, "again"), metadata_location)
    api = server.api()
    nowhere = server.warehouse.rstrip("/") + "/nope/00000-x.metadata.json"
    resp = api.post(f"/v1/namespaces/{ns}/register", json={"name": "bogus", "metadata-location": nowhere})
    lib.assert_client_error(resp)
    assert api.head(table_path(ns, "bogus")).status_code == 404

    # the registered table accepts new commits
    again.append(lib.make_rows("more", 3))
    assert len(cat.load_table((ns, "again")).snapshots()) == len(snapshot_ids) + 1


def test_schema_and_property_updates(local_server: lib.CatalogServer, ns: str):
    from pyiceberg.types import LongType

    cat = local_server.catalog()
    cat.create_namespace(ns)
    tbl = create_day_table(cat, ns, "t", properties={"a": "1"})
    with tbl.transaction() as txn:
        txn.set_properties(b="2")
        txn.remove_properties("a")
    with tbl.update_schema() as upd:
        upd.add_column("quality", LongType())
    tbl = cat.load_table((ns, "t"))
    assert tbl.properties.get("b") == "2" and "a" not in tbl.properties
    assert tbl.schema().find_field("quality").field_type == LongType()
    assert len(tbl.schemas()) == 2
