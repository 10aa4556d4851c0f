"""A run that passes its timeout ends TIMED_OUT and leaves no kernel or Spark behind."""

import time

import psutil
import pytest

from jobs import services
from jobs.models import Run
from tests.integration.conftest import _cmdline, alive, describe_procs, describe_run, kernels

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_timed_out_spark_run_leaves_no_process(make_job, alice, procs):
    """A Spark notebook that sleeps past its 20 s timeout: the executor kills the kernel's
    whole tree (kernel, Spark driver JVM, PySpark workers), the run ends TIMED_OUT with a
    reason naming the timeout, and the notebook executed so far is kept as its output."""
    job = make_job("spark_small.ipynb", parameters={"sleep_after": 120.0}, timeout_seconds=20)
    worker = procs.worker()
    run = services.run_now(job, alice)

    # Until the run ends, keep collecting the processes below the worker with their latest
    # command line (spark-class execs into the driver JVM, which starts seconds in).
    seen: dict[int, tuple[psutil.Process, str]] = {}
    deadline = time.monotonic() + 60
    while not Run.objects.get(pk=run.pk).is_final:
        assert time.monotonic() < deadline, (
            f"the run did not end within 60 s\n{describe_run(run.pk, procs)}"
        )
        for proc in procs.remember(worker):
            known = seen.get(proc.pid, (proc, ""))
            seen[proc.pid] = (known[0], _cmdline(proc) or known[1])
        time.sleep(0.2)
    run = Run.objects.get(pk=run.pk)
    story = describe_run(run.pk, procs)
    recorded = [proc for proc, _ in seen.values()]
    commands = "\n".join(f"  {pid}: {cmd[:150]}" for pid, (_, cmd) in seen.items())

    assert run.state == Run.State.TIMED_OUT, story
    assert run.state_reason == "Stopped after the timeout of 20 s.", story
    assert any("launcher.py" in cmd for _, cmd in seen.values()), f"no kernel seen:\n{commands}"
    # The driver JVM (spark-class exec'd into java ... SparkSubmit) starts a second or two
    # into the Spark cell; the Spark session is usually up (cells_done >= 3) well before
    # the timeout, but on a loaded machine the timeout may come while it is starting.
    assert any(
        "java" in cmd and "SparkSubmit" in cmd and "launcher.Main" not in cmd
        for _, cmd in seen.values()
    ), f"no Spark driver JVM seen (cells done: {run.cells_done}):\n{commands}\n{story}"
    left = alive(recorded)
    assert not left, f"left behind after TIMED_OUT: {describe_procs(left)}\nseen:\n{commands}"
    assert not kernels(worker)
    assert run.output_key, f"the output notebook executed so far should be stored\n{story}"
    assert run.finished_at and run.duration.total_seconds() < 60, story
