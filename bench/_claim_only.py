"""Celery app for a "claim-only" runs worker (used by bench/dispatch_latency.py --mode claim).

It is the portal's own Celery app (``portal.celery.app``, same tasks, queues and
settings), except that in each pool process ``jobs.services.execute_run`` is replaced by
the claim alone: ``services.claim_run`` -- the conditional UPDATE QUEUED -> RUNNING that
sets ``started_at`` -- and nothing else (no kernel). The run stays RUNNING; the benchmark
sets RUN_STALE_AFTER high so that the reaper leaves it alone, and deletes it afterwards.
The application code is not changed: the replacement lives only in these processes.

    python -m celery -A bench._claim_only worker -Q runs ...
"""

from celery import signals

from portal.celery import app  # noqa: F401  (celery -A finds it here)


def claim_only(run_id: int, worker: str | None = None):
    from jobs import services

    return services.claim_run(run_id, worker or services.worker_name())


@signals.worker_process_init.connect
def _claim_instead_of_execute(**_):
    from jobs import services

    services.execute_run = claim_only
