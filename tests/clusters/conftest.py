"""Fixtures of the cluster tests: moto-backed AWS (defined in test_emr.py), and tasks run
in this process as a worker would run them."""

import pytest

from portal.celery import app
from tests.clusters.test_emr import aws, aws_env, emr_settings, moto_server  # noqa: F401


@pytest.fixture
def on_commit_tasks(django_capture_on_commit_callbacks):
    """``run(fn, *args)``: call ``fn`` and then, as after its commit, the tasks it enqueued
    on commit (eagerly, in this process, errors raised); returns what ``fn`` returned.
    ``run.enqueued`` counts the on-commit callbacks so far."""
    saved = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = app.conf.task_eager_propagates = True

    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            result = fn(*args, **kwargs)
        run.enqueued += len(callbacks)
        return result

    run.enqueued = 0
    try:
        yield run
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = saved
