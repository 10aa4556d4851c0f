"""Dispatchers racing over the same due slots create exactly one run per slot."""

import threading
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from jobs import schedule, services
from jobs.models import Job, Run
from jobs.services import dispatch

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

JOBS = 30
DISPATCHERS = 4


def _race(now, batches):
    """Run dispatch_due_runs(now) in one thread per batch size, released together;
    return what each created and any exception each raised."""
    start = threading.Barrier(len(batches))
    created, errors = {}, {}

    def dispatcher(i, batch):
        try:
            start.wait(timeout=30)
            created[i] = services.dispatch_due_runs(now, batch=batch)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors[i] = exc
        finally:
            connection.close()

    threads = [
        threading.Thread(target=dispatcher, args=(i, b), name=f"dispatcher-{i}")
        for i, b in enumerate(batches)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a dispatcher hangs"
    return created, errors


def test_concurrent_dispatchers_create_one_run_per_slot(make_job, staff, monkeypatch):
    """30 jobs, each three minutely slots behind with catch-up "all", dispatched by four
    threads at once (each its own PostgreSQL connection; small batches so they interleave):
    every slot gets exactly one run, every job moves past now, nobody errs, and the runs
    the dispatchers report are exactly the runs in the database. The owner is staff: 90
    minutely runs are past any one person's limits, which tests/jobs/test_limits.py
    covers."""
    sent = []  # what would have gone to the broker (after commit, as the real _enqueue_all)

    def enqueue_all(run_ids, countdown=0):
        transaction.on_commit(lambda: sent.extend(run_ids))

    monkeypatch.setattr(dispatch, "_enqueue_all", enqueue_all)
    jobs = [
        make_job(
            "trivial.ipynb",
            owner=staff,
            name=f"race {i}",
            cron="* * * * *",
            catchup=Job.CatchUp.ALL,
            overlap=Job.Overlap.ALLOW,
        )
        for i in range(JOBS)
    ]
    now = timezone.now()
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=2)
    Job.objects.filter(pk__in=[j.pk for j in jobs]).update(next_run_at=first)
    expected = [first] + schedule.slots_between(
        "* * * * *", "UTC", first, now, settings.CATCHUP_MAX_SLOTS
    )
    assert len(expected) == 3

    created, errors = _race(now, batches=[1, 2, 3, 5][:DISPATCHERS])

    assert not errors, errors
    reported = [run.pk for runs in created.values() for run in runs]
    assert len(reported) == len(set(reported)) == JOBS * len(expected), {
        i: len(r) for i, r in created.items()
    }
    assert sorted(sent) == sorted(reported), "one message per created run, none for the rest"
    runs = Run.objects.filter(job__in=jobs)
    assert sorted(runs.values_list("pk", flat=True)) == sorted(reported)
    duplicates = runs.values("job", "scheduled_for").annotate(n=Count("id")).filter(n__gt=1)
    assert not duplicates.exists(), list(duplicates)
    for job in Job.objects.filter(pk__in=[j.pk for j in jobs]):
        slots = sorted(job.runs.values_list("scheduled_for", flat=True))
        assert slots == expected, f"{job.name}: {slots}"
        assert job.next_run_at > now, f"{job.name}: next_run_at={job.next_run_at} now={now}"
        assert set(job.runs.values_list("state", flat=True)) == {Run.State.QUEUED}

    # A second round finds nothing due and changes nothing.
    created, errors = _race(now, batches=[1, 500])
    assert not errors and not any(created.values()), created
    assert Run.objects.filter(job__in=jobs).count() == JOBS * len(expected)
