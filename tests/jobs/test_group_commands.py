"""``manage.py backfill`` and ``manage.py sweep``: the groups they start, what they print,
and bad input refused with the service's message and nothing created."""

from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command

from jobs.models import Run, RunGroup

pytestmark = pytest.mark.django_db


@pytest.fixture
def daily(make_job):
    """Daily at 06:00 in Berlin, paused so that the dispatcher makes no run of its own."""
    return make_job(cron="0 6 * * *", timezone="Europe/Berlin", enabled=False)


def command(capsys, *args):
    call_command(*args)
    return capsys.readouterr().out.splitlines()


def test_backfill_runs_each_slot_in_the_jobs_zone_as_its_owner(capsys, daily, alice):
    out = command(
        capsys,
        "backfill",
        str(daily.pk),
        "--from",
        "2026-10-24T00:00",
        "--to",
        "2026-10-26T23:00",
        "--param",
        "x=5",
        "--param",
        "name=7",
        "--concurrency",
        "3",
    )
    group = RunGroup.objects.get()
    assert out == [
        f"backfill {group.pk} of job {daily.pk}: 3 runs",
        f"page: /groups/{group.pk}/",
    ]
    assert group.created_by == alice and group.max_concurrent == 3
    runs = list(group.runs.order_by("logical_at", "scheduled_for"))
    # Across the end of summer time: 06:00 in Berlin is 04:00 UTC, then 05:00.
    assert [r.logical_date for r in runs] == [
        datetime(2026, 10, 24, 4, tzinfo=UTC),
        datetime(2026, 10, 25, 5, tzinfo=UTC),
        datetime(2026, 10, 26, 5, tzinfo=UTC),
    ]
    assert all(r.parameters["x"] == 5 and r.parameters["name"] == "7" for r in runs)


def test_backfill_skips_or_reruns_slots_with_a_run(capsys, daily):
    args = ["backfill", str(daily.pk), "--from", "2026-03-01", "--to", "2026-03-02T12:00"]
    command(capsys, *args)
    with pytest.raises(CommandError, match="already has a run"):
        call_command(*args)
    out = command(capsys, *args, "--rerun-existing", "--as", "alice")
    group = RunGroup.objects.latest("id")
    assert out[0] == f"backfill {group.pk} of job {daily.pk}: 2 runs"
    assert {r.trigger for r in group.runs.all()} == {Run.Trigger.BACKFILL_RERUN}


def test_sweep_runs_every_combination_or_zips_them(capsys, daily, staff):
    out = command(capsys, "sweep", str(daily.pk), "--param", "x=1,2,3", "--param", "ratio=0.1,0.9")
    grid = RunGroup.objects.get()
    assert out == [f"sweep {grid.pk} of job {daily.pk}: 6 runs", f"page: /groups/{grid.pk}/"]
    assert grid.parameters == {"x": [1, 2, 3], "ratio": [0.1, 0.9]}
    assert grid.combine == "grid"
    out = command(
        capsys,
        "sweep",
        str(daily.pk),
        "--param",
        "x=1,2",
        "--param",
        'name=["a,b", 2]',
        "--zip",
        "--as",
        "staff",
    )
    zipped = RunGroup.objects.latest("id")
    assert out[0] == f"sweep {zipped.pk} of job {daily.pk}: 2 runs"
    assert zipped.created_by == staff and zipped.combine == "zip"
    # A text parameter keeps the text typed: "2", not 2.
    assert sorted((r.parameters["x"], r.parameters["name"]) for r in zipped.runs.all()) == [
        (1, "a,b"),
        (2, "2"),
    ]


def test_a_sweep_of_a_job_without_a_schedule_works(capsys, make_job):
    job = make_job(name="manual")
    command(capsys, "sweep", str(job.pk), "--param", "flag=true,false")
    assert RunGroup.objects.get().runs.count() == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["backfill", "{job}", "--from", "2026-03-05", "--to", "2026-03-01"],
            "The range ends before it starts.",
        ),
        (
            ["backfill", "{job}", "--from", "yesterday", "--to", "2026-03-01"],
            "--from 'yesterday' is not an ISO 8601",
        ),
        (
            ["backfill", "{manual}", "--from", "2026-03-01", "--to", "2026-03-05"],
            "This job has no schedule",
        ),
        (
            ["backfill", "{job}", "--from", "2026-03-01", "--to", "2026-03-05", "--param", "zz=1"],
            "the notebook has no parameter 'zz'",
        ),
        (
            ["backfill", "{job}", "--from", "2026-03-01", "--to", "2026-03-05", "--param", "x"],
            "--param 'x': give NAME=VALUE",
        ),
        (
            ["backfill", "{job}", "--from", "2026-03-01", "--to", "2026-03-05", "--as", "bob"],
            "bob may not start runs of job",
        ),
        (["backfill", "999", "--from", "2026-03-01", "--to", "2026-03-05"], "No job 999."),
        (["sweep", "{job}", "--param", "zz=1,2"], "the notebook has no parameter 'zz'"),
        (["sweep", "{job}", "--param", "x=1,a"], "x: expected a whole number (got 'a')"),
        (["sweep", "{job}", "--param", "x=1,2", "--param", "ratio=1", "--zip"], "same length"),
        (["sweep", "{job}", "--param", "x=1", "--param", "x=2"], "x is given twice"),
        (["sweep", "{job}", "--param", "x=1", "--concurrency", "0"], "Run between 1 and"),
        (["sweep", "{job}", "--param", "x=1", "--as", "nobody"], "No user 'nobody'"),
        (["sweep", "{job}"], "Give at least one --param"),
    ],
)
def test_bad_input_is_refused_with_a_reason_and_creates_nothing(
    daily, make_job, bob, args, message
):
    manual = make_job(name="manual")
    args = [a.format(job=daily.pk, manual=manual.pk) for a in args]
    with pytest.raises(CommandError) as raised:
        call_command(*args)
    assert message in str(raised.value)
    assert not RunGroup.objects.exists() and not Run.objects.exists()
