"""Spark reads a table floe wrote and prints what it saw as one JSON line (test_ingest.py).

usage: python spark_read.py '{"jars": ..., "uri": ..., "warehouse": ..., "table": "ns.t", "day": "YYYY-MM-DD"}'
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spark_session import floe_session  # noqa: E402

args = json.loads(sys.argv[1])
spark = floe_session(args, "floe-ingest-acceptance")
t = "floe." + args["table"]
out = {}
try:
    out["count"] = spark.sql(f"SELECT count(*) FROM {t}").collect()[0][0]
    out["rows"] = [[r[0], r[1], r[2]] for r in
                   spark.sql(f"SELECT unix_micros(ts_utc), site_id, value FROM {t}").collect()]
    out["day_count"] = spark.sql(f"SELECT count(*) FROM {t} WHERE ts_utc >= TIMESTAMP '{args['day']} 00:00:00' "
                                 f"AND ts_utc < TIMESTAMP '{args['day']} 00:00:00' + INTERVAL 1 DAY").collect()[0][0]
    out["partitions"] = spark.sql(f"SELECT count(*) FROM {t}.partitions").collect()[0][0]
    out["ts_type"] = [r[1] for r in spark.sql(f"DESCRIBE TABLE {t}").collect() if r[0] == "ts_utc"][0]
finally:
    spark.stop()
print(json.dumps(out))
