#!/usr/bin/env python3
"""Kafka source benchmark: `floe ingest` of a whole topic vs a plain Python consumer
(confluent_kafka + pyarrow) writing the same records as day-partitioned Parquet.

    bench/kafka.py [--messages 10000000] [--pairs 3] [--floe PATH] [--brokers HOST:PORT]
                   [--cases floe,plain] [--json-out FILE]

The topic (bench-readings-<N>, 3 partitions, no retention limit) holds N JSON messages

    {"id": 17, "ts": "2024-01-01T00:00:08Z", "site_id": "S00017", "demand_mw": 48.23...}

evenly over the 60 days from 2024-01-01 (2,000 sites, random doubles), message i in
partition i % 3, produced once with confluent_kafka (linger 50 ms, 1 MB batches,
--compression none by default; floe reads gzip, snappy and zstd, not lz4). It is not
produced again while the topic already holds N messages from offset 0: pass --brokers
(a running broker) or --keep-broker to reuse it across runs. The broker is
infra/local/kafka.sh's (one KRaft node on 127.0.0.1, a free port, jars installed once
into ~/.cache/floe, its data under --work) unless --brokers is given.

Cases, each a process under /usr/bin/time -v (wall time, peak RSS; the broker's memory
is not counted), each reading the whole topic from offset 0 up to the end offsets it
finds when it starts:

  floe    `floe ingest` of a job `source = { kafka = BROKERS, topic = T, format = "json" }`,
          event_time offset on ts, columns typed, into a fresh day-partitioned Iceberg
          table (bench.kafka_<run>: a new table has no offsets, so it reads from 0)
          through `floe catalog serve` on a local warehouse
  plain   the simplest fast consumer in Python: confluent_kafka, every partition
          assigned from the beginning, consume(10000) until the end offsets read at the
          start (queued.min.messages raised to 1,000,000: librdkafka's default of 100,000
          stalls the reader here, --plain-defaults keeps it), orjson (json if missing)
          per message, pyarrow tables of --batch (200,000)
          records, one pyarrow.dataset.write_dataset call writing Parquet (zstd)
          partitioned by day (hive day=YYYY-MM-DD folders). Python on purpose: a Rust
          consumer would be a second implementation of floe's job, not a baseline.

The cases alternate (floe, plain, floe, ...) for --pairs rounds; the ratio is floe's
wall time over the plain consumer's within each round, reported per round and as
the median. Rows written are checked after each run (floe status; Parquet footers).
A reference read runs once before the rounds (--no-probes to skip): the same consumer
reading every message and doing nothing with it (what librdkafka alone costs here).

Run it with the venv of infra/local/python-env.sh (confluent_kafka, pyarrow, numpy,
orjson); needs a release build of floe, Java 17 and mvn (for kafka.sh install).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DEFAULT_FLOE, ROOT, CatalogServer, day_after, exit_on_sigterm, free_port, quiet_env,  # noqa: E402
                    try_timed_run, wait_quiet, parquet_rows, du, median, add_round_args, Rounds,
                    floe_table_written, summarize, rss_goal)

FIRST_DAY = "2024-01-01"
DAYS = 60
LAST_DAY = day_after(FIRST_DAY, DAYS - 1)
SITES = 2000
PARTITIONS = 3
KAFKA_SH = ROOT / "infra" / "local" / "kafka.sh"
CACHE = Path.home() / ".cache" / "floe"

# The plain consumer: argv = brokers, topic, out folder ("-" to only read), batch rows,
# "tuned" or "defaults" (librdkafka's default queued.min.messages).
# Prints one JSON line: messages read.
PLAIN = r'''
import json, sys, uuid
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
try:
    from orjson import loads
except ImportError:
    from json import loads
import pyarrow as pa, pyarrow.compute as pc, pyarrow.dataset as ds

brokers, topic, out, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
defaults = sys.argv[5] == "defaults"
conf = {"bootstrap.servers": brokers, "group.id": "bench-plain-" + uuid.uuid4().hex,
        "enable.auto.commit": False, "enable.auto.offset.store": False}
if not defaults:
    # librdkafka prefetches until its queue holds queued.min.messages (100,000 by
    # default) and then waits for the application: raised, reading goes 4x faster here.
    conf["queued.min.messages"] = 1_000_000
c = Consumer(conf)
parts = sorted(c.list_topics(topic, timeout=30).topics[topic].partitions)
end = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in parts}
left = {p for p in parts if end[p] > 0}
c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
read = 0

def values():
    """Message values, in consume() batches, until every partition's end offset."""
    global read
    while left:
        msgs = c.consume(num_messages=10000, timeout=1.0)
        vals = []
        for m in msgs:
            if m.error():
                raise SystemExit(f"consumer error: {m.error()}")
            p, o = m.partition(), m.offset()
            if o >= end[p]:
                continue
            vals.append(m.value())
            if o == end[p] - 1:
                left.discard(p)
        read += len(vals)
        yield vals

if out == "-":
    for _ in values():
        pass
else:
    schema = pa.schema([("id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")), ("site_id", pa.string()),
                        ("demand_mw", pa.float64()), ("day", pa.date32())])

    def batches():
        buf = []
        def table(vals):
            recs = [loads(v) for v in vals]
            ts = pa.array([r["ts"] for r in recs], pa.string()).cast(pa.timestamp("us", tz="UTC"))
            return pa.RecordBatch.from_arrays([
                pa.array([r["id"] for r in recs], pa.int64()), ts,
                pa.array([r["site_id"] for r in recs], pa.string()),
                pa.array([r["demand_mw"] for r in recs], pa.float64()),
                pc.cast(ts, pa.date32())], schema=schema)
        for vals in values():
            buf.extend(vals)
            if len(buf) >= batch:
                yield table(buf)
                buf = []
        if buf:
            yield table(buf)

    ds.write_dataset(pa.RecordBatchReader.from_batches(schema, batches()), out, format="parquet",
                     partitioning=ds.partitioning(pa.schema([("day", pa.date32())]), flavor="hive"),
                     file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
                     existing_data_behavior="overwrite_or_ignore")
c.close()
print(json.dumps({"messages": read}))
'''


class Broker:
    """infra/local/kafka.sh's broker in a work folder, or given brokers. A context
    manager: stops the broker it started (unless keep), even on errors."""

    def __init__(self, work: Path, brokers: str | None, keep: bool):
        self.work, self.brokers, self.keep, self.started = work, brokers, keep, False

    def __enter__(self):
        if self.brokers:
            return self
        out = subprocess.run(["bash", str(KAFKA_SH), "install", str(CACHE)], capture_output=True, text=True,
                             timeout=1200, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-3000:])
            raise SystemExit("kafka.sh install failed")
        pid = self.work / "pid"
        running = False
        if pid.exists():
            try:
                os.kill(int(pid.read_text().strip()), 0)
                running = True
            except (OSError, ValueError):
                pass
        if not running:
            # kafka.sh waits for "Kafka Server started" in server.log, which it appends
            # to: an earlier broker's line there would pass that wait too early.
            (self.work / "server.log").unlink(missing_ok=True)
        for _ in range(5):   # kafka.sh takes PORT and PORT+1
            port = free_port()
            self.started = True
            out = subprocess.run(["bash", str(KAFKA_SH), "start", str(self.work), str(port)], capture_output=True,
                                 text=True, timeout=180, stdin=subprocess.DEVNULL)
            if out.returncode == 0:
                self.brokers = out.stdout.strip().splitlines()[-1]
                return self
            if "is taken" not in out.stderr:
                break
        self.__exit__()
        sys.stderr.write(out.stderr[-3000:])
        raise SystemExit("kafka.sh start failed")

    def __exit__(self, *exc):
        if self.started and not self.keep:
            subprocess.run(["bash", str(KAFKA_SH), "stop", str(self.work)], timeout=120, stdin=subprocess.DEVNULL)
            self.started = False
        elif self.started:
            print(f"broker left running at {self.brokers}: stop it with infra/local/kafka.sh stop {self.work}",
                  file=sys.stderr)


def topic_holds(brokers: str, topic: str) -> int | None:
    """Messages in the topic from offset 0 (None: no such topic; -1: not from 0 or
    another partition count)."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-check"})
    try:
        md = c.list_topics(timeout=30)
        if topic not in md.topics:
            return None
        parts = md.topics[topic].partitions
        if len(parts) != PARTITIONS:
            return -1
        total = 0
        for p in parts:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if lo != 0:
                return -1
            total += hi
        return total
    finally:
        c.close()


def produce(brokers: str, topic: str, n: int, compression: str):
    """Creates the topic (3 partitions) and produces n messages into it."""
    import numpy as np
    import orjson
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": brokers})
    have = topic_holds(brokers, topic)
    if have is not None:
        for f in admin.delete_topics([topic], operation_timeout=60).values():
            f.result(timeout=90)
        deadline = time.monotonic() + 60
        while topic_holds(brokers, topic) is not None:
            if time.monotonic() > deadline:
                raise SystemExit(f"topic {topic} still exists 60 s after deleting it")
            time.sleep(0.5)
    deadline = time.monotonic() + 60
    while True:
        try:
            for f in admin.create_topics([NewTopic(topic, PARTITIONS, 1, config={"retention.ms": "-1",
                                                                               "retention.bytes": "-1"})],
                                         operation_timeout=60).values():
                f.result(timeout=90)
            break
        except KafkaException as e:   # a deleted topic of the same name may linger for a moment
            if time.monotonic() > deadline:
                raise SystemExit(f"cannot create topic {topic}: {e}")
            time.sleep(1)
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 50, "batch.size": 1_000_000,
                  "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 1_048_576,
                  "compression.type": compression, "acks": 1, "enable.idempotence": False})
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(err)

    t = time.monotonic()
    rng = np.random.default_rng(42)
    start = np.datetime64(f"{FIRST_DAY}T00:00:00", "s")
    step = DAYS * 86400 / n
    chunk = 200_000
    for lo in range(0, n, chunk):
        ids = np.arange(lo, min(lo + chunk, n))
        ts = np.datetime_as_string(start + (ids * step).astype("int64").astype("timedelta64[s]"), unit="s").tolist()
        demand = rng.normal(50, 10, ids.size).tolist()
        for i, stamp, d in zip(ids.tolist(), ts, demand):
            value = orjson.dumps({"id": i, "ts": stamp + "Z", "site_id": f"S{i % SITES:05d}", "demand_mw": d})
            while True:
                try:
                    p.produce(topic, value=value, partition=i % PARTITIONS, on_delivery=delivered)
                    break
                except BufferError:
                    p.poll(0.05)
        p.poll(0)
        if errors:
            raise SystemExit(f"delivery failed: {errors[0]}")
        if (lo // chunk) % 10 == 9:
            print(f"  produced {lo + ids.size:,} messages ({time.monotonic() - t:.0f} s)", file=sys.stderr,
                  flush=True)
    left = p.flush(300)
    if left or errors:
        raise SystemExit(f"producing failed: {left} undelivered, {errors[:1]}")
    print(f"  produced {n:,} messages in {time.monotonic() - t:.0f} s", file=sys.stderr)


def floe_job(path: Path, uri: str, brokers: str, topic: str, table: str):
    path.write_text(f'''[catalog]
uri = "{uri}"

[[job]]
name = "readings"
table = "{table}"
source = {{ kafka = "{brokers}", topic = "{topic}", format = "json" }}
event_time = {{ kind = "offset", column = "ts" }}
columns = [
  {{ name = "id", type = "long", required = true }},
  {{ name = "site_id", type = "string" }},
  {{ name = "demand_mw", type = "double" }},
]
''')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000_000)
    add_round_args(ap)
    ap.add_argument("--cases", default="floe,plain")
    ap.add_argument("--floe", default=DEFAULT_FLOE)
    ap.add_argument("--brokers", help="a running broker (host:port) instead of kafka.sh's")
    ap.add_argument("--keep-broker", action="store_true",
                    help="leave kafka.sh's broker running at the end (reuse it with --brokers)")
    ap.add_argument("--topic", help="default: bench-readings-<messages>")
    ap.add_argument("--compression", default="none", choices=("none", "gzip", "snappy", "zstd"))
    ap.add_argument("--batch", type=int, default=200_000, help="plain consumer's rows per Arrow batch")
    ap.add_argument("--plain-defaults", action="store_true",
                    help="plain consumer with librdkafka's defaults (queued.min.messages 100,000: 4x slower here)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-kafka"),
                    help="broker folder (broker/) and scratch (default /tmp/bench-kafka)")
    ap.add_argument("--no-probes", action="store_true", help="skip the read-only reference consumer")
    ap.add_argument("--clean", action="store_true", help="delete the broker's folder at the end")
    args = ap.parse_args()
    exit_on_sigterm()
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in ("floe", "plain"):
            raise SystemExit(f"unknown case {c}")
    if "floe" in cases and not os.path.exists(args.floe):
        raise SystemExit(f"{args.floe} not found: cargo build --release --bin floe (or --floe PATH)")
    topic = args.topic or f"bench-readings-{args.messages}"
    plain_conf = "defaults" if args.plain_defaults else "tuned"
    n = args.messages
    args.work.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=args.work))
    floe = tmp / "floe"   # a copy: a rebuild during the run cannot mix two builds
    if os.path.exists(args.floe):
        shutil.copy2(args.floe, floe)
    results = {c: [] for c in cases}
    probes, notes = {}, []
    rounds = Rounds(args, notes)
    try:
        with Broker(args.work / "broker", args.brokers, args.keep_broker) as broker, \
                CatalogServer(str(floe), tmp / "wh", tmp / "catalog.log") as cat:
            brokers = broker.brokers
            have = topic_holds(brokers, topic)
            if have == n:
                print(f"{topic} holds {n:,} messages (cached)", file=sys.stderr)
            else:
                print(f"producing {n:,} messages into {topic} ({PARTITIONS} partitions)...", file=sys.stderr,
                      flush=True)
                produce(brokers, topic, n, args.compression)
                if topic_holds(brokers, topic) != n:
                    raise SystemExit(f"{topic} does not hold {n} messages after producing")
            topic_bytes = sum(p.stat().st_size for p in (args.work / "broker" / "data").glob(f"{topic}-*/*.log")) \
                if not args.brokers else None
            if not args.no_probes:
                t, err = try_timed_run([sys.executable, "-c", PLAIN, brokers, topic, "-", args.batch, plain_conf],
                                       timeout=args.timeout)
                if t is None:
                    notes.append(f"probe read-only failed: {err.strip()[-300:]}")
                else:
                    got = json.loads(t.stdout.strip().splitlines()[-1])["messages"]
                    probes["read-only"] = {"wall_s": t.wall, "rss_mib": t.rss, "cpu_s": t.user + t.sys,
                                           "messages": got}
                    print(f"probe read-only     {t.wall:7.2f} s  {n / t.wall / 1e6:5.2f} M msg/s  peak RSS "
                          f"{t.rss:6.0f} MiB  CPU {t.user + t.sys:6.1f} s  {got:,} messages", flush=True)
            for rnd in rounds:
                for case in cases:
                    busy = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
                    run_tmp = Path(tempfile.mkdtemp(prefix=f"{case}-", dir=tmp))
                    if case == "floe":
                        table = f"bench.kafka_{rnd}"
                        job = run_tmp / "job.toml"
                        floe_job(job, cat.uri, brokers, topic, table)
                        t, err = try_timed_run([floe, "ingest", "--pipeline", job, "--from", FIRST_DAY,
                                                "--to", LAST_DAY], quiet_env(), timeout=args.timeout)
                        if t is None:
                            sys.stderr.write(err)
                            raise SystemExit(f"floe failed: {floe} ingest --pipeline {job}")
                        rows, size = floe_table_written(str(floe), cat.uri, tmp / "wh", table)
                    else:
                        out_dir = run_tmp / "out"
                        t, err = try_timed_run([sys.executable, "-c", PLAIN, brokers, topic, out_dir, args.batch,
                                                plain_conf],
                                               timeout=args.timeout)
                        if t is None:
                            sys.stderr.write(err)
                            raise SystemExit("the plain consumer failed")
                        rows = parquet_rows(out_dir)
                        size = du(out_dir)
                    shutil.rmtree(run_tmp, ignore_errors=True)
                    r = {"round": rnd, "wall_s": t.wall, "rss_mib": t.rss, "cpu_s": t.user + t.sys,
                         "rows": rows, "bytes": size, "busy_before": busy}
                    if case == "floe":
                        r["report"] = t.stdout[-3000:]
                    if rows != n:
                        notes.append(f"{case} round {rnd} wrote {rows:,} rows, not {n:,}")
                    results[case].append(r)
                    print(f"round {rnd} {case:<6} {t.wall:7.2f} s  {n / t.wall / 1e6:5.2f} M msg/s  peak RSS "
                          f"{t.rss:6.0f} MiB  CPU {t.user + t.sys:6.1f} s  {rows:,} rows  {size / 1e6:.0f} MB"
                          + (f"  (machine {busy:.0%} busy before)" if busy is not None else ""), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if args.clean and not args.brokers and not args.keep_broker:
            shutil.rmtree(args.work / "broker", ignore_errors=True)

    print(f"\n{n:,} JSON messages over {DAYS} days in {PARTITIONS} partitions (compression {args.compression}"
          + (f", {topic_bytes / 1e6:.0f} MB of log" if topic_bytes else "") + f"); {rounds.done} alternating rounds")
    summary = summarize(results, n, "msg", "messages_per_s", 6)
    ratios = {}
    if results.get("floe") and results.get("plain"):
        rs = [f["wall_s"] / p["wall_s"] for f, p in zip(results["floe"], results["plain"])]
        ratios = {"per_round": rs, "median": median(rs)}
        print(f"  floe / plain (wall time): median {median(rs):.2f}x (round by round {', '.join(f'{x:.2f}' for x in rs)})")
        print(f"  goal floe within 1.5x of the plain consumer's time: "
              f"{'met' if ratios['median'] <= 1.5 else 'missed'} ({ratios['median']:.2f}x)")
    for case in summary:
        rss_goal(summary, case)
    for note in notes:
        print(f"  note: {note}")
    if args.json_out:
        args.json_out.write_text(json.dumps({
            "messages": n, "partitions": PARTITIONS, "topic": topic, "compression": args.compression,
            "topic_log_bytes": topic_bytes, "rounds": rounds.done, "batch": args.batch, "plain_conf": plain_conf,
            "probes": probes,
            "runs": results, "summary": summary, "ratios": ratios, "notes": notes, "floe": args.floe}, indent=2))


if __name__ == "__main__":
    main()
