"""Continuous jobs with a real worker on the ``streams`` queue: Stop ends the notebook
through the kernel's helper and the run SUCCEEDS; a failing notebook is paused."""

import time

import pytest

from jobs.models import Job, Run
from jobs.services import streams
from tests.integration.conftest import describe_run, wait_run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def the_run(job: Job) -> Run:
    (run,) = job.runs.filter(trigger=Run.Trigger.CONTINUOUS, state__in=Run.ACTIVE_STATES)
    return run


def test_stop_ends_a_continuous_run_as_a_success(make_job, procs):
    """The notebook blocks in ``run_until_stopped``; Stop raises the flag in its sandbox at
    the worker's next heartbeat, the helper returns, the notebook ends and the run is
    SUCCEEDED "Stopped on request."; the job is paused, so nothing restarts it. The
    checkpoint directory was writable, and stays."""
    job = make_job("stream_until_stopped.ipynb", continuous=True)
    procs.worker(queues="streams", CELERY_TIME_LIMITS="false")
    assert streams.supervise_streams()["started"] == 1
    run = the_run(job)
    wait_run(
        run.pk,
        lambda r: r.state == Run.State.RUNNING and r.current_cell_head.startswith("from telemetry"),
        timeout=90,
        procs=procs,
        what="the notebook to wait in run_until_stopped",
    )
    asked = time.monotonic()
    assert streams.stop_run(run).stop_requested_at is not None
    done = wait_run(run.pk, Run.FINAL_STATES, timeout=30, procs=procs, what="the run to stop")
    story = describe_run(run.pk, procs)
    assert done.state == Run.State.SUCCEEDED, story
    assert done.state_reason == "Stopped on request.", story
    assert time.monotonic() - asked < 30
    assert done.output_key, story
    job.refresh_from_db()
    assert not job.enabled
    assert streams.supervise_streams()["started"] == 0
    assert (job.checkpoint_dir / "marker").read_text() == "1"


def test_a_stop_not_honoured_in_time_cancels_the_run(make_job, procs):
    """A notebook that ignores the stop flag is killed after STREAM_STOP_TIMEOUT, as a
    cancel is."""
    job = make_job("sleepy.ipynb", continuous=True, parameters={"seconds": 120.0})
    procs.worker(queues="streams", CELERY_TIME_LIMITS="false", STREAM_STOP_TIMEOUT="2")
    streams.supervise_streams()
    run = the_run(job)
    wait_run(run.pk, lambda r: r.cells_done >= 2, timeout=90, procs=procs, what="sleeping")
    streams.stop_run(run)
    done = wait_run(run.pk, Run.FINAL_STATES, timeout=30, procs=procs, what="the kill")
    assert done.state == Run.State.CANCELLED, describe_run(run.pk, procs)


def test_a_failing_continuous_job_is_paused_after_its_failures(make_job, procs, settings):
    """Each failed run is restarted (after a short backoff here) until the job has failed
    ``stream_max_failures`` times within its window; then the supervisor pauses it, once."""
    settings.STREAM_RESTART_BACKOFF = 0.5
    job = make_job("failing.ipynb", continuous=True, stream_max_failures=2)
    procs.worker(queues="streams", CELERY_TIME_LIMITS="false")
    paused = 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        paused += streams.supervise_streams()["paused"]
        job.refresh_from_db()
        if not job.enabled:
            break
        time.sleep(1)
    runs = list(job.runs.order_by("pk"))
    assert paused == 1 and not job.enabled, [describe_run(r.pk) for r in runs]
    assert [r.state for r in runs] == [Run.State.FAILED, Run.State.FAILED]
    assert runs[1].trigger == Run.Trigger.CONTINUOUS and job.stream_paused_at is not None
    assert streams.supervise_streams() == {"started": 0, "waiting": 0, "paused": 0}
