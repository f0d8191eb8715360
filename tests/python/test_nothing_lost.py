"""Nothing lost, through the binary and read back by pyiceberg, on a local folder and on S3:

  * a source file that went missing never empties the days it held: the run exits 1 naming the
    days and the files looked for, and the table is untouched; `--allow-empty` empties them on
    purpose and the report lists them;
  * a first run that fails leaves no table behind; the fixed contract then runs;
  * `floe table list | describe | drop [--purge]` show and remove what floe wrote.

Every process and request stays on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import floe_testlib as lib
from floe_testlib import write_pipeline
from test_ingest import describe_run, ingest_env, ingest_ok, run_ingest

TIMEOUT_S = 120.0


def write_month(folder: Path, month: str, days: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["day,site,value"]
    for d in range(1, days + 1):
        for site in ("A", "B"):
            lines.append(f"{month}-{d:02d},{site},{d}.5")
    (folder / f"{month}.csv").write_text("\n".join(lines) + "\n")


def monthly_job(ns: str, value_type: str = "double") -> dict:
    return {
        "name": "exports",
        "table": f"{ns}.exports",
        "source": {"path": "data/*.csv", "format": "csv"},
        "event_time": {"kind": "date", "column": "day"},
        "columns": [
            {"name": "site_id", "type": "string", "required": True, "from": "site"},
            {"name": "value", "type": value_type},
        ],
    }


def days_of(cat, ident: str) -> dict[str, int]:
    data = cat.load_table(ident).scan(selected_fields=("ts_utc",)).to_arrow()
    out: dict[str, int] = {}
    for t in data.column("ts_utc").to_pylist():
        out[t.date().isoformat()] = out.get(t.date().isoformat(), 0) + 1
    return out


def floe(server: lib.CatalogServer, pipeline: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [lib.floe_bin(), *args, "--pipeline", str(pipeline)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=ingest_env(server),
                          cwd=pipeline.parent, stdin=subprocess.DEVNULL)


def test_a_missing_file_never_empties_its_days(warehouse_server, ns: str, tmp_path):
    server = warehouse_server
    cat = server.catalog()
    ident = f"{ns}.exports"
    write_month(tmp_path / "data", "2024-01", 31)
    write_month(tmp_path / "data", "2024-02", 29)
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [monthly_job(ns)])
    ingest_ok(server, pipeline, "2024-01-01", "2024-02-29")
    before = days_of(cat, ident)
    snapshot = cat.load_table(ident).current_snapshot().snapshot_id
    assert len(before) == 60

    (tmp_path / "data" / "2024-02.csv").unlink()
    report = tmp_path / "refused.json"
    out = run_ingest(server, pipeline, "2024-01-01", "2024-02-29", "--report", str(report))
    assert out.returncode == 1, describe_run(out)
    assert "2024-02-01..2024-02-29" in out.stderr, describe_run(out)
    assert "data/*.csv" in out.stderr and "--allow-empty" in out.stderr, describe_run(out)
    job = lib.job_report(lib.read_report(report), "exports")
    assert job["status"] == "failed" and job["snapshot_id"] is None
    assert cat.load_table(ident).current_snapshot().snapshot_id == snapshot
    assert days_of(cat, ident) == before

    report = tmp_path / "allowed.json"
    out = ingest_ok(server, pipeline, "2024-01-01", "2024-02-29", "--allow-empty", "--report", str(report))
    job = lib.job_report(lib.read_report(report), "exports")
    assert job["emptied_days"][0] == "2024-02-01" and len(job["emptied_days"]) == 29, job
    assert "emptied on purpose" in out.stdout, describe_run(out)
    after = days_of(cat, ident)
    assert sorted(after) == sorted(d for d in before if d.startswith("2024-01"))


def test_failed_first_run_leaves_nothing_and_table_commands(warehouse_server, ns: str, tmp_path):
    server = warehouse_server
    cat = server.catalog()
    ident = f"{ns}.exports"
    write_month(tmp_path / "data", "2024-03", 3)
    (tmp_path / "data" / "2024-03.csv").write_text(
        (tmp_path / "data" / "2024-03.csv").read_text().replace(".5", " MW"))
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [monthly_job(ns)])
    out = run_ingest(server, pipeline, "2024-03-01", "2024-03-03")
    assert out.returncode == 1, describe_run(out)
    assert not cat.table_exists(ident), "a failed first run left its table"
    assert cat.table_exists(f"{ident}__rejects")

    # The fixed contract runs as a first run.
    pipeline = write_pipeline(tmp_path / "floe.toml", server, [monthly_job(ns, "string")])
    ingest_ok(server, pipeline, "2024-03-01", "2024-03-03")
    assert sum(days_of(cat, ident).values()) == 6

    listed = floe(server, pipeline, "table", "list", ns, "--json")
    assert listed.returncode == 0, lib.explain(listed)
    names = {t["table"]: t["format"] for t in json.loads(listed.stdout)}
    assert names == {ident: "iceberg", f"{ident}__rejects": "iceberg"}, names

    described = floe(server, pipeline, "table", "describe", ident, "--json")
    assert described.returncode == 0, lib.explain(described)
    d = json.loads(described.stdout)
    assert [c["name"] for c in d["columns"]][:3] == ["ts_utc", "site_id", "value"]
    assert d["partitioning"] == ["day(ts_utc)"]
    assert d["current"]["rows"] == "6"
    text = floe(server, pipeline, "table", "describe", ident)
    assert "partitioned by: day(ts_utc)" in text.stdout, lib.explain(text)

    location = cat.load_table(ident).location()
    files = lib.files_under(location, server.s3)
    assert files
    dropped = floe(server, pipeline, "table", "drop", f"{ident}__rejects")
    assert dropped.returncode == 0, lib.explain(dropped)
    assert not cat.table_exists(f"{ident}__rejects")
    purged = floe(server, pipeline, "table", "drop", ident, "--purge")
    assert purged.returncode == 0, lib.explain(purged)
    assert not cat.table_exists(ident)
    assert lib.files_under(location, server.s3) == [], "--purge left files"
    missing = floe(server, pipeline, "table", "drop", ident)
    assert missing.returncode == 2 and "no table" in missing.stderr, lib.explain(missing)
