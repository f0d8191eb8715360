"""Acceptance tests of floe's maintenance commands: `compact`, `expire-snapshots`,
`remove-orphans`, `status` and `maintain`, run as processes against `floe catalog serve` on a
local-folder warehouse and on S3 (SeaweedFS), on tables written by pyiceberg, Spark and
`floe ingest`.

What they hold floe to (design.md, invariants 4-6):
  * maintenance never changes data: after compaction pyiceberg and Spark read the same
    multiset of rows, with position deletes applied exactly once;
  * compaction rewrites small files into target-size files, committed as `replace`
    snapshots, and neither loses a concurrent append nor undoes a concurrent overwrite;
  * expiry deletes only files no retained snapshot references, and keeps ref heads, the
    last N snapshots and each ingest job's newest run record;
  * orphan removal deletes unreferenced files older than its window and nothing else;
  * a compaction killed with SIGKILL leaves a readable table with the same rows;
  * bad input exits 2 with `floe: error: ...` naming the problem, never a panic.

Every process and request stays on 127.0.0.1 and every wait and loop is bounded.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import math
import os
import random
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import floe_testlib as lib

UTC = dt.timezone.utc
FLOE_TIMEOUT_S = 300.0

EVENTS_ARROW = pa.schema([
    pa.field("ts_utc", pa.timestamp("us", tz="UTC")),
    pa.field("site", pa.string()),
    pa.field("value", pa.float64()),
    pa.field("id", pa.int64()),
])


# ---------------------------------------------------------------------------------------
# running floe


def floe_env(server: lib.CatalogServer) -> dict[str, str]:
    """S3 credentials the usual AWS way when the warehouse is on S3 (the catalog's /v1/config
    hands out the endpoint, region and path style)."""
    # RUST_BACKTRACE off whatever the caller's shell says: error messages are compared as
    # users see them (a panic still prints "panicked").
    extra = {"NO_COLOR": "1", "RUST_BACKTRACE": "0"}
    if server.s3 is not None:
        extra.update(AWS_ACCESS_KEY_ID=server.s3.access_key, AWS_SECRET_ACCESS_KEY=server.s3.secret_key)
    return lib.clean_env(**extra)


def floe_cmd(server: lib.CatalogServer, *args: str) -> list[str]:
    return [lib.floe_bin(), *args, "--catalog", server.uri]


def run_floe(server: lib.CatalogServer, *args: str, cwd: Path, timeout: float = FLOE_TIMEOUT_S,
             with_catalog: bool = True) -> subprocess.CompletedProcess:
    cmd = floe_cmd(server, *args) if with_catalog else [lib.floe_bin(), *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=floe_env(server),
                              cwd=cwd, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s:\n{exc.stdout}\n{exc.stderr}")


explain = lib.explain


def floe_ok(server: lib.CatalogServer, *args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    out = run_floe(server, *args, cwd=cwd, **kw)
    assert out.returncode == 0, "floe failed" + explain(out)
    return out


def floe_json(server: lib.CatalogServer, *args: str, cwd: Path, **kw) -> Any:
    """Runs a command with --json, expects exit 0, returns the parsed report."""
    out = floe_ok(server, *args, "--json", cwd=cwd, **kw)
    try:
        return json.loads(out.stdout)
    except ValueError:
        raise AssertionError("--json printed something that is not JSON" + explain(out)) from None


def assert_clean_error(out: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, a `floe: error:` line naming the problem (every word, case-insensitive), and no
    panic or backtrace. Returns stderr."""
    err = out.stderr or ""
    assert out.returncode == 2, "expected exit code 2" + explain(out)
    assert "panicked" not in err and "RUST_BACKTRACE" not in err, "floe panicked" + explain(out)
    assert "Traceback" not in err and "stack backtrace" not in err, explain(out)
    assert re.search(r"(?m)^(floe: )?error: ", err), "no error line on stderr" + explain(out)
    for word in words:
        assert word.lower() in err.lower(), f"the error does not mention {word!r}" + explain(out)
    return err


# ---------------------------------------------------------------------------------------
# tables and rows


def events_schema():
    from pyiceberg.schema import Schema
    from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestamptzType

    return Schema(
        NestedField(1, "ts_utc", TimestamptzType(), required=False),
        NestedField(2, "site", StringType(), required=False),
        NestedField(3, "value", DoubleType(), required=False),
        NestedField(4, "id", LongType(), required=False),
    )


def spec_of(kind: str):
    """Partition specs of the events table by name: day(ts_utc), identity(site),
    bucket(4, id), or none."""
    from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
    from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform

    if kind == "unpartitioned":
        return UNPARTITIONED_PARTITION_SPEC
    source, transform, name = {
        "day": (1, DayTransform(), "ts_utc_day"),
        "identity": (2, IdentityTransform(), "site"),
        "bucket": (4, BucketTransform(4), "id_bucket"),
    }[kind]
    return PartitionSpec(PartitionField(source_id=source, field_id=1000, transform=transform, name=name))


def create_events_table(cat, ident: str, spec: str = "day", properties: dict[str, str] | None = None):
    namespace = ident.rsplit(".", 1)[0]
    cat.create_namespace_if_not_exists(namespace)
    return cat.create_table(ident, schema=events_schema(), partition_spec=spec_of(spec),
                            properties=properties or {})


class Events:
    """Seeded event batches with unique ids. Sites are random hex (so files do not compress
    to nothing) unless `sites` is given."""

    def __init__(self, seed: int = 7):
        self.rng = random.Random(seed)
        self.next_id = 0

    def batch(self, day: dt.date, n: int, sites: list[str] | None = None) -> pa.Table:
        midnight = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
        rng = self.rng
        ts = [midnight + dt.timedelta(microseconds=rng.randrange(86_400_000_000)) for _ in range(n)]
        site = [rng.choice(sites) if sites else f"{rng.getrandbits(128):032x}" for _ in range(n)]
        value = [round(rng.uniform(-1000, 1000), 3) for _ in range(n)]
        ids = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        return pa.table({"ts_utc": ts, "site": site, "value": value, "id": ids}, schema=EVENTS_ARROW)


def day(n: int, first: dt.date = dt.date(2024, 1, 1)) -> dt.date:
    return first + dt.timedelta(days=n)


def day_start_micros(n: int) -> int:
    """Midnight UTC starting day(n), in microseconds."""
    d = day(n)
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) * 1_000_000


def rows_of(data: pa.Table, columns: Iterable[str]) -> list[tuple]:
    """Rows as tuples, timestamps as UTC microseconds, in a canonical order (a multiset)."""
    cols = []
    for name in columns:
        col = data.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        cols.append(col.to_pylist())
    return multiset(zip(*cols))


def multiset(rows: Iterable[tuple]) -> list[tuple]:
    """Rows in a canonical order, so that two multisets compare with ==."""
    rows = [tuple(r) for r in rows]
    try:
        return sorted(rows)
    except TypeError:  # None among the values
        return sorted(rows, key=repr)


def table_rows(tbl, snapshot_id: int | None = None, columns=("ts_utc", "site", "value", "id")) -> list[tuple]:
    scan = tbl.scan(selected_fields=tuple(columns), **({"snapshot_id": snapshot_id} if snapshot_id else {}))
    return rows_of(scan.to_arrow(), columns)


def checksum(rows: Iterable[tuple]) -> str:
    h = hashlib.sha256()
    for r in multiset(rows):
        h.update(repr(r).encode() + b"\n")
    return h.hexdigest()


def assert_same_rows(got: list[tuple], expected: list[tuple], what: str = "rows") -> None:
    """The same multiset of rows (both in multiset() order): count, then every row."""
    if got == expected:
        return
    g, e = collections.Counter(got), collections.Counter(expected)
    missing, extra = list((e - g).elements()), list((g - e).elements())
    raise AssertionError(
        f"{what}: {len(got)} rows (checksum {checksum(got)[:12]}), expected {len(expected)} "
        f"(checksum {checksum(expected)[:12]}); {len(missing)} missing, e.g. {missing[:3]}; "
        f"{len(extra)} unexpected or duplicated, e.g. {extra[:3]}")


@dataclass(frozen=True)
class LiveFile:
    path: str
    partition: tuple
    size: int
    records: int
    content: int  # 0 data, 1 position deletes, 2 equality deletes


def live_files(tbl) -> list[LiveFile]:
    """The current snapshot's live data and delete files, as pyiceberg lists them."""
    files = tbl.inspect.files().to_pylist()
    return [LiveFile(f["file_path"], tuple(sorted((f.get("partition") or {}).items())), f["file_size_in_bytes"],
                     f["record_count"], f["content"]) for f in files]


def data_files(tbl) -> list[LiveFile]:
    return [f for f in live_files(tbl) if f.content == 0]


def by_partition(files: Iterable[LiveFile]) -> dict[tuple, list[LiveFile]]:
    out: dict[tuple, list[LiveFile]] = collections.defaultdict(list)
    for f in files:
        out[f.partition].append(f)
    return dict(out)


def snapshot_files(tbl, snapshot) -> set[str]:
    """Every file a snapshot references: its manifest list, manifests, live data/delete files."""
    out = {snapshot.manifest_list}
    for m in snapshot.manifests(tbl.io):
        out.add(m.manifest_path)
        out.update(e.data_file.file_path for e in m.fetch_manifest_entry(tbl.io, discard_deleted=True))
    return out


def storage_key(server: lib.CatalogServer, uri: str) -> str:
    """A file URI as lib.files_under lists it: a local path, or an S3 key."""
    if uri.startswith("file:"):
        return str(lib.file_uri_to_path(uri))
    if uri.startswith("/"):
        return uri
    return server.s3.key_of(uri)


def stored(server: lib.CatalogServer, location: str) -> set[str]:
    return set(lib.files_under(location, server.s3))


def write_stray_parquet(path: Path, rows: pa.Table, age: dt.timedelta | None = None) -> Path:
    """A real Parquet file where a killed writer would have left it; optionally aged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows, path)
    if age is not None:
        t = time.time() - age.total_seconds()
        os.utime(path, (t, t))
    return path


def append_with_retry(cat, ident: str, data: pa.Table, properties: dict[str, str] | None = None,
                      attempts: int = 60) -> int:
    """Appends, reloading and retrying on a commit conflict; returns the retries needed."""
    from pyiceberg.exceptions import CommitFailedException

    for attempt in range(attempts):
        tbl = cat.load_table(ident)
        try:
            tbl.append(data, snapshot_properties=properties or {})
            return attempt
        except CommitFailedException:
            time.sleep(random.uniform(0.01, min(0.5, 0.02 * 2 ** min(attempt, 5))))
    raise AssertionError(f"append to {ident} still conflicting after {attempts} attempts")


# ---------------------------------------------------------------------------------------
# Spark (lib.SparkSteps: a helper process, one JVM per test)


def spark_rows(rows: list[list]) -> list[tuple]:
    return multiset(tuple(r) for r in rows)


# ---------------------------------------------------------------------------------------
# 1. 300 small appends over 30 days, compacted (local folder and S3; Spark reads it too)

MANY_DAYS = 30
MANY_APPENDS = 300
MANY_ROWS = 200


@dataclass
class ManyAppends:
    """The table of section 1 as built and compacted once per warehouse kind."""

    server: lib.CatalogServer
    ident: str
    expected: list[tuple]
    files_before: list[LiveFile]
    snapshots_before: int
    target: int
    report: dict


_MANY_APPENDS: dict[str, ManyAppends] = {}


def many_appends_compacted(server: lib.CatalogServer, tmp_path_factory) -> ManyAppends:
    """300 pyiceberg appends of 200 rows, append i into day i % 30 (10 files per day), then
    one `floe compact` whose target makes every day's input bytes need two files. Built once
    per warehouse (the tests of this section only read it)."""
    kind = "s3" if server.s3 is not None else "local"
    if kind in _MANY_APPENDS:
        return _MANY_APPENDS[kind]
    cat = server.catalog()
    ident = f"{lib.unique('ns')}.many_appends"
    tbl = create_events_table(cat, ident)
    events = Events(seed=300)
    batches = [events.batch(day(i % MANY_DAYS), MANY_ROWS) for i in range(MANY_APPENDS)]
    # Ten appends per commit: each is still its own `append` snapshot with its own file, but
    # pyiceberg copies the whole table metadata per commit, which grows with every snapshot.
    for start in range(0, MANY_APPENDS, 10):
        with tbl.transaction() as tx:
            for b in batches[start:start + 10]:
                tx.append(b)
    tbl = cat.load_table(ident)
    expected = rows_of(pa.concat_tables(batches), EVENTS_ARROW.names)
    before = data_files(tbl)
    assert len(before) == MANY_APPENDS
    assert len(tbl.snapshots()) == MANY_APPENDS
    per_day = {p: sum(f.size for f in fs) for p, fs in by_partition(before).items()}
    assert len(per_day) == MANY_DAYS
    # ceil(bytes / target) == 2 for every day: target in [max/2, min).
    target = math.ceil(max(per_day.values()) / 2)
    assert target < min(per_day.values()), per_day
    report = floe_json(server, "compact", ident, "--target-file-size", str(target),
                       cwd=tmp_path_factory.mktemp("many"))
    built = ManyAppends(server, ident, expected, before, MANY_APPENDS, target, report)
    _MANY_APPENDS[kind] = built
    return built


@pytest.mark.slow
def test_compact_300_small_appends_keeps_rows(warehouse_server, tmp_path_factory):
    built = many_appends_compacted(warehouse_server, tmp_path_factory)
    report = built.report
    assert report["status"] == "compacted", report
    assert report["files_before"] == MANY_APPENDS
    assert report["input_files"] == MANY_APPENDS
    assert report["rows"] == len(built.expected)
    assert report["groups_dropped"] == 0
    assert report["delete_files_applied"] == 0
    assert report["bytes_before"] == sum(f.size for f in built.files_before)

    tbl = built.server.catalog().load_table(built.ident)
    after = data_files(tbl)
    assert report["files_after"] == len(after) == report["output_files"]
    assert report["bytes_after"] == sum(f.size for f in after)
    assert not {f.path for f in after} & {f.path for f in built.files_before}
    assert set(by_partition(after)) == set(by_partition(built.files_before)), "partitions changed"
    for f in after:
        assert f.size <= 2 * built.target, f"{f.path}: {f.size} bytes, far over the target {built.target}"

    snaps = lib.snapshots_in_order(tbl)
    new = snaps[built.snapshots_before:]
    assert [s.snapshot_id for s in new] == report["snapshots"]
    for s in new:
        assert s.summary.operation.value == "replace", s.summary
        assert s.summary["floe.maintenance"] == "compact"
    assert tbl.current_snapshot().snapshot_id == report["snapshots"][-1]

    got = table_rows(tbl)
    assert_same_rows(got, built.expected)
    # Time travel to before the compaction reads the same rows.
    assert_same_rows(table_rows(tbl, snaps[built.snapshots_before - 1].snapshot_id), built.expected)


@pytest.mark.slow
def test_compact_300_small_appends_file_sizes(warehouse_server, tmp_path_factory):
    """Each day held ~2 targets of small files: it must end with at most ceil(bytes / target)
    files (its rows rewritten into target-size files, not into files that are small again)."""
    built = many_appends_compacted(warehouse_server, tmp_path_factory)
    before = {p: sum(f.size for f in fs) for p, fs in by_partition(built.files_before).items()}
    tbl = built.server.catalog().load_table(built.ident)
    after = by_partition(data_files(tbl))
    too_many = {str(dict(p)): (len(fs), math.ceil(before[p] / built.target), sorted(f.size for f in fs))
                for p, fs in after.items() if len(fs) > math.ceil(before[p] / built.target)}
    assert not too_many, (
        f"target {built.target} B: partitions with more files than ceil(input bytes / target) "
        f"(files, allowed, sizes): {dict(list(too_many.items())[:5])} ... {len(too_many)} of {len(after)}")


@pytest.mark.spark
@pytest.mark.slow
def test_spark_reads_compacted_300_appends(spark_env, local_server, tmp_path_factory, tmp_path):
    built = many_appends_compacted(local_server, tmp_path_factory)
    t = f"floe.{built.ident}"
    spark = lib.SparkSteps(spark_env, local_server, [
        {"query": f"SELECT count(*) FROM {t}"},
        {"query": f"SELECT unix_micros(ts_utc), site, value, id FROM {t}"},
        {"query": f"SELECT operation FROM {t}.snapshots ORDER BY committed_at DESC LIMIT 1"},
    ], tmp_path)
    try:
        count = spark.next()["rows"][0][0]
        rows = spark_rows(spark.next()["rows"])
        operation = spark.next()["rows"][0][0]
        spark.finish()
    finally:
        spark.close()
    assert count == len(built.expected)
    assert_same_rows(rows, built.expected, "Spark")
    assert operation == "replace"


def test_compaction_converges(local_server, ns: str, tmp_path):
    """Compacting again with the same options has nothing left to do: the first run's files
    are target-size, and at most one per partition (the remainder) is below the small-file
    size."""
    server = local_server
    cat = server.catalog()
    ident = f"{ns}.converge"
    tbl = create_events_table(cat, ident)
    events = Events(seed=11)
    for i in range(30):
        tbl.append(events.batch(day(i % 3), 200))
    tbl = cat.load_table(ident)
    per_day = {p: sum(f.size for f in fs) for p, fs in by_partition(data_files(tbl)).items()}
    target = math.ceil(max(per_day.values()) / 2)
    args = ("compact", ident, "--target-file-size", str(target), "--min-input-files", "2")
    first = floe_json(server, *args, cwd=tmp_path)
    assert first["status"] == "compacted", first
    rows = table_rows(cat.load_table(ident))
    after = by_partition(data_files(cat.load_table(ident)))
    sizes = {str(dict(p)): sorted(f.size for f in fs) for p, fs in after.items()}
    second = floe_json(server, *args, cwd=tmp_path)
    assert second["status"] == "nothing-to-do", (
        f"a second identical compaction rewrote {second['input_files']} files into {second['output_files']} "
        f"(target {target} B, small below {target // 4 * 3} B; file sizes after the first run: {sizes})")
    assert table_rows(cat.load_table(ident)) == rows


# ---------------------------------------------------------------------------------------
# compaction options: day selection, --where, --dry-run, batches of commits


def test_compact_selection_dry_run_and_batches(local_server, ns: str, tmp_path):
    server = local_server
    cat = server.catalog()
    ident = f"{ns}.select"
    tbl = create_events_table(cat, ident)
    events = Events(seed=5)
    batches = [events.batch(day(i % 4), 50) for i in range(16)]  # 4 days x 4 files
    for b in batches:
        tbl.append(b)
    expected = rows_of(pa.concat_tables(batches), EVENTS_ARROW.names)
    tbl = cat.load_table(ident)
    before = by_partition(data_files(tbl))
    snap0 = tbl.current_snapshot().snapshot_id

    def key(d: dt.date) -> tuple:
        return (("ts_utc_day", d),)

    # --dry-run: the plan, no change
    plan = floe_json(server, "compact", ident, "--min-input-files", "2", "--dry-run", cwd=tmp_path)
    assert plan["status"] == "planned", plan
    assert plan["groups_planned"] == 4 and plan["input_files"] == 16 and plan["snapshots"] == []
    tbl = cat.load_table(ident)
    assert tbl.current_snapshot().snapshot_id == snap0
    assert by_partition(data_files(tbl)) == before

    # fewer small files than --min-input-files, or none below --min-file-size: nothing to do
    idle = floe_json(server, "compact", ident, "--min-input-files", "5", cwd=tmp_path)
    assert idle["status"] == "nothing-to-do" and idle["snapshots"] == [], idle
    idle = floe_json(server, "compact", ident, "--min-input-files", "2", "--min-file-size", "100", cwd=tmp_path)
    assert idle["status"] == "nothing-to-do" and idle["groups_planned"] == 0, idle
    assert cat.load_table(ident).current_snapshot().snapshot_id == snap0

    # --from/--to: only day 1
    one = floe_json(server, "compact", ident, "--min-input-files", "2", "--from", day(1).isoformat(),
                    "--to", day(1).isoformat(), cwd=tmp_path)
    assert one["status"] == "compacted" and one["input_files"] == 4 and one["groups_committed"] == 1, one
    after = by_partition(data_files(cat.load_table(ident)))
    assert len(after[key(day(1))]) == 1
    for d in (0, 2, 3):
        assert after[key(day(d))] == before[key(day(d))], f"day {d} was outside --from/--to but changed"

    # --where on ts_utc: days 2 and 3
    two = floe_json(server, "compact", ident, "--min-input-files", "2", "--where",
                    f"ts_utc >= '{day(2).isoformat()}' AND value > '-5000'", cwd=tmp_path)
    assert two["input_files"] == 8 and two["groups_committed"] == 2, two
    after = by_partition(data_files(cat.load_table(ident)))
    assert after[key(day(0))] == before[key(day(0))]
    assert [len(after[key(day(d))]) for d in (2, 3)] == [1, 1]

    # --commit-bytes 1: one `replace` snapshot per group
    rest = floe_json(server, "compact", ident, "--min-input-files", "2", "--commit-bytes", "1", cwd=tmp_path)
    assert rest["groups_committed"] == 1 and len(rest["snapshots"]) == 1, rest
    tbl = cat.load_table(ident)
    assert all(len(fs) == 1 for fs in by_partition(data_files(tbl)).values())
    assert_same_rows(table_rows(tbl), expected)
    compactions = [s for s in tbl.snapshots() if s.summary.get("floe.maintenance") == "compact"]
    assert len(compactions) == 3 and all(s.summary.operation.value == "replace" for s in compactions)
    assert sum(int(s.summary["floe.compact.groups"]) for s in compactions) == 4


def test_compact_commits_in_batches(local_server, ns: str, tmp_path):
    server = local_server
    cat = server.catalog()
    ident = f"{ns}.batches"
    tbl = create_events_table(cat, ident)
    events = Events(seed=9)
    batches = [events.batch(day(i % 3), 40) for i in range(9)]
    for b in batches:
        tbl.append(b)
    report = floe_json(server, "compact", ident, "--min-input-files", "2", "--commit-bytes", "1", cwd=tmp_path)
    assert report["groups_committed"] == 3 and len(report["snapshots"]) == 3, report
    tbl = cat.load_table(ident)
    assert [s.snapshot_id for s in lib.snapshots_in_order(tbl)[-3:]] == report["snapshots"]
    assert_same_rows(table_rows(tbl), rows_of(pa.concat_tables(batches), EVENTS_ARROW.names))


# ---------------------------------------------------------------------------------------
# 2. compaction while pyiceberg appends and `floe ingest` overwrites the same table

INGEST_SITES = ["ing-a", "ing-b"]


def ingest_job(ns: str, table: str, name: str = "readings", path: str = "data/{date}.ndjson") -> dict:
    return {
        "name": name,
        "table": f"{ns}.{table}",
        "source": {"path": path, "format": "ndjson"},
        "event_time": {"kind": "offset", "column": "ts"},
        "columns": [{"name": "site_id", "type": "string", "required": True},
                    {"name": "value", "type": "double", "from": "v"}],
        "reject_threshold": 0.0,
    }


def write_ingest_days(folder: Path, days: list[dt.date], tag: str = "ing") -> dict[dt.date, list[tuple]]:
    """Every 30 minutes of each day for two sites, `Z` timestamps, one file per day. Returns
    the (ts micros, site_id, value) rows of each day."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[dt.date, list[tuple]] = {}
    for di, d in enumerate(days):
        start = dt.datetime(d.year, d.month, d.day, tzinfo=UTC)
        lines, rows = [], []
        for si, site in enumerate(INGEST_SITES):
            for k in range(48):
                t = start + dt.timedelta(minutes=30 * k)
                v = di * 1000 + si * 100 + k + 0.5
                lines.append(json.dumps({"ts": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "site_id": f"{tag}-{site}", "v": v}))
                rows.append((int(t.timestamp()) * 1_000_000, f"{tag}-{site}", v))
        (folder / f"{d.isoformat()}.ndjson").write_text("\n".join(lines) + "\n")
        out[d] = rows
    return out


def bronze_batch(tbl, d: dt.date, tag: str, n: int, seed: int) -> tuple[pa.Table, list[tuple]]:
    """n rows for a table `floe ingest` created (its bronze columns filled in as floe would)."""
    rng = random.Random(seed)
    midnight = dt.datetime(d.year, d.month, d.day, tzinfo=UTC)
    ts = [midnight + dt.timedelta(seconds=rng.randrange(86_400)) for _ in range(n)]
    sites = [f"{tag}-{k}" for k in range(n)]
    values = [round(rng.uniform(0, 100), 2) for _ in range(n)]
    data = {
        "ts_utc": ts, "site_id": sites, "value": values,
        "_ingest_time": [dt.datetime.now(UTC)] * n,
        "_source": [f"pyiceberg:{tag}"] * n,
        "_hash": [hashlib.md5(f"{tag}/{k}".encode()).digest() for k in range(n)],
    }
    table = pa.table(data, schema=tbl.schema().as_arrow())
    return table, [(int(t.timestamp()) * 1_000_000, s, v) for t, s, v in zip(ts, sites, values)]


@dataclass
class Worker:
    """A background loop; records what happened and any exception."""

    name: str
    body: Callable[["Worker"], None]
    results: list = field(default_factory=list)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> "Worker":
        def run():
            try:
                self.body(self)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.error = exc
        self.thread = threading.Thread(target=run, name=self.name, daemon=True)
        self.thread.start()
        return self

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.name} did not finish within {timeout:.0f} s"
        if self.error is not None:
            raise AssertionError(f"{self.name} failed: {self.error!r}") from self.error


@pytest.mark.slow
def test_compaction_concurrent_with_appends_and_ingest(local_server, ns: str, tmp_path):
    """Days 0-1 only receive appends; days 2-3 receive appends and are overwritten by four
    `floe ingest` runs of the same window; `floe compact --min-input-files 2` runs over and
    over meanwhile. The expected rows follow from the table's own history: an overwrite
    leaves exactly the ingest's rows in its days, appends add theirs, compactions nothing.
    An ingest that an append to its days overtook fails loudly rather than drop it."""
    server = local_server
    cat = server.catalog()
    ident = f"{ns}.busy"
    first = dt.date(2024, 5, 10)
    days = [first + dt.timedelta(days=i) for i in range(4)]
    window = (days[2].isoformat(), days[3].isoformat())
    ingest_rows = write_ingest_days(tmp_path / "data", days[2:])
    pipeline = lib.write_pipeline(tmp_path / "pipeline.toml", server, [ingest_job(ns, "busy")])
    ingest = ["ingest", "--pipeline", str(pipeline), "--from", window[0], "--to", window[1]]
    floe_ok(server, *ingest, "--run-id", "initial", cwd=tmp_path, with_catalog=False)

    appends: dict[str, tuple[dt.date, list[tuple]]] = {}
    n_appends, n_ingests, max_compactions = 30, 4, 150
    done = threading.Event()

    def appender(w: Worker) -> None:
        own = server.catalog()
        for i in range(n_appends):
            d = days[i % 4]
            data, rows = bronze_batch(own.load_table(ident), d, f"app{i:02d}", 5, seed=i)
            appends[str(i)] = (d, rows)
            w.results.append(append_with_retry(own, ident, data, {"test.append": str(i)}))
            time.sleep(0.2)

    def ingester(w: Worker) -> None:
        for r in range(n_ingests):
            time.sleep(1.5)  # spread over the appends
            w.results.append(run_floe(server, *ingest, "--run-id", f"rerun-{r}", cwd=tmp_path,
                                      with_catalog=False))

    def compactor(w: Worker) -> None:
        for _ in range(max_compactions):  # until the writers are done (bounded)
            w.results.append(run_floe(server, "compact", ident, "--min-input-files", "2", "--json", cwd=tmp_path))
            if done.is_set():
                break
            time.sleep(0.1)

    workers = [Worker("appender", appender).start(), Worker("ingester", ingester).start(),
               Worker("compactor", compactor).start()]
    try:
        workers[0].join(240)
        workers[1].join(240)
    finally:
        done.set()
    workers[2].join(FLOE_TIMEOUT_S)

    # An ingest whose days got an append while it ran refuses to replace them (the append
    # would be lost); any other failure is a bug. Compactions never make it fail.
    landed = 0
    for out in workers[1].results:
        if out.returncode == 0:
            landed += 1
            continue
        assert out.returncode == 2 and "another writer changed" in out.stderr, \
            "an ingest run failed next to compaction" + explain(out)
    reports = []
    for out in workers[2].results:
        assert out.returncode == 0, "a compaction failed next to writers" + explain(out)
        reports.append(json.loads(out.stdout))
    assert len(workers[1].results) == n_ingests and len(appends) == n_appends
    final = floe_json(server, "compact", ident, "--min-input-files", "2", cwd=tmp_path)

    tbl = cat.load_table(ident)
    snaps = lib.snapshots_in_order(tbl)
    for a, b in zip(snaps, snaps[1:]):
        assert b.parent_snapshot_id == a.snapshot_id, "the history is not one chain"
    state: dict[dt.date, list[tuple]] = {d: [] for d in days}
    seen_appends: list[str] = []
    overwrites = 0
    for s in snaps:
        props = s.summary.additional_properties
        if "test.append" in props:
            seen_appends.append(props["test.append"])
            d, rows = appends[props["test.append"]]
            state[d] = state[d] + rows
        elif props.get("floe.job") == "readings":
            overwrites += 1
            assert props["floe.window"] == f"{window[0]}/{window[1]}"
            for d in days[2:]:
                state[d] = list(ingest_rows[d])
        else:
            assert props.get("floe.maintenance") == "compact" and s.summary.operation.value == "replace", s.summary
    assert sorted(seen_appends, key=int) == [str(i) for i in range(n_appends)], "an append landed twice or never"
    assert overwrites == 1 + landed
    expected = multiset(r for rows in state.values() for r in rows)
    got = table_rows(tbl, columns=("ts_utc", "site_id", "value"))
    assert len(set(got)) == len(got), "duplicated rows"
    assert_same_rows(got, expected)
    committed = sum(len(r["snapshots"]) for r in reports) + len(final["snapshots"])
    assert committed >= 1, "no compaction committed anything"
    assert len(reports) >= 2, "compaction did not run repeatedly while the writers ran"


# ---------------------------------------------------------------------------------------
# 3. expire-snapshots


@dataclass
class History:
    """An events table with a known history: snapshot ids by name, rows at every snapshot."""

    ident: str
    ids: dict[str, int]
    rows_at: dict[int, list[tuple]]
    files_of: dict[str, set[str]]  # data files written by each named step


def day_filter(d: dt.date):
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    return And(GreaterThanOrEqual("ts_utc", f"{d.isoformat()}T00:00:00+00:00"),
               LessThan("ts_utc", f"{(d + dt.timedelta(days=1)).isoformat()}T00:00:00+00:00"))


def build_history(cat, ident: str) -> History:
    """a1 (day 0), a2 (day 1), overwrite of day 0 (c1), a3 (day 2) + tag `keep-me`, delete of
    day 1, a4 (day 1) + branch `audit`, a5, a6 (day 3), a7 (day 2)."""
    tbl = create_events_table(cat, ident)
    events = Events(seed=3)
    ids: dict[str, int] = {}
    files_of: dict[str, set[str]] = {}

    def step(name: str, action: Callable[[Any], None]) -> None:
        nonlocal tbl
        known = {f.path for f in data_files(tbl)} if tbl.current_snapshot() else set()
        action(tbl)
        tbl = cat.load_table(ident)
        ids[name] = tbl.current_snapshot().snapshot_id
        files_of[name] = {f.path for f in data_files(tbl)} - known

    step("a1", lambda t: t.append(events.batch(day(0), 30)))
    step("a2", lambda t: t.append(events.batch(day(1), 30)))
    step("c1", lambda t: t.overwrite(events.batch(day(0), 20), overwrite_filter=day_filter(day(0))))
    step("a3", lambda t: t.append(events.batch(day(2), 30)))
    tbl.manage_snapshots().create_tag(ids["a3"], "keep-me").commit()
    step("del2", lambda t: t.delete(delete_filter=day_filter(day(1))))
    step("a4", lambda t: t.append(events.batch(day(1), 30)))
    tbl = cat.load_table(ident)
    tbl.manage_snapshots().create_branch(ids["a4"], "audit").commit()
    step("a5", lambda t: t.append(events.batch(day(3), 30)))
    step("a6", lambda t: t.append(events.batch(day(3), 30)))
    step("a7", lambda t: t.append(events.batch(day(2), 30)))
    tbl = cat.load_table(ident)
    rows_at = {s.snapshot_id: table_rows(tbl, s.snapshot_id) for s in tbl.snapshots()}
    return History(ident, ids, rows_at, files_of)


def test_expire_snapshots(warehouse_server, ns: str, tmp_path):
    server = warehouse_server
    cat = server.catalog()
    hist = build_history(cat, f"{ns}.history")
    tbl = cat.load_table(hist.ident)
    all_ids = {s.snapshot_id for s in tbl.snapshots()}
    keep = {hist.ids[n] for n in ("a3", "a4", "a5", "a6", "a7")}  # tag, branch, last 3 of main
    assert tbl.current_snapshot().snapshot_id == hist.ids["a7"]
    listing = stored(server, tbl.location())
    metadata_location = tbl.metadata_location
    expired_lists = {storage_key(server, s.manifest_list) for s in tbl.snapshots() if s.snapshot_id not in keep}
    assert expired_lists <= listing
    args = ("expire-snapshots", hist.ident, "--older-than", "0s", "--retain-last", "3")

    # --dry-run: the plan, nothing changed
    plan = floe_json(server, *args, "--dry-run", cwd=tmp_path)
    assert plan["status"] == "planned", plan
    assert set(plan["expired"]) == all_ids - keep, plan
    assert plan["snapshots_before"] == len(all_ids)
    again = cat.load_table(hist.ident)
    assert again.metadata_location == metadata_location
    assert {s.snapshot_id for s in again.snapshots()} == all_ids
    assert stored(server, tbl.location()) == listing, "--dry-run deleted or wrote files"

    report = floe_json(server, *args, cwd=tmp_path)
    assert report["status"] == "expired", report
    assert set(report["expired"]) == all_ids - keep
    assert report["snapshots_retained"] == len(keep)
    tbl = cat.load_table(hist.ident)
    assert {s.snapshot_id for s in tbl.snapshots()} == keep
    assert tbl.current_snapshot().snapshot_id == hist.ids["a7"]
    assert tbl.snapshot_by_name("keep-me").snapshot_id == hist.ids["a3"]
    assert tbl.snapshot_by_name("audit").snapshot_id == hist.ids["a4"]

    # files: a1's data file was only in expired snapshots; a2's is still in the tagged one
    now = stored(server, tbl.location())
    [a1_file] = hist.files_of["a1"]
    [a2_file] = hist.files_of["a2"]
    assert storage_key(server, a1_file) not in now, "a file only expired snapshots referenced survived"
    assert storage_key(server, a2_file) in now, "a file the tag `keep-me` needs was deleted"
    assert report["data_files_deleted"] == 1, report
    assert report["manifest_lists_deleted"] == len(all_ids - keep), report
    assert report["delete_failures"] == 0
    for s in tbl.snapshots():
        missing = {storage_key(server, f) for f in snapshot_files(tbl, s)} - now
        assert not missing, f"snapshot {s.snapshot_id} lost files: {sorted(missing)[:5]}"
    assert not expired_lists & now, "manifest lists of expired snapshots survived"
    gone = listing - now
    assert all("/metadata/" in g or "/data/" in g for g in gone), sorted(gone)
    assert not [g for g in gone if g.endswith(".metadata.json")], "expiry deleted table metadata files"

    # time travel to retained, non-current snapshots
    for name in ("a3", "a4", "a5"):
        sid = hist.ids[name]
        assert_same_rows(table_rows(tbl, sid), hist.rows_at[sid], f"snapshot {name}")
    assert_same_rows(table_rows(tbl), hist.rows_at[hist.ids["a7"]])

    # nothing left to expire
    idle = floe_json(server, *args, cwd=tmp_path)
    assert idle["status"] == "nothing-to-do" and idle["expired"] == [], idle


def test_expire_policy_from_table_properties(local_server, ns: str, tmp_path):
    """Without flags, expire-snapshots takes history.expire.max-snapshot-age-ms and
    history.expire.min-snapshots-to-keep from the table."""
    server = local_server
    cat = server.catalog()
    ident = f"{ns}.props"
    tbl = create_events_table(cat, ident, properties={"history.expire.max-snapshot-age-ms": "0",
                                                      "history.expire.min-snapshots-to-keep": "2"})
    events = Events(seed=27)
    for i in range(5):
        tbl.append(events.batch(day(i), 10))
    tbl = cat.load_table(ident)
    snaps = lib.snapshots_in_order(tbl)
    rows = table_rows(tbl)
    report = floe_json(server, "expire-snapshots", ident, cwd=tmp_path)
    assert sorted(report["expired"]) == sorted(s.snapshot_id for s in snaps[:3]), report
    tbl = cat.load_table(ident)
    assert {s.snapshot_id for s in tbl.snapshots()} == {s.snapshot_id for s in snaps[3:]}
    assert table_rows(tbl) == rows
    assert_same_rows(table_rows(tbl, snaps[3].snapshot_id), multiset(r for r in rows if r[0] < day_start_micros(4)))


def test_expire_keeps_each_jobs_newest_run_record(local_server, ns: str, tmp_path):
    """Two ingest jobs write one table; the newest snapshot holding each job's run record
    (its own `floe.job` + `floe.run-id`, or a `floe.last-run.<job>` carried forward by a
    later floe commit) survives `--older-than 0s --retain-last 1`."""
    server = local_server
    cat = server.catalog()
    days = [dt.date(2024, 7, 1), dt.date(2024, 7, 2)]
    write_ingest_days(tmp_path / "data", days)
    pipeline = lib.write_pipeline(tmp_path / "pipeline.toml", server, [
        ingest_job(ns, "runs", name="job_a"), ingest_job(ns, "runs", name="job_b")])

    def ingest(job: str, d: dt.date, run_id: str) -> int:
        floe_ok(server, "ingest", "--pipeline", str(pipeline), "--from", d.isoformat(), "--to", d.isoformat(),
                job, "--run-id", run_id, cwd=tmp_path, with_catalog=False)
        return cat.load_table(f"{ns}.runs").current_snapshot().snapshot_id

    a1 = ingest("job_a", days[0], "a-1")
    a2 = ingest("job_a", days[0], "a-2")
    b1 = ingest("job_b", days[1], "b-1")
    b2 = ingest("job_b", days[1], "b-2")
    tbl = cat.load_table(f"{ns}.runs")
    for i in range(2):
        data, _ = bronze_batch(tbl, dt.date(2024, 7, 3), f"late{i}", 3, seed=i)
        tbl.append(data)
        tbl = cat.load_table(f"{ns}.runs")
    current = tbl.current_snapshot().snapshot_id
    rows = table_rows(tbl, columns=("ts_utc", "site_id", "value"))

    report = floe_json(server, "expire-snapshots", f"{ns}.runs", "--older-than", "0s", "--retain-last", "1",
                       cwd=tmp_path)
    tbl = cat.load_table(f"{ns}.runs")
    kept = {s.snapshot_id for s in tbl.snapshots()}
    # b2 is the newest floe snapshot: it holds job_b's record and carries job_a's
    # (floe.last-run.<job>), so a2 may go; pyiceberg's appends carry nothing.
    assert kept == {b2, current}, (report, {"a1": a1, "a2": a2, "b1": b1, "b2": b2, "current": current})
    assert {a1, a2, b1} <= set(report["expired"])
    summary = tbl.snapshot_by_id(b2).summary
    assert (summary["floe.run-id"], summary["floe.last-run.job_a"], summary["floe.last-run.job_b"]) == (
        "b-2", "a-2", "b-2")
    assert table_rows(tbl, columns=("ts_utc", "site_id", "value")) == rows
    # A retried run of a-2 sees that it landed (through the carried record) and commits nothing.
    assert ingest("job_a", days[0], "a-2") == current
    assert cat.load_table(f"{ns}.runs").current_snapshot().snapshot_id == current

    # A compaction carries the records too: after it, expiry can drop b2 and with it the
    # files the compaction replaced.
    floe_ok(server, "compact", f"{ns}.runs", "--min-input-files", "2", cwd=tmp_path)
    tbl = cat.load_table(f"{ns}.runs")
    compacted = tbl.current_snapshot()
    assert compacted.summary.operation.value == "replace"
    assert compacted.summary["floe.last-run.job_a"] == "a-2"
    assert compacted.summary["floe.last-run.job_b"] == "b-2"
    report = floe_json(server, "expire-snapshots", f"{ns}.runs", "--older-than", "0s", "--retain-last", "1",
                       cwd=tmp_path)
    tbl = cat.load_table(f"{ns}.runs")
    assert {s.snapshot_id for s in tbl.snapshots()} == {compacted.snapshot_id}
    assert report["data_files_deleted"] > 0
    assert table_rows(tbl, columns=("ts_utc", "site_id", "value")) == rows


# ---------------------------------------------------------------------------------------
# 4. remove-orphans


def test_remove_orphans_window(local_server, ns: str, tmp_path):
    server = local_server
    cat = server.catalog()
    ident = f"{ns}.orphans"
    tbl = create_events_table(cat, ident)
    events = Events(seed=4)
    for i in range(3):
        tbl.append(events.batch(day(i), 25))
    tbl = cat.load_table(ident)
    rows = table_rows(tbl)
    snap = tbl.current_snapshot().snapshot_id
    data_dir = lib.file_uri_to_path(tbl.location()) / "data" / f"ts_utc_day={day(0).isoformat()}"
    old = write_stray_parquet(data_dir / "00000-0-killed-run-old.parquet", events.batch(day(0), 10),
                              age=dt.timedelta(days=10))
    new = write_stray_parquet(data_dir / "00000-0-running-writer-new.parquet", events.batch(day(0), 10))
    total = len(lib.local_files_under(tbl.location()))

    dry = floe_json(server, "remove-orphans", ident, "--dry-run", cwd=tmp_path)
    assert [str(lib.file_uri_to_path(u)) for u in dry["orphans"]] == [str(old)], dry
    assert dry["orphan_bytes"] == old.stat().st_size
    assert dry["recent_unreferenced"] == 1
    assert dry["files_listed"] == total
    assert old.exists() and new.exists(), "--dry-run deleted a file"

    report = floe_json(server, "remove-orphans", ident, cwd=tmp_path)  # default window: 3 days
    assert [str(lib.file_uri_to_path(u)) for u in report["orphans"]] == [str(old)], report
    assert not old.exists(), "an orphan older than the window survived"
    assert new.exists(), "an unreferenced file inside the window (a running writer's) was deleted"
    tbl = cat.load_table(ident)
    assert tbl.current_snapshot().snapshot_id == snap
    assert table_rows(tbl) == rows
    assert len(lib.local_files_under(tbl.location())) == total - 1

    # a narrower window takes the new one too; the table's own files stay
    report = floe_json(server, "remove-orphans", ident, "--older-than", "0s", cwd=tmp_path)
    assert [str(lib.file_uri_to_path(u)) for u in report["orphans"]] == [str(new)], report
    assert not new.exists()
    assert table_rows(cat.load_table(ident)) == rows


def test_remove_orphans_keeps_encoded_paths(warehouse_server, ns: str, tmp_path):
    """Partition values that paths percent-encode (space, '/', '%', '?', '#', non-ASCII):
    listed files and the metadata's URIs must still match, so nothing live is an orphan."""
    server = warehouse_server
    cat = server.catalog()
    ident = f"{ns}.encoded"
    tbl = create_events_table(cat, ident, "identity")
    tbl.append(Events(seed=19).batch(day(0), 40, sites=["north east", "a/b", "100%", "x?y#z", "\u00fc=\u00e4"]))
    tbl = cat.load_table(ident)
    rows = table_rows(tbl)
    listing = stored(server, tbl.location())
    report = floe_json(server, "remove-orphans", ident, "--older-than", "0s", cwd=tmp_path)
    assert report["orphans"] == [] and report["files_listed"] == len(listing), report
    assert stored(server, tbl.location()) == listing
    assert table_rows(cat.load_table(ident)) == rows
    [status] = floe_json(server, "status", ident, cwd=tmp_path)
    assert sorted(status["files_per_partition"]) == sorted(
        f"site={v}" for v in ["north east", "a/b", "100%", "x?y#z", "\u00fc=\u00e4"]), status


@pytest.mark.s3
def test_remove_orphans_s3(s3_catalog_server, ns: str, tmp_path):
    server = s3_catalog_server
    cat = server.catalog()
    ident = f"{ns}.orphans"
    tbl = create_events_table(cat, ident)
    events = Events(seed=6)
    for i in range(2):
        tbl.append(events.batch(day(i), 25))
    tbl = cat.load_table(ident)
    rows = table_rows(tbl)
    stray = write_stray_parquet(tmp_path / "stray.parquet", events.batch(day(0), 10))
    key = server.s3.key_of(tbl.location()).rstrip("/") + f"/data/ts_utc_day={day(0).isoformat()}/stray.parquet"
    server.s3.client().upload_file(str(stray), server.s3.bucket, key)
    before = stored(server, tbl.location())

    recent = floe_json(server, "remove-orphans", ident, cwd=tmp_path)
    assert recent["orphans"] == [] and recent["recent_unreferenced"] == 1, recent
    dry = floe_json(server, "remove-orphans", ident, "--older-than", "0s", "--dry-run", cwd=tmp_path)
    assert [server.s3.key_of(u) for u in dry["orphans"]] == [key], dry
    assert stored(server, tbl.location()) == before
    report = floe_json(server, "remove-orphans", ident, "--older-than", "0s", cwd=tmp_path)
    assert [server.s3.key_of(u) for u in report["orphans"]] == [key], report
    assert stored(server, tbl.location()) == before - {key}
    assert table_rows(cat.load_table(ident)) == rows


# ---------------------------------------------------------------------------------------
# 5. SIGKILL during compaction


def kill_when(cmd: list[str], env: dict, cwd: Path, log_path: Path, condition: Callable[[], bool],
              timeout: float = FLOE_TIMEOUT_S) -> int | None:
    """Starts cmd and SIGKILLs it as soon as condition() holds. Returns None when killed, else
    the exit code of a run that finished first."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if condition():
                proc.send_signal(signal.SIGKILL)
                code = proc.wait(timeout=30)
                # It may have finished on its own a moment before the signal.
                return None if code == -signal.SIGKILL else code
            time.sleep(0.01)
        if proc.poll() is None:
            pytest.fail(f"`{' '.join(cmd)}` neither finished nor met the kill condition in {timeout:.0f} s")
        return proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.slow
def test_sigkill_during_compaction(local_server, ns: str, tmp_path):
    server = local_server
    cat = server.catalog()
    ident = f"{ns}.killed"
    tbl = create_events_table(cat, ident)
    events = Events(seed=13)
    batches = [events.batch(day(i % 6), 8_000) for i in range(48)]  # 6 days x 8 files
    for start in range(0, len(batches), 6):
        with tbl.transaction() as tx:
            for b in batches[start:start + 6]:
                tx.append(b)
    expected = rows_of(pa.concat_tables(batches), EVENTS_ARROW.names)
    tbl = cat.load_table(ident)
    table_dir = lib.file_uri_to_path(tbl.location())
    day_bytes = max(sum(f.size for f in fs) for fs in by_partition(data_files(tbl)).values())
    # one commit per day group, two groups rewritten at a time
    cmd = floe_cmd(server, "compact", ident, "--min-input-files", "2", "--commit-bytes", str(day_bytes))

    def compact_files() -> list[Path]:
        return [p for p in (table_dir / "data").rglob("*.parquet") if "compact-" in p.name]

    def compactions() -> int:
        return sum(1 for s in cat.load_table(ident).snapshots() if s.summary.get("floe.maintenance") == "compact")

    def check_consistent(what: str) -> None:
        t = cat.load_table(ident)
        op = t.current_snapshot().summary.operation.value
        assert op in ("append", "replace"), f"{what}: current snapshot is a {op}"
        assert_same_rows(table_rows(t), expected, what)

    # (a) killed while rewriting, before any commit: its first output file is on disk
    outcomes = []
    code = kill_when(cmd, floe_env(server), tmp_path, tmp_path / "kill-a.log", lambda: bool(compact_files()))
    outcomes.append(("first output file", code))
    check_consistent("killed while rewriting")
    # (b) killed right after its first commit, more groups to go
    start = compactions()
    code = kill_when(cmd, floe_env(server), tmp_path, tmp_path / "kill-b.log", lambda: compactions() > start)
    outcomes.append(("first commit", code))
    check_consistent("killed after a commit")
    # (c) after a few fixed delays (bounded)
    for delay in (0.5, 1.0, 2.0):
        t0 = time.monotonic()
        code = kill_when(cmd, floe_env(server), tmp_path, tmp_path / f"kill-{delay}.log",
                         lambda: time.monotonic() - t0 >= delay)
        outcomes.append((f"{delay} s", code))
        check_consistent(f"killed after {delay} s")
    assert any(code is None for _, code in outcomes), f"no run was caught before it finished: {outcomes}"
    for what, code in outcomes:
        assert code in (None, 0), f"the run meant to be killed at {what} failed with {code}"

    # a second compaction completes
    report = floe_json(server, "compact", ident, "--min-input-files", "2", cwd=tmp_path)
    assert report["status"] in ("compacted", "nothing-to-do"), report
    tbl = cat.load_table(ident)
    assert all(len(fs) == 1 for fs in by_partition(data_files(tbl)).values()), "some day is still not compacted"
    assert_same_rows(table_rows(tbl), expected, "after the completing compaction")

    # the killed runs' files are orphans: remove-orphans --older-than 0s cleans them up
    referenced: set[str] = set()
    for s in tbl.snapshots():
        referenced |= {str(lib.file_uri_to_path(f)) for f in snapshot_files(tbl, s)}
    leftovers = {str(p) for p in (table_dir / "data").rglob("*") if p.is_file()} - referenced
    report = floe_json(server, "remove-orphans", ident, "--older-than", "0s", cwd=tmp_path)
    removed = {str(lib.file_uri_to_path(u)) for u in report["orphans"]}
    assert leftovers <= removed, f"leftover data files not removed: {sorted(leftovers - removed)[:5]}"
    assert not removed & referenced, "remove-orphans deleted a referenced file"
    data_left = {str(p) for p in (table_dir / "data").rglob("*") if p.is_file()}
    assert data_left <= referenced, f"unreferenced data files remain: {sorted(data_left - referenced)[:5]}"
    tbl = cat.load_table(ident)
    assert_same_rows(table_rows(tbl), expected, "after remove-orphans")
    for s in tbl.snapshots():  # every snapshot still readable
        table_rows(tbl, s.snapshot_id)


# ---------------------------------------------------------------------------------------
# 6. tables floe did not write: other partition specs, evolved specs, format v1


@pytest.mark.parametrize("spec", ["identity", "bucket", "unpartitioned", "evolved"])
def test_compact_pyiceberg_specs(local_server, ns: str, tmp_path, spec: str):
    from pyiceberg.transforms import BucketTransform

    server = local_server
    cat = server.catalog()
    ident = f"{ns}.spec_{spec}"
    tbl = create_events_table(cat, ident, "day" if spec == "evolved" else spec)
    events = Events(seed=21)
    sites = ["north", "south", "east"]
    batches = []
    for i in range(6):
        if spec == "evolved" and i == 3:  # day(ts_utc) files, then bucket(4, id) ones
            with tbl.update_spec() as update:
                update.remove_field("ts_utc_day")
                update.add_field("id", BucketTransform(4), "id_bucket")
            tbl = cat.load_table(ident)
        b = events.batch(day(i % 2), 40, sites=sites)
        batches.append(b)
        tbl.append(b)
    expected = rows_of(pa.concat_tables(batches), EVENTS_ARROW.names)
    tbl = cat.load_table(ident)
    before = by_partition(data_files(tbl))
    snap = tbl.current_snapshot().snapshot_id

    report = floe_json(server, "compact", ident, "--min-input-files", "2", cwd=tmp_path)
    assert report["status"] == "compacted", report
    tbl = cat.load_table(ident)
    assert tbl.current_snapshot().summary.operation.value == "replace"
    assert tbl.current_snapshot().parent_snapshot_id == snap
    after = by_partition(data_files(tbl))
    for p, fs in after.items():
        assert len(fs) <= len(before.get(p, [])) or spec == "evolved", p
    if spec != "evolved":
        assert set(after) == set(before)
        assert all(len(fs) == 1 for fs in after.values()), {p: len(fs) for p, fs in after.items()}
    assert sum(len(fs) for fs in after.values()) < sum(len(fs) for fs in before.values())
    assert_same_rows(table_rows(tbl), expected)
    # the partition values the files carry are still right: pruning on them gives the same rows
    from pyiceberg.expressions import EqualTo

    north = rows_of(tbl.scan(row_filter=EqualTo("site", "north")).to_arrow(), EVENTS_ARROW.names)
    assert north == [r for r in expected if r[1] == "north"]


def test_compact_after_schema_evolution(local_server, ns: str, tmp_path):
    """Files written before a column was added and another renamed, and rows whose ts_utc is
    null (the `null` day partition): the rewrite maps old files by field id."""
    from pyiceberg.types import StringType

    server = local_server
    cat = server.catalog()
    ident = f"{ns}.evolved_schema"
    tbl = create_events_table(cat, ident)
    events = Events(seed=31)
    for _ in range(3):
        b = events.batch(day(0), 20)
        ts = pa.array([None] * 4 + b.column("ts_utc").to_pylist()[4:], pa.timestamp("us", tz="UTC"))
        tbl.append(b.set_column(0, "ts_utc", ts))
    with tbl.update_schema() as update:
        update.add_column("note", StringType())
        update.rename_column("value", "amount")
    tbl = cat.load_table(ident)
    for i in range(3):
        b = events.batch(day(0), 20).rename_columns(["ts_utc", "site", "amount", "id"])
        tbl.append(b.append_column("note", pa.array([f"n{i}"] * 20)))
    columns = ("ts_utc", "site", "amount", "id", "note")
    tbl = cat.load_table(ident)
    expected = table_rows(tbl, columns=columns)
    assert sum(r[0] is None for r in expected) == 12 and sum(r[4] is None for r in expected) == 60

    report = floe_json(server, "compact", ident, "--min-input-files", "2", cwd=tmp_path)
    assert report["groups_committed"] == 2, report  # the day and the null partition
    tbl = cat.load_table(ident)
    assert len(data_files(tbl)) == 2
    assert_same_rows(table_rows(tbl, columns=columns), expected)


def test_compact_sort(local_server, ns: str, tmp_path):
    """--sort writes each output file in the table's sort order."""
    from pyiceberg.table.sorting import SortField, SortOrder
    from pyiceberg.transforms import IdentityTransform

    server = local_server
    cat = server.catalog()
    ident = f"{ns}.sorted"
    cat.create_namespace_if_not_exists(ns)
    tbl = cat.create_table(ident, schema=events_schema(), partition_spec=spec_of("day"),
                           sort_order=SortOrder(SortField(source_id=2, transform=IdentityTransform())))
    events = Events(seed=17)
    batches = [events.batch(day(i % 2), 60, sites=["delta", "bravo", "alpha", "charlie"]) for i in range(6)]
    for b in batches:
        tbl.append(b)
    report = floe_json(server, "compact", ident, "--min-input-files", "2", "--sort", cwd=tmp_path)
    assert report["groups_committed"] == 2, report
    tbl = cat.load_table(ident)
    for f in data_files(tbl):
        sites = pq.read_table(lib.file_uri_to_path(f.path), columns=["site"]).column("site").to_pylist()
        assert sites == sorted(sites), f"{f.path} is not sorted by site"
    assert_same_rows(table_rows(tbl), rows_of(pa.concat_tables(batches), EVENTS_ARROW.names))


def test_compact_refuses_format_v1(local_server, ns: str, tmp_path):
    server = local_server
    cat = server.catalog()
    ident = f"{ns}.v1"
    tbl = create_events_table(cat, ident, properties={"format-version": "1"})
    events = Events(seed=1)
    for i in range(6):
        tbl.append(events.batch(day(0), 10))
    tbl = cat.load_table(ident)
    assert tbl.format_version == 1
    snap = tbl.current_snapshot().snapshot_id
    out = run_floe(server, "compact", ident, "--min-input-files", "2", cwd=tmp_path)
    assert_clean_error(out, "format v2")
    assert cat.load_table(ident).current_snapshot().snapshot_id == snap


# ---------------------------------------------------------------------------------------
# 7. position deletes (Spark merge-on-read)


@pytest.mark.spark
@pytest.mark.slow
def test_compact_applies_spark_position_deletes(spark_env, local_server, ns: str, tmp_path):
    server = local_server
    t = f"floe.{ns}.mor"
    steps = [
        {"sql": f"CREATE NAMESPACE IF NOT EXISTS floe.{ns}"},
        {"sql": f"""CREATE TABLE {t} (ts_utc TIMESTAMP, site STRING, value DOUBLE, id BIGINT) USING iceberg
                    PARTITIONED BY (days(ts_utc))
                    TBLPROPERTIES ('format-version'='2', 'write.delete.mode'='merge-on-read',
                                   'write.update.mode'='merge-on-read', 'write.merge.mode'='merge-on-read')"""},
    ]
    for k in range(5):
        values = ", ".join(f"(TIMESTAMP '2024-06-0{1 + j % 2} {j % 24:02d}:{k:02d}:00', 's{k}', {k * 100 + j}.25, "
                           f"{k * 100 + j})" for j in range(30))
        steps.append({"sql": f"INSERT INTO {t} VALUES {values}"})
    steps += [
        {"sql": f"DELETE FROM {t} WHERE id % 7 = 0"},
        {"query": f"SELECT unix_micros(ts_utc), site, value, id FROM {t}"},
        {"query": f"SELECT content, count(*) FROM {t}.files GROUP BY content ORDER BY content"},
        {"wait": "compact"},
        {"sql": f"REFRESH TABLE {t}"},
        {"query": f"SELECT unix_micros(ts_utc), site, value, id FROM {t}"},
        {"query": f"SELECT operation FROM {t}.snapshots ORDER BY committed_at DESC LIMIT 1"},
    ]
    spark = lib.SparkSteps(spark_env, server, steps, tmp_path)
    try:
        before = spark_rows(spark.next()["rows"])
        contents = dict(map(tuple, spark.next()["rows"]))
        assert spark.next() == {"wait": "compact"}
        assert contents.get(1, 0) > 0, f"Spark wrote no position delete files: {contents}"
        expected = multiset(r for r in (
            ((dt.datetime(2024, 6, 1 + j % 2, j % 24, k, tzinfo=UTC).timestamp() * 1_000_000), f"s{k}",
             k * 100 + j + 0.25, k * 100 + j) for k in range(5) for j in range(30)) if r[3] % 7)
        expected = multiset((int(a), b, c, d) for a, b, c, d in expected)
        assert before == expected, "Spark's own view after DELETE is not what the test expects"
        tbl = server.catalog().load_table(f"{ns}.mor")
        assert table_rows(tbl) == before
        [status] = floe_json(server, "status", f"{ns}.mor", cwd=tmp_path)
        assert status["delete_files"] == contents[1] and status["data_files"] == contents[0], status

        report = floe_json(server, "compact", f"{ns}.mor", "--min-input-files", "2", cwd=tmp_path)
        assert report["status"] == "compacted", report
        assert report["delete_files_applied"] > 0, report
        tbl = server.catalog().load_table(f"{ns}.mor")
        assert tbl.current_snapshot().summary.operation.value == "replace"
        assert_same_rows(table_rows(tbl), before, "pyiceberg after compaction")

        spark.go()
        after = spark_rows(spark.next()["rows"])
        operation = spark.next()["rows"][0][0]
        spark.finish()
    finally:
        spark.close()
    assert_same_rows(after, before, "Spark after compaction")
    assert operation == "replace"


# ---------------------------------------------------------------------------------------
# 8. status and maintain


def test_status_figures(catalog_server, tmp_path):
    server = catalog_server()
    cat = server.catalog()
    ident = "shop.orders"
    tbl = create_events_table(cat, ident)
    events = Events(seed=8)
    for d, n in ((0, 3), (1, 2)):
        for _ in range(n):
            tbl.append(events.batch(day(d), 20))
    tbl.append(events.batch(day(2), 20_000))  # one big file
    tbl = cat.load_table(ident)
    files = data_files(tbl)
    big = max(f.size for f in files)
    with tbl.transaction() as tx:  # the big file is the target size: not small
        tx.set_properties({"write.target-file-size-bytes": str(big)})
    create_events_table(cat, "shop.empty")

    [status] = floe_json(server, "status", ident, cwd=tmp_path)
    tbl = cat.load_table(ident)
    assert status["table"] == ident
    assert status["format_version"] == 2
    assert status["snapshots"] == 6
    assert status["current_snapshot_id"] == tbl.current_snapshot().snapshot_id
    assert status["data_files"] == 6
    assert status["data_bytes"] == sum(f.size for f in files)
    assert status["records"] == sum(f.records for f in files)
    assert status["delete_files"] == 0
    assert status["target_file_size"] == big
    assert status["small_files"] == 5
    assert status["small_file_ratio"] == pytest.approx(5 / 6)
    assert status["partitions"] == 3
    assert status["max_files_per_partition"] == 3
    assert status["files_per_partition"] == {f"ts_utc_day={day(0)}": 3, f"ts_utc_day={day(1)}": 2,
                                             f"ts_utc_day={day(2)}": 1}
    assert status["orphan_candidates"] == 0
    assert status["metadata_file_bytes"] == lib.file_uri_to_path(tbl.metadata_location).stat().st_size

    # an old unreferenced file is an orphan candidate; no TABLE: every table of the catalog
    stray = write_stray_parquet(lib.file_uri_to_path(tbl.location()) / "data" / "stray.parquet",
                                events.batch(day(0), 5), age=dt.timedelta(days=10))
    statuses = floe_json(server, "status", cwd=tmp_path)
    assert [s["table"] for s in statuses] == ["shop.empty", ident]
    by_name = {s["table"]: s for s in statuses}
    assert by_name[ident]["orphan_candidates"] == 1
    assert by_name[ident]["orphan_bytes"] == stray.stat().st_size
    assert by_name["shop.empty"]["data_files"] == 0 and by_name["shop.empty"]["snapshots"] == 0

    # the text form names the table
    out = floe_ok(server, "status", ident, cwd=tmp_path)
    assert ident in out.stdout


PROM_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})? '
                       r'(-?[0-9.]+(?:[eE][-+]?[0-9]+)?|NaN|[+-]Inf)$')


def parse_prometheus(text: str) -> dict[tuple[str, frozenset], float]:
    """A Prometheus textfile as {(name, labels): value}; fails on any malformed line."""
    samples: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$", line), line
            continue
        m = PROM_LINE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        key = (m.group(1), labels)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(m.group(3))
    return samples


def outcome(report: dict, table: str) -> dict:
    found = [t for t in report["tables"] if t["table"] == table]
    assert len(found) == 1, json.dumps(report, indent=1)[:4000]
    return found[0]


def test_maintain_all_by_policy(catalog_server, tmp_path):
    server = catalog_server()
    cat = server.catalog()
    events = Events(seed=12)
    policy = {"history.expire.max-snapshot-age-ms": "0", "history.expire.min-snapshots-to-keep": "1",
              "floe.orphans.older-than": "1s", "floe.compact.min-input-files": "3"}
    busy = create_events_table(cat, "ops.busy", properties=policy)
    off = create_events_table(cat, "ops.off", properties={**policy, "floe.maintain.enabled": "false"})
    batches = {"ops.busy": [], "ops.off": []}
    for ident, tbl in (("ops.busy", busy), ("ops.off", off)):
        for i in range(6):
            b = events.batch(day(0), 20)
            batches[ident].append(b)
            tbl.append(b)
    busy, off = cat.load_table("ops.busy"), cat.load_table("ops.off")
    busy_files = {f.path for f in data_files(busy)}
    busy_bytes = sum(f.size for f in data_files(busy))
    off_state = (off.metadata_location, {f.path for f in data_files(off)})
    orphan = write_stray_parquet(lib.file_uri_to_path(busy.location()) / "data" / "killed.parquet",
                                 events.batch(day(0), 5), age=dt.timedelta(minutes=5))

    report_path, metrics_path = tmp_path / "r.json", tmp_path / "m.prom"
    out = floe_ok(server, "maintain", "--all", "--report", str(report_path), "--metrics-file", str(metrics_path),
                  cwd=tmp_path)
    report = json.loads(report_path.read_text())
    assert report["failed"] == 0, report
    assert sorted(t["table"] for t in report["tables"]) == ["ops.busy", "ops.off"]

    b = outcome(report, "ops.busy")
    assert b["status"] == "ok", b
    assert b["actions"] == ["compact", "expire-snapshots", "remove-orphans"], b
    assert b["before"] == {"data_files": 6, "data_bytes": busy_bytes, "small_files": 6, "snapshots": 6,
                           "orphan_candidates": 1}, b
    assert b["after"]["data_files"] == 1 and b["after"]["small_files"] == 1, b
    assert b["after"]["snapshots"] == 1 and b["after"]["orphan_candidates"] == 0, b
    assert b["snapshots_expired"] == 6, b
    assert b["files_deleted"] >= 6 + 6 + 1, b  # data files, manifest lists, the orphan
    assert b["error"] is None
    busy = cat.load_table("ops.busy")
    assert len(busy.snapshots()) == 1 and busy.current_snapshot().summary.operation.value == "replace"
    assert not orphan.exists()
    assert not any(lib.file_uri_to_path(p).exists() for p in busy_files), "expired data files were kept"
    assert_same_rows(table_rows(busy), rows_of(pa.concat_tables(batches["ops.busy"]), EVENTS_ARROW.names))

    o = outcome(report, "ops.off")
    assert o["status"] == "skipped" and o["actions"] == [], o
    off = cat.load_table("ops.off")
    assert (off.metadata_location, {f.path for f in data_files(off)}) == off_state, "a disabled table changed"

    metrics = parse_prometheus(metrics_path.read_text())
    assert metrics[("floe_maintain_success", frozenset({("table", "ops.busy")}))] == 1
    assert metrics[("floe_maintain_success", frozenset({("table", "ops.off")}))] == 1
    assert metrics[("floe_maintain_snapshots_expired", frozenset({("table", "ops.busy")}))] == 6
    assert metrics[("floe_maintain_data_files", frozenset({("table", "ops.busy"), ("when", "before")}))] == 6
    assert metrics[("floe_maintain_data_files", frozenset({("table", "ops.busy"), ("when", "after")}))] == 1
    assert ("floe_maintain_last_run_timestamp_seconds", frozenset()) in metrics
    assert "ops.busy" in out.stdout

    # by name, with a missing table among them: exit 2, the others still maintained
    for i in range(3):
        busy.append(events.batch(day(1), 20))
        busy = cat.load_table("ops.busy")
    out = run_floe(server, "maintain", "ops.busy", "ops.missing", "ops.off", "--report", str(report_path),
                   "--metrics-file", str(metrics_path), cwd=tmp_path)
    assert_clean_error(out, "1 of 3")
    report = json.loads(report_path.read_text())
    assert report["failed"] == 1
    assert [t["table"] for t in report["tables"]] == ["ops.busy", "ops.missing", "ops.off"]
    missing = outcome(report, "ops.missing")
    assert missing["status"] == "failed" and "ops.missing" in (missing["error"] or ""), missing
    b = outcome(report, "ops.busy")
    assert b["status"] == "ok" and "compact" in b["actions"], b
    assert b["after"]["data_files"] == 2, b  # day 0 and day 1
    assert outcome(report, "ops.off")["status"] == "skipped"
    metrics = parse_prometheus(metrics_path.read_text())
    assert metrics[("floe_maintain_success", frozenset({("table", "ops.missing")}))] == 0
    assert metrics[("floe_maintain_success", frozenset({("table", "ops.busy")}))] == 1


def test_maintain_dry_run_changes_nothing(catalog_server, tmp_path):
    server = catalog_server()
    cat = server.catalog()
    tbl = create_events_table(cat, "ops.dry", properties={"history.expire.max-snapshot-age-ms": "0",
                                                          "floe.orphans.older-than": "1s"})
    events = Events(seed=14)
    for _ in range(6):
        tbl.append(events.batch(day(0), 20))
    tbl = cat.load_table("ops.dry")
    orphan = write_stray_parquet(lib.file_uri_to_path(tbl.location()) / "data" / "old.parquet",
                                 events.batch(day(0), 5), age=dt.timedelta(hours=1))
    listing = stored(server, tbl.location())
    report = floe_json(server, "maintain", "--all", "--dry-run", cwd=tmp_path)
    assert report["dry_run"] is True
    o = outcome(report, "ops.dry")
    assert o["status"] == "ok" and o["actions"] == ["compact", "expire-snapshots", "remove-orphans"], o
    assert o["before"]["orphan_candidates"] == 1
    again = cat.load_table("ops.dry")
    assert again.metadata_location == tbl.metadata_location
    assert stored(server, tbl.location()) == listing and orphan.exists()


def maintenance_pipeline(path: Path, server: lib.CatalogServer, maintain: dict, jobs: list[dict]) -> Path:
    """A pipeline file: [catalog], the given jobs, and a [maintain] section."""
    lib.write_pipeline(path, server, jobs)
    lines = ["", "[maintain]"] + [f"{k} = {lib.toml_value(v)}" for k, v in maintain.items()]
    path.write_text(path.read_text() + "\n".join(lines) + "\n")
    return path


def test_maintain_policy_from_pipeline_and_table(catalog_server, tmp_path):
    """[maintain] of the pipeline file sets the policy; a table property overrides it."""
    server = catalog_server()
    cat = server.catalog()
    events = Events(seed=23)
    tables = {"ops.follows": {}, "ops.overrides": {"floe.compact.min-input-files": "10"}}
    for ident, props in tables.items():
        tbl = create_events_table(cat, ident, properties=props)
        for _ in range(3):
            tbl.append(events.batch(day(0), 20))
    pipeline = maintenance_pipeline(tmp_path / "floe.toml", server,
                                    {"min_input_files": 2, "expire_older_than": "0s", "orphans_older_than": "1h"},
                                    [ingest_job("ops", "ingested")])
    out = run_floe(server, "maintain", "--all", "--pipeline", str(pipeline), "--json", cwd=tmp_path,
                   with_catalog=False)
    assert out.returncode == 0, explain(out)
    report = json.loads(out.stdout)
    follows, overrides = outcome(report, "ops.follows"), outcome(report, "ops.overrides")
    assert follows["policy"]["min_input_files"] == 2 and follows["policy"]["expire_older_than"] == 0, follows
    assert follows["policy"]["orphans_older_than"] == 3600
    assert follows["actions"] == ["compact", "expire-snapshots"], follows
    assert follows["after"]["data_files"] == 1 and follows["after"]["snapshots"] == 1, follows
    assert overrides["policy"]["min_input_files"] == 10, overrides
    assert overrides["actions"] == ["expire-snapshots"], overrides
    assert overrides["after"]["data_files"] == 3 and overrides["after"]["snapshots"] == 1, overrides


def test_pipeline_file_without_jobs(catalog_server, tmp_path):
    """The maintenance commands use only [catalog] and [maintain] of --pipeline: a file for a
    maintenance-only host has no [[job]] and must do."""
    server = catalog_server()
    cat = server.catalog()
    tbl = create_events_table(cat, "ops.t")
    events = Events(seed=29)
    for _ in range(3):
        tbl.append(events.batch(day(0), 20))
    pipeline = maintenance_pipeline(tmp_path / "maintain.toml", server, {"min_input_files": 2}, [])
    for args in (["status", "ops.t", "--json"], ["maintain", "ops.t", "--json"]):
        out = run_floe(server, *args, "--pipeline", str(pipeline), cwd=tmp_path, with_catalog=False)
        assert out.returncode == 0, f"`floe {args[0]} --pipeline` with [catalog] and [maintain] only" + explain(out)
    assert len(data_files(cat.load_table("ops.t"))) == 1


# ---------------------------------------------------------------------------------------
# 9. bad input


@pytest.fixture
def plain_table(local_server, ns):
    """A small day-partitioned pyiceberg table without a sort order."""
    cat = local_server.catalog()
    ident = f"{ns}.plain"
    tbl = create_events_table(cat, ident)
    events = Events(seed=2)
    for i in range(3):
        tbl.append(events.batch(day(0), 10))
    return ident


BAD_INPUT = [
    # (id, command, words the error must contain); {ns} and {t} are filled in
    ("unknown-table", ["compact", "{ns}.nope"], ["{ns}.nope"]),
    ("no-namespace", ["compact", "nodot"], ["nodot"]),
    ("where-unknown-column", ["compact", "{t}", "--where", "nosuch >= '1'"], ["nosuch"]),
    ("where-bad-number", ["compact", "{t}", "--where", "value >= 'abc'"], ["abc"]),
    ("where-bad-timestamp", ["compact", "{t}", "--where", "ts_utc >= 'yesterday'"], ["yesterday"]),
    ("where-not-a-comparison", ["compact", "{t}", "--where", "ts_utc"], ["--where", "ts_utc"]),
    ("from-after-to", ["compact", "{t}", "--from", "2024-03-05", "--to", "2024-03-01"],
     ["--from", "2024-03-05", "2024-03-01"]),
    ("bad-date", ["compact", "{t}", "--from", "2024-02-30", "--to", "2024-03-01"], ["2024-02-30"]),
    ("from-without-to", ["compact", "{t}", "--from", "2024-03-01"], ["--to"]),
    ("sort-without-order", ["compact", "{t}", "--sort", "--min-input-files", "2"], ["sort order"]),
    ("expire-unknown-table", ["expire-snapshots", "{ns}.nope", "--older-than", "0s"], ["{ns}.nope"]),
    ("bad-duration", ["expire-snapshots", "{t}", "--older-than", "3 days"], ["3 days"]),
    ("orphans-unknown-table", ["remove-orphans", "{ns}.nope"], ["{ns}.nope"]),
    ("status-unknown-table", ["status", "{ns}.nope"], ["{ns}.nope"]),
    ("maintain-nothing", ["maintain"], ["--all"]),
]


@pytest.mark.parametrize("args,words", [pytest.param(a, w, id=i) for i, a, w in BAD_INPUT])
def test_bad_input(local_server, ns, plain_table, tmp_path, args, words):
    server = local_server
    cat = server.catalog()
    before = cat.load_table(plain_table).metadata_location
    out = run_floe(server, *(a.format(ns=ns, t=plain_table) for a in args), cwd=tmp_path)
    assert_clean_error(out, *(w.format(ns=ns, t=plain_table) for w in words))
    assert cat.load_table(plain_table).metadata_location == before, "a failed command changed the table"
