"""Backfills and sweeps: which runs they make, how many run at once, cancel and retry."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django.db import transaction
from django.utils import timezone

from jobs import notebooks, services
from jobs.models import Job, Run, RunGroup
from jobs.services import fairshare, groups
from quotas.limits import active_runs

pytestmark = pytest.mark.django_db

State = Run.State
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def daily_berlin(make_job):
    return make_job(cron="0 6 * * *", timezone="Europe/Berlin", enabled=False)


def test_a_backfill_across_the_dst_change_makes_one_run_per_local_slot(daily_berlin, alice):
    """Clocks go back on 25 October 2026 in Berlin: 06:00 is 04:00 UTC before, 05:00 after."""
    group = groups.create_backfill(
        daily_berlin, alice, datetime(2026, 10, 24), datetime(2026, 10, 26, 23, 59)
    )
    runs = groups.latest_runs(group)
    assert [r.logical_date for r in runs] == [
        datetime(2026, 10, 24, 4, tzinfo=UTC),
        datetime(2026, 10, 25, 5, tzinfo=UTC),
        datetime(2026, 10, 26, 5, tzinfo=UTC),
    ]
    assert {r.logical_date.astimezone(BERLIN).hour for r in runs} == {6}
    assert all(r.trigger == Run.Trigger.BACKFILL and r.scheduled_for for r in runs)
    assert group.range_start == datetime(2026, 10, 23, 22, tzinfo=UTC)


def test_slots_with_a_run_are_skipped_or_rerun_by_choice(daily_berlin, alice):
    slot = datetime(2026, 3, 2, 5, tzinfo=UTC)
    Run.for_slot(
        daily_berlin, slot, daily_berlin.latest_version().pk, active=False, now=timezone.now()
    ).save()
    start, end = datetime(2026, 3, 1), datetime(2026, 3, 3, 12)
    skipping = groups.create_backfill(daily_berlin, alice, start, end, max_concurrent=5)
    assert skipping.runs.count() == 2 and skipping.skipped_slots == 1
    rerunning = groups.create_backfill(
        daily_berlin, alice, start, end, rerun_existing=True, max_concurrent=5
    )
    runs = list(rerunning.runs.all())
    assert len(runs) == 3 and all(r.trigger == Run.Trigger.BACKFILL_RERUN for r in runs)
    assert all(r.scheduled_for is None for r in runs)
    assert sorted(r.logical_date for r in runs)[1] == slot
    assert Run.objects.filter(job=daily_berlin, scheduled_for=slot).count() == 1


def test_bad_backfills_are_refused_with_a_reason(daily_berlin, alice, make_job, settings):
    cases = [
        (daily_berlin, datetime(2026, 3, 5), datetime(2026, 3, 1), {}, "ends before"),
        (daily_berlin, datetime(2026, 3, 1, 7), datetime(2026, 3, 1, 8), {}, "no slot"),
        (daily_berlin, datetime(2026, 3, 1), datetime(2026, 3, 2), {"max_concurrent": 0}, "1 and"),
        (make_job(), datetime(2026, 1, 1), datetime(2026, 3, 1), {}, "no schedule"),
    ]
    settings.BACKFILL_MAX_SLOTS = 10
    cases.append((daily_berlin, datetime(2026, 1, 1), datetime(2026, 3, 1), {}, "more than 10"))
    for job, start, end, extra, words in cases:
        with pytest.raises(groups.GroupError, match=words):
            groups.create_backfill(job, alice, start, end, **extra)
    with pytest.raises(notebooks.ParameterError):
        groups.create_backfill(
            daily_berlin, alice, datetime(2026, 3, 1), datetime(2026, 3, 2), parameters={"x": "a"}
        )
    assert not RunGroup.objects.exists() and not Run.objects.exists()


def test_a_group_runs_at_most_its_limit_at_once_and_moves_on_as_runs_end(
    daily_berlin, alice, settings, django_capture_on_commit_callbacks
):
    settings.USER_MAX_RUNNING_RUNS = 10
    settings.USER_MAX_ACTIVE_RUNS = 5  # the group's waiting runs do not count
    with django_capture_on_commit_callbacks(execute=False) as sent:
        group = groups.create_backfill(
            daily_berlin, alice, datetime(2026, 3, 1), datetime(2026, 3, 10, 23), max_concurrent=2
        )
    assert group.runs.count() == 10 and len(sent) == 1  # one producer, two messages
    released = group.runs.filter(waits_for_group=False)
    assert released.count() == 2 and not released.filter(held_since__isnull=False).exists()
    assert active_runs(alice.pk) == 2
    first, second = released.order_by("scheduled_for")
    # A claim takes a released run, never a waiting one, even an older one.
    assert services.claim_run(first.pk, "w").pk == first.pk
    Run.objects.filter(pk=first.pk).update(state=State.SUCCEEDED)
    with transaction.atomic():
        fairshare.release_held(alice.pk, timezone.now())
    assert group.runs.filter(waits_for_group=False).count() == 3
    assert groups.progress(group).succeeded == 1 and groups.progress(group).queued == 9


def test_backfill_runs_do_not_make_a_regular_slot_skip(daily_berlin, alice):
    daily_berlin.overlap = Job.Overlap.SKIP
    daily_berlin.save()
    group = groups.create_backfill(daily_berlin, alice, datetime(2026, 3, 1), datetime(2026, 3, 2))
    services.claim_run(group.runs.filter(waits_for_group=False).first().pk, "w")
    slot = Run.for_slot(
        daily_berlin,
        datetime(2026, 12, 3, 5, tzinfo=UTC),
        daily_berlin.latest_version().pk,
        active=daily_berlin.runs.active().filter(group__isnull=True).exists(),
        now=timezone.now(),
    )
    assert slot.state == State.QUEUED


def test_a_sweep_makes_one_run_per_combination(make_job, alice):
    job = make_job()
    grid = groups.create_sweep(job, alice, {"x": [1, 2], "ratio": [0.1, 0.9]}, max_concurrent=4)
    combos = sorted((r.parameters["x"], r.parameters["ratio"]) for r in grid.runs.all())
    assert combos == [(1, 0.1), (1, 0.9), (2, 0.1), (2, 0.9)]
    zipped = groups.create_sweep(job, alice, {"x": [1, 2], "name": ["a", "b"]}, combine="zip")
    assert sorted((r.parameters["x"], r.parameters["name"]) for r in zipped.runs.all()) == [
        (1, "a"),
        (2, "b"),
    ]
    assert all(r.trigger == Run.Trigger.SWEEP and r.scheduled_for is None for r in grid.runs.all())


def test_bad_sweeps_are_refused_with_a_reason(make_job, alice, settings):
    job = make_job()
    settings.SWEEP_MAX_RUNS = 5
    for axes, combine, words in [
        ({}, "grid", "at least one"),
        ({"x": []}, "grid", "at least one value"),
        ({"x": [1, 2], "ratio": [0.1]}, "zip", "same length"),
        ({"x": [1, 2, 3], "ratio": [0.1, 0.2]}, "grid", "at most 5"),
        ({"x": [1]}, "cube", "Unknown"),
    ]:
        with pytest.raises(groups.GroupError, match=words):
            groups.create_sweep(job, alice, axes, combine=combine)
    with pytest.raises(notebooks.ParameterError):
        groups.create_sweep(job, alice, {"x": ["not a number"]})
    with pytest.raises(notebooks.ParameterError):
        groups.create_sweep(job, alice, {"nope": [1]})
    assert not Run.objects.exists()


def test_cancel_all_and_retry_failed(make_job, alice):
    job = make_job()
    group = groups.create_sweep(job, alice, {"x": [1, 2, 3, 4]}, max_concurrent=2)
    first, second = group.runs.filter(waits_for_group=False).order_by("id")
    services.claim_run(first.pk, "w")
    Run.objects.filter(pk=first.pk).update(state=State.FAILED, finished_at=timezone.now())
    assert groups.cancel_group(group, alice) == 3
    assert groups.progress(group) == groups.Progress(4, 0, 1, 0, 0, 3)
    assert groups.retry_failed(group, alice) == 1
    progress = groups.progress(group)
    assert (progress.total, progress.failed, progress.queued) == (4, 0, 1)
    retried = group.runs.order_by("-id").first()
    assert retried.parameters["x"] == 1 and not retried.waits_for_group
    assert groups.retry_failed(group, alice) == 0  # nothing failed any more


def test_a_backfill_of_a_thousand_slots_is_made_quickly(make_job, alice):
    """The benchmark (bench/backfill.py) times this; here only that it works whole."""
    job = make_job(cron="0 * * * *", timezone="UTC", enabled=False)
    group = groups.create_backfill(
        job, alice, datetime(2026, 1, 1), datetime(2026, 2, 11, 15), max_concurrent=3
    )
    assert group.runs.count() == 1000 and group.runs.filter(waits_for_group=False).count() == 3
