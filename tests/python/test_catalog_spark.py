"""Spark (Iceberg 1.10 REST client) against `floe catalog serve` on a local warehouse: Spark
creates, inserts and reads a day-partitioned table, and reads (and writes) a table pyiceberg
wrote; pyiceberg then reads what Spark wrote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import floe_testlib as lib

pytestmark = [pytest.mark.spark, pytest.mark.slow]

JOB = Path(__file__).parent / "helpers" / "spark_job.py"


def test_spark_round_trip(spark_env, catalog_server, ns: str, tmp_path):
    server = catalog_server()
    cat = server.catalog()
    cat.create_namespace(ns)
    py_rows = lib.make_rows("py", 10, base_value=1.0)
    tbl = cat.create_table((ns, "py_events"), schema=lib.iceberg_schema(), partition_spec=lib.day_spec())
    tbl.append(py_rows)

    args = lib.spark_args(spark_env, server, ns=ns, read_table="py_events")
    env = lib.spark_child_env(server)
    try:
        out = subprocess.run([spark_env["python"], str(JOB), json.dumps(args)], capture_output=True, text=True,
                             timeout=420, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("the Spark job did not finish within 420 s")
    assert out.returncode == 0, f"spark job failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-8000:]}"
    seen = json.loads(out.stdout.strip().splitlines()[-1])

    assert ns in seen["namespaces"]
    assert seen["tables"] == ["py_events", "spark_events"]
    assert seen["spark_rows"] == [
        ["2024-03-30 23:30:00", "a", 1.5],
        ["2024-03-31 00:30:00", "b", 2.5],
        ["2024-03-31 01:30:00", "c", 3.0],
        ["2024-04-01 12:00:00", "d", 4.0],
    ]
    assert seen["spark_snapshots"] == 2
    assert seen["spark_partitions"] == 3
    assert seen["read_count"] == py_rows.num_rows
    assert seen["read_sum"] == pytest.approx(sum(py_rows.column("value").to_pylist()))

    # pyiceberg reads Spark's table: timestamptz, day(ts_utc), same rows
    spark_tbl = cat.load_table((ns, "spark_events"))
    assert str(spark_tbl.schema().find_field("ts_utc").field_type) == "timestamptz"
    assert spark_tbl.spec().fields[0].transform.__class__.__name__ == "DayTransform"
    got = spark_tbl.scan().to_arrow().sort_by("ts_utc")
    assert got.column("site_id").to_pylist() == ["a", "b", "c", "d"]
    assert len(spark_tbl.snapshots()) == 2
    # and sees the row Spark added to its table
    py_after = cat.load_table((ns, "py_events"))
    assert len(py_after.snapshots()) == 2
    assert py_after.scan().to_arrow().num_rows == py_rows.num_rows + 1
