"""The Spark side of bench/maintain.py: Iceberg's rewrite_data_files and expire_snapshots
procedures on one table, timed inside the driver once the session is up.

Run by bench/maintain.py through spark-submit (pyspark 3.5, local mode, the upstream
Iceberg 1.10 runtime and AWS bundle jars), against `floe catalog serve`:

    spark-submit --master local[2] --driver-memory 2g --jars JARS bench/maintain_spark.py '{json args}'

args: jars (comma-separated), uri, warehouse, table ("ns.name"), options
({"min-input-files": "5", ...}).
Prints one JSON line, last on stdout: session_ready (epoch s), rewrite_s, expire_s and
what each procedure returned.
"""
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python", "helpers"))
from spark_session import floe_session  # noqa: E402


def main() -> int:
    args = json.loads(sys.argv[1])
    spark = floe_session({"jars": args["jars"], "uri": args["uri"], "warehouse": args["warehouse"],
                          "s3": None}, "floe-bench-maintain")
    # The session is lazy about the catalog: load the table once so the timings below
    # are the procedures', not the REST client's first connection.
    table = f"floe.{args['table']}"
    spark.sql(f"SELECT count(*) FROM {table}.snapshots").collect()
    out = {"session_ready": time.time()}
    try:
        options = ", ".join(f"'{k}', '{v}'" for k, v in args["options"].items())
        t = time.time()
        rows = spark.sql(f"CALL floe.system.rewrite_data_files(table => '{args['table']}', "
                         f"options => map({options}))").collect()
        out["rewrite_s"] = time.time() - t
        out["rewrite"] = rows[0].asDict() if rows else {}
        out["snapshots_before_expire"] = spark.sql(f"SELECT count(*) FROM {table}.snapshots").collect()[0][0]
        # Every snapshot but the newest (the rewrite's) is older than this.
        cutoff = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
        t = time.time()
        rows = spark.sql(f"CALL floe.system.expire_snapshots(table => '{args['table']}', "
                         f"older_than => TIMESTAMP '{cutoff:%Y-%m-%d %H:%M:%S.%f}', retain_last => 1)").collect()
        out["expire_s"] = time.time() - t
        out["expire"] = rows[0].asDict() if rows else {}
        out["snapshots_after"] = spark.sql(f"SELECT count(*) FROM {table}.snapshots").collect()[0][0]
        out["rows_after"] = spark.sql(f"SELECT count(*) FROM {table}").collect()[0][0]
    finally:
        spark.stop()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
