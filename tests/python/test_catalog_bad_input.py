"""Bad input over raw HTTP: always a 4xx Iceberg ErrorModel (never a 5xx), and nothing changed."""

from __future__ import annotations

import json
import uuid

import pytest

import floe_testlib as lib
from floe_testlib import assert_client_error, assert_error, describe, table_path

BAD_NAMES = ["a/b", ".", "..", "a.b", "", "x\x00y", "x\x1fy", "tab\there", "a\\b", "x" * 256]
BAD_NAME_IDS = ["slash", "dot", "dotdot", "inner-dot", "empty", "nul", "unit-sep", "tab", "backslash", "256-chars"]


@pytest.fixture
def table(local_server: lib.CatalogServer, ns: str):
    api = local_server.api()
    api.create_namespace([ns])
    api.create_table(ns, "t")
    return api, ns, "t"


def _unchanged(api: lib.Api, ns: str, name: str, before: dict) -> None:
    now = api.load_table(ns, name)
    assert now["metadata-location"] == before["metadata-location"], "the table changed"


def test_malformed_json(table):
    api, ns, name = table
    before = api.load_table(ns, name)
    headers = {"Content-Type": "application/json"}
    problems = []
    for path in ("/v1/namespaces", f"/v1/namespaces/{ns}/tables", table_path(ns, name), "/v1/tables/rename",
                 "/v1/transactions/commit", f"/v1/namespaces/{ns}/properties", f"/v1/namespaces/{ns}/register"):
        for body in ("{not json", "", "[]", "null", '{"namespace": "flat-string"}', "\xff\xfe", "[[], []]"):
            if path.endswith("/properties") and body.startswith("{"):
                continue  # every field of UpdateNamespacePropertiesRequest is optional
            resp = api.post(path, data=body.encode("latin-1"), headers=headers)
            try:
                assert_client_error(resp)
            except AssertionError as exc:
                problems.append(str(exc))
    assert not problems, f"{len(problems)} malformed bodies not rejected:\n" + "\n".join(problems)
    _unchanged(api, ns, name, before)
    # wrong shapes in an otherwise valid JSON document
    resp = api.post("/v1/namespaces", json={"namespace": [ns + "_x"], "properties": {"k": 1}})
    assert_client_error(resp)
    assert api.head(f"/v1/namespaces/{ns}_x").status_code == 404
    resp = api.post(table_path(ns, name), json={"requirements": {}, "updates": []})
    assert_client_error(resp)
    _unchanged(api, ns, name, before)


def test_unknown_update_and_requirement(table):
    api, ns, name = table
    before = api.load_table(ns, name)
    cases = [
        {"requirements": [], "updates": [{"action": "frobnicate", "x": 1}]},
        {"requirements": [], "updates": [{"action": "set-properties", "updates": {"a": "1"}},
                                         {"action": "frobnicate"}]},
        {"requirements": [{"type": "assert-the-moon"}], "updates": [{"action": "set-properties",
                                                                     "updates": {"a": "1"}}]},
        {"requirements": [], "updates": [{"action": "set-current-schema", "schema-id": 99}]},
        {"requirements": [], "updates": [{"action": "set-snapshot-ref", "ref-name": "main", "type": "branch",
                                          "snapshot-id": 12345}]},
        {"requirements": [], "updates": [{"action": "add-schema", "schema": {"type": "struct", "fields": [
            {"id": 1, "name": "x", "type": "no-such-type", "required": False}]}}]},
        {"requirements": [], "updates": [{"action": "upgrade-format-version", "format-version": 99}]},
        {"requirements": [], "updates": [{"action": "set-properties"}]},
    ]
    for body in cases:
        resp = api.post(table_path(ns, name), json=body)
        assert_client_error(resp)
        _unchanged(api, ns, name, before)
    # the same inside a multi-table transaction
    resp = api.post("/v1/transactions/commit", json={"table-changes": [
        {"identifier": {"namespace": [ns], "name": name}, **cases[1]}]})
    assert_client_error(resp)
    _unchanged(api, ns, name, before)


def test_commit_to_missing_table(table):
    api, ns, _ = table
    body = {"requirements": [], "updates": [{"action": "set-properties", "updates": {"a": "1"}}]}
    assert_error(api.post(table_path(ns, "missing"), json=body), 404, "NoSuchTableException")
    assert_error(api.post(table_path(ns + "_missing", "t"), json=body), 404)
    assert api.head(table_path(ns, "missing")).status_code == 404
    assert_error(api.delete(table_path(ns, "missing")), 404, "NoSuchTableException")
    resp = api.post("/v1/tables/rename", json={"source": {"namespace": [ns], "name": "missing"},
                                               "destination": {"namespace": [ns], "name": "x"}})
    assert_error(resp, 404, "NoSuchTableException")
    assert_error(api.post(table_path(ns, "missing") + "/metrics",
                          json={"report-type": "commit-report", "table-name": "x", "snapshot-id": 1,
                                "sequence-number": 1, "operation": "append", "metrics": {}}), 404)


def test_oversized_body(table, local_server):
    api, ns, name = table
    before = api.load_table(ns, name)
    big = "x" * (20 * 1024 * 1024)
    bodies = [
        ("/v1/namespaces", {"namespace": [ns + "_big"], "properties": {"blob": big}}),
        (table_path(ns, name), {"requirements": [], "updates": [{"action": "set-properties",
                                                                 "updates": {"blob": big}}]}),
    ]
    for path, body in bodies:
        data = json.dumps(body).encode()
        resp = api.post(path, data=data, headers={"Content-Type": "application/json"})
        assert_client_error(resp)
    # chunked (no Content-Length) is limited too
    payload = json.dumps(bodies[1][1]).encode()
    chunks = (payload[i:i + 65536] for i in range(0, len(payload), 65536))
    resp = api.post(table_path(ns, name), data=chunks, headers={"Content-Type": "application/json"})
    assert_client_error(resp)
    _unchanged(api, ns, name, before)
    assert api.head(f"/v1/namespaces/{ns}_big").status_code == 404
    # still serving
    assert api.get("/v1/config").status_code == 200


@pytest.mark.parametrize("bad", BAD_NAMES, ids=BAD_NAME_IDS)
def test_invalid_names_rejected(local_server: lib.CatalogServer, ns: str, bad: str):
    api = local_server.api()
    api.create_namespace([ns])
    api.create_table(ns, "ok")
    # namespace level
    for levels in ([bad], [ns, bad]):
        resp = api.post("/v1/namespaces", json={"namespace": levels})
        assert_error(resp, 400)
    # table name: create, stage-create, rename, register
    resp = api.post(f"/v1/namespaces/{ns}/tables", json={"name": bad, "schema": lib.RAW_SCHEMA})
    assert_error(resp, 400)
    resp = api.post(f"/v1/namespaces/{ns}/tables", json={"name": bad, "schema": lib.RAW_SCHEMA,
                                                          "stage-create": True})
    assert_error(resp, 400)
    resp = api.post("/v1/tables/rename", json={"source": {"namespace": [ns], "name": "ok"},
                                               "destination": {"namespace": [ns], "name": bad}})
    assert_error(resp, 400)
    meta = api.load_table(ns, "ok")["metadata-location"]
    resp = api.post(f"/v1/namespaces/{ns}/register", json={"name": bad, "metadata-location": meta})
    assert_error(resp, 400)
    # nothing appeared
    tables = api.get(f"/v1/namespaces/{ns}/tables").json()["identifiers"]
    assert [t["name"] for t in tables] == ["ok"]
    assert [ns, bad] not in api.get("/v1/namespaces", params={"parent": ns}).json()["namespaces"]
    # and nothing escaped the warehouse folder
    warehouse = lib.file_uri_to_path(local_server.warehouse)
    stray = {p.name for p in warehouse.parent.iterdir()} - {warehouse.name, local_server.log_path.name}
    assert not stray, f"files beside the warehouse: {stray}"


def test_names_in_paths_never_escape(local_server: lib.CatalogServer, ns: str):
    api = local_server.api()
    api.create_namespace([ns])
    for raw in ("..", "%2E%2E", "a%2Fb", "%2F", "..%2F..%2Fetc", "%00", "a%1F..", "%1F"):
        for path in (f"/v1/namespaces/{raw}", f"/v1/namespaces/{raw}/tables",
                     f"/v1/namespaces/{ns}/tables/{raw}"):
            resp = api.get(path)
            assert resp.status_code in (400, 404), describe(resp)
            assert_client_error(resp)


def test_longest_valid_names(local_server: lib.CatalogServer, ns: str):
    """255 characters is still a valid name (only longer ones are rejected), and such a table
    is usable: its location must fit the file system's 255-byte name limit. A namespace's
    levels joined with '.' may be 255 bytes too (the JDBC layout's column width); one more
    byte is a 400, never a 5xx."""
    api = local_server.api()
    api.create_namespace([ns])
    long_ns = "n" * (255 - len(ns) - 1)
    resp = api.post("/v1/namespaces", json={"namespace": [ns, long_ns]})
    assert resp.status_code == 200, describe(resp)
    resp = api.post("/v1/namespaces", json={"namespace": [ns, long_ns + "n"]})
    assert resp.status_code == 400, describe(resp)
    long_table = "t" * 255
    resp = api.post(f"/v1/namespaces/{ns}/tables", json={"name": long_table, "schema": lib.RAW_SCHEMA})
    assert resp.status_code < 500, "a 255-character table name crashed the server" + describe(resp)
    assert resp.status_code == 200, describe(resp)
    cat = local_server.catalog()
    tbl = cat.load_table((ns, long_table))
    tbl.append(lib.make_rows("long", 2))
    assert len(cat.load_table((ns, long_table)).scan().to_arrow()) == 2


def test_location_outside_warehouse(local_server: lib.CatalogServer, ns: str, tmp_path):
    api = local_server.api()
    api.create_namespace([ns])
    warehouse = local_server.warehouse.rstrip("/")
    outside = tmp_path / f"outside-{uuid.uuid4().hex}"
    sibling = warehouse + "-sibling/x"  # shares the warehouse's string prefix
    for location in (outside.as_uri(), f"{warehouse}/../escape-{uuid.uuid4().hex}", sibling,
                     "s3://some-other-bucket/x", "/absolute/path/without/scheme", "http://127.0.0.1:1/x"):
        resp = api.post(f"/v1/namespaces/{ns}/tables",
                        json={"name": "t", "schema": lib.RAW_SCHEMA, "location": location})
        assert_client_error(resp)
        assert api.head(table_path(ns, "t")).status_code == 404
    assert not outside.exists(), "the server wrote outside the warehouse"
    assert not lib.file_uri_to_path(warehouse + "-sibling").exists()

    # a location inside the warehouse is fine
    inside = f"{warehouse}/custom/{ns}-place"
    resp = api.post(f"/v1/namespaces/{ns}/tables", json={"name": "t", "schema": lib.RAW_SCHEMA, "location": inside})
    assert resp.status_code == 200, describe(resp)
    assert resp.json()["metadata"]["location"].rstrip("/") == inside

    # moving a table out of the warehouse by commit is refused too
    before = api.load_table(ns, "t")
    resp = api.post(table_path(ns, "t"), json={"requirements": [], "updates": [
        {"action": "set-location", "location": outside.as_uri()}]})
    assert_client_error(resp)
    _unchanged(api, ns, "t", before)

    # and so is a namespace location outside the warehouse
    resp = api.post("/v1/namespaces", json={"namespace": [ns + "_loc"], "properties": {"location": outside.as_uri()}})
    if resp.status_code == 200:
        created = api.post(f"/v1/namespaces/{ns}_loc/tables", json={"name": "t", "schema": lib.RAW_SCHEMA})
        if created.status_code == 200:
            assert created.json()["metadata"]["location"].startswith(warehouse + "/"), describe(created)
        else:
            assert_client_error(created)
    else:
        assert_client_error(resp)
    assert not outside.exists(), "the server wrote outside the warehouse"


@pytest.mark.s3
def test_s3_location_outside_warehouse(s3_catalog_server: lib.CatalogServer, ns: str):
    api = s3_catalog_server.api()
    api.create_namespace([ns])
    wh = s3_catalog_server.warehouse.rstrip("/")
    for location in (f"s3://{s3_catalog_server.s3.bucket}/elsewhere/{ns}", "s3://another-bucket/x",
                     wh + "-sibling/x", "file:///tmp/x"):
        resp = api.post(f"/v1/namespaces/{ns}/tables", json={"name": "t", "schema": lib.RAW_SCHEMA,
                                                              "location": location})
        assert_client_error(resp)
    assert api.head(table_path(ns, "t")).status_code == 404
    assert not s3_catalog_server.s3.list_keys(f"elsewhere/{ns}")


def test_unknown_routes_and_methods(local_server: lib.CatalogServer):
    api = local_server.api()
    resp = api.get("/v1/no-such-thing")
    assert resp.status_code == 404, describe(resp)
    resp = api.request("PUT", "/v1/namespaces", json={})
    assert resp.status_code in (404, 405), describe(resp)
