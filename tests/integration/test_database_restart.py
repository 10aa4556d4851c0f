"""A run survives its worker's database connections being cut mid-run (a PostgreSQL
restart or failover, an idle timeout): the heartbeat and the final write reconnect."""

import pytest
from django.db import connection

from jobs import services
from jobs.models import Run
from tests.integration.conftest import database_backends, wait_run

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _terminate_backends_of(pids: list[int]) -> int:
    """pg_terminate_backend() every connection the processes ``pids`` hold; returns how many."""
    backends = [pid for pid, _ in database_backends(pids)]
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM unnest(%s::int[]) AS pid", [backends]
        )
        return cur.fetchone()[0]


def test_run_finishes_after_its_database_connections_are_cut(make_job, alice, procs):
    job = make_job("sleepy.ipynb", parameters={"seconds": 8.0}, max_retries=1)
    run = services.run_now(job, alice)
    worker = procs.worker(name="dbcut")
    wait_run(
        run.pk,
        lambda r: r.state == Run.State.RUNNING and r.cells_done >= 1,
        timeout=60,
        procs=procs,
        what="the run to execute its first cell",
    )
    wait_run(
        run.pk,
        lambda r: r.heartbeat_at and r.heartbeat_at > r.started_at,
        timeout=30,
        procs=procs,
        what="a heartbeat from the monitor thread",
    )
    cut = _terminate_backends_of([worker.proc.pid, *worker.children()])
    assert cut >= 2, f"expected the task's and the monitor's connections, cut {cut}"

    done = wait_run(
        run.pk,
        lambda r: r.state in Run.FINAL_STATES,
        timeout=90,
        procs=procs,
        what="the run to end",
    )
    assert (done.state, done.attempt) == (Run.State.SUCCEEDED, 1), (
        done.state,
        done.attempt,
        done.state_reason,
    )
