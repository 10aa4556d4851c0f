"""Telemetry datasets for notebooks: ``Pings``, batch views, and the Spark session.

Importable inside the portal's notebook kernels::

    from telemetry import Pings, write_batch_view, read_batch_view, get_spark

    spark = get_spark()
    pings = Pings("Firefox", "nightly", "54.0a1", "*", ("20261109", "20261110"), fraction=0.1)
    pings.groupBy("os_name").count().show()

- ``Pings(app, channel, version, build_id, submission_date, fraction=1.0, *,
  spark=None, data_root=None, **data_column_filters)`` -> Spark DataFrame of main
  pings; each filter ``"*"``, a value, or an inclusive ``(start, end)`` range; only
  matching partitions are listed and read; ``fraction`` samples clients
  deterministically (``crc32(client_id)``).
- ``select_pings(...)`` -> ``Selection``: the matching partitions without reading.
- ``PingsStream(spark=None, landing_dir=None, *, fraction=1.0,
  max_files_per_trigger=None, **filters)`` -> streaming DataFrame of the pings landing
  in a directory (fixed schema: ``Pings``' columns plus the event time
  ``submission_timestamp``); the same filters as ``Pings``. Batches are written by
  ``telemetry.landing.write_batch`` or ``python -m telemetry.stream --landing DIR``.
- ``write_batch_view(df, name, partition_by=None, mode="overwrite", root=None)`` ->
  location; ``read_batch_view(name, root=None, *, spark=None)`` -> DataFrame.
- ``get_spark()`` -> ``SparkSession.builder.getOrCreate()`` (Spark Connect when
  ``SPARK_REMOTE`` is set).
- ``TelemetryError(ValueError)``: every error of this package about a request.

Locations: pings root = ``data_root`` argument, else env ``TELEMETRY_DATA_ROOT``,
else ``<cwd>/sample/pings``; the stream's landing directory = ``landing_dir``, else env
``TELEMETRY_STREAM_ROOT``, else ``<cwd>/sample/stream``; views root = ``root``
argument, else env ``TELEMETRY_VIEWS_ROOT``, else ``<pings root>/../views``. Local
paths or URIs (``s3a://bucket/prefix``).

The package uses no Python UDFs: everything runs as Spark SQL expressions, so Spark
executors need neither this package nor any Python beyond PySpark's.
"""

from .dataset import PARTITION_COLUMNS, Pings, Selection, in_sample, sample_threshold, select_pings
from .errors import TelemetryError
from .paths import (
    DATA_ROOT_ENV,
    STREAM_ROOT_ENV,
    VIEWS_ROOT_ENV,
    data_root,
    stream_root,
    views_root,
)
from .spark import get_spark
from .stream import PingsStream, stream_schema
from .views import read_batch_view, view_location, write_batch_view

__all__ = [
    "DATA_ROOT_ENV",
    "PARTITION_COLUMNS",
    "VIEWS_ROOT_ENV",
    "Pings",
    "PingsStream",
    "STREAM_ROOT_ENV",
    "Selection",
    "TelemetryError",
    "data_root",
    "get_spark",
    "in_sample",
    "read_batch_view",
    "sample_threshold",
    "select_pings",
    "stream_root",
    "stream_schema",
    "view_location",
    "views_root",
    "write_batch_view",
]
