"""Fair share when claiming: a user at their concurrency limit holds no worker; their runs
wait QUEUED (held), saying why, and start in slot order as room appears."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from jobs import services
from jobs.models import Job, Run
from jobs.services import fairshare
from quotas.models import UserLimits
from tests.conftest import notebook_bytes

pytestmark = pytest.mark.django_db

State = Run.State


@pytest.fixture
def limit_two(settings):
    settings.USER_MAX_RUNNING_RUNS = 2


def queue(job, user, count):
    return [services.run_now(job, user) for _ in range(count)]


def release(owner, captured):
    with captured(execute=False) as callbacks, transaction.atomic():
        released = fairshare.release_held(owner.pk, timezone.now())
    return released, callbacks


def test_a_user_at_the_limit_waits_and_others_go_ahead(
    limit_two, make_job, alice, bob, django_capture_on_commit_callbacks
):
    job = make_job()
    with django_capture_on_commit_callbacks(execute=False) as sent:
        r1, r2, r3 = queue(job, alice, 3)
    assert len(sent) == 2  # the third run never enters the shared queue
    held = Run.objects.get(pk=r3.pk)
    assert held.state == State.QUEUED and held.held_since is not None
    reason = "Waiting: 2 of your runs are queued or running, limit 2."
    assert held.state_reason == reason and held.events.get().message == reason
    assert services.claim_run(r1.pk, "w1").pk == r1.pk
    assert services.claim_run(r2.pk, "w2").pk == r2.pk
    assert services.claim_run(r3.pk, "w3") is None  # a stray message: the worker moves on
    held.refresh_from_db()
    assert held.state_reason == "Waiting: 2 of your runs are running, limit 2."
    theirs = services.run_now(make_job(owner=bob), bob)
    assert services.claim_run(theirs.pk, "w3").state == State.RUNNING


def test_a_message_of_a_user_at_the_limit_holds_its_run_when_claimed(settings, make_job, alice):
    """Runs sent to the queue before the owner filled their limit (here: the limit was
    lowered) are held by the claim itself, once, saying why."""
    settings.USER_MAX_RUNNING_RUNS = 3
    r1, r2, r3 = queue(make_job(), alice, 3)
    settings.USER_MAX_RUNNING_RUNS = 2
    for run in (r1, r2):
        services.claim_run(run.pk, "w")
    assert services.claim_run(r3.pk, "w") is None
    held = Run.objects.get(pk=r3.pk)
    assert held.held_since is not None
    assert held.state_reason == "Waiting: 2 of your runs are running, limit 2."
    assert services.claim_run(r3.pk, "w") is None  # a second try adds no second event
    assert held.events.filter(message=held.state_reason).count() == 1


def test_the_run_page_shows_the_waiting_reason(limit_two, make_job, alice, alice_client):
    r1, r2, r3 = queue(make_job(), alice, 3)
    for run in (r1, r2, r3):
        services.claim_run(run.pk, "w")
    page = alice_client.get(reverse("runs-detail", args=[r3.pk])).content.decode()
    assert "Waiting: 2 of your runs are running, limit 2." in page


def test_a_run_ending_releases_the_oldest_held_run(
    limit_two, make_job, alice, django_capture_on_commit_callbacks
):
    r1, r2, r3, r4 = queue(make_job(), alice, 4)
    for run in (r1, r2, r4, r3):
        services.claim_run(run.pk, "w")
    assert set(Run.objects.filter(held_since__isnull=False).values_list("pk", flat=True)) == {
        r3.pk,
        r4.pk,
    }
    released, _ = release(alice, django_capture_on_commit_callbacks)
    assert released == []  # no room yet
    Run.objects.filter(pk=r1.pk).update(state=State.SUCCEEDED)
    released, callbacks = release(alice, django_capture_on_commit_callbacks)
    assert released == [r3.pk] and len(callbacks) == 1  # one message, after commit
    run = Run.objects.get(pk=r3.pk)
    assert run.held_since is None and run.state_reason == "" and run.state == State.QUEUED


def test_runs_of_one_user_start_in_slot_order(settings, alice, make_job):
    settings.USER_MAX_RUNNING_RUNS = 1
    t0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
    spec = Job(name="hourly", schedule_kind="cron", cron="0 * * * *", overlap="allow")
    services.create_job(alice, spec, notebook_bytes("trivial.ipynb"), now=t0)
    settings.USER_CATCHUP_MAX_SLOTS = 5
    Job.objects.update(catchup=Job.CatchUp.ALL)
    first, second, third = services.dispatch_due_runs(t0 + timedelta(hours=3, minutes=1))
    assert services.claim_run(first.pk, "w").pk == first.pk
    # The newest slot's message arrives first: it waits behind the older ones.
    assert services.claim_run(third.pk, "w") is None
    Run.objects.filter(pk=first.pk).update(state=State.SUCCEEDED)
    # Room again: whichever message comes, the oldest waiting slot starts.
    assert services.claim_run(third.pk, "w").pk == second.pk
    assert Run.objects.get(pk=third.pk).held_since is not None


def test_the_reaper_releases_held_runs_a_missed_release_left(
    limit_two, make_job, alice, django_capture_on_commit_callbacks
):
    r1, r2, r3 = queue(make_job(), alice, 3)
    for run in (r1, r2, r3):
        services.claim_run(run.pk, "w")
    later = timezone.now() + timedelta(hours=1)
    # Held runs are not "stuck": they have no message to lose.
    Run.objects.filter(pk__in=[r1.pk, r2.pk]).update(heartbeat_at=later)
    assert services.reap_runs(later)["requeued"] == 0
    # The worker of r1 died between the end of its run and the release.
    Run.objects.filter(pk=r1.pk).update(state=State.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        counts = services.reap_runs(later)
    assert counts["released"] == 1 and counts["requeued"] == 0
    assert len(callbacks) == 1
    assert Run.objects.get(pk=r3.pk).held_since is None


def test_a_limit_raised_in_the_admin_releases_everything(settings, make_job, alice):
    settings.USER_MAX_RUNNING_RUNS = 1
    runs = queue(make_job(), alice, 3)
    for run in runs:
        services.claim_run(run.pk, "w")
    assert Run.objects.filter(held_since__isnull=False).count() == 2
    UserLimits.objects.create(user=alice, max_running_runs=0)  # 0: no limit
    assert services.reap_runs(timezone.now())["released"] == 2
    assert all(services.claim_run(run.pk, "w") for run in runs[1:])


def test_a_held_run_can_be_cancelled(limit_two, make_job, alice):
    r1, r2, r3 = queue(make_job(), alice, 3)
    for run in (r1, r2, r3):
        services.claim_run(run.pk, "w")
    assert services.cancel_run(Run.objects.get(pk=r3.pk)).state == State.CANCELLED
    Run.objects.filter(pk=r1.pk).update(state=State.SUCCEEDED)
    with transaction.atomic():
        assert fairshare.release_held(alice.pk, timezone.now()) == []


def test_staff_are_not_held(settings, make_job, staff):
    settings.USER_MAX_RUNNING_RUNS = 1
    runs = queue(make_job(owner=staff), staff, 3)
    assert all(services.claim_run(run.pk, "w") for run in runs)


def test_scheduled_slots_past_the_concurrency_limit_are_held_at_creation(limit_two, alice):
    t0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
    for name in ("a", "b", "c"):
        spec = Job(name=name, schedule_kind="cron", cron="0 * * * *")
        services.create_job(alice, spec, notebook_bytes("trivial.ipynb"), now=t0)
    runs = services.dispatch_due_runs(t0 + timedelta(hours=1, seconds=1))
    assert [r.state for r in runs] == [State.QUEUED] * 3
    assert [bool(r.held_since) for r in runs] == [False, False, True]
    assert runs[2].state_reason == "Waiting: 2 of your runs are queued or running, limit 2."
