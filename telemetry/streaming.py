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
signal is used. ``run_until_stopped`` sees it within ``poll_seconds``, calls ``stop()`` on
each query and returns, so the notebook ends and the run finishes SUCCEEDED, "Stopped on
request.". A query that fails raises its exception here, which fails the run (the portal
restarts it from its checkpoint). Without queries it only waits for the flag, which is
how the portal's tests use it.

Outside the portal (no ``PORTAL_STOP_FILE``) it waits until the queries end or the user
interrupts the kernel.
"""

import os
import time
from pathlib import Path
from typing import Any

#: The environment variable holding the stop flag's path (set by the portal's worker).
STOP_FILE_ENV = "PORTAL_STOP_FILE"


def stop_file() -> Path | None:
    """The stop flag's path, or None outside a continuous run of the portal."""
    value = os.environ.get(STOP_FILE_ENV)
    return Path(value) if value else None


def stop_requested() -> bool:
    """Whether the portal has asked this run to stop."""
    path = stop_file()
    return path is not None and path.exists()


def run_until_stopped(*queries: Any, poll_seconds: float = 1.0) -> bool:
    """Block until the portal asks the run to stop, then stop ``queries`` gracefully.

    ``queries`` are ``pyspark.sql.streaming.StreamingQuery`` objects (anything with
    ``awaitTermination(timeout)``, ``stop()``, ``exception()`` and ``isActive``). Every
    ``poll_seconds`` the stop flag is checked; meanwhile the queries are awaited, so a
    query that fails raises its ``StreamingQueryException`` here. Returns True when
    stopped on request, False when every query ended by itself."""
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
