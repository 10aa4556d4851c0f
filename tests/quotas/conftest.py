"""Fixtures of the budget and usage tests."""

from datetime import UTC, datetime, timedelta

import pytest

from clusters.models import Cluster
from portal.celery import app

#: A moment well inside a month, so that "this month" is unambiguous.
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def on_commit_tasks(django_capture_on_commit_callbacks):
    """``run(fn, *args)``: call ``fn``, then the tasks it enqueued on commit, eagerly in
    this process with errors raised; returns what ``fn`` returned."""
    saved = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = app.conf.task_eager_propagates = True

    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    try:
        yield run
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = saved


@pytest.fixture
def make_cluster():
    """Factory: a cluster row that ran (or runs) from ``start`` for ``hours`` (None: still
    live, expiring at ``expires``), with ``size`` workers on ``backend``."""
    made = []

    def make(owner, start, hours=None, size=1, backend="local", price=None, expires=None, **kw):
        live = hours is None
        cluster = Cluster.objects.create(
            owner=owner,
            name=kw.pop("name", f"c{len(made)}"),
            backend=backend,
            size=size,
            state=Cluster.State.READY if live else Cluster.State.TERMINATED,
            started_at=start,
            terminated_at=None if live else start + timedelta(hours=hours),
            expires_at=expires or start + timedelta(hours=hours or 8),
            price_per_node_hour=price,
            **kw,
        )
        # created_at is auto_now_add: put it where the cluster began.
        Cluster.objects.filter(pk=cluster.pk).update(created_at=start)
        cluster.refresh_from_db()
        made.append(cluster)
        return cluster

    return make
