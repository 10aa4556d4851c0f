"""The same execute_run message delivered several times runs the notebook once."""

from pathlib import Path

import pytest

from jobs import services
from jobs.kernel import views_root
from jobs.models import Run, RunEvent
from jobs.tasks import execute_run
from tests.integration.conftest import describe_run, wait_log, wait_run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_duplicate_deliveries_execute_the_notebook_once(make_job, alice, procs, tmp_path):
    """Three deliveries of ``execute_run(run)`` (the one run_now sends, a duplicate sent
    at the same time, and a late one after the run finished) reach a worker with two pool
    processes: exactly one claims the run, the duplicate is turned away while the run is
    executing in the other process, the late one after it ended; the notebook's side
    effect happens once, and the run has one attempt and one RUNNING event."""
    # The notebook's side effect lands where its sandbox may write: its owner's views.
    marker = Path(views_root(alice.pk)) / "marker.txt"
    job = make_job("marker.ipynb", parameters={"marker_path": str(marker), "seconds": 3.0})
    worker = procs.worker(concurrency=2)

    run = services.run_now(job, alice)  # enqueued once, after commit
    duplicate = execute_run.delay(run.pk)
    # One of the two deliveries finds nothing to claim while the other executes the run.
    wait_log(worker.log_path, f"nothing to claim run={run.pk}", timeout=60, procs=procs)
    assert Run.objects.get(pk=run.pk).state == Run.State.RUNNING, describe_run(run.pk, procs)
    done = wait_run(run.pk, Run.FINAL_STATES, timeout=90, procs=procs, what="the run to finish")
    assert done.state == Run.State.SUCCEEDED, describe_run(run.pk, procs)
    wait_log(worker.log_path, f"execute_run[{duplicate.id}] succeeded", timeout=30, procs=procs)

    late = execute_run.delay(run.pk)
    wait_log(worker.log_path, f"execute_run[{late.id}] succeeded", timeout=30, procs=procs)

    run = Run.objects.get(pk=run.pk)
    lines = marker.read_text().splitlines()
    story = describe_run(run.pk, procs)
    assert lines == [str(run.uuid)], f"the notebook ran {len(lines)} times: {lines}\n{story}"
    assert run.state == Run.State.SUCCEEDED, story
    assert run.attempt == 1, story
    assert RunEvent.objects.filter(run=run, state=Run.State.RUNNING).count() == 1, story
    assert worker.log_path.read_text().count(f"nothing to claim run={run.pk}") == 2, procs.logs()
