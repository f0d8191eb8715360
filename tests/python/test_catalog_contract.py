"""Contract checks against the Iceberg REST OpenAPI document (shared/reference/).

1. openapi-core validates every response of a scripted walk through all the operations floe
   implements (success and error paths) against the spec: status declared, body schema.
2. schemathesis generates a bounded number of requests per implemented operation (valid and
   invalid) and requires that none gets a 5xx.

floe serves the API without a prefix, so the spec's `/v1/{prefix}/...` paths are rewritten
to `/v1/...` first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import floe_testlib as lib
from floe_testlib import describe, table_path

IMPLEMENTED = [
    "getConfig", "getToken", "listNamespaces", "createNamespace", "loadNamespaceMetadata", "namespaceExists",
    "dropNamespace", "updateProperties", "listTables", "createTable", "registerTable", "loadTable",
    "updateTable", "dropTable", "tableExists", "renameTable", "reportMetrics", "commitTransaction",
]


def _spec_path() -> Path:
    explicit = os.environ.get("FLOE_REST_SPEC")
    if explicit:
        return Path(explicit)
    for candidate in (lib.REPO_ROOT.parent / "shared" / "reference" / "iceberg-rest-catalog-open-api.yaml",
                      Path("/work/shared/reference/iceberg-rest-catalog-open-api.yaml")):
        if candidate.exists():
            return candidate
    pytest.skip("the Iceberg REST OpenAPI document is not found (set FLOE_REST_SPEC)")


def _stringify_keys(obj):
    if isinstance(obj, dict):
        return {str(k): _stringify_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_stringify_keys(v) for v in obj]
    return obj


def _nullable_to_31(obj):
    """The document is OpenAPI 3.1 but still says `nullable: true` (3.0) in a few schemas, e.g.
    PageToken, whose description requires `"next-page-token": null` on the last page. 3.1
    validators ignore `nullable`; spell it the 3.1 way so that null is accepted where meant."""
    if isinstance(obj, dict):
        obj = {k: _nullable_to_31(v) for k, v in obj.items()}
        if obj.pop("nullable", False) is True and isinstance(obj.get("type"), str):
            obj["type"] = [obj["type"], "null"]
        return obj
    if isinstance(obj, list):
        return [_nullable_to_31(v) for v in obj]
    return obj


def unprefixed_spec(base_url: str) -> dict:
    """The spec with `/{prefix}` removed from every path and one concrete server."""
    import yaml

    spec = _nullable_to_31(_stringify_keys(yaml.safe_load(_spec_path().read_text())))
    prefix_ref = "#/components/parameters/prefix"
    paths = {}
    for path, item in spec["paths"].items():
        item = dict(item)
        for key, value in list(item.items()):
            if key == "parameters":
                item[key] = [p for p in value if p.get("$ref") != prefix_ref]
            elif isinstance(value, dict) and "parameters" in value:
                value = dict(value)
                value["parameters"] = [p for p in value["parameters"] if p.get("$ref") != prefix_ref]
                item[key] = value
        paths[path.replace("/{prefix}", "")] = item
    spec["paths"] = paths
    spec["servers"] = [{"url": base_url}]
    return spec


def _walk(server: lib.CatalogServer, ns: str) -> list:
    """Every implemented operation, its success path and its usual error paths."""
    api = server.api()
    api.get("/v1/config")
    api.get("/v1/config", params={"warehouse": server.name})
    api.post("/v1/namespaces", json={"namespace": [ns], "properties": {"owner": "contract"}})
    api.post("/v1/namespaces", json={"namespace": [ns]})  # 409
    api.post("/v1/namespaces", json={"namespace": [ns, "child"]})
    api.get("/v1/namespaces")
    api.get("/v1/namespaces", params={"parent": ns})
    api.get("/v1/namespaces", params={"parent": ns, "pageToken": "", "pageSize": 1})
    api.get(f"/v1/namespaces/{ns}")
    api.get(f"/v1/namespaces/{ns}_missing")  # 404
    api.head(f"/v1/namespaces/{ns}")
    api.head(f"/v1/namespaces/{ns}_missing")
    api.post(f"/v1/namespaces/{ns}/properties", json={"removals": ["owner", "ghost"], "updates": {"a": "b"}})
    api.post(f"/v1/namespaces/{ns}/properties", json={"removals": ["a"], "updates": {"a": "c"}})  # 422
    api.post(f"/v1/namespaces/{ns}/tables", json={"name": "t", "schema": lib.RAW_SCHEMA,
                                                   "partition-spec": {"spec-id": 0, "fields": [
                                                       {"name": "ts_utc_day", "transform": "day",
                                                        "source-id": 1, "field-id": 1000}]},
                                                   "properties": {"p": "1"}})
    api.post(f"/v1/namespaces/{ns}/tables", json={"name": "t", "schema": lib.RAW_SCHEMA})  # 409
    api.post(f"/v1/namespaces/{ns}/tables", json={"name": "staged", "schema": lib.RAW_SCHEMA,
                                                   "stage-create": True})
    api.post(f"/v1/namespaces/{ns}_missing/tables", json={"name": "t", "schema": lib.RAW_SCHEMA})  # 404
    api.get(f"/v1/namespaces/{ns}/tables")
    api.get(f"/v1/namespaces/{ns}/tables", params={"pageToken": "", "pageSize": 1})
    api.get(f"/v1/namespaces/{ns}_missing/tables")  # 404
    # write some data so metadata has snapshots, manifests, statistics-free history
    cat = server.catalog()
    cat.load_table((ns, "t")).append(lib.make_rows("contract", 4))
    loaded = api.get(table_path(ns, "t"))
    api.get(table_path(ns, "t"), params={"snapshots": "refs"})
    api.get(table_path(ns, "missing"))  # 404
    api.head(table_path(ns, "t"))
    api.head(table_path(ns, "missing"))
    meta = loaded.json()
    uuid = meta["metadata"]["table-uuid"]
    api.post(table_path(ns, "t"), json={"requirements": [{"type": "assert-table-uuid", "uuid": uuid}],
                                        "updates": [{"action": "set-properties", "updates": {"q": "1"}}]})
    api.post(table_path(ns, "t"), json={"requirements": [{"type": "assert-ref-snapshot-id", "ref": "main",
                                                          "snapshot-id": 1}], "updates": []})  # 409
    api.post(table_path(ns, "missing"), json={"requirements": [], "updates": []})  # 404
    api.post(table_path(ns, "t"), json={"requirements": [], "updates": [{"action": "frobnicate"}]})  # 400
    api.post(table_path(ns, "t") + "/metrics", json={
        "report-type": "commit-report", "table-name": f"{ns}.t", "snapshot-id": 1, "sequence-number": 1,
        "operation": "append", "metrics": {"added-records": {"unit": "count", "value": 4}}})
    api.post("/v1/transactions/commit", json={"table-changes": [
        {"identifier": {"namespace": [ns], "name": "t"}, "requirements": [],
         "updates": [{"action": "set-properties", "updates": {"tx": "1"}}]}]})
    api.post("/v1/transactions/commit", json={"table-changes": [
        {"identifier": {"namespace": [ns], "name": "t"},
         "requirements": [{"type": "assert-table-uuid", "uuid": "00000000-0000-0000-0000-000000000000"}],
         "updates": []}]})  # 409
    api.post("/v1/tables/rename", json={"source": {"namespace": [ns], "name": "t"},
                                        "destination": {"namespace": [ns], "name": "t2"}})
    api.post("/v1/tables/rename", json={"source": {"namespace": [ns], "name": "t"},
                                        "destination": {"namespace": [ns], "name": "t3"}})  # 404
    api.delete(table_path(ns, "t2"))
    api.post(f"/v1/namespaces/{ns}/register", json={"name": "t4", "metadata-location": meta["metadata-location"]})
    api.post(f"/v1/namespaces/{ns}/register", json={"name": "t4", "metadata-location": meta["metadata-location"]})
    api.delete(table_path(ns, "t4"), params={"purgeRequested": "true"})
    api.delete(table_path(ns, "t4"))  # 404
    api.delete(f"/v1/namespaces/{ns}")  # 409: not empty (child)
    api.delete(f"/v1/namespaces/{ns}%1Fchild")
    api.delete(f"/v1/namespaces/{ns}")
    api.delete(f"/v1/namespaces/{ns}")  # 404
    api.get("/v1/namespaces", params={"parent": f"{ns}_missing"})  # 404
    if server.client_id:
        api.post("/v1/oauth/tokens", data={"grant_type": "client_credentials", "client_id": server.client_id,
                                           "client_secret": server.client_secret}, token=None)
        api.post("/v1/oauth/tokens", data={"grant_type": "client_credentials", "client_id": server.client_id,
                                           "client_secret": "wrong"}, token=None)
    # 401s
    api.get("/v1/namespaces", token="wrong")
    return api.exchanges


def _validate(spec: dict, exchanges: list) -> list[str]:
    from openapi_core import OpenAPI
    from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

    openapi = OpenAPI.from_dict(spec)
    problems = []
    for resp in exchanges:
        if resp.status_code >= 500:
            problems.append("5xx response" + describe(resp, 1500))
            continue
        if resp.request.method == "HEAD":
            # no body by definition: only the status must be one the operation declares
            path = "/" + resp.request.path_url.split("?", 1)[0].split("/", 2)[2]
            template = "/v1/namespaces/{namespace}" + ("/tables/{table}" if "/tables/" in path else "")
            declared = spec["paths"][template]["head"]["responses"]
            if str(resp.status_code) not in declared:
                problems.append(f"HEAD status {resp.status_code} not declared" + describe(resp, 500))
            if resp.content:
                problems.append("HEAD response with a body" + describe(resp, 500))
            continue
        try:
            openapi.validate_response(RequestsOpenAPIRequest(resp.request), RequestsOpenAPIResponse(resp))
        except Exception as exc:  # noqa: BLE001 - every kind of violation is reported
            detail = str(exc)
            cause = exc.__cause__ or exc.__context__
            if cause is not None:
                detail += f"\n  cause: {str(cause)[:2000]}"
                errors = getattr(cause, "schema_errors", None)
                if errors:
                    detail += "\n  " + "\n  ".join(
                        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in list(errors)[:10])
            problems.append(f"{type(exc).__name__}: {detail}" + describe(resp, 1500))
    return problems


def test_responses_match_the_spec(catalog_server, ns: str):
    server = catalog_server(client_id="contract-id", client_secret="contract-secret")
    # the walk uses a token from the OAuth2 endpoint, like a real client
    resp = server.api(token=None).post("/v1/oauth/tokens", data={
        "grant_type": "client_credentials", "client_id": server.client_id,
        "client_secret": server.client_secret, "scope": "catalog"})
    assert resp.status_code == 200, describe(resp)
    server.token = resp.json()["access_token"]
    exchanges = _walk(server, ns)
    assert len(exchanges) > 40
    problems = _validate(unprefixed_spec(server.uri), exchanges)
    assert not problems, f"{len(problems)} of {len(exchanges)} responses break the spec:\n\n" + "\n\n".join(problems)


@pytest.mark.slow
def test_generated_requests_never_5xx(catalog_server, tmp_path):
    """schemathesis: examples, boundary values and fuzzed (also invalid) requests for each
    implemented operation; the only check is that the server never answers 5xx."""
    server = catalog_server()
    spec = unprefixed_spec(server.uri)
    spec_file = tmp_path / "iceberg-rest-unprefixed.json"
    spec_file.write_text(json.dumps(spec))
    st = Path(sys.executable).parent / "schemathesis"
    cmd = [str(st), "run", str(spec_file), "--url", server.uri,
           "--checks", "not_a_server_error",
           "--phases", "examples,coverage,fuzzing",
           "--max-examples", os.environ.get("FLOE_CONTRACT_MAX_EXAMPLES", "12"),
           "--seed", "20240330", "--workers", "1",
           "--request-timeout", "20", "--no-shrink",
           "--suppress-health-check", "all",
           "--output-truncate", "false",
           "--warnings", "off"]
    for op in IMPLEMENTED:
        cmd += ["--include-operation-id", op]
    env = lib.clean_env(NO_COLOR="1")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=170, cwd=tmp_path, env=env,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"schemathesis did not finish within 170 s:\n{(exc.stdout or b'')[-5000:]}")
    text = out.stdout + out.stderr
    print(text[-4000:])
    assert out.returncode == 0, f"schemathesis found server errors (exit {out.returncode}):\n{text[-15000:]}"
