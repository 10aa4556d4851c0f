"""Continuous jobs and their targets: no run events for their runs (a flapping stream
would repeat itself at every restart), one ``job.paused`` when the supervisor pauses the
job, beside its e-mail."""

import hmac
from datetime import timedelta
from hashlib import sha256

import pytest
from django.core import mail
from django.utils import timezone

from jobs import services as job_services
from jobs import tasks as job_tasks
from jobs.executor import Outcome
from jobs.models import Job, Run
from jobs.services import streams
from notify import services, tasks
from notify.models import Delivery, Event, NotificationTarget
from notify.schema import WebhookEventSerializer
from tests.jobs.test_runs import executed_notebook

pytestmark = pytest.mark.django_db

FAILED, PAUSED = Event.RUN_FAILED, Event.JOB_PAUSED


def add_target(job, url, events, kind="webhook") -> NotificationTarget:
    return services.save_target(
        NotificationTarget(job=job, kind=kind, url=url, events=list(events))
    )[0]


@pytest.fixture
def stream_job(make_job, settings, tmp_path):
    settings.STREAMS_ROOT = tmp_path / "streams"
    return make_job(
        "trivial.ipynb",
        name="clicks",
        continuous=True,
        stream_max_failures=3,
        stream_failure_window_minutes=60,
        notify_on_failure="alice@example.com",
    )


def fail_runs(job: Job, count: int, t0) -> Run:
    """``count`` continuous runs of ``job`` started by the supervisor and ended FAILED, a
    minute apart from ``t0`` (nothing enqueued is run); returns the last."""
    for i in range(count):
        streams.supervise_streams(t0 + timedelta(minutes=i))
        run = job.runs.get(trigger=Run.Trigger.CONTINUOUS, state=Run.State.QUEUED)
        Run.objects.filter(pk=run.pk).update(
            state=Run.State.FAILED,
            finished_at=t0 + timedelta(minutes=i),
            attempt=1,
            error_ename="KeyError",
            error_evalue="'ts'",
            state_reason="KeyError: 'ts'",
        )
    return Run.objects.get(pk=run.pk)


def test_a_failed_continuous_run_notifies_nothing(stream_job, receiver, eager, tmp_path):
    add_target(stream_job, receiver.url(), [FAILED, Event.RUN_SUCCEEDED, Event.RUN_RECOVERED])
    streams.supervise_streams()
    (queued,) = stream_job.runs.filter(trigger=Run.Trigger.CONTINUOUS)
    run = job_services.claim_run(queued.pk, "w")
    outcome = Outcome(
        "failed",
        executed_notebook(tmp_path),
        error={"cell_index": 2, "ename": "ZeroDivisionError", "evalue": "division by zero"},
        message="ZeroDivisionError: division by zero",
    )
    run = eager(job_services.finish_run, run, outcome)  # notify_run runs after the commit
    assert run.state == Run.State.FAILED and run.trigger == Run.Trigger.CONTINUOUS
    assert eager(tasks.notify_run, run.pk) == 0  # a second message: still nothing
    assert receiver.received == [] and not Delivery.objects.exists()
    assert not mail.outbox


def test_a_continuous_run_is_never_long_running(stream_job, receiver, eager):
    Job.objects.filter(pk=stream_job.pk).update(expected_duration_seconds=60)
    add_target(stream_job, receiver.url(), [Event.RUN_LONG])
    streams.supervise_streams()
    Run.objects.filter(job=stream_job).update(
        state=Run.State.RUNNING, started_at=timezone.now() - timedelta(hours=2), attempt=1
    )
    assert eager(services.record_long_runs) == 0 and receiver.received == []


def test_a_pause_notifies_the_targets_once_beside_the_email(stream_job, receiver, eager, settings):
    hook = add_target(stream_job, receiver.url("/hook"), [PAUSED])
    add_target(stream_job, f"json://127.0.0.1:{receiver.port}/chat", [PAUSED], kind="apprise")
    add_target(stream_job, receiver.url("/successes"), [Event.RUN_SUCCEEDED])
    t0 = timezone.now() - timedelta(minutes=30)
    last = fail_runs(stream_job, 3, t0)

    # The supervisor's pass pauses the job; after its commit, the e-mail task and the
    # notification task run, and the deliveries that records run in turn.
    counts = eager(streams.supervise_streams, t0 + timedelta(minutes=5))
    assert counts["paused"] == 1
    assert len(mail.outbox) == 1
    assert sorted(r.path for r in receiver.received) == ["/chat", "/hook"]

    # A second message of either task (a retry, a duplicate) delivers nothing more.
    eager(job_tasks.send_stream_paused_alert, stream_job.pk, 3)
    eager(tasks.notify_job_paused, stream_job.pk, 3)
    assert len(receiver.received) == 2
    assert Delivery.objects.filter(event=PAUSED).count() == 2  # one per target

    hook_message = next(r for r in receiver.received if r.path == "/hook")
    # Signed as every webhook (the receiver's own check would refuse the unsigned chat).
    digest = hmac.new(hook.secret.encode(), hook_message.body, sha256).hexdigest()
    assert hook_message.headers["X-Portal-Signature"] == "sha256=" + digest
    assert hook_message.headers["X-Portal-Event"] == "job.paused"
    payload = hook_message.json
    assert payload["event"] == "job.paused"
    assert payload["summary"].startswith("Job “clicks” paused after 3 failed runs in 60 minutes")
    assert f"Last failure (run #{last.pk}): KeyError: 'ts'" in payload["summary"]
    assert payload["job"]["url"] == settings.PORTAL_ORIGIN + stream_job.get_absolute_url()
    assert payload["run"]["id"] == last.pk and payload["run"]["error"]["ename"] == "KeyError"
    stream_job.refresh_from_db()
    assert payload["occurred_at"] == stream_job.stream_paused_at.isoformat()

    chat = next(r for r in receiver.received if r.path == "/chat").json
    assert chat["title"] == "Analysis Portal: Job paused" and chat["type"] == "failure"
    assert chat["message"].endswith(payload["job"]["url"])


def test_the_paused_payload_is_what_the_schema_says(stream_job, receiver, eager, settings):
    settings.PORTAL_ORIGIN = "https://portal.example.org"
    add_target(stream_job, receiver.url(), [PAUSED])
    t0 = timezone.now() - timedelta(minutes=30)
    fail_runs(stream_job, 3, t0)
    eager(streams.supervise_streams, t0 + timedelta(minutes=5))
    (received,) = receiver.received
    serializer = WebhookEventSerializer(data=received.json)
    assert serializer.is_valid(), serializer.errors
    assert set(received.json) == set(WebhookEventSerializer().fields)
    assert received.json["job"] == {
        "id": stream_job.pk,
        "name": "clicks",
        "url": f"https://portal.example.org/jobs/{stream_job.pk}/",
    }
    assert received.json["cluster"] is None and received.json["version"] == 1


def test_a_later_pause_notifies_again(stream_job, receiver, eager):
    add_target(stream_job, receiver.url(), [PAUSED])
    t0 = timezone.now() - timedelta(minutes=50)
    fail_runs(stream_job, 3, t0)
    eager(streams.supervise_streams, t0 + timedelta(minutes=5))
    job_services.set_job_enabled(stream_job, True)
    t1 = t0 + timedelta(minutes=10)
    fail_runs(stream_job, 3, t1)
    eager(streams.supervise_streams, t1 + timedelta(minutes=5))
    assert receiver.events() == ["job.paused", "job.paused"]


def test_targets_that_did_not_choose_it_hear_nothing_and_never_paused_jobs_send_nothing(
    stream_job, receiver, eager
):
    add_target(stream_job, receiver.url("/failures"), [FAILED])
    add_target(stream_job, receiver.url("/paused"), [PAUSED])
    assert eager(services.record_job_paused, stream_job.pk, 3) == []  # not paused
    t0 = timezone.now() - timedelta(minutes=30)
    fail_runs(stream_job, 3, t0)
    eager(streams.supervise_streams, t0 + timedelta(minutes=5))
    assert [r.path for r in receiver.received] == ["/paused"]
