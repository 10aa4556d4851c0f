"""Retention: the stored output of a run that ended long ago is deleted; the run row stays.

A run's output (its ``.ipynb``, its rendered HTML and their gzip copies
(``jobs.compression``), its logs under ``runs/<uuid>/logs/``
(``jobs.logs``), and a partial HTML an older run may have left behind) is kept for its
job's ``output_retention_days``, or RUN_OUTPUT_RETENTION_DAYS when the job leaves that
empty; 0 keeps it forever. Past that, ``expire_run_outputs``
deletes the files, clears the keys, sets ``output_bytes`` to 0 and stamps
``output_expired_at``, and the run page says "output expired on DATE". Notebook versions
(the uploads that runs execute) never expire: they are the job, not its output.

Beat sends ``jobs.tasks.expire_run_outputs`` every RETENTION_INTERVAL seconds on the
control queue. Passes may overlap (a slow pass, a second beat): each batch locks its rows
with ``SKIP LOCKED`` on PostgreSQL, and the final UPDATE is conditional, so two passes
never expire one run twice; where rows cannot be locked (SQLite), both may delete the same
files, which is harmless.
"""

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from jobs import compare, logs, spark_ui
from jobs.models import Job, Run

log = logging.getLogger(__name__)

#: Runs expired per transaction. A batch holds its rows' locks while it deletes their
#: files (up to five storage calls each, and the logs'), so it stays small.
BATCH_SIZE = 100
#: The Run fields that name a stored output file, deleted and cleared on expiry.
FILE_FIELDS = ("output_key", "html_key", "partial_key", "output_gzip_key", "html_gzip_key")
#: Runs whose files could not be deleted after which a pass gives up: storage is likely
#: unavailable, and the next pass will try again.
MAX_FAILURES = 100


def retention_days(job: Job) -> int:
    """Days the outputs of ``job``'s runs are kept after the run ended: the job's own
    ``output_retention_days``, else RUN_OUTPUT_RETENTION_DAYS; 0 means forever."""
    if job.output_retention_days is not None:
        return job.output_retention_days
    return settings.RUN_OUTPUT_RETENTION_DAYS


def expirable_runs(now: datetime) -> QuerySet[Run]:
    """Runs whose output is due to expire at ``now`` (aware, UTC): final, with a stored
    file, not expired yet, and ended more than their job's retention days before ``now``.

    One query whatever the number of jobs: a clause per distinct retention of the jobs
    that set their own (a handful of values), plus one for the portal's default. Active
    runs never match (a run leaves QUEUED and RUNNING only for a final state).
    """
    due = []
    default = settings.RUN_OUTPUT_RETENTION_DAYS
    if default > 0:
        due.append(
            Q(
                job__output_retention_days__isnull=True,
                finished_at__lt=now - timedelta(days=default),
            )
        )
    own = (
        Job.objects.filter(output_retention_days__gt=0)
        .order_by()
        .values_list("output_retention_days", flat=True)
        .distinct()
    )
    for days in sorted(d for d in own if d):
        due.append(Q(job__output_retention_days=days, finished_at__lt=now - timedelta(days=days)))
    if not due:
        return Run.objects.none()
    any_due = due[0]
    for clause in due[1:]:
        any_due |= clause
    # Logs have no key of their own: their bytes (in output_bytes) say they are there.
    has_files = (
        ~Q(output_key="")
        | ~Q(html_key="")
        | ~Q(partial_key="")
        | ~Q(output_gzip_key="")
        | ~Q(html_gzip_key="")
        | Q(output_bytes__gt=0)
    )
    return Run.objects.filter(
        any_due,
        has_files,
        state__in=Run.FINAL_STATES,
        output_expired_at__isnull=True,
        finished_at__isnull=False,
    )


def expire_run_outputs(
    now: datetime | None = None,
    *,
    batch_size: int = BATCH_SIZE,
    budget_seconds: float | None = None,
) -> int:
    """Delete the stored output of every run past its retention at ``now`` (default: the
    current time, UTC), oldest first, ``batch_size`` runs per transaction; returns how many
    runs were expired.

    Each expired run keeps its row, with its ``FILE_FIELDS`` (the output, HTML, partial
    and gzip copies' keys) cleared, ``output_bytes`` 0 and ``output_expired_at`` = ``now``.
    A run whose files cannot be deleted (storage errors are logged, not raised) is left as
    it was, for the next pass; after MAX_FAILURES such runs the pass stops. With
    ``budget_seconds``, no new batch starts once that much time (monotonic clock) has
    passed, so a pass ends before its task's time limit; the rest waits for the next
    pass. Idempotent: a second call finds nothing more to do.
    """
    now = now or timezone.now()
    started = time.monotonic()
    expired = 0
    failed: set[int] = set()
    while True:
        done, seen = _expire_batch(now, batch_size, failed)
        expired += done
        if seen < batch_size or len(failed) >= MAX_FAILURES:
            break
        if budget_seconds is not None and time.monotonic() - started >= budget_seconds:
            break
    if expired or failed:
        log.info("retention expired=%s failed=%s", expired, len(failed))
    return expired


def _expire_batch(now: datetime, batch_size: int, failed: set[int]) -> tuple[int, int]:
    """Expire up to ``batch_size`` due runs in one transaction, skipping the ids in
    ``failed`` and adding to it the runs whose files could not be deleted; returns
    ``(expired, seen)``.

    Files go before the row changes, inside the transaction: if the commit is lost after
    the files are gone, the row still names them and the next pass deletes them again
    (deleting a missing file is a no-op) and expires the row. The other order would leave
    files that no row names, forever. Meanwhile the run page's links answer "not available".
    """
    with transaction.atomic():
        runs = list(
            expirable_runs(now)
            .exclude(pk__in=failed)
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("finished_at", "pk")
            .only(*FILE_FIELDS, "pk", "uuid", "job_id")[:batch_size]
        )
        expired = 0
        for run in runs:
            keys = [k for k in (getattr(run, field) for field in FILE_FIELDS) if k]
            try:
                for key in keys:
                    default_storage.delete(key)
                logs.delete_stored(run)
                compare.delete_stored(run)
                spark_ui.delete_event_log(run)
            except Exception:
                log.exception("could not delete the output of run=%s job=%s", run.pk, run.job_id)
                failed.add(run.pk)
                continue
            expired += Run.objects.filter(
                pk=run.pk, state__in=Run.FINAL_STATES, output_expired_at__isnull=True
            ).update(
                **dict.fromkeys(FILE_FIELDS, ""),
                output_bytes=0,
                output_expired_at=now,
            )
    return expired, len(runs)
