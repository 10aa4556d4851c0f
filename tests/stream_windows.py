"""Windowed counts of the streaming pings, for tests of the windowed-counts example
(examples/stream_windowed_counts.ipynb): what its Parquet sink holds, and the same
windows recomputed by a plain PySpark batch read of the landing files."""

import base64
import datetime as dt
import logging
import os
from pathlib import Path

import numpy as np

PLOTLY = "application/vnd.plotly.v1+json"
WINDOW = "10 minutes"  # the example's defaults
SLIDE = "5 minutes"
DELAY = dt.timedelta(minutes=5)


def local_spark():
    """A small local SparkSession in the test process (UTC, no UI, loopback)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = (
        SparkSession.builder.master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    return session


def sink_windows(spark, output_dir: Path) -> dict[tuple[dt.datetime, str], int]:
    """{(window start, os_name): pings} of the sink, read through its log
    (``_spark_metadata``: files of a micro-batch that never committed are not read). A
    window written twice would show as the sum of its copies: the test compares with
    the recomputation, so a duplicate shows."""
    from pyspark.sql import functions as F

    rows = (
        spark.read.parquet(str(output_dir))
        .groupBy("window_start", "os_name")
        .agg(F.sum("pings").alias("pings"))
        .collect()
    )
    return {(r.window_start, r.os_name): r.pings for r in rows}


def sink_rows(spark, output_dir: Path) -> int:
    """Rows in the sink (one per window and OS, if nothing was written twice)."""
    return spark.read.parquet(str(output_dir)).count()


def batch_windows(spark, landing: Path) -> dict[tuple[dt.datetime, str], int]:
    """{(window start, os_name): pings} of a batch read of every file in ``landing``,
    with the example's windows, keeping those a watermark of the latest event time less
    DELAY has finalised (window end at or before it: the windows an append-mode sink
    holds once that watermark is reached)."""
    from pyspark.sql import functions as F

    from telemetry.stream import stream_schema

    pings = (
        spark.read.schema(stream_schema())
        .option("pathGlobFilter", "*.parquet")
        .parquet(str(landing))
    )
    latest = pings.agg(F.max("submission_timestamp")).first()[0]
    watermark = latest - DELAY
    rows = (
        pings.groupBy(F.window("submission_timestamp", WINDOW, SLIDE), "os_name")
        .count()
        .where(F.col("window.end") <= F.lit(watermark))
        .select(F.col("window.start").alias("start"), "os_name", "count")
        .collect()
    )
    return {(r.start, r.os_name): r["count"] for r in rows}


def plotly_values(array) -> list:
    """A Plotly JSON array as a list: a list, or a typed array (``{"dtype", "bdata"}``)."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)
