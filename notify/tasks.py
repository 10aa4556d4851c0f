"""Celery tasks of notifications: thin wrappers that load by id and call a service.

``deliver_notification`` calls out to other services (seconds, at worst the timeouts), so
it runs on the "clusters" queue beside the other outbound calls, never holding up the
dispatcher on "control" (settings: CELERY_TASK_ROUTES).
"""

import logging

from celery import shared_task
from django.conf import settings

from notify import services

log = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=60, time_limit=90)
def deliver_notification(delivery_id: int) -> str | None:
    """One attempt at a delivery; a duplicate message finds nothing to claim."""
    delivery = services.deliver(delivery_id)
    return delivery.state if delivery else None


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def notify_run(run_id: int) -> int:
    """Record the notifications of a finished run (after the commit that finished it).
    A continuous run records none: its job notifies once, when it is paused."""
    return len(services.record_run_outcome(run_id))


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def notify_job_paused(job_id: int, failures: int) -> int:
    """Record the ``job.paused`` notifications of a continuous job the supervisor paused
    after ``failures`` failed runs (queued beside its e-mail, after the pause's commit);
    once per pause whatever the deliveries of this message."""
    return len(services.record_job_paused(job_id, failures))


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def notify_tick() -> dict:
    """Beat, every NOTIFY_TICK_INTERVAL s: runs past their expected duration, and
    deliveries whose message was lost."""
    counts = {
        "long_running": services.record_long_runs(),
        "resent": services.resend_due(),
    }
    if any(counts.values()):
        log.info("notify tick %s (every %ss)", counts, settings.NOTIFY_TICK_INTERVAL)
    return counts
