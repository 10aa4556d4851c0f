"""Webhooks and chat through Apprise, end to end in one process: a receiver on loopback,
the services a worker calls, and the tasks run eagerly after commit."""

import json

import pytest
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator

from notify import services
from notify.models import Delivery, DeliveryAttempt, Event, NotificationTarget
from notify.schema import WebhookEventSerializer

pytestmark = pytest.mark.django_db

FAILED, SUCCEEDED, RECOVERED = Event.RUN_FAILED, Event.RUN_SUCCEEDED, Event.RUN_RECOVERED


def add_target(job, url, events, kind="webhook", **fields) -> NotificationTarget:
    target, _ = services.save_target(
        NotificationTarget(job=job, kind=kind, url=url, events=list(events), **fields)
    )
    return target


def test_a_webhook_is_signed_retried_with_backoff_and_logged(
    make_job, receiver, eager, finish, alice_client
):
    job = make_job("trivial.ipynb", max_retries=0)
    target = add_target(job, receiver.url(), [FAILED])
    receiver.secret = target.secret
    receiver.script = [500, 500, 200]

    run = eager(finish, job, "failed")

    assert len(receiver.received) == 3
    assert all(r.signed for r in receiver.received)  # the receiver checked each signature
    assert len({r.body for r in receiver.received}) == 1  # the same body every time
    ids = {r.headers["X-Portal-Delivery"] for r in receiver.received}
    payload = receiver.received[0].json
    assert ids == {payload["id"]}
    assert payload["event"] == "run.failed" and payload["run"]["id"] == run.pk
    assert payload["run"]["error"]["ename"] == "ZeroDivisionError"
    assert receiver.received[0].headers["X-Portal-Event"] == "run.failed"
    delivery = Delivery.objects.get()
    assert (delivery.state, delivery.attempts) == (Delivery.State.DELIVERED, 3)
    log = list(DeliveryAttempt.objects.filter(delivery=delivery).order_by("number"))
    assert [(a.number, a.status_code) for a in log] == [(1, 500), (2, 500), (3, 200)]
    assert [bool(a.error) for a in log] == [True, True, False]
    # The log on the job page: three attempts with time, code and number.
    page = alice_client.get(reverse("jobs-detail", args=[job.pk])).content.decode()
    section = page[page.index('id="delivery-log"') :]
    assert section.count('class="attempt"') == 3
    assert "#1 " in section and "#3 " in section and "HTTP 500" in section
    assert "Delivered" in section


def test_a_failure_and_then_a_recovery_send_both_events(make_job, receiver, eager, finish):
    job = make_job("trivial.ipynb", max_retries=0)
    add_target(job, receiver.url("/oncall"), [FAILED, RECOVERED])
    everything = add_target(job, receiver.url("/all"), [FAILED, SUCCEEDED, RECOVERED])

    eager(finish, job, "failed")
    eager(finish, job, "succeeded")
    eager(finish, job, "succeeded")  # not a recovery: the previous run succeeded

    def heard(path):
        return [r.json["event"] for r in receiver.received if r.path == path]

    assert heard("/oncall") == ["run.failed", "run.recovered"]
    # One message per run: "recovered" instead of, not besides, "succeeded".
    assert heard("/all") == ["run.failed", "run.recovered", "run.succeeded"]
    assert everything.deliveries.filter(state=Delivery.State.DELIVERED).count() == 3


def test_the_payload_is_what_the_schema_says(make_job, receiver, eager, finish):
    job = make_job("trivial.ipynb", max_retries=0)
    add_target(job, receiver.url(), [FAILED, SUCCEEDED])
    eager(finish, job, "failed")
    eager(finish, job, "succeeded")
    for received in receiver.received:
        serializer = WebhookEventSerializer(data=received.json)
        assert serializer.is_valid(), serializer.errors
        assert set(received.json) == set(WebhookEventSerializer().fields)
    schema = SchemaGenerator().get_schema(request=None, public=True)
    assert schema["openapi"].startswith("3.1")
    hook = schema["webhooks"]["PortalEvent"]["post"]
    assert "X-Portal-Signature" in hook["description"]  # webhooks take no parameters
    assert hook["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/WebhookEvent"
    )


def test_an_apprise_json_target_reaches_the_loopback_receiver(make_job, receiver, eager, finish):
    job = make_job("trivial.ipynb", max_retries=0)
    add_target(job, f"json://127.0.0.1:{receiver.port}/chat", [FAILED], kind="apprise")

    run = eager(finish, job, "failed")

    assert len(receiver.received) == 1
    message = receiver.received[0]
    assert message.path == "/chat"
    body = message.json
    assert body["type"] == "failure" and body["title"] == "Analysis Portal: Run failed"
    assert f"run #{run.pk} failed: ZeroDivisionError: division by zero" in body["message"]
    assert f"/runs/{run.pk}/" in body["message"]
    delivery = Delivery.objects.get()
    assert delivery.state == Delivery.State.DELIVERED
    assert delivery.attempt_log.get().error == ""


def test_a_failing_target_never_breaks_another(make_job, receiver, eager, finish, settings):
    settings.NOTIFY_MAX_ATTEMPTS = 2
    job = make_job("trivial.ipynb", max_retries=0)
    broken = add_target(job, receiver.url("/broken"), [FAILED])
    add_target(job, f"json://127.0.0.1:{receiver.port}/chat", [FAILED], kind="apprise")
    receiver.script = [503, 503]  # the first two requests, both to /broken (created first)
    eager(finish, job, "failed")
    states = dict(Delivery.objects.values_list("target__url", "state"))
    assert states[broken.url] == Delivery.State.FAILED  # gave up after NOTIFY_MAX_ATTEMPTS
    assert broken.deliveries.get().attempts == 2
    assert list(states.values()).count(Delivery.State.DELIVERED) == 1
    assert [r.path for r in receiver.received] == ["/broken", "/broken", "/chat"]


def test_a_redirect_is_not_followed(make_job, receiver, eager, finish, settings):
    settings.NOTIFY_MAX_ATTEMPTS = 1
    receiver.script = [302]
    receiver.location = "http://169.254.169.254/latest/meta-data/"
    job = make_job("trivial.ipynb", max_retries=0)
    add_target(job, receiver.url(), [FAILED])
    eager(finish, job, "failed")
    attempt = DeliveryAttempt.objects.get()
    assert attempt.status_code == 302 and "not followed" in attempt.error
    assert len(receiver.received) == 1


def test_deliveries_are_made_once_per_run_and_target(make_job, receiver, eager, finish):
    job = make_job("trivial.ipynb", max_retries=0)
    add_target(job, receiver.url(), [FAILED])
    run = eager(finish, job, "failed")
    # A second delivery of the notify_run message, and of the delivery's own message.
    assert eager(services.record_run_outcome, run.pk) == []
    assert services.deliver(Delivery.objects.get().pk) is None
    assert len(receiver.received) == 1


def test_the_email_still_goes_once_beside_the_targets(make_job, receiver, eager, finish):
    from django.core import mail

    job = make_job("trivial.ipynb", max_retries=0, notify_on_failure="alice@example.com")
    add_target(job, receiver.url(), [FAILED])
    eager(finish, job, "failed")
    assert len(mail.outbox) == 1 and len(receiver.received) == 1


def test_a_new_secret_signs_what_is_sent_next(make_job, receiver, eager, finish):
    job = make_job("trivial.ipynb", max_retries=0)
    target = add_target(job, receiver.url(), [FAILED])
    old = target.secret
    new = services.regenerate_secret(target)
    assert new != old and len(new) >= 43
    receiver.secret = new
    eager(finish, job, "failed")
    assert receiver.received[0].signed is True
    assert json.loads(Delivery.objects.get().body)["event"] == "run.failed"
