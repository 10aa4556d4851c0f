"""Celery app for a runs worker whose notebooks "run" by sleeping (bench/fairness.py).

It is the portal's own Celery app (``portal.celery.app``), and each run goes through the
real ``execute_run``: the fair-share claim, the attempt's workspace, ``finish_run`` and the
release of the owner's held runs. Only the executor is replaced, in these processes alone:
instead of starting a kernel it sleeps BENCH_RUN_SECONDS (default 0.2) and reports
success, so that a benchmark measures scheduling, not kernels.

    python -m celery -A bench._sleep_executor worker -Q runs ...
"""

import os
import time

from celery import signals

from portal.celery import app  # noqa: F401  (celery -A finds it here)


class SleepExecutor:
    """An executor (``jobs.services.executors.Executor``) whose run is a sleep."""

    def acquire_target(self, attempt):
        from jobs.services.attempt import SparkTarget

        return SparkTarget(master="local[1]")

    def run(self, attempt):
        from jobs.executor import Outcome, OutcomeStatus

        time.sleep(float(os.environ.get("BENCH_RUN_SECONDS", "0.2")))
        return Outcome(OutcomeStatus.SUCCEEDED)

    def release_target(self, attempt, outcome):
        return None


@signals.worker_process_init.connect
def _sleep_instead_of_kernels(**_):
    from jobs.services import execution

    execution.executor_for = lambda job: SleepExecutor()
