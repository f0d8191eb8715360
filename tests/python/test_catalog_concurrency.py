"""Eight concurrent writers, each with its own RestCatalog in its own process, 25 appends each
to one table, retrying on CommitFailedException: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import floe_testlib as lib

WORKERS = 8
APPENDS = 25
WORKER = Path(__file__).parent / "helpers" / "append_worker.py"


def _run_writers(server: lib.CatalogServer, ns: str) -> None:
    cat = server.catalog()
    cat.create_namespace(ns)
    cat.create_table((ns, "hot"), schema=lib.iceberg_schema(), partition_spec=lib.day_spec())

    procs = []
    for w in range(WORKERS):
        args = {"props": server.catalog_properties(), "table": [ns, "hot"], "worker": w,
                "appends": APPENDS, "max_attempts": 80}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), json.dumps(args)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=lib.clean_env(),
                                      stdin=subprocess.DEVNULL))
    deadline = time.monotonic() + 420
    results, failures = [], []
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("concurrent writers did not finish within 420 s")
        if p.returncode != 0:
            failures.append(f"worker exit {p.returncode}:\n{out}\n{err[-3000:]}")
        else:
            results.append(json.loads(out.strip().splitlines()[-1]))
    assert not failures, "\n".join(failures)
    retries = sum(r["retries"] for r in results)
    print(f"{WORKERS} writers x {APPENDS} appends: {retries} CommitFailedExceptions got past pyiceberg's "
          "own retries and were retried by the workers")

    tbl = server.catalog().load_table((ns, "hot"))
    snapshots = lib.snapshots_in_order(tbl)
    assert len(snapshots) == WORKERS * APPENDS, f"{len(snapshots)} snapshots"
    assert all(s.summary.operation.value == "append" for s in snapshots)
    # one linear history: every snapshot's parent is the one before it, sequence numbers 1..N
    for prev, cur in zip(snapshots, snapshots[1:], strict=False):
        assert cur.parent_snapshot_id == prev.snapshot_id, "history is not a single chain"
    assert [s.sequence_number for s in snapshots] == list(range(1, WORKERS * APPENDS + 1))
    assert tbl.current_snapshot().snapshot_id == snapshots[-1].snapshot_id

    got = tbl.scan().to_arrow()
    ids = sorted(got.column("site_id").to_pylist())
    expected = sorted(f"w{w}-{i:03d}" for w in range(WORKERS) for i in range(APPENDS))
    assert ids == expected, f"{len(ids)} rows; missing {sorted(set(expected) - set(ids))[:10]}"
    assert sum(got.column("value").to_pylist()) == sum(float(w * 1000 + i) for w in range(WORKERS)
                                                       for i in range(APPENDS))


@pytest.mark.slow
def test_concurrent_appends_sqlite(catalog_server, ns: str):
    _run_writers(catalog_server(), ns)


@pytest.mark.slow
@pytest.mark.postgres
def test_concurrent_appends_postgres(catalog_server, fresh_postgres_db, ns: str):
    _run_writers(catalog_server(db=fresh_postgres_db), ns)
