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
