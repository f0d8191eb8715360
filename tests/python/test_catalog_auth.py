"""Authentication: a static bearer token, and OAuth2 client credentials at /v1/oauth/tokens."""

from __future__ import annotations

import time

import pytest
import floe_testlib as lib
from floe_testlib import assert_error, describe

TOKEN = "s3cr3t-static-token"


def _protected_requests(ns: str):
    return [
        ("GET", "/v1/config", None),
        ("GET", "/v1/namespaces", None),
        ("POST", "/v1/namespaces", {"namespace": [ns]}),
        ("GET", f"/v1/namespaces/{ns}", None),
        ("GET", f"/v1/namespaces/{ns}/tables", None),
        ("GET", lib.table_path(ns, "t"), None),
        ("POST", lib.table_path(ns, "t"), {"requirements": [], "updates": []}),
        ("DELETE", lib.table_path(ns, "t"), None),
        ("POST", "/v1/tables/rename", {"source": {"namespace": [ns], "name": "t"},
                                       "destination": {"namespace": [ns], "name": "u"}}),
        ("POST", "/v1/transactions/commit", {"table-changes": []}),
    ]


def test_static_token(catalog_server, ns: str):
    server = catalog_server(token=TOKEN)
    api = server.api(token=None)
    for method, path, body in _protected_requests(ns):
        resp = api.request(method, path, json=body)
        assert_error(resp, 401)
        resp = api.request(method, path, json=body, token="wrong-token")
        assert_error(resp, 401)
        resp = api.request(method, path, json=body, headers={"Authorization": f"Basic {TOKEN}"})
        assert_error(resp, 401)
    # HEAD has no body, only the status
    assert api.head(f"/v1/namespaces/{ns}").status_code == 401
    # nothing was created by the rejected requests
    authed = server.api()
    assert authed.head(f"/v1/namespaces/{ns}").status_code == 404

    cat = server.catalog()  # token=TOKEN
    cat.create_namespace(ns)
    tbl = cat.create_table((ns, "t"), schema=lib.iceberg_schema(), partition_spec=lib.day_spec())
    tbl.append(lib.make_rows("tok", 3))
    assert len(cat.load_table((ns, "t")).scan().to_arrow()) == 3

    from pyiceberg.exceptions import UnauthorizedError

    with pytest.raises(UnauthorizedError):
        server.catalog(token="not-the-token").list_namespaces()


def test_oauth_client_credentials(catalog_server, ns: str):
    server = catalog_server(client_id="floe-client", client_secret="floe-secret")
    api = server.api(token=None)
    assert_error(api.get("/v1/namespaces"), 401)

    # the token endpoint, raw
    resp = api.post("/v1/oauth/tokens", data={"grant_type": "client_credentials", "client_id": "floe-client",
                                              "client_secret": "floe-secret", "scope": "catalog"})
    assert resp.status_code == 200, describe(resp)
    body = resp.json()
    assert body["token_type"].lower() == "bearer" and body["access_token"], describe(resp)
    token = body["access_token"]
    resp = api.get("/v1/namespaces", token=token)
    assert resp.status_code == 200, describe(resp)

    for bad in ({"client_secret": "nope"}, {"client_id": "someone-else"}):
        form = {"grant_type": "client_credentials", "client_id": "floe-client", "client_secret": "floe-secret",
                "scope": "catalog", **bad}
        resp = api.post("/v1/oauth/tokens", data=form)
        assert resp.status_code in (400, 401), describe(resp)
        assert resp.json().get("error") in ("invalid_client", "unauthorized_client"), describe(resp)
    resp = api.post("/v1/oauth/tokens", data={"grant_type": "password", "client_id": "floe-client",
                                              "client_secret": "floe-secret"})
    assert resp.status_code in (400, 401), describe(resp)
    assert resp.json().get("error") in ("unsupported_grant_type", "invalid_request", "invalid_client"), describe(resp)
    # a made-up bearer token is refused
    assert_error(api.get("/v1/namespaces", token="forged." + token[-8:]), 401)

    # pyiceberg: credential="id:secret" fetches a token and works
    cat = server.catalog()
    cat.create_namespace(ns)
    tbl = cat.create_table((ns, "t"), schema=lib.iceberg_schema(), partition_spec=lib.day_spec())
    tbl.append(lib.make_rows("oauth", 4))
    assert len(cat.load_table((ns, "t")).scan().to_arrow()) == 4

    from pyiceberg.exceptions import OAuthError

    with pytest.raises(OAuthError):
        server.catalog(credential="floe-client:wrong-secret")


def test_wrong_secrets_from_one_address_are_slowed_down_whatever_the_client_id(catalog_server):
    """Guessing across made-up client ids from one address costs time too: past ten wrong
    secrets in a row from 127.0.0.1, attempts are refused unchecked (429 slow_down)."""
    server = catalog_server(client_id="floe-client", client_secret="floe-secret")
    api = server.api(token=None)
    statuses = []
    for n in range(14):
        form = {"grant_type": "client_credentials", "client_id": f"guess-{n}", "client_secret": "x"}
        resp = api.post("/v1/oauth/tokens", data=form)
        statuses.append(resp.status_code)
        if resp.status_code == 429:
            assert resp.json().get("error") == "slow_down" and resp.headers.get("retry-after"), describe(resp)
    assert statuses[:10] == [401] * 10, statuses
    assert 429 in statuses[10:], statuses
    # After the wait, the right secret works (and clears the address's count).
    deadline = time.monotonic() + 40
    while True:
        resp = api.post("/v1/oauth/tokens", data={"grant_type": "client_credentials",
                                                  "client_id": "floe-client", "client_secret": "floe-secret"})
        if resp.status_code != 429 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert resp.status_code == 200, describe(resp)


def test_health_with_token(catalog_server):
    server = catalog_server(token=TOKEN)
    resp = server.api().get("/healthz")
    assert resp.status_code == 200, describe(resp)


def _recv_until_quiet(sock, timeout: float = 1.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data + b"<EOF>"
            data += chunk
    except TimeoutError:
        return data


def test_rejected_request_leaves_connection_usable(catalog_server):
    """HTTP/1.1 keep-alive: a 401 sent before the request body was read must either say
    `Connection: close` or leave the connection usable. Clients (requests, urllib3, Java's
    HttpClient) send the headers and the body in separate writes and reuse pooled connections;
    a silent close makes their next request fail with 'connection closed without response'."""
    import socket
    import time

    server = catalog_server(token=TOKEN)
    body = b'{"namespace": ["never"]}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/namespaces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        time.sleep(0.2)  # the body follows in a second write, as http.client does it
        sock.sendall(body)
        first = _recv_until_quiet(sock)
        assert first.startswith(b"HTTP/1.1 401"), first[:300]
        head = first.split(b"\r\n\r\n", 1)[0].lower()
        if b"connection: close" in head:
            return  # announced: clients will not reuse the connection
        assert not first.endswith(b"<EOF>"), \
            "the server closed the keep-alive connection after a 401 without `Connection: close`:\n" + \
            first.decode(errors="replace")
        sock.sendall(b"GET /v1/config HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode() +
                     b"\r\n\r\n")
        second = _recv_until_quiet(sock)
        assert second.startswith(b"HTTP/1.1 200"), second[:300]
