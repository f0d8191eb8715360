"""A local Spark session wired to floe's REST catalog as catalog `floe`; shared by the Spark
helper scripts (run with FLOE_SPARK_PYTHON, which has pyspark).

The session is infra/spark/spark-defaults.conf, the file compose.spark.yml mounts, with the
test endpoints filled in (as infra/local/trino.sh fills in Trino's catalog file):
`spark.jars.packages` becomes the local jars infra/local/spark.sh fetched, the catalog URI
and warehouse the test server's, the S3 endpoint and region the test S3 server's (S3
credentials come from AWS_* in the environment, as in the container), and for a local-folder
warehouse the S3 lines go (Iceberg's default file IO reads file: paths).

The helpers take one JSON argument with at least
  {"jars": "a.jar,b.jar", "uri": ..., "warehouse": ..., "s3": null | {"endpoint", "region"}}
"""

from __future__ import annotations

import os
from pathlib import Path

CONF = Path(__file__).resolve().parents[3] / "infra" / "spark" / "spark-defaults.conf"

# Only for tests on a shared 2-core machine: no UI, loopback only, few shuffle partitions.
TEST_SETTINGS = {
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.shuffle.partitions": "2",
}


def read_conf(path: Path = CONF) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        settings[key] = value.strip()
    return settings


def is_s3_setting(key: str) -> bool:
    return (key.startswith(("spark.sql.catalog.floe.s3.", "spark.hadoop.fs.s3a."))
            or key in ("spark.sql.catalog.floe.io-impl", "spark.sql.catalog.floe.client.region"))


def test_conf(args: dict) -> dict[str, str]:
    """spark-defaults.conf with the test endpoints of `args` filled in."""
    conf = read_conf()
    for key in ("spark.jars.packages", "spark.jars.ivy"):
        if key not in conf:
            raise SystemExit(f"{CONF} has no {key} line any more: update spark_session.py")
        del conf[key]
    conf["spark.jars"] = args["jars"]
    conf["spark.sql.catalog.floe.uri"] = args["uri"]
    conf["spark.sql.catalog.floe.warehouse"] = args["warehouse"]
    s3 = args.get("s3")
    for key in [k for k in conf if is_s3_setting(k)]:
        if not s3:
            del conf[key]
        elif key in ("spark.sql.catalog.floe.s3.endpoint", "spark.hadoop.fs.s3a.endpoint"):
            conf[key] = s3["endpoint"]
        elif key in ("spark.sql.catalog.floe.client.region", "spark.hadoop.fs.s3a.endpoint.region"):
            conf[key] = s3["region"]
    conf.update(TEST_SETTINGS)
    return conf


def floe_session(args: dict, app: str):
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master("local[2]").appName(app)
    for key, value in test_conf(args).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
