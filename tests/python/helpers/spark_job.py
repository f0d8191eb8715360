"""Spark SQL against floe's REST catalog; run by test_catalog_spark.py with a python that has
pyspark 3.5 (FLOE_SPARK_PYTHON) and the jars of infra/local/spark.sh (FLOE_SPARK_JARS).

usage: python spark_job.py '{"jars": ..., "uri": ..., "warehouse": ..., "ns": ..., "read_table": ...}'
Prints one JSON line with what it saw, last on stdout.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spark_session import floe_session  # noqa: E402


def main() -> int:
    args = json.loads(sys.argv[1])
    spark = floe_session(args, "floe-catalog-acceptance")
    ns = args["ns"]
    out: dict = {}
    try:
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS floe.{ns}")
        out["namespaces"] = sorted(r[0] for r in spark.sql("SHOW NAMESPACES IN floe").collect())
        spark.sql(f"""CREATE TABLE floe.{ns}.spark_events (ts_utc TIMESTAMP, site_id STRING, value DOUBLE)
                      USING iceberg PARTITIONED BY (days(ts_utc))""")
        spark.sql(f"""INSERT INTO floe.{ns}.spark_events VALUES
                      (TIMESTAMP '2024-03-30 23:30:00', 'a', 1.5),
                      (TIMESTAMP '2024-03-31 00:30:00', 'b', 2.5),
                      (TIMESTAMP '2024-03-31 01:30:00', 'c', 3.0)""")
        spark.sql(f"INSERT INTO floe.{ns}.spark_events VALUES (TIMESTAMP '2024-04-01 12:00:00', 'd', 4.0)")
        rows = spark.sql(f"SELECT CAST(ts_utc AS STRING), site_id, value FROM floe.{ns}.spark_events "
                         "ORDER BY ts_utc").collect()
        out["spark_rows"] = [list(r) for r in rows]
        out["tables"] = sorted(r.tableName for r in spark.sql(f"SHOW TABLES IN floe.{ns}").collect())
        # metadata tables go through the catalog's NoSuchTableException fallback
        out["spark_snapshots"] = spark.sql(
            f"SELECT count(*) FROM floe.{ns}.spark_events.snapshots").collect()[0][0]
        out["spark_partitions"] = spark.sql(
            f"SELECT count(*) FROM floe.{ns}.spark_events.partitions").collect()[0][0]
        if args.get("read_table"):
            row = spark.sql(f"SELECT count(*), sum(value) FROM floe.{ns}.{args['read_table']}").collect()[0]
            out["read_count"], out["read_sum"] = int(row[0]), float(row[1])
            # and write one row into the table pyiceberg made
            spark.sql(f"INSERT INTO floe.{ns}.{args['read_table']} VALUES "
                      "(TIMESTAMP '2024-05-01 00:00:00', 'from-spark', 0.25)")
    finally:
        spark.stop()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
