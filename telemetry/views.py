"""Batch views: derived DataFrames saved as (partitioned) Parquet and read back.

A view named ``name`` lives in ``<views root>/<name>/``: Spark's Parquet files
(``partition_by`` columns as ``col=value`` directories) plus a small
``_telemetry_view/`` directory holding the DataFrame's schema as JSON text, which
``read_batch_view`` uses so that every column comes back with the type it was
written with (Spark would otherwise re-infer partition columns from directory
names: a string ``"20261102"`` would return as an integer). Spark and Arrow skip
names starting with ``_``, so the directory stays readable as plain Parquet.

Views root: ``root`` argument, else env ``TELEMETRY_VIEWS_ROOT``, else ``views``
next to the pings root (``<data_root>/../views``, the data root itself being
resolved like ``Pings`` does). Local paths or URIs (``s3a://...``).
"""

from __future__ import annotations

import json
import os
import re

from .errors import TelemetryError
from .paths import Root, views_root
from .spark import get_spark

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
_META = "_telemetry_view"
MODES = ("overwrite", "append", "error", "errorifexists", "ignore")


def _check_name(name) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise TelemetryError(
            f"batch view name must be identifier-like (a letter, then letters, digits "
            f"or underscores; at most 128 characters), got {name!r}"
        )
    return name


def view_location(name: str, root: str | os.PathLike | None = None) -> Root:
    """Where the view ``name`` is (or would be) stored. Raises ``TelemetryError`` for
    an invalid name."""
    return views_root(root).join(_check_name(name))


def write_batch_view(
    df,
    name: str,
    partition_by: str | list[str] | tuple[str, ...] | None = None,
    mode: str = "overwrite",
    root: str | os.PathLike | None = None,
) -> str:
    """Write the DataFrame ``df`` as the batch view ``name``; return its location.

    ``name``: identifier-like (``[A-Za-z][A-Za-z0-9_]*``, at most 128 characters), the
    directory under the views root. ``partition_by``: a column or list of columns of
    ``df`` to partition by (one ``col=value`` directory level each, in that order;
    readers filtering on them read only the matching directories), or None.
    ``mode``: Spark's save mode: ``"overwrite"`` (default: replaces the whole view),
    ``"append"``, ``"error"``/``"errorifexists"`` (fail if the view exists),
    ``"ignore"`` (do nothing if it exists). ``root``: the views root (see module
    docstring).

    Returns the view's location as a string (a local path, or the URI). Raises
    ``TelemetryError`` for an invalid name, an unknown partition column, an unknown
    mode, or (local roots) ``mode="error"`` on an existing view; Spark's own errors
    otherwise (e.g. overwriting a view that ``df`` is reading from).
    """
    location = view_location(name, root)
    if not isinstance(mode, str) or mode.lower() not in MODES:
        raise TelemetryError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    mode = mode.lower()
    if partition_by is None:
        columns: list[str] = []
    elif isinstance(partition_by, str):
        columns = [partition_by]
    else:
        columns = list(partition_by)
    missing = [c for c in columns if not isinstance(c, str) or c not in df.columns]
    if missing:
        raise TelemetryError(
            f"partition_by: {', '.join(map(repr, missing))} not among the DataFrame's "
            f"columns {', '.join(df.columns)}"
        )
    if len(set(columns)) != len(columns):
        raise TelemetryError(f"partition_by names a column twice: {columns!r}")
    if len(columns) >= len(df.columns) and columns:
        raise TelemetryError("partition_by cannot use every column: no data would be left")
    exists = location.local is not None and os.path.exists(location.local)
    if mode in ("error", "errorifexists") and exists:
        raise TelemetryError(f"batch view {name!r} already exists at {location} (mode={mode!r})")
    if mode == "ignore" and exists:
        return str(location)

    writer = df.write.mode(mode)
    if columns:
        writer = writer.partitionBy(*columns)
    writer.parquet(location.uri)
    meta = {"schema": json.loads(df.schema.json()), "partition_by": columns}
    _write_meta(df, location, meta, keep_existing=mode == "ignore")
    return str(location)


def _write_meta(df, location: Root, meta: dict, keep_existing: bool = False) -> None:
    """Store ``meta`` as one JSON line in ``<view>/_telemetry_view/part-00000.txt``
    (local roots: plain Python; other roots: a one-row Spark text write, which keeps
    an existing one when ``keep_existing``)."""
    text = json.dumps(meta)
    target = location.join(_META)
    if target.local is not None:
        os.makedirs(target.local, exist_ok=True)
        for name in os.listdir(target.local):
            os.remove(os.path.join(target.local, name))
        with open(os.path.join(target.local, "part-00000.txt"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        return
    df.sparkSession.createDataFrame([(text,)], "value string").coalesce(1).write.mode(
        "ignore" if keep_existing else "overwrite"
    ).text(target.uri)


def _read_meta(spark, location: Root) -> dict | None:
    """The view's metadata, or None when it has none (written by other means)."""
    target = location.join(_META)
    try:
        if target.local is not None:
            names = sorted(n for n in os.listdir(target.local) if n.startswith("part-"))
            if not names:
                return None
            with open(os.path.join(target.local, names[0]), encoding="utf-8") as f:
                return json.loads(f.readline())
        rows = spark.read.text(target.uri).collect()
        return json.loads(rows[0][0]) if rows else None
    except Exception:  # missing or unreadable: read as plain Parquet
        return None


def read_batch_view(name: str, root: str | os.PathLike | None = None, *, spark=None):
    """Read the batch view ``name`` back as a DataFrame.

    The columns and their types are those of the DataFrame that was written, in the
    same order (partition columns included, with their original types); as with any
    Parquet read, every column comes back nullable. A view
    written by other means (no ``_telemetry_view``) is read as plain Parquet, with
    Spark's inferred partition types. ``root`` as for ``write_batch_view``;
    ``spark`` default ``get_spark()``.

    Raises ``TelemetryError`` for an invalid name or a view that does not exist.
    """
    location = view_location(name, root)
    spark = spark or get_spark()
    if location.local is not None and not os.path.isdir(location.local):
        raise TelemetryError(
            f"no batch view {name!r}: {location.local} does not exist "
            "(write it with write_batch_view first, or check root / TELEMETRY_VIEWS_ROOT)"
        )
    meta = _read_meta(spark, location)
    try:
        if meta is None:
            return spark.read.parquet(location.uri)
        from pyspark.sql.types import StructType

        schema = StructType.fromJson(meta["schema"])
        df = spark.read.schema(schema).parquet(location.uri)
        return df.select(*[f.name for f in schema.fields])
    except Exception as exc:
        if "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc):
            raise TelemetryError(f"no batch view {name!r} at {location}: {exc}") from None
        raise
