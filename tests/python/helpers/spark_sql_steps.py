"""Runs Spark SQL steps against floe's REST catalog, one at a time: one JVM serves a whole
test, which can pause it between steps (test_maintenance.py, test_spark_engine.py, ...).

usage: python spark_sql_steps.py '{"jars": ..., "uri": ..., "warehouse": ..., "s3": ...,
                                   "app": "name", "steps": [{"sql": "..."}, {"query": "SELECT ..."},
                                                           {"wait": "name"}]}'

  sql    runs a statement;
  query  collects its rows and prints {"query": i, "rows": [[...], ...]};
  wait   prints {"wait": name} and blocks until a line arrives on stdin (the test's go-ahead).
A step may carry "about" (what it reads or writes, e.g. the table): when Spark refuses a
step, the helper prints {"error": i, "about": ..., "sql": ..., "message": Spark's message}
and exits 3. Every printed line is one JSON object on stdout; the last is {"done": true}.
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


def spark_message(exc: BaseException) -> str:
    """Spark's own message (the Java exception's first lines), not the Python traceback."""
    text = getattr(exc, "desc", None) or str(exc)
    return "\n".join(text.strip().splitlines()[:12])


def run_step(spark, i: int, step: dict) -> None:
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


def main() -> int:
    args = json.loads(sys.argv[1])
    spark = floe_session(args, args.get("app", "floe-acceptance"))
    try:
        for i, step in enumerate(args["steps"]):
            try:
                run_step(spark, i, step)
            except SystemExit:
                raise
            except Exception as exc:  # Spark's AnalysisException, Py4JJavaError, ...
                emit({"error": i, "about": step.get("about"), "sql": step.get("sql") or step.get("query"),
                      "message": spark_message(exc)})
                return 3
    finally:
        spark.stop()
    emit({"done": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
