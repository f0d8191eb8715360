"""S3 warehouses: where files land, and credential vending in LoadTable's config."""

from __future__ import annotations

import pytest

import floe_testlib as lib

pytestmark = pytest.mark.s3

CREDENTIAL_KEYS = ("s3.access-key-id", "s3.secret-access-key")


def test_files_land_under_the_warehouse_prefix(s3_catalog_server: lib.CatalogServer, ns: str):
    server = s3_catalog_server
    cat = server.catalog()
    cat.create_namespace(ns)
    tbl = cat.create_table((ns, "t"), schema=lib.iceberg_schema(), partition_spec=lib.day_spec())
    tbl.append(lib.make_rows("s3", 5))
    tbl = cat.load_table((ns, "t"))
    prefix = server.s3.key_of(tbl.location()) + "/"
    keys = server.s3.list_keys(prefix)
    assert any(k.endswith(".metadata.json") for k in keys), keys
    assert any(k.endswith(".parquet") for k in keys), keys
    assert server.s3.key_of(tbl.metadata_location) in keys
    assert prefix.startswith(server.s3.key_of(server.warehouse) + f"/{ns}/t-")


def test_no_credentials_without_vending(s3_catalog_server: lib.CatalogServer, ns: str):
    api = s3_catalog_server.api()
    api.create_namespace([ns])
    api.create_table(ns, "t")
    for resp_body in (api.load_table(ns, "t"), api.get("/v1/config").json()):
        blob = str(resp_body)
        assert lib.S3_SECRET_KEY not in blob, "the S3 secret leaked without --vend-credentials"
        for key in CREDENTIAL_KEYS:
            assert key not in resp_body.get("config", {}), resp_body.get("config")


def test_vended_credentials(catalog_server, ns: str):
    server = catalog_server("s3", vend_credentials=True)
    api = server.api()
    api.create_namespace([ns])
    created = api.create_table(ns, "t")
    loaded = api.load_table(ns, "t")
    for body in (created, loaded):
        config = body.get("config", {})
        assert config.get("s3.access-key-id") == lib.S3_ACCESS_KEY, config
        assert config.get("s3.secret-access-key") == lib.S3_SECRET_KEY, config
    # the secret is never in the server's log
    assert lib.S3_SECRET_KEY not in server.log_path.read_text(errors="replace")

    # a client that knows only where S3 is (no keys) reads and writes with the vended ones
    cat = server.catalog(**{"s3.access-key-id": None, "s3.secret-access-key": None})
    assert "s3.access-key-id" not in cat.properties
    tbl = cat.load_table((ns, "t"))
    rows = lib.make_rows("vended", 6)
    tbl.append(rows)
    assert lib.rows_of(cat.load_table((ns, "t")).scan().to_arrow()) == lib.rows_of(rows)
