"""Acceptance tests of HTTP API sources (`[job.source] api = ...`): the floe binary fetches from a
fixture API server running in this pytest process (answering in each API's real format and
counting every request), lands every body raw, and writes tables that pyiceberg reads back.

What they hold floe to (README "HTTP API sources"):
  * the bundled example rebuilt offline with `floe run --replay` from its sample landing zone
    gives the same bronze data and the same silver/gold tables as the file pipeline, and sends
    no request at all (a trap proxy counts connection attempts; the report says so);
  * OpenElectricity-shaped answers with a bearer token from the environment: the points of every
    series land with their labels, keyed in UTC; the token never shows in output, reports or
    the landing zone; a wrong token (401) and a missing variable fail the run, untouched table;
    `--replay` rebuilds the same rows (same hashes, same sources) without a request;
  * Alpha Vantage with a query-parameter key: a rate-limit body with HTTP 200 is retried and
    counted, only the window's days land; an `Error Message` body fails at once (exit 2) and
    commits nothing;
  * on an S3 warehouse, the landing zone defaults to `raw/` at the warehouse root in the bucket
    (bodies as received, zstd-compressed, and a manifest), and `--replay` works from there.

The Rust integration tests (tests/it/http.rs) cover the fault injection (429/5xx/cut bodies/
timeouts), CKAN paging, Open-Meteo per site and next-link paging; these do not repeat them.
Every process and request stays on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import tomllib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

import pytest

import floe_testlib as lib
from floe_testlib import write_pipeline

try:  # only to look inside the landed .json.zst bodies; the checks that need it say so
    import zstandard
except ImportError:  # pragma: no cover - depends on the venv
    zstandard = None

UTC = dt.timezone.utc
FLOE_TIMEOUT_S = 120.0
ENERGY = lib.REPO_ROOT / "examples" / "energy"
SQL_DIR = lib.REPO_ROOT / "sql"
META_COLUMNS = ("_ingest_time", "_source", "_hash")


# ---------------------------------------------------------------------------------------
# the fixture API server (in this process, 127.0.0.1 only)


@dataclass
class Request:
    n: int  # 1-based, in arrival order
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    target: str  # path and query as sent


@dataclass
class Reply:
    status: int
    body: Any  # bytes, str, or a JSON value
    headers: dict[str, str] = field(default_factory=dict)


class ApiServer:
    """ThreadingHTTPServer on 127.0.0.1:0; `script(request) -> Reply` answers (settable at any
    time). Records every request and the exact bytes of every body sent."""

    def __init__(self) -> None:
        self.script: Callable[[Request], Reply] = lambda req: Reply(404, {"error": "no script"})
        self.requests: list[Request] = []
        self.sent: dict[int, bytes] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                outer._handle(self)

            def log_message(self, *args):  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self.requests)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        with self._lock:
            req = Request(n=len(self.requests) + 1, path=parts.path,
                          query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                          headers={k.lower(): v for k, v in h.headers.items()}, target=h.path)
            self.requests.append(req)
        try:
            reply = self.script(req)
        except Exception as exc:  # noqa: BLE001 - a broken fixture must fail the test, not hang it
            self.errors.append(f"request {req.n} {req.target}: {exc!r}")
            reply = Reply(400, {"error": f"fixture error: {exc!r}"})  # a 4xx is not retried
        body = reply.body
        if not isinstance(body, bytes):
            body = (body if isinstance(body, str) else json.dumps(body)).encode()
        with self._lock:
            self.sent[req.n] = body
        h.send_response(reply.status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        for k, v in reply.headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def api_server():
    server = ApiServer()
    yield server
    server.close()
    assert not server.errors, "the fixture API server failed:\n" + "\n".join(server.errors)


class ConnectionTrap:
    """A 'proxy' on 127.0.0.1 that counts every connection and closes it at once: with
    HTTP(S)_PROXY pointing here, any request a process tries fails, and is counted."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.connections = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # timeout: look at the stop flag again
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


# ---------------------------------------------------------------------------------------
# running floe


def floe_env(server: lib.CatalogServer | None = None, **extra: str) -> dict[str, str]:
    """No proxies, no FLOE_* or AWS_* from outside; S3 credentials when the warehouse is on S3;
    `extra` last (the API keys live only here, never in this process's environment)."""
    env = {"NO_COLOR": "1", "RUST_BACKTRACE": "0"}
    if server is not None and server.s3 is not None:
        env.update(AWS_ACCESS_KEY_ID=server.s3.access_key, AWS_SECRET_ACCESS_KEY=server.s3.secret_key)
    env.update(extra)
    return lib.clean_env(**env)


def run_floe(*args: Any, cwd: Path, env: dict[str, str],
             timeout: float = FLOE_TIMEOUT_S) -> subprocess.CompletedProcess:
    cmd = [lib.floe_bin(), *map(str, args)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s:\n{exc.stdout}\n{exc.stderr}")
    text = out.stdout + out.stderr
    assert "panicked" not in text and "stack backtrace" not in text, "floe panicked" + lib.explain(out)
    return out


def floe_ok(*args: Any, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    out = run_floe(*args, cwd=cwd, env=env)
    assert out.returncode == 0, "floe failed" + lib.explain(out)
    return out


def ingest(pipeline: Path, frm: str, to: str, *args: Any, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_floe("ingest", "--pipeline", pipeline, "--from", frm, "--to", to, *args,
                    cwd=pipeline.parent, env=env)


# ---------------------------------------------------------------------------------------
# reading back


def _none_safe(row: tuple) -> tuple:
    return tuple((v is None, v if v is not None else 0) for v in row)


def table_rows(tbl, columns: Iterable[str] | None = None) -> list[tuple]:
    """Every row as a tuple of the given columns (default: all), sorted."""
    data = tbl.scan().to_arrow()
    cols = list(columns) if columns is not None else data.column_names
    rows = [tuple(r[c] for c in cols) for r in data.select(cols).to_pylist()]
    return sorted(rows, key=_none_safe)


def data_columns(tbl) -> list[str]:
    return [f.name for f in tbl.schema().fields if f.name not in META_COLUMNS]


def snapshot_state(cat, ident: str) -> tuple[int | None, int]:
    tbl = cat.load_table(ident)
    snap = tbl.current_snapshot()
    return (snap.snapshot_id if snap else None), len(tbl.snapshots())


# ---------------------------------------------------------------------------------------
# the landing zone


def unzstd(data: bytes) -> bytes:
    assert zstandard is not None
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def local_landing(server: lib.CatalogServer) -> Path:
    """raw/ at the root of a local-folder warehouse (the default landing zone)."""
    return lib.file_uri_to_path(server.warehouse.rstrip("/")) / "raw"


def landed_files(folder: Path) -> dict[str, bytes]:
    """Every file under a local landing folder: relative path -> bytes."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def secret_forms(secret: str) -> set[str]:
    """The credential as written, and as it looks in a URL (percent- and form-encoded)."""
    return {secret, quote(secret, safe=""), quote_plus(secret), quote(secret, safe="-._~")}


def assert_secret_absent(secret: str, texts: dict[str, str | bytes]) -> None:
    leaks = []
    for where, text in texts.items():
        blob = text if isinstance(text, bytes) else text.encode()
        for form in sorted(secret_forms(secret)):
            if form.encode() in blob:
                i = blob.index(form.encode())
                leaks.append(f"{where} ({form!r}): ...{blob[max(0, i - 80):i + len(form) + 20]!r}...")
    assert not leaks, f"the credential {secret!r} appears in:\n" + "\n".join(leaks)


def landed_texts(files: dict[str, bytes]) -> dict[str, bytes]:
    """The landing zone's files as readable bytes: manifests as they are, bodies decompressed
    (when `zstandard` is installed; otherwise the compressed bytes, which still must not hold
    the secret in clear)."""
    out = {}
    for name, data in files.items():
        if name.endswith(".json.zst") and zstandard is not None:
            out[name] = unzstd(data)
        else:
            out[name] = data
    return out


# ---------------------------------------------------------------------------------------
# 1. the bundled example, offline: `floe run --replay` == the file pipeline


def copy_example(root: Path) -> Path:
    """examples/energy (pipelines, data, sample landing zone; not its warehouse) under
    root/examples/energy, and the repository's sql/ where api.toml's [transform] models
    points (root/sql for "../../sql")."""
    dest = root / "examples" / "energy"
    dest.mkdir(parents=True)
    for name in ("floe.toml", "api.toml"):
        shutil.copy2(ENERGY / name, dest / name)
    shutil.copytree(ENERGY / "data", dest / "data")
    shutil.copytree(ENERGY / "raw", dest / "raw")
    for name in ("floe.toml", "api.toml"):
        conf = tomllib.loads((dest / name).read_text())
        assert conf["catalog"].get("embedded_warehouse") == "warehouse", f"{name} changed its [catalog]"
        models = (dest / conf["transform"]["models"]).resolve()
        if root.resolve() in models.parents:
            if not models.exists():
                shutil.copytree(SQL_DIR, models)
        else:  # not inside the copy: point the key at a copy of sql/
            text, n = re.subn(r"(?m)^models\s*=.*$", f"models = {json.dumps(str(root / 'sql'))}",
                              (dest / name).read_text())
            assert n == 1, f"{name}: no single [transform] models line"
            (dest / name).write_text(text)
            if not (root / "sql").exists():
                shutil.copytree(SQL_DIR, root / "sql")
    assert tomllib.loads((dest / "api.toml").read_text()).get("landing", {}).get("location") == "raw"
    return dest


def fetch_id(http: dict, run_id: str) -> str:
    """`<run-id>-<nonce>`: the prefix of one fetch's landed files, from the report's manifests."""
    names = {m.rsplit("/", 1)[-1].removesuffix(".manifest.json") for m in http["manifests"]}
    assert len(names) == 1, http["manifests"]
    (fid,) = names
    assert re.fullmatch(rf"{re.escape(run_id)}-[0-9a-f]{{8}}", fid), fid
    return fid


def test_example_replay_offline_equals_file_pipeline(catalog_server, tmp_path):
    first, last = "2024-03-30", "2024-04-01"
    api_dir = copy_example(tmp_path / "api")
    files_dir = copy_example(tmp_path / "files")

    # The API pipeline from its bundled landing zone, with every proxy pointing at a trap: any
    # request floe tried to send would reach the trap (and fail). 127.0.0.1 (the embedded
    # catalog) is NO_PROXY.
    trap = ConnectionTrap()
    try:
        proxies = {k: trap.url for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                                         "http_proxy", "https_proxy", "all_proxy")}
        run_id = lib.unique("replay")
        out = floe_ok("run", "--pipeline", api_dir / "api.toml", "--replay", "--from", first, "--to", last,
                      "--run-id", run_id, "--report", tmp_path / "api.json", cwd=api_dir,
                      env=floe_env(**proxies))
        time.sleep(0.3)  # let the trap accept anything still queued
        assert trap.connections == 0, f"--replay tried {trap.connections} connection(s) through the proxy" \
                                      + lib.explain(out)
        # Control: the same proxy settings do catch floe's API requests (so the zero above means
        # something). localhost is taken off NO_PROXY for this; a proxy-less client would only
        # reach localhost:1, which is closed.
        probe = tmp_path / "probe" / "probe.toml"
        probe.parent.mkdir()
        probe.write_text("\n".join([
            '[catalog]', 'embedded_warehouse = "warehouse"', '',
            *[line for scheme in ("http", "https") for line in (
                '[[job]]', f'name = "probe_{scheme}"', f'table = "probe.{scheme}"',
                'event_time = { kind = "offset", column = "t" }', 'columns = [{ name = "v", type = "double" }]',
                f'source = {{ api = "json", url = "{scheme}://localhost:1/probe", retries = 0, timeout = "5s" }}',
                '')],
        ]))
        control = ingest(probe, first, first, env=floe_env(**proxies, NO_PROXY="127.0.0.1", no_proxy="127.0.0.1"))
        assert control.returncode == 2, lib.explain(control)
        lib.wait_until("the trap proxy to see floe's probe requests", lambda: trap.connections >= 2, 10, 0.05)
    finally:
        trap.close()
    report = lib.read_report(tmp_path / "api.json")
    assert report["run_id"] == run_id
    landing = (api_dir / "raw").resolve()
    for job in ("demand", "weather"):
        rep = lib.job_report(report, job)
        assert rep["status"] == "committed", lib.explain(out)
        http = rep["http"]
        assert http is not None, rep
        assert http["replayed"] is True, http
        assert http["requests"] == 0 and http["retries"] == 0 and http["bytes"] == 0, http
        assert http["raw_files"] == [], http
        assert [lib.file_uri_to_path(m) for m in http["manifests"]] == [
            landing / job / "dt=2024-03-30" / "sample.manifest.json"], http
        assert rep["files_read"] and all(lib.file_uri_to_path(f).parent == landing / job / "dt=2024-03-30"
                                         for f in rep["files_read"]), rep["files_read"]
    assert {m["model"]: m["status"] for m in report["models"]} == {
        m: "published" for m in ("silver.dim_date", "silver.dim_site", "silver.fact_observations",
                                 "gold.daily_summary", "gold.site_daily_weather")}, lib.explain(out)

    # The same window from the example's files.
    out = floe_ok("run", "--pipeline", files_dir / "floe.toml", "--from", first, "--to", last,
                  "--report", tmp_path / "files.json", cwd=files_dir, env=floe_env())
    files_report = lib.read_report(tmp_path / "files.json")
    for job in ("demand", "weather"):
        assert lib.job_report(files_report, job)["status"] == "committed", lib.explain(out)
        assert lib.job_report(files_report, job)["http"] is None

    # Read both warehouses through `floe catalog serve` (the embedded catalogs are gone).
    api_cat = catalog_server(warehouse=(api_dir / "warehouse").as_uri()).catalog()
    files_cat = catalog_server(warehouse=(files_dir / "warehouse").as_uri()).catalog()

    expected_counts = {"bronze.demand": 3 * 48, "bronze.weather": 3 * 24 * 3}
    for ident, count in expected_counts.items():
        a, f = api_cat.load_table(ident), files_cat.load_table(ident)
        assert [x.name for x in a.schema().fields] == [x.name for x in f.schema().fields], ident
        cols = data_columns(a)
        assert "ts_utc" in cols and len(cols) > 1, cols
        got, want = table_rows(a, cols), table_rows(f, cols)
        assert len(got) == count, (ident, len(got))
        assert got == want, f"{ident}: the replayed API rows differ from the file rows, e.g. " \
                            f"{sorted(set(got) ^ set(want), key=_none_safe)[:5]}"
        # every replayed row came from a body of the bundled landing zone
        sources = {lib.file_uri_to_path(s) for s in a.scan(selected_fields=("_source",)).to_arrow()
                   .column("_source").to_pylist()}
        job = ident.split(".")[1]
        assert sources and all(s.parent == landing / job / "dt=2024-03-30" for s in sources), sources

    for ident in ("silver.fact_observations", "gold.daily_summary", "gold.site_daily_weather"):
        a, f = api_cat.load_table(ident), files_cat.load_table(ident)
        assert [x.name for x in a.schema().fields] == [x.name for x in f.schema().fields], ident
        got, want = table_rows(a), table_rows(f)
        assert got, ident
        assert got == want, f"{ident} differs between the replayed API run and the file run:\n" \
                            f"api only: {[r for r in got if r not in want][:3]}\n" \
                            f"files only: {[r for r in want if r not in got][:3]}"


# ---------------------------------------------------------------------------------------
# 2. OpenElectricity, bearer token from the environment; replay


OE_KEY_ENV = "FLOE_TEST_OE_KEY"
OE_SECRET = "secret-value-123"
OE_REGIONS = {"NSW1": 7000.0, "VIC1": 4500.0}
NEM_TZ = dt.timezone(dt.timedelta(hours=10))  # network time, no DST
OE_VERSION = "4.3.0"


def oe_value(region: str, utc: dt.datetime) -> float:
    hours = (utc - dt.datetime(2024, 1, 1, tzinfo=UTC)).total_seconds() / 3600
    return OE_REGIONS[region] + hours * 0.5


def oe_script(secret: str) -> Callable[[Request], Reply]:
    """GET /v4/data/network/NEM?metrics=energy&interval=1h&date_start=..&date_end=.. (naive
    times in network time, +10:00): hourly energy per region, as OpenElectricity v4 answers."""

    def script(req: Request) -> Reply:
        if req.path != "/v4/data/network/NEM":
            return Reply(404, {"detail": "Not Found"})
        if req.headers.get("authorization") != f"Bearer {secret}":
            return Reply(401, {"version": OE_VERSION, "created_at": "2024-01-05T10:00:00+10:00",
                               "success": False, "error": "Invalid API key", "data": []})
        assert req.query.get("metrics") == "energy" and req.query.get("interval") == "1h", req.query
        start = dt.datetime.fromisoformat(req.query["date_start"]).replace(tzinfo=NEM_TZ)
        end = dt.datetime.fromisoformat(req.query["date_end"]).replace(tzinfo=NEM_TZ)
        results = []
        for region in OE_REGIONS:
            points, t = [], start
            while t < end:
                points.append([t.strftime("%Y-%m-%dT%H:%M:%S+10:00"), oe_value(region, t.astimezone(UTC))])
                t += dt.timedelta(hours=1)
            results.append({"name": f"energy_{region}", "date_start": start.isoformat(),
                            "date_end": end.isoformat(), "columns": {"region": region}, "data": points})
        return Reply(200, {
            "version": OE_VERSION, "created_at": "2024-01-05T10:00:00+10:00", "success": True, "error": None,
            "data": [{"network_code": "NEM", "metric": "energy", "unit": "MWh", "interval": "1h",
                      "start": start.isoformat(), "end": end.isoformat(), "groupings": ["network_region"],
                      "results": results, "network_timezone_offset": "+10:00"}],
            "total_records": 2 * len(results[0]["data"]),
        })

    return script


def oe_job(ns: str, job: str, base: str) -> dict:
    return {
        "name": job,
        "table": f"{ns}.nem_energy",
        "event_time": {"kind": "offset", "column": "time"},
        # every field a point carries, so the default schema_drift = "error" holds
        "columns": [
            {"name": "region", "type": "string", "required": True},
            {"name": "energy_mwh", "type": "double", "required": True, "from": "value"},
            {"name": "network", "type": "string", "from": "network_code"},
            {"name": "metric", "type": "string"},
            {"name": "unit", "type": "string"},
            {"name": "interval", "type": "string"},
            {"name": "series", "type": "string", "from": "name"},
        ],
        "sort": ["region", "ts_utc"],
        "expect": {"key": ["region"], "cadence": "1h"},
        "source": {
            "api": "openelectricity",
            "url": f"{base}/v4/data/network/NEM",
            "params": {"metrics": "energy", "interval": "1h", "primary_grouping": "network_region",
                       "date_start": "{from}T00:00:00", "date_end": "{to_exclusive}T00:00:00"},
            "auth": {"kind": "bearer", "env": OE_KEY_ENV},
            "chunk": "day",
            # network-time days straddle UTC days: ask a day more each side
            "pad_days": 1,
            "timeout": "10s",
            "retries": 2,
            "backoff": "50ms",
            "max_backoff": "100ms",
        },
    }


OE_COLUMNS = ("region", "ts_utc", "energy_mwh", "network", "metric", "unit", "interval", "series")


def oe_expected(first: str, last: str) -> list[tuple]:
    rows = []
    day = dt.date.fromisoformat(first)
    while day <= dt.date.fromisoformat(last):
        for h in range(24):
            t = dt.datetime(day.year, day.month, day.day, h, tzinfo=UTC)
            for region in OE_REGIONS:
                rows.append((region, t, oe_value(region, t), "NEM", "energy", "MWh", "1h", f"energy_{region}"))
        day += dt.timedelta(days=1)
    return sorted(rows, key=_none_safe)


def test_openelectricity_bearer_auth_masking_and_replay(local_server, api_server, ns: str, tmp_path):
    server = local_server
    api_server.script = oe_script(OE_SECRET)
    first, last = "2024-01-01", "2024-01-02"
    job = lib.unique("oe")
    ident = f"{ns}.nem_energy"
    pipeline = write_pipeline(tmp_path / "oe.toml", server, [oe_job(ns, job, api_server.base)])
    env = floe_env(server, **{OE_KEY_ENV: OE_SECRET})
    outputs: dict[str, str] = {}
    expected = oe_expected(first, last)
    assert len(expected) == 2 * 24 * len(OE_REGIONS)

    # -- the fetch
    run_id = lib.unique("fetch")
    out = ingest(pipeline, first, last, "--run-id", run_id, "--report", tmp_path / "fetch.json", env=env)
    outputs.update({"fetch stdout": out.stdout, "fetch stderr": out.stderr})
    assert out.returncode == 0, lib.explain(out)
    rep = lib.job_report(lib.read_report(tmp_path / "fetch.json"), job)
    assert rep["status"] == "committed"
    assert rep["rows_written"] == len(expected)
    # each UTC day asked as three network days: 72 hours x 2 regions per answer
    assert rep["rows_read"] == 2 * 72 * len(OE_REGIONS), rep
    assert rep["rows_read"] == rep["rows_written"] + rep["rows_outside_window"], rep
    assert rep["expect"]["gaps"] == 0 and rep["expect"]["duplicates"] == 0, rep["expect"]
    http = rep["http"]
    assert (http["replayed"], http["requests"], http["retries"], http["pages"], http["error_bodies"],
            http["empty_responses"]) == (False, 2, 0, 2, 0, 0), http
    assert api_server.hits == 2

    # what the API saw: one request per UTC day, padded a day each side, with the token
    seen = api_server.requests
    assert all(r.headers.get("authorization") == f"Bearer {OE_SECRET}" for r in seen), [r.headers for r in seen]
    assert sorted((r.query["date_start"], r.query["date_end"]) for r in seen) == [
        ("2023-12-31T00:00:00", "2024-01-03T00:00:00"), ("2024-01-01T00:00:00", "2024-01-04T00:00:00")]
    assert all(OE_SECRET not in r.target for r in seen)

    # the rows, in UTC, with every label of their series
    cat = server.catalog()
    tbl = cat.load_table(ident)
    got = table_rows(tbl, OE_COLUMNS)
    assert len(got) == len(expected)
    assert got == expected, f"e.g. missing {[r for r in expected if r not in got][:3]}, " \
                            f"unexpected {[r for r in got if r not in expected][:3]}"
    by_key = {(r[0], r[1]): r[2] for r in got}
    assert by_key[("NSW1", dt.datetime(2024, 1, 1, 0, tzinfo=UTC))] == 7000.0
    assert by_key[("VIC1", dt.datetime(2024, 1, 2, 23, tzinfo=UTC))] == 4500.0 + 47 * 0.5
    snap = tbl.current_snapshot()
    assert snap.summary["floe.run-id"] == run_id and snap.summary["floe.job"] == job

    # the landing zone: raw/ at the warehouse root, one folder per UTC day (chunk = "day"),
    # each with its body (as received, zstd) and a manifest
    landing = local_landing(server)
    assert http["landing"].rstrip("/") == landing.as_uri(), (http["landing"], landing)
    files = landed_files(landing / job)
    manifests = {name: json.loads(data) for name, data in files.items() if name.endswith(".manifest.json")}
    bodies = {name: data for name, data in files.items() if name.endswith(".json.zst")}
    # file names: <run-id>-<nonce>-<n>.json.zst and <run-id>-<nonce>.manifest.json
    fid = fetch_id(http, run_id)
    assert sorted(manifests) == [f"dt={first}/{fid}.manifest.json", f"dt={last}/{fid}.manifest.json"], files
    assert len(bodies) == 2 and all(re.fullmatch(rf"dt=2024-01-0[12]/{re.escape(fid)}-\d+\.json\.zst", b)
                                    for b in bodies), sorted(files)
    assert sorted(lib.file_uri_to_path(f) for f in http["raw_files"]) == sorted(landing / job / b for b in bodies)
    assert sorted(lib.file_uri_to_path(m) for m in http["manifests"]) == sorted(landing / job / m for m in manifests)
    for name, m in manifests.items():
        day = name[3:13]
        assert (m["job"], m["run_id"], m["api"], m["first_day"], m["last_day"]) == (
            job, run_id, "openelectricity", day, day), m
        assert len(m["parts"]) == 1 and m["parts"][0]["vars"] == {}, m
        pages = m["parts"][0]["pages"]
        assert len(pages) == 1 and pages[0]["records"] == 72 * len(OE_REGIONS), m
        assert f"dt={day}/{pages[0]['file']}" in bodies, (m, sorted(bodies))
        assert pages[0]["url"].startswith(f"{api_server.base}/v4/data/network/NEM?"), m
    if zstandard is not None:  # stored exactly as received
        assert sorted(unzstd(b) for b in bodies.values()) == sorted(api_server.sent.values())
    # every row's _source is one of the landed bodies
    sources = set(tbl.scan(selected_fields=("_source",)).to_arrow().column("_source").to_pylist())
    assert sources == set(http["raw_files"]), (sources, http["raw_files"])
    fetched = table_rows(tbl, (*OE_COLUMNS, "_hash", "_source"))

    # -- --replay with a new run id: not one request, the same rows, hashes and sources
    replay_id = lib.unique("replay")
    out = ingest(pipeline, first, last, "--replay", "--run-id", replay_id, "--report", tmp_path / "replay.json",
                 env=env)
    outputs.update({"replay stdout": out.stdout, "replay stderr": out.stderr})
    assert out.returncode == 0, lib.explain(out)
    assert api_server.hits == 2, "--replay sent requests"
    rep = lib.job_report(lib.read_report(tmp_path / "replay.json"), job)
    assert rep["status"] == "committed" and rep["rows_written"] == len(expected), rep
    assert rep["http"]["replayed"] is True and rep["http"]["requests"] == 0 and rep["http"]["raw_files"] == [], rep
    assert sorted(rep["http"]["manifests"]) == sorted(http["manifests"])
    tbl = cat.load_table(ident)
    assert tbl.current_snapshot().summary["floe.run-id"] == replay_id
    assert table_rows(tbl, (*OE_COLUMNS, "_hash", "_source")) == fetched
    after_replay = snapshot_state(cat, ident)

    # -- a wrong token: the API says 401, the run fails at once (no retry), nothing committed
    wrong = "wrong-key-456"
    out = ingest(pipeline, first, last, "--run-id", lib.unique("wrong"), "--report", tmp_path / "wrong.json",
                 env=floe_env(server, **{OE_KEY_ENV: wrong}))
    outputs.update({"wrong-key stdout": out.stdout, "wrong-key stderr": out.stderr})
    assert out.returncode == 2, lib.explain(out)
    assert "401" in out.stderr, lib.explain(out)
    new = api_server.requests[2:]
    assert 1 <= len(new) <= 2, [r.target for r in new]  # at most one per series in flight; not retried
    assert all(r.headers.get("authorization") == f"Bearer {wrong}" for r in new)
    rep = lib.job_report(lib.read_report(tmp_path / "wrong.json"), job)
    assert rep["status"] == "failed" and rep["snapshot_id"] is None, rep
    assert rep["http"]["retries"] == 0, rep["http"]
    assert_secret_absent(wrong, {"wrong-key stdout": out.stdout, "wrong-key stderr": out.stderr,
                                 "wrong.json": (tmp_path / "wrong.json").read_text()})
    assert snapshot_state(cat, ident) == after_replay

    # -- the variable unset: a configuration error before any request
    hits = api_server.hits
    out = ingest(pipeline, first, last, "--run-id", lib.unique("nokey"), env=floe_env(server))
    assert out.returncode == 2, lib.explain(out)
    assert OE_KEY_ENV in out.stderr, lib.explain(out)
    assert api_server.hits == hits
    assert snapshot_state(cat, ident) == after_replay

    # -- the secret: nowhere in floe's output, the reports, the landing zone or the rows
    texts: dict[str, str | bytes] = dict(outputs)
    for name in ("fetch.json", "replay.json"):
        texts[name] = (tmp_path / name).read_text()
    texts.update({f"landing {k}": v for k, v in landed_texts(landed_files(landing / job)).items()})
    texts["table rows"] = repr(cat.load_table(ident).scan().to_arrow().to_pylist())
    assert_secret_absent(OE_SECRET, texts)


# ---------------------------------------------------------------------------------------
# 3. Alpha Vantage: key in the query, rate-limit and error bodies with HTTP 200


AV_KEY_ENV = "FLOE_TEST_AV_KEY"
# A key as Alpha Vantage hands them out, and one with characters a URL must escape (README:
# credentials are masked in messages, reports and the landing zone, whatever they hold).
AV_SECRETS = {"plain-key": "Q7ZK2M9X4B1R8T3W", "url-special-key": "av_key/Z9+q="}
# Daily adjusted closes (newest first, as the API lists them); the window is Wed 2024-05-01 to
# Sun 2024-05-05: three trading days inside, a weekend without any.
AV_CLOSES = {"2024-05-07": 170.75, "2024-05-06": 169.5, "2024-05-03": 167.25, "2024-05-02": 165.5,
             "2024-05-01": 164.25, "2024-04-30": 166.0, "2024-04-29": 168.125}
# A pace to keep (retried after the backoff), and the daily quota used up (not retried).
AV_INFO = ("Thank you for using Alpha Vantage! Please consider spreading out your free API requests more "
           "sparingly (1 request per second).")
AV_QUOTA = ("Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day. "
            "Please subscribe to any of the premium plans to instantly remove all daily rate limits.")
AV_ERROR = ("Invalid API call. Please retry or visit the documentation "
            "(https://www.alphavantage.co/documentation/) for TIME_SERIES_DAILY_ADJUSTED.")


def av_data() -> dict:
    series = {}
    for i, (date, close) in enumerate(AV_CLOSES.items()):
        series[date] = {"1. open": f"{close - 1:.4f}", "2. high": f"{close + 1:.4f}", "3. low": f"{close - 2:.4f}",
                        "4. close": f"{close + 0.5:.4f}", "5. adjusted close": f"{close:.4f}",
                        "6. volume": str(4_000_000 + i * 1000), "7. dividend amount": "0.0000",
                        "8. split coefficient": "1.0"}
    return {"Meta Data": {"1. Information": "Daily Time Series with Splits and Dividend Events",
                          "2. Symbol": "IBM", "3. Last Refreshed": "2024-05-07", "4. Output Size": "Compact",
                          "5. Time Zone": "US/Eastern"},
            "Time Series (Daily)": series}


def av_script(mode: str, secret: str) -> Callable[[Request], Reply]:
    """/query?function=...&symbol=IBM&apikey=...: always HTTP 200, as Alpha Vantage does.
    mode "throttle-once": a rate-limit body for the first request, then data; "error": an
    error body for every request."""

    def script(req: Request) -> Reply:
        if req.path != "/query":
            return Reply(404, {"detail": "Not Found"})
        if req.query.get("apikey") != secret:
            return Reply(200, {"Error Message": "the parameter apikey is invalid or missing. Please claim your "
                                                "free API key on (https://www.alphavantage.co/support/#api-key)."})
        assert (req.query.get("function"), req.query.get("symbol")) == ("TIME_SERIES_DAILY_ADJUSTED", "IBM"), req
        if mode == "error":
            return Reply(200, {"Error Message": AV_ERROR})
        if mode == "quota":
            return Reply(200, {"Information": AV_QUOTA})
        if req.n == 1:
            return Reply(200, {"Information": AV_INFO})
        return Reply(200, av_data())

    return script


def av_job(ns: str, job: str, base: str) -> dict:
    return {
        "name": job,
        "table": f"{ns}.prices",
        "event_time": {"kind": "date", "column": "date"},
        "columns": [
            {"name": "symbol", "type": "string", "required": True},
            {"name": "adjusted_close", "type": "double", "required": True},
            {"name": "volume", "type": "long"},
        ],
        "schema_drift": "ignore",
        "expect": {"empty_days": "allow"},
        "source": {
            "api": "alpha_vantage",
            "url": f"{base}/query",
            "params": {"function": "TIME_SERIES_DAILY_ADJUSTED", "symbol": "IBM", "outputsize": "compact"},
            "auth": {"kind": "query", "name": "apikey", "env": AV_KEY_ENV},
            "chunk": "window",
            "concurrency": 1,
            "timeout": "10s",
            "backoff": "50ms",
            "max_backoff": "50ms",
        },
    }


@pytest.mark.parametrize("key", list(AV_SECRETS))
def test_alpha_vantage_query_key_rate_limit_and_error_bodies(local_server, api_server, ns: str, tmp_path, key):
    secret = AV_SECRETS[key]
    server = local_server
    first, last = "2024-05-01", "2024-05-05"
    job = lib.unique("av")
    ident = f"{ns}.prices"
    pipeline = write_pipeline(tmp_path / "av.toml", server, [av_job(ns, job, api_server.base)])
    env = floe_env(server, **{AV_KEY_ENV: secret})
    cat = server.catalog()

    # -- a rate-limit body first (HTTP 200), retried after the backoff, then the data
    api_server.script = av_script("throttle-once", secret)
    run_id = lib.unique("av")
    out = ingest(pipeline, first, last, "--run-id", run_id, "--report", tmp_path / "ok.json", env=env)
    assert out.returncode == 0, lib.explain(out)
    outputs = {"ok stdout": out.stdout, "ok stderr": out.stderr}
    rep = lib.job_report(lib.read_report(tmp_path / "ok.json"), job)
    http = rep["http"]
    assert (http["requests"], http["retries"], http["error_bodies"], http["pages"]) == (2, 1, 1, 1), http
    assert api_server.hits == 2
    assert all(r.query.get("apikey") == secret for r in api_server.requests)
    assert rep["status"] == "committed"
    in_window = {d: c for d, c in AV_CLOSES.items() if first <= d <= last}
    assert rep["rows_written"] == len(in_window) == 3
    assert rep["rows_outside_window"] == len(AV_CLOSES) - len(in_window), rep
    assert rep["expect"]["empty_days"] == ["2024-05-04", "2024-05-05"], rep["expect"]
    tbl = cat.load_table(ident)
    got = table_rows(tbl, ("ts_utc", "symbol", "adjusted_close", "volume"))
    volumes = {d: 4_000_000 + i * 1000 for i, d in enumerate(AV_CLOSES)}
    assert got == sorted((dt.datetime.fromisoformat(d).replace(tzinfo=UTC), "IBM", c, volumes[d])
                         for d, c in in_window.items()), got
    before = snapshot_state(cat, ident)
    assert before[0] is not None

    # both bodies landed (the rate-limit one too); the manifest names only the data page
    landing = local_landing(server) / job / f"dt={first}"
    fid = fetch_id(http, run_id)
    assert sorted(p.name for p in landing.iterdir()) == sorted(
        [f"{fid}.manifest.json", f"{fid}-1.json.zst", f"{fid}-2.json.zst"]), list(landing.iterdir())
    manifest = json.loads((landing / f"{fid}.manifest.json").read_text())
    assert (manifest["api"], manifest["first_day"], manifest["last_day"]) == ("alpha_vantage", first, last)
    (page,) = manifest["parts"][0]["pages"]
    assert page["records"] == len(AV_CLOSES)
    assert page["url"].startswith(f"{api_server.base}/query?"), page
    if zstandard is not None:
        landed = sorted(unzstd((landing / f"{fid}-{n}.json.zst").read_bytes()) for n in (1, 2))
        assert landed == sorted(api_server.sent.values())
        assert json.loads(unzstd((landing / page["file"]).read_bytes())) == av_data()

    # -- an error body (HTTP 200): not retried, exit 2 naming it, no new snapshot
    api_server.script = av_script("error", secret)
    hits = api_server.hits
    out = ingest(pipeline, first, last, "--run-id", lib.unique("averr"), "--report", tmp_path / "err.json", env=env)
    assert out.returncode == 2, lib.explain(out)
    assert "Invalid API call" in out.stderr, lib.explain(out)
    assert api_server.hits == hits + 1, "an error body must not be retried"
    rep = lib.job_report(lib.read_report(tmp_path / "err.json"), job)
    assert rep["status"] == "failed" and rep["snapshot_id"] is None, rep
    assert (rep["http"]["error_bodies"], rep["http"]["retries"]) == (1, 0), rep["http"]
    assert snapshot_state(cat, ident) == before, "a failed run changed the table"

    # -- the daily quota used up: one request, no waiting for minutes, the message says why
    api_server.script = av_script("quota", secret)
    hits = api_server.hits
    quota = ingest(pipeline, first, last, "--run-id", lib.unique("avquota"), env=env)
    assert quota.returncode == 2, lib.explain(quota)
    assert "daily request quota" in quota.stderr and "25 requests per day" in quota.stderr, lib.explain(quota)
    assert api_server.hits == hits + 1, "a used-up daily quota must not be retried"
    assert snapshot_state(cat, ident) == before

    # the key: masked everywhere floe writes
    texts: dict[str, str | bytes] = {**outputs, "err stdout": out.stdout, "err stderr": out.stderr}
    for name in ("ok.json", "err.json"):
        texts[name] = (tmp_path / name).read_text()
    texts.update({f"landing {k}": v for k, v in landed_texts(landed_files(local_landing(server) / job)).items()})
    assert_secret_absent(secret, texts)
    # and where it was, it says so
    assert "apikey=***" in page["url"], page
    assert "apikey=***" in out.stderr, "the failure should name the request, key masked" + lib.explain(out)


# ---------------------------------------------------------------------------------------
# 4. an S3 warehouse: the landing zone in the bucket, replay from there


SITES = {"leeds": ("53.80", "-1.55"), "york": ("53.96", "-1.08")}


def wx_value(site: str, utc: dt.datetime) -> float:
    return round((8.0 if site == "leeds" else 7.0) + utc.hour * 0.25 + utc.day * 0.125, 3)


def open_meteo_script(req: Request) -> Reply:
    """/v1/archive?latitude&longitude&start_date&end_date&hourly=...&timezone=GMT."""
    if req.path != "/v1/archive":
        return Reply(404, {"error": True, "reason": "Not Found"})
    site = next(s for s, (lat, lon) in SITES.items() if (lat, lon) == (req.query["latitude"], req.query["longitude"]))
    assert req.query.get("timezone") == "GMT", req.query
    start = dt.date.fromisoformat(req.query["start_date"])
    end = dt.date.fromisoformat(req.query["end_date"])
    times, temps, winds = [], [], []
    d = start
    while d <= end:
        for h in range(24):
            t = dt.datetime(d.year, d.month, d.day, h, tzinfo=UTC)
            times.append(t.strftime("%Y-%m-%dT%H:%M"))
            temps.append(wx_value(site, t))
            winds.append(round(3.0 + h * 0.1, 2))
        d += dt.timedelta(days=1)
    return Reply(200, {"latitude": float(SITES[site][0]), "longitude": float(SITES[site][1]),
                       "generationtime_ms": 0.05, "utc_offset_seconds": 0, "timezone": "GMT",
                       "timezone_abbreviation": "GMT", "elevation": 40.0,
                       "hourly_units": {"time": "iso8601", "temperature_2m": "°C", "wind_speed_10m": "m/s"},
                       "hourly": {"time": times, "temperature_2m": temps, "wind_speed_10m": winds}})


@pytest.mark.s3
def test_s3_warehouse_landing_zone_and_replay(s3_catalog_server, api_server, ns: str, tmp_path):
    server = s3_catalog_server
    api_server.script = open_meteo_script
    first, last = "2024-06-01", "2024-06-02"
    job = lib.unique("wx")
    ident = f"{ns}.weather"
    pipeline = write_pipeline(tmp_path / "wx.toml", server, [{
        "name": job,
        "table": ident,
        "event_time": {"kind": "offset", "column": "time"},
        "columns": [
            {"name": "site_id", "type": "string", "required": True, "from": "site"},
            {"name": "temperature_c", "type": "double", "from": "temperature_2m"},
            {"name": "wind_speed_ms", "type": "double", "from": "wind_speed_10m"},
        ],
        "schema_drift": "ignore",  # latitude/longitude of for_each
        "expect": {"key": ["site_id"], "cadence": "1h"},
        "source": {
            "api": "open_meteo",
            "url": f"{api_server.base}/v1/archive",
            "params": {"latitude": "{latitude}", "longitude": "{longitude}", "start_date": "{from}",
                       "end_date": "{to}", "hourly": "temperature_2m,wind_speed_10m"},
            "chunk": "window",
            "for_each": [{"site": s, "latitude": lat, "longitude": lon} for s, (lat, lon) in SITES.items()],
            "timeout": "10s",
            "backoff": "50ms",
            "max_backoff": "100ms",
        },
    }])
    env = floe_env(server)
    expected = []
    for day in (dt.date(2024, 6, 1), dt.date(2024, 6, 2)):
        for h in range(24):
            t = dt.datetime(day.year, day.month, day.day, h, tzinfo=UTC)
            for site in SITES:
                expected.append((site, t, wx_value(site, t), round(3.0 + h * 0.1, 2)))
    expected.sort()

    run_id = lib.unique("wx")
    out = ingest(pipeline, first, last, "--run-id", run_id, "--report", tmp_path / "fetch.json", env=env)
    assert out.returncode == 0, lib.explain(out)
    rep = lib.job_report(lib.read_report(tmp_path / "fetch.json"), job)
    http = rep["http"]
    assert (http["requests"], http["pages"], http["retries"]) == (2, 2, 0), http
    assert api_server.hits == 2
    cat = server.catalog()
    tbl = cat.load_table(ident)
    assert tbl.location().startswith(f"s3://{server.s3.bucket}/")
    cols = ("site_id", "ts_utc", "temperature_c", "wind_speed_ms")
    assert table_rows(tbl, cols) == expected

    # raw/ at the warehouse root, in the bucket
    wh_key = server.s3.key_of(server.warehouse).rstrip("/")
    assert http["landing"].rstrip("/") == f"{server.warehouse.rstrip('/')}/raw", http["landing"]
    prefix = f"{wh_key}/raw/{job}/"
    keys = sorted(server.s3.list_keys(prefix))
    folder = f"{prefix}dt={first}/"
    fid = fetch_id(http, run_id)
    assert keys == sorted([f"{folder}{fid}.manifest.json", f"{folder}{fid}-1.json.zst",
                           f"{folder}{fid}-2.json.zst"]), keys
    assert sorted(http["raw_files"]) == [f"s3://{server.s3.bucket}/{k}" for k in keys if k.endswith(".json.zst")]
    assert http["manifests"] == [f"s3://{server.s3.bucket}/{folder}{fid}.manifest.json"]
    s3 = server.s3.client()
    manifest = json.loads(s3.get_object(Bucket=server.s3.bucket, Key=f"{folder}{fid}.manifest.json")["Body"].read())
    assert (manifest["job"], manifest["run_id"], manifest["api"], manifest["first_day"], manifest["last_day"]) == (
        job, run_id, "open_meteo", first, last), manifest
    assert [p["vars"]["site"] for p in manifest["parts"]] == list(SITES), manifest
    assert all(len(p["pages"]) == 1 and p["pages"][0]["records"] == 48 for p in manifest["parts"]), manifest
    raw = {k: s3.get_object(Bucket=server.s3.bucket, Key=k)["Body"].read() for k in keys if k.endswith(".zst")}
    assert all(b.startswith(b"\x28\xb5\x2f\xfd") for b in raw.values()), "landed bodies are not zstd"
    if zstandard is not None:
        assert sorted(unzstd(b) for b in raw.values()) == sorted(api_server.sent.values())
    sources = set(tbl.scan(selected_fields=("_source",)).to_arrow().column("_source").to_pylist())
    assert sources == set(http["raw_files"]), sources
    fetched = table_rows(tbl, (*cols, "_hash", "_source"))

    # replay from the bucket: no request, the same rows
    replay_id = lib.unique("replay")
    out = ingest(pipeline, first, last, "--replay", "--run-id", replay_id, "--report", tmp_path / "replay.json",
                 env=env)
    assert out.returncode == 0, lib.explain(out)
    assert api_server.hits == 2, "--replay sent requests"
    rep = lib.job_report(lib.read_report(tmp_path / "replay.json"), job)
    assert rep["http"]["replayed"] is True and rep["http"]["requests"] == 0, rep["http"]
    assert rep["http"]["manifests"] == http["manifests"]
    tbl = cat.load_table(ident)
    assert tbl.current_snapshot().summary["floe.run-id"] == replay_id
    assert table_rows(tbl, (*cols, "_hash", "_source")) == fetched
    # replay lands nothing new
    assert sorted(server.s3.list_keys(prefix)) == keys


# ---------------------------------------------------------------------------------------
# the secret scan: a whole run at FLOE_LOG=trace shows no credential anywhere


@pytest.mark.s3
def test_no_secret_in_a_full_run_at_trace(catalog_server, api_server, tmp_path):
    """An API job (bearer key) and a file job, through an OAuth catalog onto S3, at trace level:
    no credential in the output, the report, the landing zone or the rows."""
    client_secret = "oauth-s3cret-5d2c"
    server = catalog_server(kind="s3", client_id="floe-client", client_secret=client_secret)
    api_server.script = oe_script(OE_SECRET)
    ns = "scan"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "2024-01-01.ndjson").write_text(
        "".join(f'{{"t": "2024-01-01T{h:02d}:00:00Z", "v": {h}}}\n' for h in range(24)))
    files_job = {"name": "files", "table": f"{ns}.readings", "event_time": {"kind": "offset", "column": "t"},
                 "columns": [{"name": "v", "type": "double"}],
                 "source": {"path": "data/{date}.ndjson", "format": "ndjson"}}
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [oe_job(ns, "api", api_server.base), files_job])
    text = pipeline.read_text().replace("[catalog]\n", '[catalog]\ncredential = "${FLOE_TEST_CATALOG_CRED}"\n', 1)
    pipeline.write_text(text)
    env = floe_env(server, **{OE_KEY_ENV: OE_SECRET, "FLOE_LOG": "trace",
                              "FLOE_TEST_CATALOG_CRED": f"floe-client:{client_secret}"})
    report = tmp_path / "report.json"
    out = ingest(pipeline, "2024-01-01", "2024-01-01", "--report", report, env=env)
    assert out.returncode == 0, lib.explain(out)
    assert "TRACE" in out.stderr, "the run logged at trace level"
    assert api_server.hits >= 1
    status = run_floe("status", "--pipeline", pipeline, cwd=tmp_path, env=env)
    assert status.returncode == 0, lib.explain(status)

    cat = server.catalog()
    rows = {}
    for table in ("nem_energy", "readings"):
        data = cat.load_table(f"{ns}.{table}").scan().to_arrow()
        assert data.num_rows > 0
        rows[table] = json.dumps(data.to_pylist(), default=str)
    texts: dict[str, str | bytes] = {
        "ingest stdout": out.stdout, "ingest stderr": out.stderr,
        "status stdout": status.stdout, "status stderr": status.stderr,
        "report": report.read_text(), **rows,
    }
    for secret in (OE_SECRET, client_secret, server.s3.secret_key):
        assert_secret_absent(secret, texts)
