"""A Kafka topic as a job's source, through the binary against a real broker (Kafka 4.1, one
KRaft node: infra/local/kafka.sh) and `floe catalog serve`, read back by pyiceberg:

  * records of several partitions land once; a run with nothing new commits nothing; a run
    after more records takes only those; rejects name the partition and the offset;
  * SIGKILL at random points of runs (reading, writing, around the commit) while a producer
    keeps writing: after a final clean run every produced record is in the table once;
  * concurrent runs on one topic never duplicate: one fails loudly, or they land disjoint
    offsets.

Every process and request stays on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import random
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

import floe_testlib as lib
from floe_testlib import write_pipeline
from test_ingest import INGEST_TIMEOUT_S, ingest_env

pytestmark = pytest.mark.kafka

UTC = dt.timezone.utc
DAYS = ["2024-05-01", "2024-05-02", "2024-05-03"]


def make_topic(brokers: str, partitions: int = 2) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"readings-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": brokers})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=30)
    return name


def producer(brokers: str):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": brokers, "linger.ms": 5, "enable.idempotence": True})


def record(i: int) -> bytes:
    day = DAYS[i % len(DAYS)]
    return json.dumps({"id": i, "ts": f"{day}T{i % 24:02d}:00:00Z", "v": i * 0.5}).encode()


def produce(p, topic: str, values: list[bytes], partition: int | None = None) -> None:
    for v in values:
        if partition is None:
            p.produce(topic, v)
        else:
            p.produce(topic, v, partition=partition)
        p.poll(0)
    assert p.flush(30) == 0, "the producer did not deliver everything"


def job(ns: str, brokers: str, topic: str, **extra) -> dict:
    return {
        "name": "readings", "table": f"{ns}.readings",
        "source": {"kafka": brokers, "topic": topic, "format": "json"},
        "event_time": {"kind": "offset", "column": "ts"},
        "reject_threshold": 0.5,
        "columns": [{"name": "id", "type": "long", "required": True},
                    {"name": "v", "type": "double"}],
        **extra,
    }


def cmd(pipeline: Path, *args: str) -> list[str]:
    # No --from/--to: a Kafka run reads up to the end offsets whatever the window.
    return [lib.floe_bin(), "ingest", "--pipeline", str(pipeline), *args]


def run(server, pipeline: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd(pipeline, *args), capture_output=True, text=True, timeout=INGEST_TIMEOUT_S,
                          env=ingest_env(server), cwd=pipeline.parent, stdin=subprocess.DEVNULL)


def ok(out: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert out.returncode == 0, "floe ingest failed" + lib.explain(out)
    return out


def ids(server, ns: str) -> list[int]:
    table = server.catalog().load_table(f"{ns}.readings")
    return [r["id"] for r in table.scan(selected_fields=("id",)).to_arrow().to_pylist()]


def test_records_land_once_and_runs_resume_from_the_tables_offsets(local_server, kafka_brokers, ns, tmp_path):
    server = local_server
    topic = make_topic(kafka_brokers, partitions=2)
    p = producer(kafka_brokers)
    produce(p, topic, [record(i) for i in range(0, 60, 2)], partition=0)
    produce(p, topic, [record(i) for i in range(1, 60, 2)], partition=1)
    # Partition 1, offsets 30 and 31: a record that is not JSON and one whose id is not a number.
    produce(p, topic, [b"{not json", json.dumps({"id": "x", "ts": "2024-05-01T00:00:00Z"}).encode()], partition=1)
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [job(ns, kafka_brokers, topic)])
    report = tmp_path / "report.json"
    ok(run(server, pipeline, "--report", str(report)))

    got = ids(server, ns)
    assert sorted(got) == list(range(60)), "each record once"
    r = lib.job_report(lib.read_report(report), "readings")
    assert r["status"] == "committed" and r["rows_rejected"] == 2, r
    assert json.loads(r["kafka"]["to"]) == {topic: {"0": 30, "1": 32}}, r["kafka"]
    per_day = collections.Counter(DAYS[i % 3] for i in range(60))
    assert {d: v["rows_written"] for d, v in r["days"].items()} == dict(per_day), r["days"]

    table = server.catalog().load_table(f"{ns}.readings")
    summary = table.current_snapshot().summary
    assert summary.operation.value == "append"
    assert json.loads(summary["floe.state.kafka.offsets"]) == {topic: {"0": 30, "1": 32}}
    sources = {r["_source"] for r in table.scan(selected_fields=("_source",)).to_arrow().to_pylist()}
    assert sources == {f"kafka://{kafka_brokers}/{topic}/0", f"kafka://{kafka_brokers}/{topic}/1"}

    rejects = server.catalog().load_table(f"{ns}.readings__rejects").scan().to_arrow().to_pylist()
    assert sorted((x["source"], x["line"]) for x in rejects) == [
        (f"kafka://{kafka_brokers}/{topic}/1", 30), (f"kafka://{kafka_brokers}/{topic}/1", 31)], rejects
    assert {x["raw"] for x in rejects} == {"{not json", '{"id": "x", "ts": "2024-05-01T00:00:00Z"}'}

    # Nothing new: nothing committed (no snapshot), status up-to-date.
    snapshots = len(table.metadata.snapshots)
    ok(run(server, pipeline, "--report", str(report)))
    assert lib.job_report(lib.read_report(report), "readings")["status"] == "up-to-date"
    assert len(server.catalog().load_table(f"{ns}.readings").metadata.snapshots) == snapshots

    # More records: only those are taken.
    produce(p, topic, [record(i) for i in range(60, 90)])
    ok(run(server, pipeline))
    assert sorted(ids(server, ns)) == list(range(90))

    # The window flags do not filter a Kafka run: rows keep their own days.
    produce(p, topic, [record(i) for i in range(90, 93)])
    ok(run(server, pipeline, "--from", "2030-01-01", "--to", "2030-01-01"))
    assert sorted(ids(server, ns)) == list(range(93))


def test_a_kafka_job_is_refused_what_it_cannot_keep(local_server, kafka_brokers, ns, tmp_path):
    server = local_server
    topic = make_topic(kafka_brokers, partitions=1)
    for extra, words in [({"mode": "overwrite"}, "not for a Kafka source"),
                         ({"format": "delta"}, "Iceberg tables only")]:
        pipeline = write_pipeline(tmp_path / "bad.toml", server, [job(ns, kafka_brokers, topic, **extra)])
        out = run(server, pipeline)
        assert out.returncode == 2 and words in out.stderr, lib.explain(out)
    pipeline = write_pipeline(tmp_path / "gone.toml", server, [job(ns, kafka_brokers, "no-such-topic")])
    out = run(server, pipeline)
    assert out.returncode == 2 and "does not exist" in out.stderr, lib.explain(out)


class KeepProducing:
    """Produces records with increasing ids on a thread until stopped."""

    def __init__(self, brokers: str, topic: str):
        self.p = producer(brokers)
        self.topic = topic
        self.sent = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop_flag.is_set():
            for _ in range(50):
                self.p.produce(self.topic, record(self.sent))
                self.sent += 1
            self.p.poll(0)
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(30)
        assert self.p.flush(30) == 0


@pytest.mark.slow
def test_sigkill_anywhere_loses_and_duplicates_nothing(local_server, kafka_brokers, ns, tmp_path):
    server = local_server
    topic = make_topic(kafka_brokers, partitions=3)
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [job(ns, kafka_brokers, topic)])
    rng = random.Random(18)
    kills, finished = 0, 0
    with KeepProducing(kafka_brokers, topic) as prod:
        time.sleep(1)
        # A clean run's length, to spread the kills over reading, writing and the commit.
        started = time.monotonic()
        ok(run(server, pipeline))
        length = time.monotonic() - started
        before = len(server.catalog().load_table(f"{ns}.readings").metadata.snapshots)
        for i in range(20):
            # Mostly inside a run (reading, writing, committing), some after it ends.
            delay = length * rng.uniform(0.05, 2.0)
            proc = subprocess.Popen(cmd(pipeline), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=ingest_env(server), cwd=tmp_path, stdin=subprocess.DEVNULL)
            try:
                proc.wait(timeout=delay)
                finished += 1
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            out, err = proc.communicate(timeout=60)
            assert proc.returncode in (0, -signal.SIGKILL), f"run {i} exited {proc.returncode}:\n{out}\n{err}"
    produced = prod.sent
    # Commits made by the loop's runs: more than the runs that finished means some were killed
    # after their commit, before they exited.
    commits = len(server.catalog().load_table(f"{ns}.readings").metadata.snapshots) - before
    ok(run(server, pipeline))
    got = ids(server, ns)
    print(f"\nkafka SIGKILL test: clean run {length:.2f}s, {kills} kills, {finished} runs finished, "
          f"{commits} commits in the loop, {produced} records produced, {len(got)} rows")
    dupes = [k for k, n in collections.Counter(got).items() if n > 1]
    assert not dupes, f"{len(dupes)} ids landed twice, e.g. {dupes[:5]}"
    assert sorted(got) == list(range(produced)), f"{produced - len(set(got))} records missing"
    assert kills >= 3, "too few kills to mean anything"


def test_concurrent_runs_never_duplicate(local_server, kafka_brokers, ns, tmp_path):
    server = local_server
    topic = make_topic(kafka_brokers, partitions=2)
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [job(ns, kafka_brokers, topic)])
    p = producer(kafka_brokers)
    total, outcomes = 0, []
    for round_ in range(3):
        produce(p, topic, [record(i) for i in range(total, total + 500)])
        total += 500
        procs = [subprocess.Popen(cmd(pipeline), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=ingest_env(server), cwd=tmp_path, stdin=subprocess.DEVNULL)
                 for _ in range(2)]
        results = [(pr.wait(timeout=INGEST_TIMEOUT_S), pr.communicate()[1]) for pr in procs]
        for code, err in results:
            assert code == 0 or (code == 2 and "another run moved" in err), err
        outcomes.append(sorted(code for code, _ in results))
        ok(run(server, pipeline))  # whatever a loser left is taken now
        got = ids(server, ns)
        assert sorted(got) == list(range(total)), f"round {round_}: {outcomes}"
    print(f"\nkafka concurrent runs, exit codes per round: {outcomes}")


def wait_for_ids(server, ns: str, want: int, proc: subprocess.Popen, timeout_s: float = 90) -> list[int]:
    """Polls the table until it holds `want` rows (bounded), failing early if floe exited."""
    deadline = time.monotonic() + timeout_s
    got: list[int] = []
    while time.monotonic() < deadline:
        assert proc.poll() is None, "floe --follow exited:\n" + (proc.stderr.read() if proc.stderr else "")
        try:
            got = ids(server, ns)
        except Exception:  # the table does not exist before the first commit
            got = []
        if len(got) >= want:
            return got
        time.sleep(0.5)
    raise AssertionError(f"the table holds {len(got)} rows after {timeout_s}s, not {want}")


def test_follow_commits_what_arrives_and_stops_cleanly_on_sigterm(local_server, kafka_brokers, ns, tmp_path):
    server = local_server
    topic = make_topic(kafka_brokers, partitions=2)
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [job(ns, kafka_brokers, topic)])
    p = producer(kafka_brokers)
    proc = subprocess.Popen(cmd(pipeline, "--follow", "--commit-every", "1s", "--run-id", "follow-a"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ingest_env(server),
                            cwd=tmp_path, stdin=subprocess.DEVNULL)
    try:
        produce(p, topic, [record(i) for i in range(100)])
        assert sorted(wait_for_ids(server, ns, 100, proc)) == list(range(100))
        produce(p, topic, [record(i) for i in range(100, 150)])
        assert sorted(wait_for_ids(server, ns, 150, proc)) == list(range(150))
        # Idle runs commit nothing: no snapshot per tick.
        snapshots = len(server.catalog().load_table(f"{ns}.readings").metadata.snapshots)
        time.sleep(3)
        assert len(server.catalog().load_table(f"{ns}.readings").metadata.snapshots) == snapshots
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{out}\n{err}"
    assert "committed" in out, out
    table = server.catalog().load_table(f"{ns}.readings")
    run_ids = {s.summary["floe.run-id"] for s in table.metadata.snapshots if "floe.run-id" in s.summary}
    assert run_ids and all(r.startswith("follow-a-") for r in run_ids), run_ids
    # A bounded run after it finds nothing new.
    report = tmp_path / "report.json"
    ok(run(server, pipeline, "--report", str(report)))
    assert lib.job_report(lib.read_report(report), "readings")["status"] == "up-to-date"
    assert sorted(ids(server, ns)) == list(range(150))


def test_follow_is_for_kafka_jobs_only(local_server, kafka_brokers, ns, tmp_path):
    server = local_server
    files = {"name": "files", "table": f"{ns}.files", "source": {"path": "*.ndjson", "format": "ndjson"},
             "event_time": {"kind": "offset", "column": "ts"}, "columns": [{"name": "id", "type": "long"}]}
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [files])
    out = run(server, pipeline, "--follow")
    assert out.returncode == 2 and "does not read Kafka" in out.stderr, lib.explain(out)


def test_max_records_takes_a_backlog_in_bounded_commits(local_server, kafka_brokers, ns, tmp_path):
    server = local_server
    topic = make_topic(kafka_brokers, partitions=2)
    p = producer(kafka_brokers)
    produce(p, topic, [record(i) for i in range(0, 40, 2)], partition=0)
    produce(p, topic, [record(i) for i in range(1, 10, 2)], partition=1)
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [job(ns, kafka_brokers, topic)])
    report = tmp_path / "report.json"
    ok(run(server, pipeline, "--max-records", "10", "--report", str(report)))
    r = lib.job_report(lib.read_report(report), "readings")
    # Each partition takes its share (5), the first ones of each.
    assert json.loads(r["kafka"]["to"]) == {topic: {"0": 5, "1": 5}}, r["kafka"]
    assert sorted(ids(server, ns)) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    statuses = []
    for _ in range(10):  # bounded: 15 records left on partition 0, 5 at a time
        ok(run(server, pipeline, "--max-records", "10", "--report", str(report)))
        statuses.append(lib.job_report(lib.read_report(report), "readings")["status"])
        if statuses[-1] == "up-to-date":
            break
    assert statuses == ["committed", "committed", "committed", "up-to-date"], statuses
    got = ids(server, ns)
    assert sorted(got) == sorted(set(range(0, 40, 2)) | set(range(1, 10, 2)))


def test_the_kafka_timestamp_as_event_time(local_server, kafka_brokers, ns, tmp_path):
    server = local_server
    topic = make_topic(kafka_brokers, partitions=1)
    p = producer(kafka_brokers)
    stamps = [dt.datetime(2024, 5, 1, 23, 59, 59, 999000, tzinfo=UTC), dt.datetime(2024, 5, 2, 0, 0, tzinfo=UTC),
              dt.datetime(2024, 5, 2, 13, 30, 0, 250000, tzinfo=UTC)]
    for i, at in enumerate(stamps):
        p.produce(topic, json.dumps({"id": i, "v": 1.5}).encode(), timestamp=int(at.timestamp() * 1000))
    assert p.flush(30) == 0
    spec = job(ns, kafka_brokers, topic, event_time={"kind": "offset", "column": "kafka_ts"})
    spec["source"]["timestamp_field"] = "kafka_ts"
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [spec])
    ok(run(server, pipeline))
    rows = {r["id"]: r["ts_utc"] for r in server.catalog().load_table(f"{ns}.readings").scan().to_arrow().to_pylist()}
    assert rows == dict(enumerate(stamps)), rows


def test_csv_records_land_with_named_fields_and_rejects_at_their_offsets(local_server, kafka_brokers, ns, tmp_path):
    server = local_server
    topic = make_topic(kafka_brokers, partitions=1)
    p = producer(kafka_brokers)
    produce(p, topic, [
        b"1,2024-05-01T10:00:00Z,1.5\n",          # offset 0 (a trailing line break is not a field)
        b'2,2024-05-01T11:00:00Z,"2.5"',           # 1: quoted
        b"3,2024-05-01T12:00:00Z",                 # 2: a field short: reject
        b"",                                       # 3: empty: reject
        b'4,2024-05-02T00:00:00Z,"7"\r\n',         # 4
        b"x,2024-05-02T01:00:00Z,1",               # 5: id not a number: reject
    ])
    spec = job(ns, kafka_brokers, topic)
    spec["source"] = {"kafka": kafka_brokers, "topic": topic, "format": "csv", "fields": ["id", "ts", "v"],
                      "timestamp_field": "kafka_ts"}
    spec["columns"] = spec["columns"] + [{"name": "kafka_ts", "type": "string"}]
    spec["reject_threshold"] = 0.9
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [spec])
    report = tmp_path / "report.json"
    ok(run(server, pipeline, "--report", str(report)))
    rows = {r["id"]: r for r in server.catalog().load_table(f"{ns}.readings").scan().to_arrow().to_pylist()}
    assert {i: r["v"] for i, r in rows.items()} == {1: 1.5, 2: 2.5, 4: 7.0}, rows
    assert rows[4]["ts_utc"] == dt.datetime(2024, 5, 2, tzinfo=UTC)
    assert all(r["kafka_ts"].endswith("Z") for r in rows.values()), rows
    rejects = server.catalog().load_table(f"{ns}.readings__rejects").scan().to_arrow().to_pylist()
    assert sorted(x["line"] for x in rejects) == [2, 3, 5], rejects
    assert {x["source"] for x in rejects} == {f"kafka://{kafka_brokers}/{topic}/0"}
    assert lib.job_report(lib.read_report(report), "readings")["rows_rejected"] == 3

    # CSV records need their field names.
    spec["source"] = {k: v for k, v in spec["source"].items() if k != "fields"}
    out = run(server, write_pipeline(tmp_path / "bad.toml", server, [spec]))
    assert out.returncode == 2 and "fields" in out.stderr, lib.explain(out)


AVRO_SCHEMA = {
    "type": "record", "name": "Reading", "namespace": "energy",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "kwh", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 3}},
        {"name": "meter", "type": ["null", "string"], "default": None},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["ACTUAL", "ESTIMATE"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "double"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    ],
}


def avro_job(ns: str, brokers: str, topic: str, **source) -> dict:
    return {
        "name": "readings", "table": f"{ns}.readings",
        "source": {"kafka": brokers, "topic": topic, "format": "avro", **source},
        "event_time": {"kind": "offset", "column": "ts"},
        "reject_threshold": 0.9,
        "columns": [{"name": "id", "type": "long", "required": True},
                    {"name": "kwh", "type": "decimal(10, 3)"},
                    {"name": "meter", "type": "string"},
                    {"name": "kind", "type": "string"},
                    {"name": "tags", "type": "list<string>"},
                    {"name": "attrs", "type": "map<string, double>"},
                    {"name": "day", "type": "date"}],
    }


def avro_datum(i: int) -> bytes:
    import io
    from decimal import Decimal

    import fastavro

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(AVRO_SCHEMA), {
        "id": i, "ts": dt.datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC) + dt.timedelta(days=i % 2),
        "kwh": Decimal("1234567.891") if i == 0 else Decimal(i) / 1000, "meter": None if i == 1 else f"m-{i}",
        "kind": "ESTIMATE" if i % 2 else "ACTUAL", "tags": ["a", str(i)], "attrs": {"t": i + 0.5},
        "day": dt.date(2024, 5, 1)})
    return buf.getvalue()


def check_avro_rows(server, ns: str, want_ids: list[int]) -> None:
    from decimal import Decimal

    rows = {r["id"]: r for r in server.catalog().load_table(f"{ns}.readings").scan().to_arrow().to_pylist()}
    assert sorted(rows) == want_ids, rows
    assert rows[0]["kwh"] == Decimal("1234567.891") and rows[1]["kwh"] == Decimal("0.001")
    assert rows[0]["ts_utc"] == dt.datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert rows[1]["ts_utc"] == dt.datetime(2024, 5, 2, 10, 0, 0, 123456, tzinfo=UTC)
    assert rows[1]["meter"] is None and rows[2]["meter"] == "m-2"
    assert rows[0]["kind"] == "ACTUAL" and rows[1]["kind"] == "ESTIMATE"
    assert rows[2]["tags"] == ["a", "2"] and dict(rows[2]["attrs"]) == {"t": 2.5}
    assert rows[2]["day"] == dt.date(2024, 5, 1)


def test_avro_records_with_a_schema_file(local_server, kafka_brokers, ns, tmp_path):
    server = local_server
    topic = make_topic(kafka_brokers, partitions=1)
    (tmp_path / "readings.avsc").write_text(json.dumps(AVRO_SCHEMA))
    p = producer(kafka_brokers)
    produce(p, topic, [avro_datum(0), avro_datum(1), b"\x02\xff", avro_datum(2), avro_datum(3) + b"\x00"])
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [avro_job(ns, kafka_brokers, topic, schema="readings.avsc")])
    ok(run(server, pipeline))
    check_avro_rows(server, ns, [0, 1, 2])
    rejects = server.catalog().load_table(f"{ns}.readings__rejects").scan().to_arrow().to_pylist()
    got = sorted((x["line"], x["reason"]) for x in rejects)
    assert [line for line, _ in got] == [2, 4], got
    assert "does not decode" in got[0][1] and "ends early" in got[0][1], got
    assert "left after the record" in got[1][1], got

    # A schema file that is not a schema is a configuration error naming it.
    (tmp_path / "bad.avsc").write_text('{"type": "record", "name": "R"}')
    bad = write_pipeline(tmp_path / "bad.toml", server, [avro_job(ns, kafka_brokers, topic, schema="bad.avsc")])
    out = run(server, bad)
    assert out.returncode == 2 and "bad.avsc" in out.stderr, lib.explain(out)


class Registry:
    """A local stand-in for a Confluent schema registry: GET /schemas/ids/<id> (its documented shape)."""

    def __init__(self, schemas: dict[int, dict]):
        import http.server

        schemas_text = {i: json.dumps(s) for i, s in schemas.items()}
        self.asked: list[int] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                m = re.fullmatch(r"/schemas/ids/(\d+)", self.path)
                found = m and int(m[1]) in schemas_text
                if m:
                    outer.asked.append(int(m[1]))
                body = json.dumps({"schema": schemas_text[int(m[1])]} if found else
                                  {"error_code": 40403, "message": "Schema not found"}).encode()
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def framed(schema_id: int, datum: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + datum


def test_avro_records_through_a_schema_registry(local_server, kafka_brokers, ns, tmp_path):
    server = local_server
    topic = make_topic(kafka_brokers, partitions=1)
    registry = Registry({7: AVRO_SCHEMA})
    try:
        p = producer(kafka_brokers)
        produce(p, topic, [framed(7, avro_datum(0)), framed(7, avro_datum(1)), framed(99, avro_datum(5)),
                           avro_datum(6), framed(7, avro_datum(2))])
        pipeline = write_pipeline(tmp_path / "floe.toml", server,
                                  [avro_job(ns, kafka_brokers, topic, schema_registry=registry.url)])
        ok(run(server, pipeline))
        check_avro_rows(server, ns, [0, 1, 2])
        assert sorted(set(registry.asked)) == [7, 99] and registry.asked.count(7) == 1, registry.asked
        rejects = server.catalog().load_table(f"{ns}.readings__rejects").scan().to_arrow().to_pylist()
        got = sorted((x["line"], x["reason"]) for x in rejects)
        assert [line for line, _ in got] == [2, 3], got
        assert "schema id 99 is not in the registry" in got[0][1], got
        assert "framing" in got[1][1], got
    finally:
        registry.stop()
    # The registry is gone: the run fails naming it, and commits nothing (its records are not bad).
    before = len(server.catalog().load_table(f"{ns}.readings").metadata.snapshots)
    produce(p, topic, [framed(7, avro_datum(3))])
    out = run(server, pipeline)
    assert out.returncode != 0 and "schema registry" in out.stderr, lib.explain(out)
    assert len(server.catalog().load_table(f"{ns}.readings").metadata.snapshots) == before
