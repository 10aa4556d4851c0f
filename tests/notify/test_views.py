"""The pages of notification targets: add, edit, remove, a secret shown once; only who
may change the job sees or changes them."""

import html

import pytest
from django.urls import reverse

from notify.models import NotificationTarget

pytestmark = pytest.mark.django_db


def page(response) -> str:
    return html.unescape(response.content.decode())


def test_adding_a_webhook_shows_its_secret_once(alice_client, make_job, receiver):
    job = make_job()
    response = alice_client.post(
        reverse("targets-new", args=[job.pk]),
        {
            "kind": "webhook",
            "name": "CI",
            "url": receiver.url(),
            "events": ["run.failed"],
            "enabled": "on",
        },
    )
    target = NotificationTarget.objects.get()
    assert response.status_code == 200 and target.secret in page(response)
    assert "no-store" in response["Cache-Control"]
    detail = page(alice_client.get(reverse("jobs-detail", args=[job.pk])))
    assert "Webhook (signed JSON): CI" in detail and target.secret not in detail
    assert "/hook" not in detail  # the URL is shown cut to its host
    edit = page(alice_client.get(reverse("targets-edit", args=[target.pk])))
    assert target.secret not in edit
    # A new secret, shown once.
    again = alice_client.post(reverse("targets-secret", args=[target.pk]))
    target.refresh_from_db()
    assert target.secret in page(again)


def test_the_form_says_why_a_url_is_refused(alice_client, make_job):
    job = make_job()
    response = alice_client.post(
        reverse("targets-new", args=[job.pk]),
        {"kind": "webhook", "url": "http://169.254.169.254/", "events": ["run.failed"]},
    )
    assert response.status_code == 200
    assert "169.254.169.254 is a link-local address" in page(response)
    assert NotificationTarget.objects.count() == 0


def test_editing_and_removing_a_chat_target(alice_client, make_job, receiver):
    job = make_job()
    alice_client.post(
        reverse("targets-new", args=[job.pk]),
        {"kind": "apprise", "url": f"json://127.0.0.1:{receiver.port}/", "events": ["run.failed"]},
    )
    target = NotificationTarget.objects.get()
    assert target.secret == ""
    response = alice_client.post(
        reverse("targets-edit", args=[target.pk]),
        {
            "kind": "webhook",
            "url": target.url,
            "events": ["run.failed", "run.recovered"],
            "enabled": "on",
        },
    )
    assert response.status_code == 302
    target.refresh_from_db()
    assert target.kind == "apprise"  # chosen once
    assert target.events == ["run.failed", "run.recovered"]
    alice_client.post(reverse("targets-delete", args=[target.pk]))
    assert NotificationTarget.objects.count() == 0


def test_readers_of_a_shared_job_see_no_targets_and_cannot_reach_them(
    client, bob, make_job, receiver
):
    job = make_job(visibility="signed_in")
    NotificationTarget.objects.create(
        job=job, kind="webhook", url=receiver.url(), events=["run.failed"], secret="s"
    )
    client.force_login(bob)
    detail = page(client.get(reverse("jobs-detail", args=[job.pk])))
    assert "Notifications" not in detail and "delivery-log" not in detail
    target = NotificationTarget.objects.get()
    assert client.get(reverse("targets-edit", args=[target.pk])).status_code == 404
    assert client.post(reverse("targets-secret", args=[target.pk])).status_code == 404
    assert client.get(reverse("targets-new", args=[job.pk])).status_code == 404
