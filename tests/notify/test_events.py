"""Which events are recorded, when, and for whom: runs that take longer than expected,
clusters about to expire, targets' choices, the per-job limit."""

from datetime import timedelta

import pytest
from django.utils import timezone

from clusters import services as cluster_services
from clusters.models import Cluster
from jobs import services as job_services
from jobs.models import Run
from notify import services
from notify.models import Delivery, Event, NotificationTarget
from quotas.limits import LimitExceeded

pytestmark = pytest.mark.django_db


def add_target(job, url, events, kind="webhook"):
    return services.save_target(
        NotificationTarget(job=job, kind=kind, url=url, events=list(events))
    )[0]


def running_since(job, alice, seconds_ago: float) -> Run:
    run = job_services.claim_run(job_services.run_now(job, alice).pk, "w")
    started = timezone.now() - timedelta(seconds=seconds_ago)
    Run.objects.filter(pk=run.pk).update(started_at=started)
    run.refresh_from_db()
    return run


def test_a_run_past_its_expected_duration_is_reported_once_while_it_runs(
    make_job, alice, receiver, eager, finish
):
    job = make_job("trivial.ipynb", max_retries=0, expected_duration_seconds=60)
    add_target(job, receiver.url("/long"), [Event.RUN_LONG])
    add_target(job, receiver.url("/failures"), [Event.RUN_FAILED])
    quick = running_since(job, alice, 30)
    slow = running_since(job, alice, 90)
    assert eager(services.record_long_runs) == 1
    assert eager(services.record_long_runs) == 0  # once per run
    assert len(receiver.received) == 1
    payload = receiver.received[0].json
    assert payload["event"] == "run.long_running" and payload["run"]["id"] == slow.pk
    assert "longer than the expected 60 s" in payload["summary"]
    # Its end does not report it again; the quick run that ends in time is never reported.
    assert eager(services.record_run_outcome, slow.pk) == []
    assert not Delivery.objects.filter(run=quick).exists()


def test_a_run_that_ends_before_a_tick_noticed_is_reported_at_its_end(
    make_job, alice, receiver, eager, finish, tmp_path
):
    from jobs.executor import Outcome
    from tests.jobs.test_runs import executed_notebook

    job = make_job("trivial.ipynb", max_retries=0, expected_duration_seconds=60)
    add_target(job, receiver.url(), [Event.RUN_LONG, Event.RUN_SUCCEEDED])
    run = running_since(job, alice, 120)
    eager(job_services.finish_run, run, Outcome("succeeded", executed_notebook(tmp_path)))
    assert sorted(receiver.events()) == ["run.long_running", "run.succeeded"]


def test_jobs_without_an_expected_duration_are_never_long(make_job, alice, receiver, eager):
    job = make_job("trivial.ipynb")
    add_target(job, receiver.url(), [Event.RUN_LONG])
    running_since(job, alice, 10**6)
    assert eager(services.record_long_runs) == 0


def test_a_cluster_about_to_expire_is_told_to_its_owners_targets_once_per_expiry(
    make_job, alice, bob, receiver, eager
):
    first = make_job("trivial.ipynb", name="first")
    second = make_job("trivial.ipynb", name="second")
    add_target(first, receiver.url("/me"), [Event.CLUSTER_EXPIRING])
    add_target(second, receiver.url("/me"), [Event.CLUSTER_EXPIRING])  # the same URL: once
    add_target(second, receiver.url("/runs-only"), [Event.RUN_FAILED])
    bobs_job = make_job("trivial.ipynb", owner=bob)
    add_target(bobs_job, receiver.url("/bob"), [Event.CLUSTER_EXPIRING])
    now = timezone.now()
    cluster = Cluster.objects.create(
        owner=alice, name="adhoc", state=Cluster.State.READY, expires_at=now + timedelta(minutes=30)
    )
    assert eager(cluster_services.send_expiry_warning, cluster.pk) is True  # the e-mail
    assert eager(cluster_services.send_expiry_warning, cluster.pk) is False
    assert [r.path for r in receiver.received] == ["/me"]
    payload = receiver.received[0].json
    assert payload["event"] == "cluster.expiring" and payload["cluster"]["name"] == "adhoc"
    assert payload["job"] is None and "expires in 29 minutes" in payload["summary"]
    # An extension makes a new expiry, and a new warning.
    cluster_services.extend_cluster(cluster, 1, alice)
    cluster.refresh_from_db()
    later = cluster.expires_at - timedelta(minutes=10)
    eager(cluster_services.send_expiry_warning, cluster.pk, later)
    assert [r.path for r in receiver.received] == ["/me", "/me"]


def test_disabled_targets_and_unchosen_events_get_nothing(make_job, receiver, eager, finish):
    job = make_job("trivial.ipynb", max_retries=0)
    target = add_target(job, receiver.url(), [Event.RUN_FAILED, Event.RUN_SUCCEEDED])
    target.enabled = False
    services.save_target(target)
    add_target(job, receiver.url("/successes"), [Event.RUN_SUCCEEDED])
    eager(finish, job, "failed")
    assert receiver.received == [] and Delivery.objects.count() == 0


def test_a_job_has_at_most_the_allowed_number_of_targets(make_job, receiver, settings):
    settings.NOTIFY_MAX_TARGETS_PER_JOB = 2
    job = make_job()
    add_target(job, receiver.url("/1"), [Event.RUN_FAILED])
    second = add_target(job, receiver.url("/2"), [Event.RUN_FAILED])
    with pytest.raises(LimitExceeded) as caught:
        add_target(job, receiver.url("/3"), [Event.RUN_FAILED])
    assert "at most 2 notification targets" in caught.value.message
    second.name = "changed"
    services.save_target(second)  # changing one is not adding one
    assert job.notification_targets.count() == 2


def test_a_target_chooses_one_or_more_known_events(make_job, receiver):
    from django.core.exceptions import ValidationError

    for events in ([], ["run.exploded"]):
        with pytest.raises(ValidationError) as caught:
            add_target(make_job(), receiver.url(), events)
        assert "events" in caught.value.message_dict


def test_lost_deliveries_are_sent_again_by_the_tick(
    make_job, receiver, eager, finish, django_capture_on_commit_callbacks
):
    """A delivery whose message never arrived (or whose worker died past its lease) is
    due past its time: the beat pass enqueues it again."""
    job = make_job("trivial.ipynb", max_retries=0)
    add_target(job, receiver.url(), [Event.RUN_FAILED])
    run = eager(finish, job, "cancelled")  # nothing to send: a run to record by hand
    Run.objects.filter(pk=run.pk).update(state=Run.State.FAILED)
    with django_capture_on_commit_callbacks(execute=False):  # the message is lost
        (delivery,) = services.record_run_outcome(run.pk)
    soon = timezone.now() + timedelta(seconds=5)
    assert eager(services.resend_due, soon) == 0  # not overdue yet: maybe just queued
    later = timezone.now() + timedelta(seconds=120)
    assert eager(services.resend_due, later) == 1
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.DELIVERED and len(receiver.received) == 1
