"""The server process itself: config, health, the warehouse name, startup errors, SIGTERM."""

from __future__ import annotations

import subprocess
import time

import pytest
from pyiceberg.exceptions import RESTError

import floe_testlib as lib
from floe_testlib import assert_error, describe


def test_config_and_health(local_server: lib.CatalogServer):
    api = local_server.api()
    for params in (None, {"warehouse": local_server.name}):
        resp = api.get("/v1/config", params=params)
        assert resp.status_code == 200, describe(resp)
        body = resp.json()
        assert isinstance(body.get("defaults"), dict) and isinstance(body.get("overrides"), dict), describe(resp)
        if "endpoints" in body:
            endpoints = set(body["endpoints"])
            for needed in ("GET /v1/{prefix}/namespaces", "POST /v1/{prefix}/namespaces/{namespace}/tables",
                           "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}",
                           "POST /v1/{prefix}/transactions/commit"):
                assert needed in endpoints, f"{needed} not advertised" + describe(resp)
    resp = api.get("/healthz")
    assert resp.status_code == 200, describe(resp)


def test_warehouse_name(catalog_server, ns: str):
    server = catalog_server(name="lake")
    api = server.api()
    resp = api.get("/v1/config", params={"warehouse": "lake"})
    assert resp.status_code == 200, describe(resp)
    # a warehouse this server does not serve is an error, not silently another warehouse
    assert_error(api.get("/v1/config", params={"warehouse": "other"}), 404)
    cat = server.catalog()  # sends warehouse=lake
    cat.create_namespace(ns)
    assert (ns,) in cat.list_namespaces()
    with pytest.raises(RESTError):
        server.catalog(warehouse="other")


def test_s3_warehouse_needs_db(floe_server_available):
    cmd = [lib.floe_bin(), "catalog", "serve", "--listen", f"127.0.0.1:{lib.free_port()}",
           "--warehouse", "s3://floe-test/nodb", "--s3-endpoint", "http://127.0.0.1:9", "--s3-path-style"]
    env = lib.clean_env(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("`catalog serve` with an S3 warehouse and no --db kept running instead of refusing")
    assert out.returncode != 0
    assert "--db" in out.stderr, out.stderr


def test_sigterm_stops_server(catalog_server):
    server = catalog_server()
    cat = server.catalog()
    cat.create_namespace("before_stop")
    start = time.monotonic()
    server.stop()
    assert server.stopped_by_sigterm[-1], "server ignored SIGTERM for 10 s"
    assert time.monotonic() - start < 10
    assert lib.port_is_free(server.port) or lib.wait_until("port released", lambda: lib.port_is_free(server.port), 5)
