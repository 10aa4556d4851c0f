"""Database connection upkeep outside the request cycle (Celery tasks, worker threads)."""

from django.db import close_old_connections, connection


def close_stale_connections() -> None:
    """Do what Django does around each request: close this thread's connections that
    broke or outlived ``CONN_MAX_AGE`` (and, with ``CONN_HEALTH_CHECKS``, re-check the
    others on next use), so the next query reconnects instead of failing. Does nothing
    inside a transaction, which it would cut (e.g. a test's, or an eager task's caller)."""
    if not connection.in_atomic_block:
        close_old_connections()
