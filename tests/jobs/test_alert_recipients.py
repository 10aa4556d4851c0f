"""Alert recipients: only portal users or allowed domains, at most ALERT_MAX_RECIPIENTS per
job, through the pages and the services; and at most ALERT_RATE e-mails per job."""

import html

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from jobs import services
from jobs.executor import Outcome
from jobs.models import Job, Run
from quotas.limits import LimitExceeded
from tests.conftest import notebook_bytes
from tests.jobs.test_runs import executed_notebook
from tests.jobs.test_views import ALL_PARAMS, form_data

pytestmark = pytest.mark.django_db


def post_new_job(client, **fields):
    upload = SimpleUploadedFile("t.ipynb", notebook_bytes("trivial.ipynb"))
    response = client.post(reverse("jobs-new"), form_data(notebook=upload, **ALL_PARAMS, **fields))
    return response, html.unescape(response.content.decode())


def test_portal_users_are_taken_whatever_the_case(alice_client, bob):
    response, _ = post_new_job(
        alice_client, notify_on_failure="Alice@Example.com", notify_on_success="BOB@example.COM"
    )
    assert response.status_code == 302
    assert Job.objects.get().recipients("success") == ["BOB@example.COM"]


def test_an_outside_address_is_refused_by_name(alice_client, new_stored_files):
    response, page = post_new_job(
        alice_client, notify_on_failure="alice@example.com, someone@elsewhere.org"
    )
    assert response.status_code == 200
    assert "'someone@elsewhere.org' is not the address of a portal user" in page
    assert Job.objects.count() == 0 and not new_stored_files()


def test_an_inactive_user_is_refused(alice_client, bob):
    bob.is_active = False
    bob.save()
    _, page = post_new_job(alice_client, notify_on_success="bob@example.com")
    assert "'bob@example.com' is not the address of a portal user" in page
    assert Job.objects.count() == 0


def test_allowed_domains_are_taken_and_named(alice_client, settings):
    settings.ALERT_ALLOWED_DOMAINS = ["corp.example"]
    _, page = post_new_job(alice_client, notify_on_failure="x@sub.corp.example")
    assert "of a portal user or of corp.example" in page
    response, _ = post_new_job(alice_client, notify_on_failure="oncall@CORP.example")
    assert response.status_code == 302


def test_at_most_n_recipients_per_job_both_lists_together(alice_client, settings):
    settings.ALERT_ALLOWED_DOMAINS = ["corp.example"]
    settings.ALERT_MAX_RECIPIENTS = 3
    many = ", ".join(f"a{i}@corp.example" for i in range(300))
    _, page = post_new_job(alice_client, notify_on_failure=many)
    assert "300 alert recipients: a job may have at most 3" in page
    _, page = post_new_job(
        alice_client,
        notify_on_failure="a@corp.example, b@corp.example",
        notify_on_success="B@corp.example, c@corp.example",
    )
    assert "3 alert recipients" not in page and "4 alert recipients" not in page
    assert Job.objects.count() == 1  # 3 distinct addresses: taken
    _, page = post_new_job(
        alice_client,
        notify_on_failure="a@corp.example, b@corp.example",
        notify_on_success="c@corp.example, d@corp.example",
    )
    assert "4 alert recipients: a job may have at most 3" in page
    assert Job.objects.count() == 1


def test_the_edit_page_refuses_outside_addresses(alice_client, make_job):
    job = make_job("trivial.ipynb")
    data = form_data(notify_on_failure="x@elsewhere.org", **ALL_PARAMS)
    response = alice_client.post(reverse("jobs-edit", args=[job.pk]), data)
    assert "'x@elsewhere.org' is not the address" in html.unescape(response.content.decode())
    job.refresh_from_db()
    assert job.notify_on_failure == ""


def test_the_services_refuse_what_the_form_refuses(alice, make_job, settings):
    """manage.py commands and the API call the services: the same rules apply there."""
    with pytest.raises(LimitExceeded) as caught:
        make_job("trivial.ipynb", notify_on_success="out@elsewhere.org")
    assert caught.value.field == "notify_on_success"
    assert "'out@elsewhere.org'" in caught.value.message
    assert Job.objects.count() == 0
    job = make_job("trivial.ipynb")
    settings.ALERT_MAX_RECIPIENTS = 1
    job.notify_on_failure = "alice@example.com"
    job.notify_on_success = "Alice@example.com"  # the same address: one recipient
    services.update_job(job)
    job.notify_on_success = "out@elsewhere.org"
    with pytest.raises(LimitExceeded):
        services.update_job(job)
    assert Job.objects.get().notify_on_success == "Alice@example.com"


def failed_run(job, alice, tmp_path) -> Run:
    run = services.claim_run(services.run_now(job, alice).pk, "w")
    return services.finish_run(run, Outcome("failed", executed_notebook(tmp_path), message="x"))


def test_alerts_past_the_rate_are_suppressed_and_recorded(make_job, alice, tmp_path, settings):
    settings.ALERT_RATE = "2/h"
    job = make_job("trivial.ipynb", notify_on_failure="alice@example.com", max_retries=0)
    other = make_job("trivial.ipynb", notify_on_failure="alice@example.com", max_retries=0)
    runs = [failed_run(job, alice, tmp_path) for _ in range(3)]
    assert [services.send_run_alert(r.pk) for r in runs] == [True, True, False]
    assert len(mail.outbox) == 2
    suppressed = Run.objects.get(pk=runs[2].pk)
    assert suppressed.alert_sent_at is not None  # dealt with, once
    assert (
        list(suppressed.events.values_list("message", flat=True)).count(
            "alert suppressed: more than 2 per hour for this job"
        )
        == 1
    )
    assert services.send_run_alert(runs[2].pk) is False  # a repeat does nothing more
    assert suppressed.events.count() == Run.objects.get(pk=runs[2].pk).events.count()
    # The rate is per job: another job's alert goes out.
    assert services.send_run_alert(failed_run(other, alice, tmp_path).pk) is True
    assert len(mail.outbox) == 3


def test_a_mail_server_error_does_not_use_up_the_rate(
    make_job, alice, tmp_path, settings, monkeypatch
):
    settings.ALERT_RATE = "1/h"
    job = make_job("trivial.ipynb", notify_on_failure="alice@example.com", max_retries=0)
    run = failed_run(job, alice, tmp_path)
    import jobs.services.alerts as alerts

    def down(*args, **kwargs):
        raise OSError("mail server down")

    monkeypatch.setattr(alerts, "send_templated", down)
    with pytest.raises(OSError):
        services.send_run_alert(run.pk)
    assert Run.objects.get(pk=run.pk).alert_sent_at is None  # the task retries it
    monkeypatch.undo()
    assert services.send_run_alert(run.pk) is True and len(mail.outbox) == 1


def test_addresses_refused_since_are_not_mailed(make_job, alice, bob, tmp_path):
    job = make_job("trivial.ipynb", notify_on_failure="alice@example.com, bob@example.com")
    bob.is_active = False
    bob.save()
    # A job stored before the rule may hold any address.
    Job.objects.filter(pk=job.pk).update(
        notify_on_failure="alice@example.com, bob@example.com, x@elsewhere.org"
    )
    job.refresh_from_db()
    job.max_retries = 0
    job.save()
    assert services.send_run_alert(failed_run(job, alice, tmp_path).pk) is True
    assert mail.outbox[0].to == ["alice@example.com"]
