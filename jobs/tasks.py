"""Celery tasks of scheduled notebooks: thin wrappers that load by id and call a service."""

import logging

from celery import shared_task

from jobs import services
from jobs.models import Job
from jobs.services import alerts, streams
from portal.mail import MAIL_TASK_OPTIONS

log = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True)
def execute_run(run_id: int) -> str | None:
    """Execute one run (queue "runs"). A duplicate delivery finds nothing to claim."""
    run = services.execute_run(run_id)
    return run.state if run else None


@shared_task(acks_late=False, ignore_result=True)
def execute_stream_run(run_id: int) -> str | None:
    """Execute one continuous run (queue "streams", whose worker has no time limit).
    Acknowledged when it starts: a run that never ends must not be redelivered after
    Redis's visibility timeout; if its worker dies, the reaper and the supervisor take
    over. A duplicate delivery finds nothing to claim."""
    run = services.execute_run(run_id)
    return run.state if run else None


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def supervise_streams() -> dict:
    """Keep one run of each enabled continuous job active; beat, every
    STREAM_SUPERVISE_INTERVAL s."""
    counts = streams.supervise_streams()
    if any(counts.values()):
        log.info("supervisor %s", counts)
    return counts


#: Seconds a removal of streams directories may take (a sink of many small files).
STREAM_DIRS_TIME_LIMIT = 600


@shared_task(ignore_result=True, soft_time_limit=STREAM_DIRS_TIME_LIMIT, time_limit=660)
def remove_stream_dirs(owner_id: int, job_id: int, s3_prefix: str = "") -> bool:
    """Remove deleted continuous job ``job_id``'s checkpoints and sinks (queue "clusters",
    whose worker's host has them, as the local clusters writing them do), and its S3
    prefix ``s3_prefix`` when it had one (``streams.remove_stream_prefix``). A job that
    exists is left alone; a duplicate delivery finds nothing. Returns True if something
    was removed."""
    if Job.objects.filter(pk=job_id).exists():
        log.warning("job=%s exists: its streams directory stays", job_id)
        return False
    removed = streams.remove_stream_dirs(owner_id, job_id)
    if s3_prefix:
        removed = streams.remove_stream_prefix(s3_prefix) > 0 or removed
    return removed


@shared_task(ignore_result=True, soft_time_limit=STREAM_DIRS_TIME_LIMIT, time_limit=660)
def prune_stream_dirs() -> int:
    """Remove the streams directories, and S3 prefixes, of jobs that no longer exist;
    beat, every STREAM_PRUNE_INTERVAL s, on the "clusters" queue. Returns how many were
    removed."""
    removed = streams.prune_stream_dirs() + streams.prune_stream_prefixes()
    if removed:
        log.info("pruned streams directories=%s", removed)
    return removed


@shared_task(**MAIL_TASK_OPTIONS)
def send_stream_paused_alert(job_id: int, failures: int) -> bool:
    """E-mail that continuous job ``job_id`` was paused after ``failures`` failed runs."""
    return alerts.send_stream_paused_alert(job_id, failures)


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def dispatch_due_runs() -> int:
    """Create the runs of due schedule slots; beat sends it every DISPATCH_INTERVAL s."""
    return len(services.dispatch_due_runs())


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def reap_runs() -> dict:
    """Reap runs of lost workers and re-enqueue lost messages; beat, every REAP_INTERVAL s."""
    counts = services.reap_runs()
    if any(counts.values()):
        log.warning("reaper %s", counts)
    return counts


@shared_task(**MAIL_TASK_OPTIONS)
def send_run_alert(run_id: int) -> bool:
    """E-mail a finished run's outcome once; retried on mail-server errors."""
    return services.send_run_alert(run_id)


#: Seconds a retention pass may start new batches for; the pass then ends, within the task's
#: soft time limit, and the next one (RETENTION_INTERVAL later) goes on.
RETENTION_BUDGET_SECONDS = 240.0


@shared_task(ignore_result=True, soft_time_limit=300, time_limit=330)
def expire_run_outputs() -> int:
    """Delete the outputs of runs past their job's retention (the rows stay); beat, every
    RETENTION_INTERVAL s. Returns how many runs were expired."""
    return services.expire_run_outputs(budget_seconds=RETENTION_BUDGET_SECONDS)
