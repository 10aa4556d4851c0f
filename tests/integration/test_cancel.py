"""Cancelling runs: a running one stops within seconds, a queued one never starts."""

import time

import pytest

from jobs import services
from jobs.models import Run, RunEvent
from tests.integration.conftest import (
    describe_procs,
    describe_run,
    kernels,
    wait_gone,
    wait_log,
    wait_run,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_cancel_running_run_stops_its_kernel(make_job, alice, procs):
    """cancel_run on a RUNNING run only records the request; the worker sees it at its
    next heartbeat, kills the kernel and ends the run CANCELLED well within 15 s."""
    job = make_job("sleepy.ipynb", parameters={"seconds": 60.0})
    worker = procs.worker()
    run = services.run_now(job, alice)
    wait_run(
        run.pk,
        lambda r: r.state == Run.State.RUNNING and r.cells_done >= 2,
        timeout=60,
        procs=procs,
        what="the run to reach its sleeping cell",
    )
    kernel_tree = procs.remember(worker)
    assert kernels(worker), f"no kernel below the worker: {describe_procs(kernel_tree)}"

    asked = time.monotonic()
    after = services.cancel_run(run, alice)
    assert after.state == Run.State.RUNNING and after.cancel_requested_at is not None
    done = wait_run(run.pk, Run.FINAL_STATES, timeout=15, procs=procs, what="the run to stop")
    took = time.monotonic() - asked

    story = describe_run(run.pk, procs)
    assert done.state == Run.State.CANCELLED, story
    assert done.state_reason == "Cancelled on request.", story
    assert done.attempt == 1 and done.finished_at is not None, story
    assert done.output_key, "the notebook executed so far should be kept"
    left = wait_gone(kernel_tree, timeout=5)
    assert not left, f"kernel processes left after the cancel: {describe_procs(left)}"
    assert not kernels(worker)
    assert took < 15
    assert RunEvent.objects.filter(run=run, state=Run.State.CANCELLED).count() == 1
    # The worker is free again: it runs the next run.
    quick = make_job("trivial.ipynb", name="next")
    nxt = services.run_now(quick, alice)
    assert wait_run(nxt.pk, Run.FINAL_STATES, timeout=60, procs=procs).state == Run.State.SUCCEEDED


def test_cancel_queued_run_never_executes(make_job, alice, procs):
    """A QUEUED run is CANCELLED at once by cancel_run; when a worker later receives its
    message it finds nothing to claim, so the notebook never runs (attempt stays 0)."""
    job = make_job("trivial.ipynb")
    run = services.run_now(job, alice)  # its message waits in Redis: no worker yet

    after = services.cancel_run(run, alice)
    assert after.state == Run.State.CANCELLED
    assert after.finished_at is not None and after.cancel_requested_at is not None

    worker = procs.worker()
    wait_log(worker.log_path, f"nothing to claim run={run.pk}", timeout=30, procs=procs)
    run = Run.objects.get(pk=run.pk)
    assert run.state == Run.State.CANCELLED
    assert run.attempt == 0 and run.started_at is None and not run.output_key
    assert not RunEvent.objects.filter(run=run, state=Run.State.RUNNING).exists()
    # Cancelling again changes nothing.
    assert services.cancel_run(run, alice).state == Run.State.CANCELLED
    assert RunEvent.objects.filter(run=run, state=Run.State.CANCELLED).count() == 1
