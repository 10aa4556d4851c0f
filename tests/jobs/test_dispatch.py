"""The dispatcher: due slots become runs, by the catch-up and overlap policies."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from jobs import services
from jobs.models import Job, Run
from tests.conftest import notebook_bytes

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday


def hourly_job(alice, now=T0, **fields):
    spec = Job(name="hourly", schedule_kind="cron", cron="0 * * * *", **fields)
    return services.create_job(alice, spec, notebook_bytes("trivial.ipynb"), now=now)


def test_new_job_is_due_at_its_first_slot(alice):
    job = hourly_job(alice, now=T0 + timedelta(minutes=10))
    assert job.next_run_at == T0 + timedelta(hours=1)
    assert services.dispatch_due_runs(T0 + timedelta(minutes=59)) == []
    runs = services.dispatch_due_runs(T0 + timedelta(hours=1, seconds=1))
    assert [(r.scheduled_for, r.state, r.trigger) for r in runs] == [
        (T0 + timedelta(hours=1), Run.State.QUEUED, "schedule")
    ]
    job.refresh_from_db()
    assert job.next_run_at == T0 + timedelta(hours=2)


def test_a_slot_is_dispatched_once(alice):
    hourly_job(alice)
    now = T0 + timedelta(hours=1, seconds=5)
    assert len(services.dispatch_due_runs(now)) == 1
    assert services.dispatch_due_runs(now) == []
    assert Run.objects.count() == 1


def test_unique_constraint_holds_even_if_next_run_at_is_rewound(alice):
    job = hourly_job(alice)
    services.dispatch_due_runs(T0 + timedelta(hours=1, seconds=5))
    Job.objects.filter(pk=job.pk).update(
        next_run_at=T0 + timedelta(hours=1)
    )  # as a racing dispatcher would see it
    assert services.dispatch_due_runs(T0 + timedelta(hours=1, seconds=6)) == []
    assert Run.objects.filter(job=job).count() == 1


def test_catch_up_latest_runs_only_the_newest_missed_slot(alice):
    hourly_job(alice)
    runs = services.dispatch_due_runs(T0 + timedelta(hours=5, minutes=3))  # slots 09..13 missed
    assert [r.scheduled_for for r in runs] == [T0 + timedelta(hours=5)]


def test_catch_up_all_runs_every_missed_slot(alice):
    hourly_job(alice, catchup=Job.CatchUp.ALL, overlap=Job.Overlap.ALLOW)
    runs = services.dispatch_due_runs(T0 + timedelta(hours=5, minutes=3))
    assert [r.scheduled_for for r in runs] == [T0 + timedelta(hours=h) for h in range(1, 6)]
    assert all(r.state == Run.State.QUEUED for r in runs)


def test_catch_up_none_skips_stale_slots_but_runs_a_fresh_one(alice):
    hourly_job(alice, catchup=Job.CatchUp.NONE)
    assert services.dispatch_due_runs(T0 + timedelta(hours=5, minutes=3)) == []
    runs = services.dispatch_due_runs(T0 + timedelta(hours=6, seconds=1))
    assert [r.scheduled_for for r in runs] == [T0 + timedelta(hours=6)]


def test_overlap_skip_records_a_skipped_run_while_one_is_active(alice):
    hourly_job(alice)
    first = services.dispatch_due_runs(T0 + timedelta(hours=1, seconds=1))[0]
    assert first.state == Run.State.QUEUED
    second = services.dispatch_due_runs(T0 + timedelta(hours=2, seconds=1))[0]
    assert second.state == Run.State.SKIPPED
    assert "still active" in second.state_reason
    assert second.finished_at is not None


def test_overlap_allow_runs_concurrently(alice):
    hourly_job(alice, overlap=Job.Overlap.ALLOW)
    services.dispatch_due_runs(T0 + timedelta(hours=1, seconds=1))
    second = services.dispatch_due_runs(T0 + timedelta(hours=2, seconds=1))[0]
    assert second.state == Run.State.QUEUED


def test_paused_and_manual_jobs_are_never_dispatched(alice, make_job):
    job = hourly_job(alice)
    services.set_job_enabled(job, False, now=T0)
    make_job("trivial.ipynb")  # manual
    assert services.dispatch_due_runs(T0 + timedelta(days=2)) == []
    job = services.set_job_enabled(job, True, now=T0 + timedelta(days=2, minutes=5))
    # Resuming does not catch up the slots that fell while paused.
    assert job.next_run_at == T0 + timedelta(days=2, hours=1)


def test_run_now_never_shifts_the_schedule(alice):
    job = hourly_job(alice)
    with time_machine.travel(T0 + timedelta(minutes=30), tick=False):
        run = services.run_now(job, alice)
    job.refresh_from_db()
    assert run.trigger == Run.Trigger.MANUAL and run.scheduled_for is None
    assert job.next_run_at == T0 + timedelta(hours=1)
    assert [
        r.scheduled_for for r in services.dispatch_due_runs(T0 + timedelta(hours=1, seconds=1))
    ] == [T0 + timedelta(hours=1)]


def test_schedule_in_a_time_zone_across_dst(alice):
    spec = Job(name="berlin", schedule_kind="daily", cron="0 6 * * *", timezone="Europe/Berlin")
    job = services.create_job(
        alice, spec, notebook_bytes("trivial.ipynb"), now=datetime(2026, 3, 28, 12, tzinfo=UTC)
    )
    assert job.next_run_at == datetime(2026, 3, 29, 4, tzinfo=UTC)  # 06:00 CEST
    services.dispatch_due_runs(datetime(2026, 3, 29, 4, 0, 1, tzinfo=UTC))
    job.refresh_from_db()
    assert job.next_run_at == datetime(2026, 3, 30, 4, tzinfo=UTC)


def test_run_parameters_come_from_the_job(alice):
    job = hourly_job(alice, parameters={"x": 5})
    run = services.dispatch_due_runs(T0 + timedelta(hours=1, seconds=1))[0]
    assert run.parameters == {"x": 5}
    assert run.version == job.latest_version()
    assert run.max_attempts == 1 + job.max_retries


def test_a_job_whose_schedule_cannot_be_computed_is_paused_and_blocks_nobody(make_job):
    """A cron expression that slipped past validation (raw SQL, an old row) used to raise
    inside the dispatcher's batch: the batch rolled back and, being the oldest due job, it
    headed every later tick, so no job was dispatched again."""
    from django.db import connection

    now = datetime.now(UTC)
    broken = make_job("trivial.ipynb", name="broken", cron="0 6 * * *")
    fine = make_job("trivial.ipynb", name="fine", cron="0 6 * * *")
    with connection.cursor() as cur:
        cur.execute("UPDATE jobs_job SET cron = '0 0 30 2 *' WHERE id = %s", [broken.pk])
    Job.objects.filter(pk=broken.pk).update(next_run_at=now - timedelta(minutes=2))
    Job.objects.filter(pk=fine.pk).update(next_run_at=now - timedelta(minutes=1))

    created = services.dispatch_due_runs(now)

    assert [r.job_id for r in created] == [fine.pk]
    broken.refresh_from_db()
    assert not broken.enabled and broken.next_run_at is None
    failed = broken.runs.get()
    assert (
        failed.state == Run.State.FAILED
        and "cannot be computed" in failed.state_reason
        and failed.finished_at
    )
    assert services.dispatch_due_runs(now) == []  # nothing left due, no error
