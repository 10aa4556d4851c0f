"""Run a continuous job's streaming queries until the portal asks them to stop.

A continuous job's notebook starts its queries and then blocks in ``run_until_stopped``::

    from telemetry.streaming import run_until_stopped

    query = (
        PingsStream(spark)
        .writeStream.option("checkpointLocation", checkpoint_dir)
        .start(output_dir)
    )
    run_until_stopped(query)

When someone presses **Stop** (or a new notebook version is uploaded) the portal's worker
creates a flag file whose path the kernel's environment names (``PORTAL_STOP_FILE``); no
signal is used. On a transient EMR cluster the flag is an S3 object (``s3://bucket/key``),
looked at every ``S3_POLL_SECONDS``. ``run_until_stopped`` sees it within
``poll_seconds``, calls ``stop()`` on each query and returns, so the notebook ends and the
run finishes SUCCEEDED, "Stopped on request.". A query that fails raises its exception
here, which fails the run (the portal restarts it from its checkpoint). Without queries it
only waits for the flag, which is how the portal's tests use it.

Outside the portal (no ``PORTAL_STOP_FILE``) it waits until the queries end or the user
interrupts the kernel.

Live metrics: ``run_until_stopped`` also registers, once per Spark session, a
``StreamingQueryListener`` (``report_progress``) that appends one compact JSON line per
progress event of any of the session's queries (and one per idle event) to the file the
kernel's environment names (``PORTAL_PROGRESS_FILE``); the portal's worker tails it into
the run's live charts (``jobs.stream_progress``). Nothing goes through the notebook's
output. A notebook may call ``report_progress(spark)`` itself before it starts its
queries, so that their first batches are reported too. The listener works with classic
Spark (through Py4J) and with Spark Connect (whose client runs listeners in the kernel).
"""

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

#: The environment variable holding the stop flag's path (set by the portal's worker).
STOP_FILE_ENV = "PORTAL_STOP_FILE"
#: The environment variable holding the progress file's path (set by the portal's worker).
PROGRESS_FILE_ENV = "PORTAL_PROGRESS_FILE"
#: Past this size (bytes) the progress file is emptied before the next line: the worker
#: reads it every few seconds, so only lines it has not read yet can be lost, never many.
PROGRESS_MAX_BYTES = 2**20
#: Characters kept of a source's description and of its end offset (a Kafka source's
#: offsets name every partition).
SOURCE_TEXT_CHARS = 200
#: Sources reported per event at most.
MAX_SOURCES = 8


#: Seconds between two looks at a stop flag in S3 (a HEAD request each).
S3_POLL_SECONDS = 10.0
_s3_looked_at = [0.0]


def stop_file() -> Path | None:
    """The stop flag's path, or None outside a continuous run of the portal (or when the
    flag is an S3 object: ``PORTAL_STOP_FILE`` = ``s3://bucket/key`` on EMR)."""
    value = os.environ.get(STOP_FILE_ENV)
    return Path(value) if value and not value.startswith("s3://") else None


def stop_requested() -> bool:
    """Whether the portal has asked this run to stop: the flag file exists, or, on a
    transient EMR cluster, the flag object does (looked at every S3_POLL_SECONDS at
    most, with the cluster's own credentials; an S3 error is taken as "not yet")."""
    value = os.environ.get(STOP_FILE_ENV) or ""
    if value.startswith("s3://"):
        now = time.monotonic()
        if now - _s3_looked_at[0] < S3_POLL_SECONDS:
            return False
        _s3_looked_at[0] = now
        return _s3_object_exists(value)
    path = stop_file()
    return path is not None and path.exists()


def _s3_object_exists(uri: str) -> bool:
    """Whether the S3 object ``s3://bucket/key`` exists (boto3, the environment's
    credentials, region (the step sets ``AWS_DEFAULT_REGION``) and endpoint); False on
    any error."""
    import boto3  # only on EMR (and in the portal's tests of it)
    from botocore.config import Config

    bucket, _, key = uri[len("s3://") :].partition("/")
    # Short timeouts and few retries: a look that hangs delays the stop, and the next
    # look comes S3_POLL_SECONDS later anyway.
    config = Config(connect_timeout=5, read_timeout=5, retries={"max_attempts": 2})
    try:
        boto3.client("s3", config=config).head_object(Bucket=bucket, Key=key)
    except Exception:
        return False
    return True


def run_until_stopped(*queries: Any, poll_seconds: float = 1.0) -> bool:
    """Block until the portal asks the run to stop, then stop ``queries`` gracefully.

    ``queries`` are ``pyspark.sql.streaming.StreamingQuery`` objects (anything with
    ``awaitTermination(timeout)``, ``stop()``, ``exception()`` and ``isActive``). Every
    ``poll_seconds`` the stop flag is checked; meanwhile the queries are awaited, so a
    query that fails raises its ``StreamingQueryException`` here. Returns True when
    stopped on request, False when every query ended by itself.

    In a portal run, the queries' sessions report their progress first
    (``report_progress``); a failure to register is ignored (the run goes on without
    live metrics)."""
    if progress_file() is not None:
        for query in queries:
            try:
                report_progress(_session_of(query))
            except Exception:
                pass
    while True:
        if stop_requested():
            for query in queries:
                query.stop()
            return True
        active = [query for query in queries if query.isActive]
        if queries and not active:
            for query in queries:
                error = query.exception()  # the exception of a query that failed, or None
                if error is not None:
                    raise error
            return False
        if active:
            # Waits up to poll_seconds; raises at once if the query failed.
            active[0].awaitTermination(poll_seconds)
        else:
            time.sleep(poll_seconds)


def progress_file() -> Path | None:
    """The progress file's path, or None outside a continuous run of the portal."""
    value = os.environ.get(PROGRESS_FILE_ENV)
    return Path(value) if value else None


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (Spark reports NaN for a rate it cannot know)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def progress_line(progress: dict) -> dict:
    """The compact record of one ``StreamingQueryProgress`` (as its ``json`` parsed):
    timestamp, query id and name, batchId, numInputRows, inputRowsPerSecond,
    processedRowsPerSecond, durationMs (triggerExecution, ms), watermark (ISO text or
    None), stateRows (numRowsTotal over the state operators) and sources (description
    and endOffset, as text cut to SOURCE_TEXT_CHARS)."""
    sources = []
    for source in (progress.get("sources") or [])[:MAX_SOURCES]:
        end = source.get("endOffset")
        sources.append(
            {
                "description": str(source.get("description") or "")[:SOURCE_TEXT_CHARS],
                "endOffset": (end if isinstance(end, str) else json.dumps(end))[:SOURCE_TEXT_CHARS],
            }
        )
    operators = progress.get("stateOperators") or []
    return {
        "timestamp": progress.get("timestamp"),
        "id": str(progress.get("id") or ""),
        "name": progress.get("name") or "",
        "batchId": progress.get("batchId"),
        "numInputRows": _number(progress.get("numInputRows")),
        "inputRowsPerSecond": _number(progress.get("inputRowsPerSecond")),
        "processedRowsPerSecond": _number(progress.get("processedRowsPerSecond")),
        "durationMs": _number((progress.get("durationMs") or {}).get("triggerExecution")),
        "watermark": (progress.get("eventTime") or {}).get("watermark"),
        "stateRows": sum(_number(op.get("numRowsTotal")) or 0 for op in operators)
        if operators
        else None,
        "sources": sources,
    }


def append_progress_line(path: Path, record: dict) -> None:
    """Append ``record`` as one JSON line to ``path`` (one ``write`` of a short line to a
    file opened for appending: a reader never sees half of it unless it reads while the
    write is under way, which the worker's reader allows for), emptying the file first
    when it has passed PROGRESS_MAX_BYTES."""
    line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
    try:
        if path.stat().st_size > PROGRESS_MAX_BYTES:
            path.write_text("")
    except FileNotFoundError:
        pass
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line)


def _listener_class() -> type:
    # pyspark is imported only when a listener is needed (it is slow to import).
    from pyspark.sql.streaming import StreamingQueryListener

    class ProgressListener(StreamingQueryListener):
        """Appends each progress and idle event to ``path``; never raises (a listener's
        failure must not disturb the query)."""

        def __init__(self, path: Path):
            self.path = path
            self._lock = threading.Lock()

        def _write(self, record: dict) -> None:
            try:
                with self._lock:
                    append_progress_line(self.path, record)
            except Exception:  # a full disk, a removed sandbox: no metrics, same query
                pass

        def onQueryStarted(self, event: Any) -> None:
            pass

        def onQueryProgress(self, event: Any) -> None:
            try:
                record = progress_line(json.loads(event.progress.json))
            except Exception:
                return
            self._write(record)

        def onQueryIdle(self, event: Any) -> None:
            self._write({"timestamp": event.timestamp, "id": str(event.id), "idle": True})

        def onQueryTerminated(self, event: Any) -> None:
            pass

    return ProgressListener


#: The sessions (by id) whose progress is reported already, so that a second call adds
#: no second listener.
_reporting: dict[int, Any] = {}


def report_progress(spark: Any = None, path: Path | None = None) -> Any:
    """Register the listener that writes ``spark``'s streaming progress to ``path``
    (default: ``PORTAL_PROGRESS_FILE``); ``spark`` defaults to the active session. Does
    nothing outside the portal or without a session. Idempotent per session. Returns the
    listener, or None."""
    path = path or progress_file()
    if path is None:
        return None
    if spark is None:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        if spark is None:
            return None
    if id(spark) in _reporting:
        return _reporting[id(spark)]
    listener = _listener_class()(path)
    spark.streams.addListener(listener)
    _reporting[id(spark)] = listener
    return listener


def _session_of(query: Any) -> Any:
    """The Spark session of ``query``: a Spark Connect query names its own; a classic
    one's is the active session."""
    session = getattr(query, "_session", None)
    if session is not None:
        return session
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()
