"""Recovery: cancelling runs, and the reaper that ends or retries the runs of lost
workers and sends lost messages again.

The reaper runs on beat's schedule (REAP_INTERVAL) on the control queue. Like every
other writer, it changes a run only through conditional UPDATEs fenced by the attempt.
"""

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs.models import Run, RunEvent
from jobs.services import fairshare
from jobs.services.alerts import send_alert_on_commit
from jobs.services.dispatch import enqueue_run
from jobs.services.jobs import delete_files
from portal.backoff import backoff
from quotas.limits import lock_user

if TYPE_CHECKING:
    from django.contrib.auth.models import User

log = logging.getLogger(__name__)

State = Run.State


def retry_delay(attempt: int) -> float:
    """Seconds before retrying a run after its failed attempt ``attempt``: the portal's
    backoff (exponential from RUN_RETRY_BACKOFF seconds, capped at an hour, equal jitter)."""
    return backoff(attempt, base=settings.RUN_RETRY_BACKOFF, cap=3600.0)


def cancel_run(run: Run, user: "User | None" = None) -> Run:
    """Cancel a run: a QUEUED run ends CANCELLED at once; for a RUNNING run the request is
    recorded and its worker stops the kernel within a heartbeat. Final runs are left as
    they are. Returns the run as it now is."""
    now = timezone.now()
    with transaction.atomic():
        # The owner's row first, as the claim locks it before the run's: one lock order.
        lock_user(run.job.owner_id)
        if Run.objects.filter(pk=run.pk, state=State.QUEUED).update(
            state=State.CANCELLED,
            finished_at=now,
            cancel_requested_at=now,
            state_reason="Cancelled before it started.",
        ):
            RunEvent.objects.create(
                run=run,
                attempt=run.attempt,
                state=State.CANCELLED,
                message="Cancelled before it started.",
            )
            fairshare.release_held(run.job.owner_id, now)  # it may have had room in flight
        else:
            Run.objects.filter(
                pk=run.pk, state=State.RUNNING, cancel_requested_at__isnull=True
            ).update(cancel_requested_at=now)
    return Run.objects.get(pk=run.pk)


def _delete_partial_on_commit(run: Run) -> None:
    """Delete the live view's partial output of a run the reaper ended, after commit (the
    worker that stored it is gone, so its key cannot change any more)."""
    if run.partial_key:
        key = run.partial_key
        transaction.on_commit(lambda: delete_files([key]))


def reap_runs(now: datetime | None = None) -> dict[str, int]:
    """Recover runs whose worker vanished and messages that were lost.

    - RUNNING with a heartbeat older than RUN_STALE_AFTER: CANCELLED if a cancel was
      asked for; back to QUEUED (with backoff) while attempts remain; else LOST.
    - QUEUED and unclaimed for RUN_QUEUED_TIMEOUT: enqueued again (the claim makes any
      duplicate message harmless). Held runs (``fairshare``) have no message to lose and
      are not counted here:
    - held runs of users below their concurrency limit are released
      (``fairshare.release_all``), should a release at the end of a run have been missed.

    Returns counts: {"cancelled", "retried", "lost", "requeued", "released"}.
    """
    now = now or timezone.now()
    counts = {"cancelled": 0, "retried": 0, "lost": 0, "requeued": 0}
    with transaction.atomic():
        stale = Run.objects.stale(now, settings.RUN_STALE_AFTER).select_for_update(skip_locked=True)
        for run in stale:
            mine = Run.objects.filter(pk=run.pk, attempt=run.attempt, state=State.RUNNING)
            last_seen = run.heartbeat_at or run.started_at
            who = run.worker or "the worker"
            message = (
                f"No heartbeat from {who} since {last_seen:%H:%M:%S} UTC: the worker was lost."
            )
            if run.cancel_requested_at:
                mine.update(
                    state=State.CANCELLED,
                    finished_at=now,
                    state_reason="Cancelled (the worker had gone).",
                    partial_key="",
                )
                _delete_partial_on_commit(run)
                RunEvent.objects.create(
                    run=run,
                    attempt=run.attempt,
                    state=State.CANCELLED,
                    message="Cancelled; the worker had gone.",
                )
                counts["cancelled"] += 1
            elif run.attempt < run.max_attempts:
                delay = retry_delay(run.attempt)
                mine.update(
                    state=State.QUEUED,
                    not_before=now + timedelta(seconds=delay),
                    enqueued_at=now,
                    worker="",
                    state_reason=message[:300],
                )
                RunEvent.objects.create(
                    run=run,
                    attempt=run.attempt,
                    state=State.LOST,
                    worker=run.worker,
                    message=f"{message} Retrying in {delay:.0f} s."[:500],
                )
                enqueue_run(run, countdown=delay)
                counts["retried"] += 1
            else:
                mine.update(
                    state=State.LOST, finished_at=now, state_reason=message[:300], partial_key=""
                )
                _delete_partial_on_commit(run)
                RunEvent.objects.create(
                    run=run,
                    attempt=run.attempt,
                    state=State.LOST,
                    worker=run.worker,
                    message=message[:500],
                )
                send_alert_on_commit(run.pk)
                counts["lost"] += 1
            log.warning("reaped run=%s attempt=%s worker=%s", run.pk, run.attempt, run.worker)
        stuck = Run.objects.stuck_queued(now, settings.RUN_QUEUED_TIMEOUT).select_for_update(
            skip_locked=True
        )
        for run in stuck:
            Run.objects.filter(pk=run.pk, state=State.QUEUED).update(enqueued_at=now)
            enqueue_run(run)
            counts["requeued"] += 1
    with transaction.atomic():
        counts["released"] = fairshare.release_all(now)
    return counts
