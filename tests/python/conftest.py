"""Fixtures for floe's Python acceptance tests of `floe catalog serve`.

Environment (see README.md):
  FLOE_BIN                 the floe binary (default /root/.cache/floe/target/debug/floe)
  FLOE_TEST_REQUIRE_SERVER =1: a missing or server-less binary fails the run instead of skipping
  FLOE_TEST_POSTGRES       =1: also run the Postgres-backed tests (infra/local/postgres.sh)
  FLOE_TEST_POSTGRES_URL   or: use this running Postgres (postgres://postgres@127.0.0.1:PORT/DB)
  FLOE_TEST_KAFKA          =1: also run the Kafka tests, starting a broker (infra/local/kafka.sh)
  FLOE_TEST_KAFKA_BROKERS  or: use this running broker (127.0.0.1:PORT); without either the Kafka
                           tests are skipped, or fail under CI=true
  FLOE_SPARK_JARS          Spark's Iceberg, Delta and S3 jars, comma-separated, and
  FLOE_SPARK_PYTHON        a python with pyspark 3.5: both printed by infra/local/spark.sh install;
                           without them the Spark tests are skipped, or fail under CI=true
  FLOE_WEED_BIN            the SeaweedFS `weed` binary (default: the one beside this python)
  FLOE_TRINO_HOME          an installed Trino (infra/local/trino.sh install); without it the Trino
                           tests are skipped, or fail under CI=true
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import floe_testlib as lib

# Everything these tests talk to is on 127.0.0.1: no proxies, no AWS identity or instance
# metadata lookups from this process (the S3 credentials are always passed explicitly).
for _key in [k for k in os.environ if k.startswith("AWS_") or k.lower() in ("http_proxy", "https_proxy", "all_proxy")]:
    del os.environ[_key]
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

# Every catalog server any test started, for log capture and liveness checks.
ALL_SERVERS: list[lib.CatalogServer] = []

_LOG_MARKS = pytest.StashKey[dict]()
_SERVER_CHECK: dict[str, str | None] = {}


def pytest_configure(config):
    for marker, text in [
        ("s3", "uses the SeaweedFS S3 stand-in"),
        ("postgres", "needs FLOE_TEST_POSTGRES=1"),
        ("mariadb", "needs FLOE_TEST_MARIADB=1 or FLOE_TEST_MARIADB_URL"),
        ("kafka", "needs FLOE_TEST_KAFKA=1 or FLOE_TEST_KAFKA_BROKERS"),
        ("spark", "needs FLOE_SPARK_JARS and FLOE_SPARK_PYTHON (infra/local/spark.sh install)"),
        ("trino", "needs FLOE_TRINO_HOME (infra/local/trino.sh install)"),
        ("slow", "takes more than a few seconds"),
    ]:
        config.addinivalue_line("markers", f"{marker}: {text}")


# ---------------------------------------------------------------------------------------
# the binary


def _server_unavailable_reason() -> str | None:
    if "reason" in _SERVER_CHECK:
        return _SERVER_CHECK["reason"]
    binary = lib.floe_bin()
    reason = None
    if not os.path.exists(binary):
        reason = f"floe binary not found at {binary} (build it, or set FLOE_BIN)"
    else:
        try:
            out = subprocess.run([binary, "catalog", "serve", "--help"], capture_output=True, timeout=60,
                                 stdin=subprocess.DEVNULL)
            if out.returncode != 0:
                reason = (f"`{binary} catalog serve --help` exited {out.returncode}: "
                          f"{(out.stderr or out.stdout).decode(errors='replace')[-500:]}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"`{binary} catalog serve --help` failed: {exc!r}"
    _SERVER_CHECK["reason"] = reason
    return reason


@pytest.fixture(scope="session")
def floe_server_available() -> None:
    reason = _server_unavailable_reason()
    if reason:
        if os.environ.get("FLOE_TEST_REQUIRE_SERVER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


# ---------------------------------------------------------------------------------------
# S3 stand-in


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("seaweedfs")
    server = lib.start_seaweedfs(root / "data", root / "weed.log")
    yield server
    lib.stop_process(server.proc, 5)


# ---------------------------------------------------------------------------------------
# catalog servers


def _new_server(tmp_dir: Path, *, kind: str = "local", s3: lib.S3Server | None = None,
                warehouse: str | None = None, db: str | None = None, token: str | None = None,
                client_id: str | None = None, client_secret: str | None = None,
                vend_credentials: bool = False, name: str | None = None,
                extra_args: tuple[str, ...] = (), start: bool = True) -> lib.CatalogServer:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    args: list[str] = []
    env = lib.clean_env(NO_COLOR="1")
    if kind == "local":
        if warehouse is None:
            wh_dir = tmp_dir / "warehouse"
            wh_dir.mkdir(exist_ok=True)
            warehouse = wh_dir.as_uri()
    elif kind == "s3":
        assert s3 is not None
        if warehouse is None:
            warehouse = f"s3://{s3.bucket}/{lib.unique('wh')}"
        if db is None:
            db = f"sqlite://{tmp_dir / 'catalog.db'}"
        args += ["--s3-endpoint", s3.endpoint, "--s3-region", s3.region, "--s3-path-style"]
        env.update(AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key)
    else:
        raise ValueError(kind)
    if db is not None:
        args += ["--db", db]
    if name is not None:
        args += ["--name", name]
    if token is not None:
        args += ["--token", token]
    if client_id is not None:
        args += ["--client-id", client_id, "--client-secret", client_secret or ""]
    if vend_credentials:
        args.append("--vend-credentials")
    args += list(extra_args)
    server = lib.CatalogServer(
        warehouse=warehouse, args=args, env=env, log_path=tmp_dir / "floe-catalog.log",
        port=lib.free_port(), name=name or "floe", token=token, client_id=client_id,
        client_secret=client_secret, s3=s3 if kind == "s3" else None, db=db,
    )
    ALL_SERVERS.append(server)
    if start:
        server.start()
    return server


@pytest.fixture
def catalog_server(request, tmp_path, floe_server_available):
    """Factory: catalog_server(kind="local"|"s3", db=..., token=..., client_id=..., ...).

    Each call starts a fresh server (its own warehouse, port and log) that is stopped at the
    end of the test. The object has .uri, .warehouse, .stop(), .restart(), .catalog(), .api().
    """
    made: list[lib.CatalogServer] = []

    def make(kind: str = "local", **opts) -> lib.CatalogServer:
        s3 = request.getfixturevalue("s3_server") if kind == "s3" else None
        server = _new_server(tmp_path / f"server{len(made)}", kind=kind, s3=s3, **opts)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture(scope="session")
def local_server(tmp_path_factory, floe_server_available):
    """One shared server on a local-folder warehouse (SQLite default db). Tests that use it
    work in their own random namespaces."""
    server = _new_server(tmp_path_factory.mktemp("local-server"), kind="local")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_catalog_server(tmp_path_factory, s3_server, floe_server_available):
    """One shared server on an S3 (SeaweedFS) warehouse, SQLite db in a temp folder."""
    server = _new_server(tmp_path_factory.mktemp("s3-server"), kind="s3", s3=s3_server)
    yield server
    server.stop()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def warehouse_server(request) -> lib.CatalogServer:
    """The shared server of each warehouse kind: a local folder and S3."""
    if request.param == "local":
        return request.getfixturevalue("local_server")
    return request.getfixturevalue("s3_catalog_server")


@pytest.fixture
def ns() -> str:
    """A fresh namespace name (not created)."""
    return lib.unique("ns")


# ---------------------------------------------------------------------------------------
# Postgres and Spark (optional)


@pytest.fixture(scope="session")
def postgres_url():
    given = os.environ.get("FLOE_TEST_POSTGRES_URL")
    if given:  # a server someone else started (infra/test.sh does), trust auth, user postgres
        yield given
        return
    if os.environ.get("FLOE_TEST_POSTGRES") != "1":
        pytest.skip("Postgres tests are off: set FLOE_TEST_POSTGRES=1 (starts one with infra/local/postgres.sh) "
                    "or FLOE_TEST_POSTGRES_URL")
    # Not under pytest's basetemp: that is private to root, and postgres runs as `postgres`.
    data_dir = Path(tempfile.mkdtemp(prefix="floe-pg-", dir="/tmp"))
    script = lib.REPO_ROOT / "infra" / "local" / "postgres.sh"
    port = lib.free_port()
    out = subprocess.run(["bash", str(script), "start", str(data_dir), str(port)], capture_output=True,
                         text=True, timeout=600, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        pytest.fail(f"postgres.sh start failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    url = out.stdout.strip().splitlines()[-1]
    assert url.startswith("postgres://"), out.stdout
    yield url
    subprocess.run(["bash", str(script), "stop", str(data_dir)], capture_output=True, timeout=120,
                   stdin=subprocess.DEVNULL)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb():
    """One MariaDB server for the session: (URL without password, password)."""
    given = os.environ.get("FLOE_TEST_MARIADB_URL")
    if given:  # a server someone else started (infra/test.sh does)
        yield given, os.environ["FLOE_TEST_MARIADB_PASSWORD"]
        return
    if os.environ.get("FLOE_TEST_MARIADB") != "1":
        reason = ("MariaDB tests are off: set FLOE_TEST_MARIADB=1 (starts one with infra/local/mariadb.sh) "
                  "or FLOE_TEST_MARIADB_URL and FLOE_TEST_MARIADB_PASSWORD")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    script = lib.REPO_ROOT / "infra" / "local" / "mariadb.sh"
    work = Path(tempfile.mkdtemp(prefix="floe-mariadb-", dir="/tmp"))
    password = "maria-" + os.urandom(6).hex()
    out = subprocess.run(["bash", str(script), "start", str(work), str(lib.free_port()), password],
                         capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        pytest.fail(f"mariadb.sh start failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    yield out.stdout.strip().splitlines()[-1], password
    subprocess.run(["bash", str(script), "stop", str(work)], capture_output=True, timeout=120,
                   stdin=subprocess.DEVNULL)
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_brokers():
    """One Kafka broker (KRaft, broker and controller in one JVM) for the session."""
    given = os.environ.get("FLOE_TEST_KAFKA_BROKERS")
    if given:  # a broker someone else started (infra/test.sh does)
        yield given
        return
    if os.environ.get("FLOE_TEST_KAFKA") != "1":
        reason = ("Kafka tests are off: set FLOE_TEST_KAFKA=1 (starts one with infra/local/kafka.sh) "
                  "or FLOE_TEST_KAFKA_BROKERS")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    script = lib.REPO_ROOT / "infra" / "local" / "kafka.sh"
    cache = os.environ.get("FLOE_CACHE_DIR", str(Path.home() / ".cache" / "floe"))
    out = subprocess.run(["bash", str(script), "install", cache], capture_output=True, text=True, timeout=900,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        pytest.fail(f"kafka.sh install failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    work = Path(tempfile.mkdtemp(prefix="floe-kafka-", dir="/tmp"))
    out = subprocess.run(["bash", str(script), "start", str(work), str(lib.free_port())], capture_output=True,
                         text=True, timeout=180, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        pytest.fail(f"kafka.sh start failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    address = out.stdout.strip().splitlines()[-1]
    yield address
    subprocess.run(["bash", str(script), "stop", str(work)], capture_output=True, timeout=120,
                   stdin=subprocess.DEVNULL)
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def fresh_postgres_db(postgres_url):
    """A new, empty database on the test Postgres, as a URL for --db."""
    import re

    m = re.match(r"postgres://(?P<user>[^@]+)@(?P<host>[^:/]+):(?P<port>\d+)/(?P<db>.+)$", postgres_url)
    assert m, postgres_url
    name = lib.unique("floe")
    cmd = ["psql", "-X", "-q", "-h", m["host"], "-p", m["port"], "-U", m["user"], "-d", m["db"],
           "-c", f'CREATE DATABASE "{name}"']
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return f"postgres://{m['user']}@{m['host']}:{m['port']}/{name}"


@pytest.fixture(scope="session")
def spark_env():
    """pyspark and the jars of infra/local/spark.sh: {"python": ..., "jars": "a.jar,b.jar,..."}.
    FLOE_SPARK_ICEBERG_JAR is an older name of FLOE_SPARK_JARS. Without them the Spark tests
    are skipped, or fail under CI=true."""
    jars = os.environ.get("FLOE_SPARK_JARS") or os.environ.get("FLOE_SPARK_ICEBERG_JAR")
    python = os.environ.get("FLOE_SPARK_PYTHON")
    missing = [name for name, value in [("FLOE_SPARK_JARS", jars), ("FLOE_SPARK_PYTHON", python)] if not value]
    reason = None
    if missing:
        reason = f"Spark tests need {' and '.join(missing)} (infra/local/spark.sh install CACHE_DIR prints them)"
    elif absent := [jar for jar in jars.split(",") if not os.path.exists(jar)]:
        reason = f"FLOE_SPARK_JARS names jars that do not exist: {', '.join(absent)}"
    elif not shutil.which(python) and not os.path.exists(python):
        reason = f"FLOE_SPARK_PYTHON={python} not found"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the Spark tests")
        pytest.skip(reason)
    return {"python": python, "jars": jars}


@pytest.fixture(scope="session")
def trino_home() -> str:
    home = os.environ.get("FLOE_TRINO_HOME")
    reason = None
    if not home:
        reason = "Trino tests need FLOE_TRINO_HOME (infra/local/trino.sh install CACHE_DIR prints it)"
    elif not os.path.exists(os.path.join(home, "bin", "launcher")):
        reason = f"FLOE_TRINO_HOME={home} has no bin/launcher"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the Trino tests")
        pytest.skip(reason)
    return home


TRINO: list[lib.TrinoServer] = []


@pytest.fixture(scope="session")
def trino(tmp_path_factory, trino_home, s3_server, floe_server_available):
    """One Trino for the whole session (it takes ~30 s to start), started by
    infra/local/trino.sh with two Iceberg catalogs, each on its own `floe catalog serve`:
    `iceberg` on a local-folder warehouse and `iceberg_s3` on the S3 server. Those two
    catalog servers are Trino's alone, so tests may use fixed namespaces (bronze, silver,
    gold) in them."""
    root = tmp_path_factory.mktemp("trino")
    servers = {
        "local": ("iceberg", _new_server(root / "local-catalog", kind="local")),
        "s3": ("iceberg_s3", _new_server(root / "s3-catalog", kind="s3", s3=s3_server)),
    }
    try:
        server = lib.start_trino(root / "trino", trino_home, servers)
    except BaseException:
        for _, catalog in servers.values():
            catalog.stop()
        raise
    TRINO.append(server)
    yield server
    TRINO.remove(server)
    lib.stop_trino(server)
    for _, catalog in servers.values():
        catalog.stop()


# ---------------------------------------------------------------------------------------
# server logs on failure, and a crashed shared server fails the test that crashed it


@pytest.fixture(autouse=True)
def _server_log_marks(request):
    marks = {id(s): s.log_size() for s in ALL_SERVERS}
    request.node.stash[_LOG_MARKS] = marks
    alive_before = [s for s in ALL_SERVERS if s.running]
    yield
    died = [s for s in alive_before if not s.running and not s.stopped_on_purpose]
    if died:
        details = "\n".join(f"{s.uri} exited with {s.proc.returncode}:\n{lib.tail(s.log_path, 8000)}" for s in died)
        pytest.fail(f"a catalog server died during this test:\n{details}", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    marks = item.stash.get(_LOG_MARKS, {})
    for server in ALL_SERVERS:
        start = marks.get(id(server), 0)
        if server.log_size() > start:
            rep.sections.append((f"floe catalog serve log ({server.uri}, {server.warehouse})",
                                 lib.tail(server.log_path, 20000, start)))
    if "trino" in item.fixturenames:
        for server in TRINO:
            rep.sections.append((f"Trino server log ({server.url})", server.log_tail(6000)))
