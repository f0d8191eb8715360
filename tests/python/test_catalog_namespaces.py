"""Namespaces: nesting, listing by parent, pagination (raw HTTP), properties, existence
checks, drops; and the metrics endpoint."""

from __future__ import annotations

import pytest
from pyiceberg.exceptions import NoSuchNamespaceError

import floe_testlib as lib
from floe_testlib import assert_error, describe, ns_path, table_path


def test_nested_namespaces(local_server: lib.CatalogServer, ns: str):
    cat = local_server.catalog()
    cat.create_namespace((ns,))
    cat.create_namespace((ns, "b"))
    cat.create_namespace((ns, "c"))
    cat.create_namespace((ns, "b", "d"))
    assert sorted(cat.list_namespaces((ns,))) == [(ns, "b"), (ns, "c")]
    assert cat.list_namespaces((ns, "b")) == [(ns, "b", "d")]
    assert cat.list_namespaces((ns, "b", "d")) == []
    top = cat.list_namespaces()
    assert (ns,) in top and (ns, "b") not in top, "top-level listing must not include children"
    # tables in a nested namespace
    tbl = cat.create_table((ns, "b", "d", "deep"), schema=lib.iceberg_schema(), partition_spec=lib.day_spec())
    assert tbl.location().startswith(local_server.warehouse.rstrip("/") + f"/{ns}/b/d/deep-"), tbl.location()
    tbl.append(lib.make_rows("deep", 4))
    assert cat.list_tables((ns, "b", "d")) == [(ns, "b", "d", "deep")]
    deep = cat.load_table((ns, "b", "d", "deep")).scan().to_arrow()
    assert lib.rows_of(deep) == lib.rows_of(lib.make_rows("deep", 4))
    # listing under a missing parent
    with pytest.raises(NoSuchNamespaceError):
        cat.list_namespaces((ns + "_nope",))


def _paginate(api: lib.Api, path: str, key: str, params: dict, page_size: int = 2, max_pages: int = 50) -> list:
    items: list = []
    token = ""
    pages = 0
    while True:
        resp = api.get(path, params={**params, "pageToken": token, "pageSize": page_size})
        assert resp.status_code == 200, describe(resp)
        body = resp.json()
        page = body.get(key, [])
        assert len(page) <= page_size, f"page larger than pageSize={page_size}" + describe(resp)
        items.extend(page)
        pages += 1
        token = body.get("next-page-token")
        if not token:
            break
        assert page, "an empty page with a next-page-token" + describe(resp)
        assert pages < max_pages, "pagination does not terminate"
    return items


def test_namespace_pagination(local_server: lib.CatalogServer, ns: str):
    api = local_server.api()
    api.create_namespace([ns])
    children = [f"c{i}" for i in range(7)]
    for child in children:
        api.create_namespace([ns, child])
    got = _paginate(api, "/v1/namespaces", "namespaces", {"parent": ns})
    assert sorted(map(tuple, got)) == sorted((ns, c) for c in children), got
    assert len(got) == len(children), f"duplicates across pages: {got}"
    # without pageToken: everything in one response (the spec says so for paginating servers)
    resp = api.get("/v1/namespaces", params={"parent": ns})
    assert resp.status_code == 200, describe(resp)
    assert sorted(map(tuple, resp.json()["namespaces"])) == sorted((ns, c) for c in children)
    assert not resp.json().get("next-page-token")
    # the parent in the query takes the %1F form for nested parents
    api.create_namespace([ns, "c0", "x"])
    resp = api.get("/v1/namespaces", params={"parent": f"{ns}\x1fc0"})
    assert resp.status_code == 200, describe(resp)
    assert resp.json()["namespaces"] == [[ns, "c0", "x"]]
    # a bad page size or token is a client error, not a crash
    for bad in ({"pageSize": "0"}, {"pageSize": "-1"}, {"pageSize": "many"}, {"pageToken": "not-a-token"}):
        resp = api.get("/v1/namespaces", params={"parent": ns, **bad})
        if resp.status_code != 200:
            lib.assert_client_error(resp)


def test_table_pagination(local_server: lib.CatalogServer, ns: str):
    api = local_server.api()
    api.create_namespace([ns])
    names = [f"t{i}" for i in range(5)]
    for name in names:
        api.create_table(ns, name)
    got = _paginate(api, f"/v1/namespaces/{ns}/tables", "identifiers", {})
    assert sorted(i["name"] for i in got) == names, got
    assert len(got) == len(names), f"duplicates across pages: {got}"
    assert all(i["namespace"] == [ns] for i in got), got
    # pyiceberg lists them too
    assert sorted(local_server.catalog().list_tables(ns)) == [(ns, n) for n in names]


def test_namespace_properties(local_server: lib.CatalogServer, ns: str):
    api = local_server.api()
    created = api.create_namespace([ns], {"keep": "1", "drop": "2", "change": "3"})
    assert created["namespace"] == [ns]
    assert created.get("properties", {}).get("keep") == "1"

    resp = api.post(f"/v1/namespaces/{ns}/properties",
                    json={"removals": ["drop", "never-there"], "updates": {"change": "33", "new": "4"}})
    assert resp.status_code == 200, describe(resp)
    body = resp.json()
    assert sorted(body["updated"]) == ["change", "new"], describe(resp)
    assert body["removed"] == ["drop"], describe(resp)
    assert body.get("missing") == ["never-there"], describe(resp)

    resp = api.get(f"/v1/namespaces/{ns}")
    assert resp.status_code == 200, describe(resp)
    props = resp.json()["properties"]
    assert props.get("keep") == "1" and props.get("change") == "33" and props.get("new") == "4"
    assert "drop" not in props

    # a key both updated and removed is a client error (422 in the spec)
    resp = api.post(f"/v1/namespaces/{ns}/properties", json={"removals": ["keep"], "updates": {"keep": "x"}})
    lib.assert_client_error(resp)
    assert api.get(f"/v1/namespaces/{ns}").json()["properties"].get("keep") == "1"
    # properties of a missing namespace
    assert_error(api.post(f"/v1/namespaces/{ns}_missing/properties", json={"updates": {"a": "b"}}),
                 404, "NoSuchNamespaceException")

    # pyiceberg's summary
    summary = local_server.catalog().update_namespace_properties(ns, removals={"new", "ghost"}, updates={"z": "9"})
    assert summary.updated == ["z"] and summary.removed == ["new"] and summary.missing == ["ghost"]


def test_exists_via_head(local_server: lib.CatalogServer, ns: str):
    api = local_server.api()
    assert api.head(f"/v1/namespaces/{ns}").status_code == 404
    api.create_namespace([ns])
    resp = api.head(f"/v1/namespaces/{ns}")
    assert resp.status_code == 204, describe(resp)
    assert resp.content == b""
    assert api.head(table_path(ns, "t")).status_code == 404
    api.create_table(ns, "t")
    resp = api.head(table_path(ns, "t"))
    assert resp.status_code == 204, describe(resp)
    api.create_namespace([ns, "child"])
    assert api.head(f"/v1/namespaces/{ns_path([ns, 'child'])}").status_code == 204
    assert api.head(f"/v1/namespaces/{ns_path([ns, 'other'])}").status_code == 404
    cat = local_server.catalog()
    assert cat.namespace_exists(ns) and not cat.namespace_exists(ns + "_x")
    assert cat.table_exists((ns, "t")) and not cat.table_exists((ns, "u"))


def test_drop_namespace(local_server: lib.CatalogServer, ns: str):
    api = local_server.api()
    api.create_namespace([ns])
    api.create_namespace([ns, "child"])
    # a namespace with a child namespace is not empty either
    resp = api.delete(f"/v1/namespaces/{ns}")
    assert_error(resp, 409, "NamespaceNotEmptyException")
    resp = api.delete(f"/v1/namespaces/{ns_path([ns, 'child'])}")
    assert resp.status_code == 204, describe(resp)
    resp = api.delete(f"/v1/namespaces/{ns}")
    assert resp.status_code == 204, describe(resp)
    assert api.head(f"/v1/namespaces/{ns}").status_code == 404
    # and it can be created again
    api.create_namespace([ns])


def test_metrics_endpoint(local_server: lib.CatalogServer, ns: str):
    api = local_server.api()
    api.create_namespace([ns])
    api.create_table(ns, "t")
    scan_report = {
        "report-type": "scan-report",
        "table-name": f"floe_test.{ns}.t",
        "snapshot-id": -1,
        "filter": True,
        "schema-id": 0,
        "projected-field-ids": [1, 2, 3],
        "projected-field-names": ["ts_utc", "site_id", "value"],
        "metrics": {
            "total-planning-duration": {"count": 1, "time-unit": "nanoseconds", "total-duration": 2644235},
            "result-data-files": {"unit": "count", "value": 0},
        },
    }
    resp = api.post(table_path(ns, "t") + "/metrics", json=scan_report)
    assert resp.status_code == 204, describe(resp)
    commit_report = {
        "report-type": "commit-report",
        "table-name": f"floe_test.{ns}.t",
        "snapshot-id": 1234,
        "sequence-number": 1,
        "operation": "append",
        "metrics": {"added-data-files": {"unit": "count", "value": 1}},
        "metadata": {"engine": "test"},
    }
    resp = api.post(table_path(ns, "t") + "/metrics", json=commit_report)
    assert resp.status_code == 204, describe(resp)
