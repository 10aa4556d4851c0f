"""``PingsStream``: the main pings arriving in a landing directory, as a streaming DataFrame.

A package rather than a module so that ``python -m telemetry.stream`` (the generator's
command, ``__main__.py``) runs without Python warning that ``telemetry`` already
imported it.
"""

from __future__ import annotations

import os

from ..dataset import PARTITION_COLUMNS, SAMPLE_SPACE, sample_predicate, sample_threshold
from ..errors import TelemetryError
from ..filters import column_predicate, parse_partition_filter, parse_value_filter
from ..paths import STREAM_ROOT_ENV, stream_root
from ..spark import get_spark

EVENT_TIME_COLUMN = "submission_timestamp"  # = telemetry.landing.EVENT_TIME_COLUMN


def stream_schema():
    """The Spark schema of ``PingsStream`` (a ``StructType``): ``Pings``' columns (the
    data columns, then the partition columns as strings), then ``submission_timestamp``
    (``TimestampType``, UTC instants). Every field nullable, as Spark's file sources
    report it. Derived from ``telemetry.landing.STREAM_SCHEMA``, what the files hold."""
    from pyspark.sql.pandas.types import from_arrow_schema

    from ..landing import STREAM_SCHEMA

    return _nullable(from_arrow_schema(STREAM_SCHEMA, prefer_timestamp_ntz=False))


def _nullable(data_type):
    from pyspark.sql.types import ArrayType, MapType, StructField, StructType

    if isinstance(data_type, StructType):
        return StructType([StructField(f.name, _nullable(f.dataType), True) for f in data_type])
    if isinstance(data_type, ArrayType):
        return ArrayType(_nullable(data_type.elementType), True)
    if isinstance(data_type, MapType):
        return MapType(data_type.keyType, _nullable(data_type.valueType), True)
    return data_type


def PingsStream(  # noqa: N802 - named like Pings
    spark=None,
    landing_dir: str | os.PathLike | None = None,
    *,
    fraction: float = 1.0,
    max_files_per_trigger: int | None = None,
    **filters,
):
    """Return the pings landing in ``landing_dir`` as a streaming DataFrame
    (``spark.readStream``, Parquet file source).

    ``PingsStream(spark, app="Firefox", channel="nightly", os_name="Linux")``: the
    Firefox Nightly pings from Linux, read from each new file as it lands.

    Filters: the same fields and semantics as ``Pings``, as keyword arguments:
    ``app``, ``channel``, ``version``, ``build_id``, ``submission_date`` (each ``"*"``,
    a value or an inclusive ``(start, end)`` pair; dates ``YYYYMMDD``, ``build_id``
    prefixes, version ranges compared as versions; see ``telemetry.filters``), any data
    column (``=`` / ``BETWEEN``), and ``fraction`` (the same deterministic client
    sample). In a stream there are no partition directories to prune: every filter is
    a predicate on the rows of each new file.

    Schema: fixed, ``stream_schema()`` (never inferred from the files, which a
    streaming file source cannot do safely): ``Pings``' columns, then
    ``submission_timestamp``, the event time, for ``withWatermark`` and windows.

    ``landing_dir``: else env ``TELEMETRY_STREAM_ROOT``, else ``<cwd>/sample/stream``;
    a local path or a URI. Only ``*.parquet`` files are read; hidden files (``.``,
    ``_``) are skipped, which is how ``telemetry.landing.write_batch`` keeps its
    partial files unseen (a batch read of the same files: ``spark.read.schema(
    stream_schema()).option("pathGlobFilter", "*.parquet").parquet(landing_dir)``).
    Files the generator's retention deletes (``telemetry.landing``: by default those
    more than 24 h of event time older than the newest) are never read if the query
    had not listed them yet, and skipped if it had (``ignoreMissingFiles``): a query
    that lags further than the retention loses them rather than failing.
    ``max_files_per_trigger``: at most that many new files per
    micro-batch (default: all new files). ``spark``: default ``get_spark()``; classic
    sessions and Spark Connect alike (no SparkContext, no Python UDF).

    Raises ``TelemetryError`` for an unknown field, a malformed filter value,
    ``fraction`` outside ``(0, 1]``, a ``max_files_per_trigger`` that is not a
    positive int, or a local landing directory that does not exist.
    """
    threshold = sample_threshold(fraction)
    schema = stream_schema()
    columns = set(schema.fieldNames())
    predicates = []
    for field, value in filters.items():
        if field in PARTITION_COLUMNS:
            flt = parse_partition_filter(field, value)
        elif field in columns:
            flt = parse_value_filter(field, value)
        else:
            raise TelemetryError(
                f"unknown field {field!r}: the streaming pings have the columns "
                f"{', '.join(schema.fieldNames())}"
            )
        if flt is not None:
            predicates.append(column_predicate(flt))
    if max_files_per_trigger is not None and (
        isinstance(max_files_per_trigger, bool)
        or not isinstance(max_files_per_trigger, int)
        or max_files_per_trigger < 1
    ):
        raise TelemetryError(
            f"max_files_per_trigger must be a positive int, got {max_files_per_trigger!r}"
        )
    root = stream_root(landing_dir)
    if root.local is not None and not os.path.isdir(root.local):
        raise TelemetryError(
            f"landing directory {root.local} does not exist. Pass landing_dir=..., set "
            f"{STREAM_ROOT_ENV}, or start the generator there with "
            f"`python -m telemetry.stream --landing {root.local}`"
        )

    spark = spark or get_spark()
    reader = (
        spark.readStream.schema(schema)
        .option("pathGlobFilter", "*.parquet")
        # The generator deletes old files (telemetry.landing's retention; not Spark's
        # cleanSource, which needs write access and one query per directory, whereas
        # every user's stream reads this one, read-only). A file deleted after a
        # micro-batch planned it but before it was read would fail the batch; skip it,
        # as Spark does when it went before the batch was planned.
        .option("ignoreMissingFiles", "true")
    )
    if max_files_per_trigger is not None:
        reader = reader.option("maxFilesPerTrigger", max_files_per_trigger)
    df = reader.parquet(root.uri)
    for predicate in predicates:
        df = df.where(predicate)
    if threshold < SAMPLE_SPACE:
        df = df.where(sample_predicate(threshold))
    return df


__all__ = ["EVENT_TIME_COLUMN", "PingsStream", "stream_schema"]
