"""Table commits over raw HTTP: single-table requirements and multi-table transactions that
apply to every table or to none."""

from __future__ import annotations

import floe_testlib as lib
from floe_testlib import assert_error, describe, table_path


def _ident(ns: str, name: str) -> dict:
    return {"namespace": [ns], "name": name}


def _set_props(ns: str, name: str, uuid: str, **props: str) -> dict:
    return {
        "identifier": _ident(ns, name),
        "requirements": [{"type": "assert-table-uuid", "uuid": uuid}],
        "updates": [{"action": "set-properties", "updates": props}],
    }


def test_multi_table_transaction_commits_all(local_server: lib.CatalogServer, ns: str):
    api = local_server.api()
    api.create_namespace([ns])
    a = api.create_table(ns, "a")
    b = api.create_table(ns, "b")
    body = {"table-changes": [
        _set_props(ns, "a", a["metadata"]["table-uuid"], k="v1", only_a="x"),
        _set_props(ns, "b", b["metadata"]["table-uuid"], k="v1"),
    ]}
    resp = api.post("/v1/transactions/commit", json=body)
    assert resp.status_code == 204, describe(resp)
    a2 = api.load_table(ns, "a")
    b2 = api.load_table(ns, "b")
    a_props, b_props = a2["metadata"].get("properties", {}), b2["metadata"].get("properties", {})
    assert a_props.get("k") == "v1" and a_props.get("only_a") == "x"
    assert b_props.get("k") == "v1"
    assert a2["metadata-location"] != a["metadata-location"]
    assert b2["metadata-location"] != b["metadata-location"]
    # pyiceberg sees the same
    assert local_server.catalog().load_table((ns, "b")).properties.get("k") == "v1"


def test_multi_table_transaction_is_atomic(local_server: lib.CatalogServer, ns: str):
    api = local_server.api()
    api.create_namespace([ns])
    a = api.create_table(ns, "a")
    b = api.create_table(ns, "b")
    before = {name: api.load_table(ns, name) for name in ("a", "b")}

    failing_requirements = [
        {"type": "assert-table-uuid", "uuid": "00000000-0000-0000-0000-000000000000"},
        {"type": "assert-current-schema-id", "current-schema-id": 7},
        {"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": 42},
        {"type": "assert-last-assigned-field-id", "last-assigned-field-id": 99},
        {"type": "assert-default-spec-id", "default-spec-id": 3},
        {"type": "assert-create"},
    ]
    for requirement in failing_requirements:
        body = {"table-changes": [
            _set_props(ns, "a", a["metadata"]["table-uuid"], k="must-not-land"),
            {"identifier": _ident(ns, "b"), "requirements": [requirement],
             "updates": [{"action": "set-properties", "updates": {"k": "must-not-land"}}]},
        ]}
        resp = api.post("/v1/transactions/commit", json=body)
        assert_error(resp, 409, "CommitFailedException")
        for name in ("a", "b"):
            now = api.load_table(ns, name)
            assert now["metadata-location"] == before[name]["metadata-location"], \
                f"{name} changed by a failed transaction ({requirement['type']})"
            assert "k" not in now["metadata"].get("properties", {})

    # a transaction naming a missing table changes nothing either
    body = {"table-changes": [
        _set_props(ns, "a", a["metadata"]["table-uuid"], k="must-not-land"),
        _set_props(ns, "missing", b["metadata"]["table-uuid"], k="must-not-land"),
    ]}
    resp = api.post("/v1/transactions/commit", json=body)
    assert_error(resp, 404, "NoSuchTableException")
    assert api.load_table(ns, "a")["metadata-location"] == before["a"]["metadata-location"]

    # a change without an identifier is a bad request
    body = {"table-changes": [{"requirements": [], "updates": [{"action": "set-properties", "updates": {"k": "v"}}]}]}
    lib.assert_client_error(api.post("/v1/transactions/commit", json=body))
    assert api.load_table(ns, "a")["metadata-location"] == before["a"]["metadata-location"]


def test_single_table_commit_requirements(local_server: lib.CatalogServer, ns: str):
    api = local_server.api()
    api.create_namespace([ns])
    t = api.create_table(ns, "t")
    uuid = t["metadata"]["table-uuid"]
    path = table_path(ns, "t")

    ok = {"requirements": [{"type": "assert-table-uuid", "uuid": uuid},
                           {"type": "assert-current-schema-id", "current-schema-id": 0}],
          "updates": [{"action": "set-properties", "updates": {"p": "1"}}]}
    resp = api.post(path, json=ok)
    assert resp.status_code == 200, describe(resp)
    body = resp.json()
    assert body["metadata"].get("properties", {})["p"] == "1"
    assert body["metadata-location"] != t["metadata-location"]
    assert body["metadata-location"] == api.load_table(ns, "t")["metadata-location"]
    # the new metadata file is where the response says
    if body["metadata-location"].startswith("file:"):
        assert lib.file_uri_to_path(body["metadata-location"]).is_file()

    stale = {"requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": 1}],
             "updates": [{"action": "set-properties", "updates": {"p": "2"}}]}
    assert_error(api.post(path, json=stale), 409, "CommitFailedException")
    assert api.load_table(ns, "t")["metadata"].get("properties", {})["p"] == "1"

    removal = {"requirements": [], "updates": [{"action": "remove-properties", "removals": ["p"]}]}
    resp = api.post(path, json=removal)
    assert resp.status_code == 200, describe(resp)
    assert "p" not in api.load_table(ns, "t")["metadata"].get("properties", {})
