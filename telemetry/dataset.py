"""``Pings``: the main pings as a Spark DataFrame, read only from matching partitions."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .errors import TelemetryError
from .filters import Filter, column_predicate, parse_partition_filter, parse_value_filter
from .paths import Partition, Root, data_root, discover_layout, make_lister, walk_partitions
from .spark import get_spark, jvm_of

#: Partition columns of the pings dataset, outermost directory first.
PARTITION_COLUMNS = ("submission_date", "app", "channel", "version", "build_id")

#: Sampling resolution: a client is in a sample of ``fraction`` when
#: ``crc32(client_id) < fraction * 2**32`` (see ``sample_threshold``).
SAMPLE_SPACE = 2**32


@dataclass(frozen=True)
class Selection:
    """What a ``Pings`` call selects, without reading any data.

    ``root``: the resolved data root; ``layout``: its partition columns, outermost
    first; ``partitions``: the matching leaf directories (``Partition.path``,
    ``Partition.values``: column -> string), sorted by location;
    ``partition_filters`` / ``value_filters``: the parsed filters (field -> Filter).
    """

    root: Root
    layout: tuple[str, ...]
    partitions: list[Partition]
    partition_filters: dict
    value_filters: dict

    @property
    def paths(self) -> list[str]:
        """URIs of the matching leaf directories."""
        return [p.path.uri for p in self.partitions]

    @property
    def read_paths(self) -> list[str]:
        """URIs of the fewest directories that hold exactly the matching partitions:
        what Spark is asked to read (and list).

        Below the deepest filtered partition column nothing is filtered, so the
        matching directories at that depth are passed instead of all their leaves
        (the root itself when nothing is filtered). Fewer paths keep Spark's listing
        cheap; the result is the same files.
        """
        filtered = [i for i, c in enumerate(self.layout) if c in self.partition_filters]
        depth = max(filtered) + 1 if filtered else 0
        if not self.partitions:
            return []
        if depth == 0:
            return [self.root.uri]
        seen: dict[str, None] = {}
        for partition in self.partitions:
            seen.setdefault(self.root.join(*partition.names[:depth]).uri, None)
        return list(seen)


def sample_threshold(fraction: float) -> int:
    """The ``crc32(client_id)`` bound of a ``fraction`` sample: ``ceil(fraction * 2**32)``.

    Raises ``TelemetryError`` unless ``0 < fraction <= 1``.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TelemetryError(f"fraction must be a number in (0, 1], got {fraction!r}")
    if not (0 < fraction <= 1) or math.isnan(fraction):
        raise TelemetryError(f"fraction must be in (0, 1], got {fraction!r}")
    return min(SAMPLE_SPACE, math.ceil(fraction * SAMPLE_SPACE))


def in_sample(client_id: str, fraction: float) -> bool:
    """Whether a client is in the ``fraction`` sample (the rule ``Pings`` applies in
    Spark, for checking in plain Python): ``zlib.crc32(client_id as UTF-8) <
    sample_threshold(fraction)``. Samples are nested: a 10 % sample is part of every
    larger one."""
    import zlib

    return zlib.crc32(client_id.encode("utf-8")) < sample_threshold(fraction)


def select_pings(
    app="*",
    channel="*",
    version="*",
    build_id="*",
    submission_date="*",
    *,
    spark=None,
    data_root: str | os.PathLike | None = None,
    **partition_filters,
) -> Selection:
    """List the partitions ``Pings`` would read, without reading any data.

    Same partition filters, root resolution and errors as ``Pings``; extra keyword
    arguments may name other partition columns of the dataset (filters on data
    columns are only for ``Pings``: they raise ``TelemetryError`` here). For a local
    root this needs no Spark at all; other roots are listed with ``spark`` (default
    ``get_spark()``). Returns a ``Selection``.
    """
    return _select(
        data_root,
        spark,
        dict(
            app=app,
            channel=channel,
            version=version,
            build_id=build_id,
            submission_date=submission_date,
            **partition_filters,
        ),
        data_columns_allowed=False,
    )


def _select(data_root_value, spark, given: dict, data_columns_allowed: bool) -> Selection:
    root = _resolve(data_root_value)
    if root.local is None and spark is None:
        spark = get_spark()
    lister = make_lister(root, spark)
    lister.check()
    layout = discover_layout(lister)
    if layout is None:
        raise TelemetryError(
            f"data root {root} holds no partitioned Parquet data (expected directories "
            f"like {'/'.join(c + '=...' for c in PARTITION_COLUMNS)} with Parquet files)"
        )
    partition_filters: dict[str, Filter] = {}
    value_filters: dict[str, Filter | None] = {}
    for field, value in given.items():
        if field in layout:
            parsed = parse_partition_filter(field, value)
            if parsed is not None:
                partition_filters[field] = parsed
        elif field in PARTITION_COLUMNS:
            # A standard partition column this dataset does not have: fine when "*".
            if parse_partition_filter(field, value) is not None:
                raise TelemetryError(
                    f"unknown field {field!r}: {root} is partitioned by "
                    f"{', '.join(layout)} only; pass {field}='*'"
                )
        elif data_columns_allowed:
            # Checked against the schema by Pings; kept even for "*" so a misspelt
            # name is reported.
            value_filters[field] = parse_value_filter(field, value)
        else:
            raise TelemetryError(
                f"unknown field {field!r}: the partition columns of {root} are "
                f"{', '.join(layout)} (filters on data columns are for Pings)"
            )
    partitions = walk_partitions(lister, layout, partition_filters)
    return Selection(root, layout, partitions, partition_filters, value_filters)


def Pings(  # noqa: N802 - the historical Telemetry API's name
    app="*",
    channel="*",
    version="*",
    build_id="*",
    submission_date="*",
    fraction: float = 1.0,
    *,
    spark=None,
    data_root: str | os.PathLike | None = None,
    **filters,
):
    """Return the main pings matching the filters as a Spark DataFrame.

    ``Pings("Firefox", "nightly", "54.0a1", "*", ("20261109", "20261110"))``: Firefox
    Nightly 54.0a1 pings of any build received on 9 and 10 November (both days
    included); add ``fraction=0.1`` for a 10 % sample of the clients.

    Filters (``app``, ``channel``, ``version``, ``build_id``, ``submission_date``, and
    optionally data columns as keyword arguments, e.g. ``os_name="Linux"`` or
    ``session_length_s=(60, 3600)``): each is ``"*"`` (everything), a single value, or
    a ``(start, end)`` pair, both ends included. Dates are ``YYYYMMDD``; a
    ``build_id`` bound shorter than 14 digits is a prefix (``("20261101",
    "20261105")`` = builds of 1-5 Nov); version ranges compare as versions
    (``("53.0", "54.0a1")`` excludes ``"9.0"``). See ``telemetry.filters``.

    Partition pruning: the directory tree (``submission_date=/app=/channel=/version=/
    build_id=``) is listed level by level and only matching directories are descended
    into and handed to Spark (``basePath`` = the root), so Spark lists and reads only
    those files; the plan's ``FileScan parquet`` shows ``InMemoryFileIndex(N paths)``
    with exactly the matching directories. Data-column filters are ordinary Spark
    predicates (pushed down to Parquet where possible).

    Sampling: ``fraction`` in ``(0, 1]`` keeps the pings of the clients with
    ``crc32(client_id) < ceil(fraction * 2**32)`` (Spark's ``crc32`` of the UTF-8
    bytes, as ``zlib.crc32``; see ``in_sample``): deterministic, the same clients in
    every call and on every machine, all or none of a client's pings, samples nested
    (10 % is inside 20 %). The share of pings kept is ``fraction`` up to the noise of
    sampling clients (a client's pings go together).

    Data root: ``data_root``, else env ``TELEMETRY_DATA_ROOT``, else
    ``<cwd>/sample/pings``; a local path (relative to the working directory) or a URI
    such as ``s3a://bucket/pings`` (listed through the session's Hadoop FileSystem; on
    Spark Connect through a Spark read of the whole root). ``spark``: the session to
    use, default ``get_spark()``.

    Returns a DataFrame with the Parquet data columns (for the sample generated by
    ``telemetry.sample``: ``client_id``, ``document_id``, ``os_name``,
    ``os_version``, ``architecture``, ``e10s_enabled``, ``addons``,
    ``session_length_s``, ``subsession_hours``, ``gc_ms``, ``addon_names``,
    ``simple_measures_uptime``, ``hangs``; see its docstring for types and units)
    followed by the partition columns, always as strings (``submission_date``
    ``"20261102"``, ``build_id`` ``"20261016031607"``, ``version`` ``"52.0"``), whatever
    Spark's type inference would make of them. No matching partition: an empty
    DataFrame with that schema.

    Raises ``TelemetryError`` (a ``ValueError``) for: a missing data root or one
    without partitioned data; an unknown field (a keyword that is neither a
    partition column nor a data column, or a non-``"*"`` filter on a standard
    partition column the dataset lacks); a malformed value (range not a pair,
    ``start > end``, date not ``YYYYMMDD``); ``fraction`` outside ``(0, 1]``.
    """
    from pyspark.sql.types import StringType, StructField, StructType

    threshold = sample_threshold(fraction)
    spark = spark or get_spark()
    selection = _select(
        data_root,
        spark,
        dict(
            app=app,
            channel=channel,
            version=version,
            build_id=build_id,
            submission_date=submission_date,
            **filters,
        ),
        data_columns_allowed=True,
    )
    root, layout = selection.root, selection.layout

    # Schema: the data columns of one file, then the partition columns as strings (a
    # user-given type is taken as it is, without Spark's inference from the values).
    probe = _first_leaf(selection, spark)
    data_fields = [f for f in spark.read.parquet(probe).schema.fields if f.name not in layout]
    schema = StructType(data_fields + [StructField(c, StringType(), True) for c in layout])
    known = {f.name for f in data_fields}
    unknown = sorted(set(selection.value_filters) - known)
    if unknown:
        raise TelemetryError(
            f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
            f"the pings have the partition columns {', '.join(layout)} and the data "
            f"columns {', '.join(sorted(known))}"
        )
    if threshold < SAMPLE_SPACE and "client_id" not in known:
        raise TelemetryError("fraction < 1 needs a client_id column, which this dataset lacks")

    if not selection.partitions:
        return spark.createDataFrame([], schema)
    df = _read(spark, schema, root, selection.read_paths)
    for flt in selection.value_filters.values():
        if flt is not None:
            df = df.where(column_predicate(flt))
    if threshold < SAMPLE_SPACE:
        df = df.where(sample_predicate(threshold))
    return df


def sample_predicate(threshold: int):
    """The Spark ``Column`` that keeps the clients of a sample: ``crc32(client_id) <
    threshold`` (``threshold`` from ``sample_threshold``; see ``in_sample``)."""
    from pyspark.sql import functions as F

    return F.crc32(F.col("client_id").cast("binary")) < F.lit(threshold)


_PARALLEL_LISTING = "spark.sql.sources.parallelPartitionDiscovery.threshold"


def _read(spark, schema, root: Root, paths: list[str]):
    """``spark.read.parquet(*paths)`` with ``basePath`` = the root and ``schema``.

    Local roots, classic session: Spark would list more than 32 paths with a
    distributed job (seconds of overhead for what ``os.scandir`` does in
    milliseconds), so the threshold is raised for the duration of the call (the
    file index is built eagerly, within it)."""
    reader = spark.read.schema(schema).option("basePath", root.uri)
    if root.local is None or jvm_of(spark) is None or len(paths) <= 32:
        return reader.parquet(*paths)
    previous = spark.conf.get(_PARALLEL_LISTING, None)
    spark.conf.set(_PARALLEL_LISTING, str(max(len(paths) + 1, int(previous or 32))))
    try:
        return reader.parquet(*paths)
    finally:
        if previous is None:
            spark.conf.unset(_PARALLEL_LISTING)
        else:
            spark.conf.set(_PARALLEL_LISTING, previous)


def _resolve(value) -> Root:
    return data_root(value)


def _first_leaf(selection: Selection, spark) -> str:
    """A leaf directory to read the data schema from: the first matching one, else
    the first of the whole root."""
    if selection.partitions:
        return selection.partitions[0].path.uri
    lister = make_lister(selection.root, spark)
    leaves = walk_partitions(_FirstOnly(lister), selection.layout, {})
    if not leaves:
        raise TelemetryError(f"data root {selection.root} holds no Parquet files")
    return leaves[0].path.uri


class _FirstOnly:
    """A lister that only shows the first sub-directory of every directory."""

    def __init__(self, lister):
        self.lister = lister
        self.root = lister.root

    def entries(self, parts):
        dirs, has_files = self.lister.entries(parts)
        return dirs[:1], has_files
