"""Continuous jobs that survive: the windowed-counts example killed with its worker and
restarted from its checkpoint loses and repeats nothing; a new notebook version restarts
the job on it. Real workers on the ``streams`` and ``control`` queues, and beat."""

import datetime as dt
import time

import nbformat
import pytest
from django.core.files.storage import default_storage

from jobs import services
from jobs.models import Job, Run
from jobs.services import streams
from telemetry import landing
from tests import sandboxes
from tests.conftest import notebook_bytes
from tests.integration.conftest import describe_procs, describe_run, kernels, wait_gone, wait_run
from tests.processes import wait_for
from tests.stream_windows import (
    PLOTLY,
    batch_windows,
    local_spark,
    plotly_values,
    sink_rows,
    sink_windows,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Beat: the reaper every 2 s, the supervisor every second; a restart after one failure
# waits 1 s. RUN_STALE_AFTER is 6 s under bin/test.
FAST = {
    "REAP_INTERVAL": "2",
    "DISPATCH_INTERVAL": "1",
    "STREAM_SUPERVISE_INTERVAL": "1",
    "STREAM_RESTART_BACKOFF": "1",
}
STREAMS = {"queues": "streams", "CELERY_TIME_LIMITS": "false", **FAST}
SEED = 7
PINGS = 100


def active(job: Job) -> Run | None:
    return job.runs.filter(trigger=Run.Trigger.CONTINUOUS, state__in=Run.ACTIVE_STATES).first()


def committed(job: Job) -> int:
    """Micro-batches the query has committed to its checkpoint."""
    commits = job.checkpoint_dir / "commits"
    return len([p for p in commits.iterdir() if p.name.isdigit()]) if commits.is_dir() else 0


def sink_batches(job: Job) -> int:
    """Micro-batches the Parquet sink has committed (its log, ``_spark_metadata``)."""
    log = job.output_dir / "_spark_metadata"
    return len([p for p in log.iterdir() if not p.name.startswith(".")]) if log.is_dir() else 0


def land(directory, batches: range, pause: float = 0.0) -> None:
    for i in batches:
        landing.write_batch(directory, i, seed=SEED, pings=PINGS)
        time.sleep(pause)


def test_a_killed_stream_restarts_from_its_checkpoint_exactly_once(make_job, procs):
    """kill -9 of the streams worker mid-stream: the reaper ends or retries the run, the
    portal starts it again from its checkpoint on a new worker, and once a last file has
    moved the watermark past every window, the sink's counts per (window, OS) equal a
    batch recomputation over the same files: nothing duplicated, nothing lost."""
    inbox = sandboxes.shared_dir("exactly-once")
    land(inbox, range(0, 20))
    job = make_job(
        "stream_windowed_counts.ipynb",
        continuous=True,
        parameters={"landing_dir": str(inbox), "trigger_seconds": 1.0, "refresh_seconds": 2.0},
        max_retries=1,
    )
    procs.worker(name="control", queues="control", **FAST)
    procs.beat(**FAST)
    doomed = procs.worker(name="doomed", **STREAMS)
    first = wait_for(lambda: active(job), timeout=30, message="the supervisor to start the job")
    wait_for(
        lambda: sink_batches(job) >= 1,
        timeout=180,
        message=f"the first committed micro-batch\n{describe_run(first.pk, procs)}",
    )

    # More files while it runs; kill the worker between two of them.
    land(inbox, range(20, 25), pause=0.5)
    before = committed(job)
    kernel_tree = procs.remember(doomed)
    assert kernels(doomed), describe_procs(kernel_tree)
    doomed.kill()
    assert not wait_gone(kernel_tree, timeout=10), describe_procs(kernel_tree)
    land(inbox, range(25, 30))

    procs.worker(name="rescuer", **STREAMS)

    def restarted():
        run = active(job)
        again = run is not None and (run.pk != first.pk or run.attempt > 1)
        return run if again and run.state == Run.State.RUNNING else None

    run = wait_for(restarted, timeout=90, message=f"a restart\n{describe_run(first.pk, procs)}")
    wait_for(
        lambda: committed(job) > before,
        timeout=120,
        message=f"a commit after the restart\n{describe_run(run.pk, procs)}",
    )
    # The last batches, then a file whose event time moves the watermark past them all
    # (31 min 7 s later: no window ends exactly on the watermark).
    land(inbox, range(30, 35))
    last = landing.batch_time(34) + dt.timedelta(minutes=31, seconds=7)
    landing.write_batch(inbox, 35, seed=SEED, pings=PINGS, at=last)

    spark = local_spark()
    expected = batch_windows(spark, inbox)
    assert len(expected) > 20
    try:
        wait_for(
            lambda: sink_windows(spark, job.output_dir).keys() >= expected.keys(),
            timeout=120,
            interval=2,
            message="the sink to hold every final window",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{describe_run(run.pk, procs)}") from None
    streams.stop_run(run)
    done = wait_run(run.pk, Run.FINAL_STATES, timeout=60, procs=procs, what="the stop")
    assert done.state == Run.State.SUCCEEDED, describe_run(run.pk, procs)

    assert sink_windows(spark, job.output_dir) == expected
    assert sink_rows(spark, job.output_dir) == len(expected)  # no window written twice
    story = [describe_run(r.pk) for r in job.runs.order_by("pk")]
    assert Run.objects.get(pk=first.pk).events.filter(state=Run.State.LOST).exists(), story
    # The run page's chart, redrawn from the sink when the query stopped: every window.
    with default_storage.open(done.output_key, "rb") as fh:
        nb = nbformat.read(fh, as_version=4)
    (chart,) = [o for c in nb.cells for o in c.get("outputs", []) if PLOTLY in o.get("data", {})]
    traces = chart["data"][PLOTLY]["data"]
    assert sum(sum(plotly_values(t["y"])) for t in traces) == sum(expected.values())


def test_a_new_version_restarts_the_job_on_it(make_job, alice, procs):
    """Uploading a new version of a running continuous job stops its run gracefully
    (SUCCEEDED, "Stopped on request."), without pausing the job; the supervisor starts the
    next run on the new version, with the same checkpoint."""
    job = make_job("stream_until_stopped.ipynb", continuous=True)
    procs.worker(**STREAMS)
    assert streams.supervise_streams()["started"] == 1
    first = active(job)

    def waiting(run):
        return run.state == Run.State.RUNNING and run.current_cell_head.startswith("from telemetry")

    wait_run(first.pk, waiting, timeout=90, procs=procs, what="run_until_stopped")
    source = notebook_bytes("stream_until_stopped.ipynb")
    new = source.replace(b"stopped on request:", b"version 2 stopped on request:")
    assert new != source
    version, _ = services.upload_version(job, alice, new)

    done = wait_run(first.pk, Run.FINAL_STATES, timeout=30, procs=procs, what="the old run")
    assert done.state == Run.State.SUCCEEDED, describe_run(first.pk, procs)
    assert done.state_reason == "Stopped on request."
    job.refresh_from_db()
    assert job.enabled
    assert streams.supervise_streams()["started"] == 1
    second = active(job)
    assert second.version == version and second.pk != first.pk
    wait_run(second.pk, waiting, timeout=90, procs=procs, what="the new version to run")
    assert (job.checkpoint_dir / "marker").read_text() == "2"  # the same checkpoint
    streams.stop_run(second)
    wait_run(second.pk, Run.FINAL_STATES, timeout=30, procs=procs, what="the stop")
