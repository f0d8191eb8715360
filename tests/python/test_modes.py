"""`mode = "append"` through the binary, read back by pyiceberg, on a local folder and on S3:
every run's rows are kept (a forecast per issue), told apart by `_ingest_time`, and a retried
run id appends nothing twice.

Every process and request stays on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

from pathlib import Path

import floe_testlib as lib
from floe_testlib import write_pipeline
from test_ingest import ingest_ok


def forecast_job(ns: str) -> dict:
    return {
        "name": "forecast",
        "table": f"{ns}.forecast",
        "mode": "append",
        "source": {"path": "data/{date}.csv", "format": "csv"},
        "event_time": {"kind": "offset", "column": "time"},
        "columns": [{"name": "temp", "type": "double"}],
    }


def write_issue(folder: Path, base: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["time,temp"] + [f"2024-06-04T{h:02d}:00:00Z,{base + h}" for h in range(24)]
    (folder / "2024-06-04.csv").write_text("\n".join(lines) + "\n")


def test_an_append_job_keeps_every_issue_once(warehouse_server, ns: str, tmp_path):
    server = warehouse_server
    cat = server.catalog()
    ident = f"{ns}.forecast"
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [forecast_job(ns)])
    write_issue(tmp_path / "data", 10.0)
    ingest_ok(server, pipeline, "2024-06-04", "2024-06-04", "--run-id", "sunday")
    write_issue(tmp_path / "data", 20.0)
    ingest_ok(server, pipeline, "2024-06-04", "2024-06-04", "--run-id", "monday")
    ingest_ok(server, pipeline, "2024-06-04", "2024-06-04", "--run-id", "monday")

    table = cat.load_table(ident)
    assert table.current_snapshot().summary.operation.value == "append"
    rows = table.scan(selected_fields=("ts_utc", "temp", "_ingest_time")).to_arrow().to_pylist()
    assert len(rows) == 48, "both issues, the retried one once"
    issues = sorted({r["_ingest_time"] for r in rows})
    assert len(issues) == 2
    # Tuesday 05:00 as issued first, then as issued second.
    at_five = {r["_ingest_time"]: r["temp"] for r in rows if r["ts_utc"].hour == 5}
    assert [at_five[i] for i in issues] == [15.0, 25.0]


def test_reference_data_without_event_time_is_replaced_whole(warehouse_server, ns: str, tmp_path):
    server = warehouse_server
    cat = server.catalog()
    ident = f"{ns}.facilities"
    job = {
        "name": "facilities",
        "table": ident,
        "source": {"path": "data/facilities.csv", "format": "csv"},
        "columns": [
            {"name": "code", "type": "string", "required": True},
            {"name": "capacity_mw", "type": "double"},
        ],
    }
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [job])
    data = tmp_path / "data"
    data.mkdir()
    (data / "facilities.csv").write_text("code,capacity_mw\nBANKS,100\nCOAL1,600\n")
    ingest_ok(server, pipeline, "2024-06-04", "2024-06-04")
    (data / "facilities.csv").write_text("code,capacity_mw\nBANKS,120\nSOLAR2,50\n")
    ingest_ok(server, pipeline, "2024-06-05", "2024-06-05")

    table = cat.load_table(ident)
    assert table.spec().is_unpartitioned()
    assert "ts_utc" not in [f.name for f in table.schema().fields]
    assert table.current_snapshot().summary.operation.value == "overwrite"
    rows = sorted(table.scan(selected_fields=("code", "capacity_mw")).to_arrow().to_pylist(),
                  key=lambda r: r["code"])
    assert rows == [{"code": "BANKS", "capacity_mw": 120.0}, {"code": "SOLAR2", "capacity_mw": 50.0}]


def test_scd2_reference_data_keeps_its_history(warehouse_server, ns: str, tmp_path):
    server = warehouse_server
    cat = server.catalog()
    ident = f"{ns}.plants"
    job = {
        "name": "plants",
        "table": ident,
        "mode": "scd2",
        "unique_key": ["code"],
        "source": {"path": "data/plants.csv", "format": "csv"},
        "columns": [
            {"name": "code", "type": "string", "required": True},
            {"name": "capacity_mw", "type": "double"},
        ],
    }
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [job])
    data = tmp_path / "data"
    data.mkdir()
    (data / "plants.csv").write_text("code,capacity_mw\nBANKS,100\nCOAL1,600\n")
    ingest_ok(server, pipeline, "2024-06-04", "2024-06-04")
    (data / "plants.csv").write_text("code,capacity_mw\nBANKS,120\nWIND3,300\n")
    ingest_ok(server, pipeline, "2024-06-05", "2024-06-05")

    rows = cat.load_table(ident).scan(selected_fields=("code", "capacity_mw", "_valid_from", "_valid_to")) \
        .to_arrow().to_pylist()
    current = sorted((r["code"], r["capacity_mw"]) for r in rows if r["_valid_to"] is None)
    closed = sorted((r["code"], r["capacity_mw"]) for r in rows if r["_valid_to"] is not None)
    assert current == [("BANKS", 120.0), ("WIND3", 300.0)]
    assert closed == [("BANKS", 100.0), ("COAL1", 600.0)]
    second = {r["_valid_from"] for r in rows if r["_valid_to"] is None and r["code"] == "BANKS"}
    assert {r["_valid_to"] for r in rows if r["_valid_to"] is not None} == second
