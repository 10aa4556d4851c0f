"""Alerts: the e-mail a job's recipients get when one of its runs fails or succeeds,
sent once per run, after the commit that finished it. The same moment queues the job's
other targets (chat, webhooks: the ``notify`` app), which e-mail's rules below do not
concern.

Who may receive them is a fair-share rule (issue 10): addresses of portal users or of
ALERT_ALLOWED_DOMAINS, at most ALERT_MAX_RECIPIENTS per job (``check_recipients``, run by
the job services, so pages, the API and ``manage.py`` obey it), and at most ALERT_RATE
e-mails per job (``send_run_alert``).
"""

import logging

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_ratelimit.core import get_usage

from jobs.models import Job, Run, RunEvent
from jobs.validators import refused_addresses, validate_recipients
from portal.mail import send_templated
from quotas.limits import LimitExceeded

State = Run.State
log = logging.getLogger(__name__)


def check_recipients(job: Job) -> None:
    """Raise LimitExceeded, with the field at fault ("notify_on_failure" or
    "notify_on_success") and a message naming the refused address, unless both alert lists
    of ``job`` hold only e-mail addresses of active portal users or of
    ALERT_ALLOWED_DOMAINS, and at most ALERT_MAX_RECIPIENTS of them together."""
    try:
        validate_recipients(job.notify_on_failure, job.notify_on_success)
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise LimitExceeded(messages[0], field=field) from None


def _rate_usage(job_id: int, increment: bool) -> dict | None:
    """django-ratelimit's usage of job ``job_id``'s alerts in the current ALERT_RATE window
    (shared cache), counting one more if ``increment``; None when there is no rate."""
    if not settings.ALERT_RATE:
        return None
    return get_usage(
        None,
        group="portal.alert",
        key=lambda group, request: str(job_id),
        rate=settings.ALERT_RATE,
        increment=increment,
    )


def _rate_words(rate: str) -> str:
    """ "12/h" -> "12 per hour", "30/2h" -> "30 per 2 hours"."""
    count, period = rate.split("/")
    unit = {"s": "second", "m": "minute", "h": "hour", "d": "day"}[period[-1]]
    multiple = period[:-1]
    return f"{count} per {multiple} {unit}s" if multiple not in ("", "1") else f"{count} per {unit}"


def send_alert_on_commit(run_id: int) -> None:
    """Once the current transaction commits, queue the outcome of finished run ``run_id``
    to every target of its job: the e-mail (``send_run_alert``) and, as a task of its own,
    the chat and webhook targets (``notify.tasks.notify_run``), so that neither waits for
    or breaks the other, and the run's finish waits for neither."""
    from jobs.tasks import send_run_alert  # jobs.tasks imports this package
    from notify.tasks import notify_run  # notify imports jobs' models

    send_run_alert.delay_on_commit(run_id)
    notify_run.delay_on_commit(run_id)


def send_run_alert(run_id: int) -> bool:
    """E-mail the outcome of a finished run to the job's recipients, at most once.

    Failures (``Run.FAILURE_STATES``) go to the job's failure list, successes to its
    success list; cancelled and skipped runs send nothing, and neither do the runs of a
    continuous job (``send_stream_paused_alert`` instead). ``alert_sent_at`` is set in
    the same transaction that holds the row lock, so concurrent or repeated calls send
    one message. (A crash between the SMTP hand-off and the commit would send it again:
    we accept that over losing an alert.) Returns True if a message was sent.

    Only recipients the portal still takes are e-mailed (``refused_addresses``: a user may
    have left, a job may predate the rule), at most ALERT_MAX_RECIPIENTS. Past ALERT_RATE
    e-mails for the job, nothing is sent: the run gets a RunEvent "alert suppressed: more
    than 12 per hour for this job", and ``alert_sent_at`` is set all the same (the alert of
    the run was dealt with). The count is taken after a successful hand-off, so a mail
    server error and its retry count once; the rows locked here include the job's (on
    PostgreSQL), so two runs of one job do not both take the last e-mail of the window.
    """
    with transaction.atomic():
        # The run's and the job's rows, not the owner's: a claim locks the owner's row
        # first (fair share), and an alert waiting on it while holding the run deadlocked.
        run = (
            Run.objects.select_for_update(of=("self", "job"))
            .select_related("job", "job__owner")
            .filter(pk=run_id)
            .first()
        )
        if run is None or run.alert_sent_at or not run.is_final:
            return False
        if run.trigger == Run.Trigger.CONTINUOUS:
            # A continuous job is restarted after a failure: it alerts once, when too many
            # failures pause it (``send_stream_paused_alert``), not for every run.
            recipients, kind = [], ""
        elif run.is_failure:
            recipients, kind = run.job.recipients("failure"), "failure"
        elif run.state == State.SUCCEEDED:
            recipients, kind = run.job.recipients("success"), "success"
        else:
            recipients, kind = [], ""
        sent = False
        refused = set(refused_addresses(recipients))
        if refused:
            log.warning("alert run=%s job=%s not sent to %s", run.pk, run.job_id, sorted(refused))
        recipients = [a for a in recipients if a not in refused][: settings.ALERT_MAX_RECIPIENTS]
        usage = _rate_usage(run.job_id, increment=False) if recipients else None
        if usage is not None and usage["count"] >= usage["limit"]:
            message = f"alert suppressed: more than {_rate_words(settings.ALERT_RATE)} for this job"
            log.warning("%s run=%s job=%s", message, run.pk, run.job_id)
            RunEvent.objects.create(run=run, attempt=run.attempt, state=run.state, message=message)
        elif recipients:
            context = {
                "run": run,
                "job": run.job,
                "url": settings.PORTAL_ORIGIN + run.get_absolute_url(),
                "traceback_head": "\n".join(run.error_traceback.splitlines()[-12:]),
            }
            send_templated(f"jobs/emails/run_{kind}", context, recipients)
            _rate_usage(run.job_id, increment=True)
            sent = True
        run.alert_sent_at = timezone.now()
        run.save(update_fields=["alert_sent_at"])
    return sent


def send_stream_paused_alert(job_id: int, failures: int) -> bool:
    """E-mail the failure list and the owner of continuous job ``job_id`` that the
    supervisor paused it after ``failures`` failed runs within its window, naming the
    last failure. Queued once per pause (``streams.pause_after_failures``' conditional
    UPDATE); a mail-server error is retried by the task. Only recipients the portal takes
    (``refused_addresses``), at most ALERT_MAX_RECIPIENTS. Returns True if sent. The
    job's chat and webhook targets are told by a task of their own
    (``notify.tasks.notify_job_paused``), queued beside this one, so that neither waits
    for or breaks the other (as ``send_alert_on_commit`` does for runs)."""
    job = Job.objects.select_related("owner").filter(pk=job_id).first()
    if job is None:
        return False
    recipients = list(dict.fromkeys([*job.recipients("failure"), job.owner.email]))
    refused = set(refused_addresses(recipients))
    recipients = [a for a in recipients if a and a not in refused][: settings.ALERT_MAX_RECIPIENTS]
    if not recipients:
        log.warning("stream paused alert job=%s: nobody to tell", job_id)
        return False
    last = (
        job.runs.filter(trigger=Run.Trigger.CONTINUOUS, state__in=Run.FAILURE_STATES)
        .order_by("-finished_at", "-id")
        .first()
    )
    context = {
        "job": job,
        "failures": failures,
        "last": last,
        "url": settings.PORTAL_ORIGIN + job.get_absolute_url(),
    }
    send_templated("jobs/emails/stream_paused", context, recipients)
    log.info("stream paused alert job=%s sent to %s addresses", job_id, len(recipients))
    return True
