"""Getting the notebook's SparkSession."""

from __future__ import annotations


def get_spark():
    """Return the notebook's ``SparkSession``: ``SparkSession.builder.getOrCreate()``.

    No master is set here on purpose: in a portal kernel the environment already names
    the job's Spark target (``PYSPARK_SUBMIT_ARGS="--master local[*] pyspark-shell"``
    for the embedded local Spark, or ``SPARK_REMOTE=sc://...`` for Spark Connect, in
    which case PySpark returns a Spark Connect session). An already running session is
    returned as it is. Raises whatever PySpark raises when Spark cannot start (e.g. no
    Java).
    """
    from pyspark.sql import SparkSession

    return SparkSession.builder.getOrCreate()


def jvm_of(spark):
    """Return the py4j JVM view of a classic session, or None (Spark Connect)."""
    try:
        return spark._jvm  # classic sessions only; Spark Connect raises or lacks it
    except Exception:
        return None
