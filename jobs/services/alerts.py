"""Alerts: the e-mail a job's recipients get when one of its runs fails or succeeds,
sent once per run, after the commit that finished it."""

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs.models import Run
from portal.mail import send_templated

State = Run.State


def send_alert_on_commit(run_id: int) -> None:
    """Queue the ``send_run_alert`` task for ``run_id`` once the current transaction
    commits."""
    from jobs.tasks import send_run_alert  # jobs.tasks imports this package

    send_run_alert.delay_on_commit(run_id)


def send_run_alert(run_id: int) -> bool:
    """E-mail the outcome of a finished run to the job's recipients, at most once.

    Failures (``Run.FAILURE_STATES``) go to the job's failure list, successes to its
    success list; cancelled and skipped runs send nothing. ``alert_sent_at`` is set in
    the same transaction that holds the row lock, so concurrent or repeated calls send
    one message. (A crash between the SMTP hand-off and the commit would send it again:
    we accept that over losing an alert.) Returns True if a message was sent.
    """
    with transaction.atomic():
        run = (
            Run.objects.select_for_update()
            .select_related("job", "job__owner")
            .filter(pk=run_id)
            .first()
        )
        if run is None or run.alert_sent_at or not run.is_final:
            return False
        if run.is_failure:
            recipients, kind = run.job.recipients("failure"), "failure"
        elif run.state == State.SUCCEEDED:
            recipients, kind = run.job.recipients("success"), "success"
        else:
            recipients, kind = [], ""
        sent = False
        if recipients:
            context = {
                "run": run,
                "job": run.job,
                "url": settings.PORTAL_ORIGIN + run.get_absolute_url(),
                "traceback_head": "\n".join(run.error_traceback.splitlines()[-12:]),
            }
            send_templated(f"jobs/emails/run_{kind}", context, recipients)
            sent = True
        run.alert_sent_at = timezone.now()
        run.save(update_fields=["alert_sent_at"])
    return sent
