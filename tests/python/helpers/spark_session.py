"""A local Spark session wired to floe's REST catalog as catalog `floe`; shared by the Spark
helper scripts (run with FLOE_SPARK_PYTHON, which has pyspark)."""

from __future__ import annotations

import os


def floe_session(jar: str, uri: str, warehouse: str, app: str):
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").appName(app)
             .config("spark.jars", jar)
             .config("spark.sql.extensions", "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
             .config("spark.sql.catalog.floe", "org.apache.iceberg.spark.SparkCatalog")
             .config("spark.sql.catalog.floe.type", "rest")
             .config("spark.sql.catalog.floe.uri", uri)
             .config("spark.sql.catalog.floe.warehouse", warehouse)
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.ui.enabled", "false")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.sql.shuffle.partitions", "2")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    return spark
