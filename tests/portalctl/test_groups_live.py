"""``portalctl jobs backfill|sweep`` and ``portalctl groups ...`` against a live portal
(pytest-django's live_server: the real API, authentication and services), run in-process
with portalctl's real HTTP client and an API token in its environment. No worker: runs
stay queued, and the tests end them in the database where a test needs them ended."""

import json

import pytest
from django.utils import timezone

from jobs.models import Run, RunGroup

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

State = Run.State


@pytest.fixture
def live(live_server, alice, monkeypatch, tmp_path):
    """portalctl configured for the live portal with a token of alice's (read, run)."""
    from api.models import ApiToken

    token = ApiToken.issue(alice, "CI", ["read", "run"])[1]
    monkeypatch.setenv("PORTAL_URL", live_server.url)
    monkeypatch.setenv("PORTAL_TOKEN", token)
    monkeypatch.setenv("PORTALCTL_CONFIG", str(tmp_path / "no-config.toml"))
    return live_server


@pytest.fixture
def daily(make_job):
    return make_job(cron="0 6 * * *", timezone="Europe/Berlin", enabled=False)


def end_runs(group, *states):
    """End the group's runs, oldest first, in ``states`` (as a worker would have)."""
    for run, state in zip(group.runs.order_by("id"), states, strict=False):
        Run.objects.filter(pk=run.pk).update(
            state=state, waits_for_group=False, finished_at=timezone.now()
        )


def test_a_backfill_is_started_shown_waited_for_and_retried(live, portalctl, daily, alice):
    started = portalctl(
        "jobs",
        "backfill",
        str(daily.pk),
        "--from",
        "2026-10-24T00:00",
        "--to",
        "2026-10-25T23:00",
        "-p",
        "x=5",
        "--concurrency",
        "1",
    )
    assert started.exit_code == 0, started.stderr
    group = RunGroup.objects.get()
    assert started.stdout == f"{group.pk}\n"
    assert f"backfill {group.pk}: 2 runs: {live.url}/groups/{group.pk}/" in started.stderr
    assert group.created_by == alice and group.max_concurrent == 1
    assert [r.parameters["x"] for r in group.runs.all()] == [5, 5]

    shown = portalctl("groups", "show", str(group.pk))
    assert shown.exit_code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"backfill {group.pk} of job {daily.pk}: 0 of 2 done; 2 queued"
    assert "2026-10-24T04:00:00Z  backfill" in lines[2]  # 06:00 in Berlin, summer time
    assert "2026-10-25T05:00:00Z  backfill" in lines[3]  # and winter time

    end_runs(group, State.SUCCEEDED, State.FAILED)
    waited = portalctl("groups", "show", str(group.pk), "--wait")
    assert waited.exit_code == 1
    failed = group.runs.get(state=State.FAILED)
    assert f"1 did not succeed (run {failed.pk} FAILED)" in waited.stderr

    retried = portalctl("groups", "retry", str(group.pk), "--json")
    assert retried.exit_code == 0, retried.stderr
    assert json.loads(retried.stdout)["progress"]["queued"] == 1
    assert group.runs.filter(trigger=Run.Trigger.BACKFILL_RERUN, state=State.QUEUED).count() == 1

    cancelled = portalctl("groups", "cancel", str(group.pk))
    assert cancelled.stdout.startswith(f"backfill {group.pk} of job {daily.pk}: 2 of 2 done")
    assert not group.runs.filter(state=State.QUEUED).exists()

    listed = portalctl("groups", "list", "--json")
    assert [g["id"] for g in json.loads(listed.stdout)] == [group.pk]


def test_a_sweep_runs_each_combination_and_wait_exits_0_when_all_succeed(live, portalctl, daily):
    started = portalctl(
        "jobs", "sweep", str(daily.pk), "-p", "x=1,2", "-p", "name=3,b", "--zip", "--json"
    )
    assert started.exit_code == 0, started.stderr
    body = json.loads(started.stdout)
    group = RunGroup.objects.get(pk=body["id"])
    assert body["progress"]["total"] == 2 and group.combine == "zip"
    # The notebook's name is text: "3" stays the text typed.
    assert sorted((r.parameters["x"], r.parameters["name"]) for r in group.runs.all()) == [
        (1, "3"),
        (2, "b"),
    ]
    end_runs(group, State.SUCCEEDED, State.SUCCEEDED)
    waited = portalctl("groups", "show", str(group.pk), "--wait")
    assert waited.exit_code == 0, waited.stderr
    rows = [line.split() for line in waited.stdout.splitlines()[1:]]
    assert rows == [
        ["ID", "STATE", "X", "NAME"],
        *[
            [str(r.pk), "SUCCEEDED", str(r.parameters["x"]), f'"{r.parameters["name"]}"']
            for r in group.runs.order_by("id")
        ],
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--from", "2026-03-05", "--to", "2026-03-01"], "The range ends before it starts."),
        (["--from", "2026-03-01", "--to", "2026-03-05", "-p", "zz=1"], "no parameter 'zz'"),
    ],
)
def test_a_refused_backfill_exits_2_with_the_reason_and_starts_nothing(
    live, portalctl, daily, args, message
):
    result = portalctl("jobs", "backfill", str(daily.pk), *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not RunGroup.objects.exists() and not Run.objects.exists()


def test_a_backfill_of_a_job_without_a_schedule_or_of_anothers_is_refused(
    live, portalctl, make_job, bob
):
    manual = make_job(name="manual")
    result = portalctl(
        "jobs", "backfill", str(manual.pk), "--from", "2026-03-01", "--to", "2026-03-05"
    )
    assert result.exit_code == 2 and "This job has no schedule" in result.stderr
    bobs = make_job(owner=bob, cron="0 6 * * *")
    result = portalctl("jobs", "sweep", str(bobs.pk), "-p", "x=1,2")
    assert result.exit_code == 2 and "(not_found)" in result.stderr
    assert not RunGroup.objects.exists() and not Run.objects.exists()
