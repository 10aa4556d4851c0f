"""A run travels through Redis and a real worker process to SUCCEEDED."""

import pytest

from jobs import services
from jobs.models import Run
from tests.integration.conftest import database_backends
from tests.processes import Worker, flush_broker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_run_now_executes_on_a_real_worker(make_job, alice):
    flush_broker()
    worker = Worker()
    try:
        job = make_job("trivial.ipynb", parameters={"x": 21})
        run = services.run_now(job, alice)
        done = wait_for(
            lambda: Run.objects.filter(pk=run.pk, state__in=Run.FINAL_STATES).first(),
            timeout=90,
            message="run to finish",
        )
        assert done.state == Run.State.SUCCEEDED, done.state_reason
        assert done.attempt == 1
        assert done.output_key and done.html_key
        assert done.cells_done == done.cells_total > 0
    finally:
        worker.stop()


def test_a_worker_keeps_its_database_connection_across_tasks():
    """Short tasks (claims, dispatcher ticks) reuse the pool process's connection, as
    requests do with CONN_MAX_AGE, instead of opening a new PostgreSQL backend each."""
    from jobs.tasks import reap_runs

    flush_broker()
    worker = Worker(queues="control")
    try:

        def tasks_done(n):
            return lambda: (
                worker.tail(100_000).count("Task jobs.tasks.reap_runs[") >= 2 * n
            )  # received + succeeded

        reap_runs.delay()
        wait_for(tasks_done(1), timeout=30, message="first task")
        first = set(database_backends(worker.children()))
        assert len(first) == 1, f"one open connection after the first task, found {first}"
        reap_runs.delay()
        reap_runs.delay()
        wait_for(tasks_done(3), timeout=30, message="two more tasks")
        assert set(database_backends(worker.children())) == first, (
            "the same backend served every task"
        )
    finally:
        worker.stop()
