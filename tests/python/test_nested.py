"""Nested columns (`struct<...>`, `list<...>`, `map<string, ...>`) through the binary: NDJSON
and Parquet sources land as Iceberg nested types that pyiceberg and Spark read with the
values floe was given; a model reads and keeps them; a Delta twin holds the same values.

Every process and request stays on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pyiceberg.types import ListType, MapType, StructType

import floe_testlib as lib
from floe_testlib import write_pipeline
from test_delta import read_delta, write_delta_pipeline
from test_ingest import ingest_ok, run_ingest
from test_transform import floe_ok, write_model

HELPERS = Path(__file__).parent / "helpers"

COLUMNS = [
    {"name": "code", "type": "string", "required": True},
    {"name": "location", "type": "struct<lat: double, lon: double>"},
    {"name": "units", "type": "list<struct<id: int, mw: double>>"},
    {"name": "tags", "type": "map<string, long>"},
]

RECORDS = [
    {"code": "A", "at": "2024-06-04T01:00:00Z", "location": {"lat": 51.5, "lon": -0.125},
     "units": [{"id": 1, "mw": 5.5}, {"id": 2, "mw": 7.0}], "tags": {"x": 1, "y": 2}},
    {"code": "B", "at": "2024-06-04T02:00:00Z", "location": None, "units": [], "tags": {}},
    {"code": "C", "at": "2024-06-05T03:00:00Z", "location": {"lat": -33.9, "lon": None},
     "units": [{"id": 3, "mw": None}], "tags": None},
]

# What each reader must see: (code, location, units, tags as sorted pairs).
EXPECTED = [
    ("A", {"lat": 51.5, "lon": -0.125}, [{"id": 1, "mw": 5.5}, {"id": 2, "mw": 7.0}], [("x", 1), ("y", 2)]),
    ("B", None, [], []),
    ("C", {"lat": -33.9, "lon": None}, [{"id": 3, "mw": None}], None),
]


def plants_job(ns: str, source: dict, **extra) -> dict:
    return {"name": "plants", "table": f"{ns}.plants", "source": source,
            "event_time": {"kind": "offset", "column": "at"}, "columns": COLUMNS, **extra}


def normalized(rows: list[dict]) -> list[tuple]:
    """Rows as (code, location, units, tags): maps (pyarrow gives pairs) as sorted pairs."""
    def pairs(m):
        if m is None:
            return None
        items = m.items() if isinstance(m, dict) else m
        return sorted(tuple(kv) for kv in items)
    return sorted((r["code"], r["location"], r["units"], pairs(r["tags"])) for r in rows)


def write_ndjson(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plants.ndjson").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))


def test_nested_json_lands_as_iceberg_nested_types(warehouse_server, ns: str, tmp_path):
    server = warehouse_server
    write_ndjson(tmp_path / "data")
    job = plants_job(ns, {"path": "data/plants.ndjson", "format": "ndjson"})
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [job])
    ingest_ok(server, pipeline, "2024-06-04", "2024-06-05")

    table = server.catalog().load_table(f"{ns}.plants")
    schema = table.schema()
    assert isinstance(schema.find_type("location"), StructType), schema
    assert isinstance(schema.find_type("units"), ListType), schema
    assert isinstance(schema.find_type("units.element"), StructType), schema
    tags = schema.find_type("tags")
    assert isinstance(tags, MapType) and (str(tags.key_type), str(tags.value_type)) == ("string", "long"), schema
    ids = [f.field_id for f in schema.fields]
    nested = [schema.find_field(n).field_id for n in ("location.lat", "location.lon", "units.element.id",
                                                      "units.element.mw", "tags.key", "tags.value")]
    assert min(nested) > max(ids) and len(set(nested)) == len(nested), schema
    rows = table.scan(selected_fields=("code", "location", "units", "tags")).to_arrow().to_pylist()
    assert normalized(rows) == EXPECTED


def test_nested_parquet_takes_the_columnar_path(local_server, ns: str, tmp_path):
    server = local_server
    (tmp_path / "data").mkdir()
    arrow = pa.Table.from_pylist(
        [{**r, "at": r["at"], "tags": list((r["tags"] or {}).items()) if r["tags"] is not None else None}
         for r in RECORDS],
        schema=pa.schema([
            ("code", pa.string()), ("at", pa.string()),
            ("location", pa.struct([("lat", pa.float64()), ("lon", pa.float64())])),
            ("units", pa.list_(pa.struct([("id", pa.int64()), ("mw", pa.float64())]))),
            ("tags", pa.map_(pa.string(), pa.int64())),
        ]))
    pq.write_table(arrow, tmp_path / "data" / "plants.parquet")
    job = plants_job(ns, {"path": "data/plants.parquet", "format": "parquet"})
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [job])
    ingest_ok(server, pipeline, "2024-06-04", "2024-06-05")
    rows = server.catalog().load_table(f"{ns}.plants").scan(
        selected_fields=("code", "location", "units", "tags")).to_arrow().to_pylist()
    assert normalized(rows) == EXPECTED

    # A struct of another shape is refused by name, not nulled.
    other = pa.table({"code": ["Z"], "at": ["2024-06-04T05:00:00Z"],
                      "location": pa.array([{"lat": "x"}], pa.struct([("lat", pa.string())]))})
    pq.write_table(other, tmp_path / "data" / "plants.parquet")
    out = run_ingest(server, pipeline, "2024-06-04", "2024-06-05")
    assert out.returncode != 0 and "field location" in out.stderr, lib.explain(out)


def test_a_model_reads_and_keeps_nested_columns(local_server, ns: str, tmp_path):
    server = local_server
    write_ndjson(tmp_path / "data")
    job = plants_job(ns, {"path": "data/plants.ndjson", "format": "ndjson"})
    ingest_ok(server, write_pipeline(tmp_path / "floe.toml", server, [job]), "2024-06-04", "2024-06-05")
    models = tmp_path / "models"
    silver = f"{ns}_silver"
    write_model(models, silver, "plant_units", 'materialized = "table"',
                f"SELECT code, location, location['lat'] AS lat, array_length(units) AS n_units, units "
                f"FROM {ns}.plants")
    floe_ok(server, "transform", "--catalog", server.uri, "--models", models, cwd=tmp_path)
    rows = server.catalog().load_table(f"{silver}.plant_units").scan().to_arrow().to_pylist()
    got = sorted((r["code"], r["location"], r["lat"], r["n_units"], r["units"]) for r in rows)
    assert got == [
        ("A", EXPECTED[0][1], 51.5, 2, EXPECTED[0][2]),
        ("B", None, None, 0, []),
        ("C", EXPECTED[2][1], -33.9, 1, EXPECTED[2][2]),
    ]


def test_delta_twin_holds_the_same_nested_values(local_server, ns: str, tmp_path):
    server = local_server
    write_ndjson(tmp_path / "data")
    job = plants_job(ns, {"path": "data/plants.ndjson", "format": "ndjson"}, format="delta")
    location = (tmp_path / "delta").as_uri()
    pipeline = write_delta_pipeline(tmp_path / "floe.toml", server, [job], location)
    ingest_ok(server, pipeline, "2024-06-04", "2024-06-05")
    seen = read_delta(f"{location}/{ns}/plants", columns=["code", "location", "units", "tags"])
    cols = seen["data"]
    rows = [dict(zip(cols, values)) for values in zip(*cols.values())]
    assert normalized(rows) == EXPECTED


@pytest.mark.spark
@pytest.mark.slow
def test_spark_reads_nested_columns(spark_env, local_server, ns: str, tmp_path):
    server = local_server
    write_ndjson(tmp_path / "data")
    job = plants_job(ns, {"path": "data/plants.ndjson", "format": "ndjson"})
    ingest_ok(server, write_pipeline(tmp_path / "floe.toml", server, [job]), "2024-06-04", "2024-06-05")
    query = (f"SELECT code, location.lat, location.lon, size(units), units[0].mw, tags['y'] "
             f"FROM floe.{ns}.plants ORDER BY code")
    args = lib.spark_args(spark_env, server, steps=[{"query": query, "about": f"{ns}.plants"}])
    try:
        out = subprocess.run([spark_env["python"], str(HELPERS / "spark_sql_steps.py"), json.dumps(args)],
                             capture_output=True, text=True, timeout=420, cwd=tmp_path, stdin=subprocess.DEVNULL,
                             env=lib.spark_child_env(server))
    except subprocess.TimeoutExpired:
        pytest.fail("the Spark job did not finish within 420 s")
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    rejected = [line for line in lines if "error" in line]
    assert not rejected, f"Spark rejected {ns}.plants: {rejected[0]['message']}"
    assert out.returncode == 0, f"Spark could not read {ns}.plants:\n{out.stderr[-6000:]}"
    rows = next(line["rows"] for line in lines if "rows" in line)
    assert rows == [["A", 51.5, -0.125, 2, 5.5, 2], ["B", None, None, 0, None, None],
                    ["C", -33.9, None, 1, None, None]]


# ---------------------------------------------------------------------------------------
# [job.expect] sql: a custom test over the run's rows, on a local folder and on S3


def test_job_expect_sql_reads_the_run_rows_and_blocks_the_commit(warehouse_server, ns: str, tmp_path):
    server = warehouse_server
    write_ndjson(tmp_path / "data")
    cat = server.catalog()
    sql = [{"name": "known_codes", "query": "SELECT code FROM {this} WHERE code NOT IN ('A', 'B', 'C')"},
           {"name": "some_units",
            "query": "SELECT sum(array_length(units)) AS n FROM {this} HAVING sum(array_length(units)) < 3"}]
    job = plants_job(ns, {"path": "data/plants.ndjson", "format": "ndjson"}, expect={"sql": sql})
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [job])
    ingest_ok(server, pipeline, "2024-06-04", "2024-06-05")
    committed = cat.load_table(f"{ns}.plants").current_snapshot().snapshot_id

    (tmp_path / "data" / "plants.ndjson").write_text(
        json.dumps({"code": "Z", "at": "2024-06-04T09:00:00Z", "units": [{"id": 9}]}) + "\n")
    out = run_ingest(server, pipeline, "2024-06-04", "2024-06-05")
    assert out.returncode == 1, lib.explain(out)
    assert "sql(known_codes): 1 offending row(s)" in out.stderr and "code=Z" in out.stderr, lib.explain(out)
    assert "sql(some_units): 1 offending row(s)" in out.stderr, lib.explain(out)
    assert cat.load_table(f"{ns}.plants").current_snapshot().snapshot_id == committed
