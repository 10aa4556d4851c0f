"""A worker killed with SIGKILL mid-run: its kernel dies with it, and the reaper (run by
beat on another worker) retries the run, or ends it LOST when no attempt is left."""

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
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Beat sends reap_runs every 2 s and dispatch_due_runs every second.
FAST_BEAT = {"REAP_INTERVAL": "2", "DISPATCH_INTERVAL": "1"}


def _reaper_passes(worker) -> int:
    """How many reap_runs tasks the worker has completed so far."""
    return sum(
        1
        for line in worker.log_path.read_text().splitlines()
        if "jobs.tasks.reap_runs[" in line and " succeeded " in line
    )


def _kill_mid_run(procs, run):
    """Start a worker and beat, wait until ``run`` executes its notebook, SIGKILL the
    worker's process group, and check the kernel process tree died with it."""
    worker = procs.worker(name="doomed", **FAST_BEAT)
    procs.beat(**FAST_BEAT)
    wait_run(
        run.pk,
        lambda r: r.state == Run.State.RUNNING and r.cells_done >= 1,
        timeout=60,
        procs=procs,
        what="the run to execute its first cell",
    )
    kernel_tree = procs.remember(worker)
    assert kernels(worker), (
        f"no kernel below the worker: {describe_procs(kernel_tree)}\n{procs.logs()}"
    )

    worker.kill()

    left = wait_gone(kernel_tree, timeout=10)
    assert not left, f"still running 10 s after the worker was killed: {describe_procs(left)}"
    return worker


def test_killed_worker_run_is_reaped_and_retried(make_job, alice, procs):
    """kill -9 of the worker executing a run (one retry allowed): the kernel dies with the
    worker (PR_SET_PDEATHSIG), the reaper notices the stale heartbeat, records LOST for
    attempt 1 and re-queues the run, and a new worker executes attempt 2 to SUCCEEDED."""
    job = make_job("sleepy.ipynb", parameters={"seconds": 8.0}, max_retries=1)
    run = services.run_now(job, alice)
    _kill_mid_run(procs, run)
    assert Run.objects.get(pk=run.pk).state == Run.State.RUNNING  # nobody has noticed yet

    procs.worker(name="rescuer", **FAST_BEAT)
    done = wait_run(
        run.pk, Run.FINAL_STATES, timeout=90, procs=procs, what="the retried run to finish"
    )

    story = describe_run(run.pk, procs)
    assert done.state == Run.State.SUCCEEDED, story
    assert done.attempt == 2, story
    lost = RunEvent.objects.filter(run=run, state=Run.State.LOST)
    assert list(lost.values_list("attempt", flat=True)) == [1], story
    assert "the worker was lost" in lost.get().message, story
    assert list(
        RunEvent.objects.filter(run=run, state=Run.State.RUNNING).values_list("attempt", flat=True)
    ) == [1, 2], story
    assert done.output_key and done.html_key


def test_killed_worker_run_without_retries_ends_lost_with_one_alert(make_job, alice, procs):
    """With max_retries=0 the reaper ends a run of a killed worker LOST for good, and the
    failure alert goes out once (alert_sent_at set; the console mail backend writes it to
    the worker's log, where it appears exactly once)."""
    job = make_job(
        "sleepy.ipynb",
        parameters={"seconds": 8.0},
        max_retries=0,
        notify_on_failure="alice@example.com",
    )
    run = services.run_now(job, alice)
    _kill_mid_run(procs, run)

    rescuer = procs.worker(
        name="rescuer", EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend", **FAST_BEAT
    )
    done = wait_run(run.pk, Run.FINAL_STATES, timeout=60, procs=procs, what="the run to be reaped")
    story = describe_run(run.pk, procs)
    assert done.state == Run.State.LOST, story
    assert "the worker was lost" in done.state_reason, story
    assert done.attempt == 1 and done.finished_at is not None, story
    assert list(done.events.filter(state=Run.State.LOST).values_list("attempt", flat=True)) == [
        1
    ], story

    done = wait_run(
        run.pk, lambda r: r.alert_sent_at is not None, timeout=30, procs=procs, what="the alert"
    )
    wait_log(rescuer.log_path, "To: alice@example.com", timeout=10, procs=procs)
    # Beat keeps reaping: two more passes change nothing and send no second alert.
    reaps = _reaper_passes(rescuer)
    wait_until(lambda: _reaper_passes(rescuer) >= reaps + 2, 20, "two more reaper passes", procs)
    log = rescuer.log_path.read_text()
    assert log.count("To: alice@example.com") == 1, log[-3000:]
    assert f"[Analysis Portal] {job.name}: run lost" in log
    assert Run.objects.get(pk=run.pk).state == Run.State.LOST
