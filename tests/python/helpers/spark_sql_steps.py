"""Runs Spark SQL steps against floe's REST catalog, one at a time, for the maintenance tests
(test_maintenance.py): one JVM serves a whole test, which can pause it between steps.

usage: python spark_sql_steps.py '{"jar": ..., "uri": ..., "warehouse": ...,
                                   "steps": [{"sql": "..."}, {"query": "SELECT ..."}, {"wait": "name"}]}'

  sql    runs a statement;
  query  collects its rows and prints {"query": i, "rows": [[...], ...]};
  wait   prints {"wait": name} and blocks until a line arrives on stdin (the test's go-ahead).
Every printed line is one JSON object on stdout; the last is {"done": true}.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spark_session import floe_session  # noqa: E402


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def main() -> int:
    args = json.loads(sys.argv[1])
    spark = floe_session(args["jar"], args["uri"], args["warehouse"], "floe-maintenance-acceptance")
    try:
        for i, step in enumerate(args["steps"]):
            if "sql" in step:
                spark.sql(step["sql"]).collect()
            elif "query" in step:
                rows = spark.sql(step["query"]).collect()
                emit({"query": i, "rows": [list(r) for r in rows]})
            elif "wait" in step:
                emit({"wait": step["wait"]})
                if not sys.stdin.readline():
                    raise SystemExit("stdin closed while waiting")
            else:
                raise SystemExit(f"unknown step {step!r}")
    finally:
        spark.stop()
    emit({"done": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
