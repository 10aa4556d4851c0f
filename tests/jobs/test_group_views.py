"""The backfill and sweep forms and the group page."""

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from jobs.models import Run, RunGroup
from jobs.services import groups

pytestmark = pytest.mark.django_db


#: The notebook's parameters as the backfill form sends them (prefilled with the job's).
PARAMS = {
    "param-x": "1",
    "param-name": "world",
    "param-ratio": "0.5",
    "param-items": "[1, 2]",
    "param-day": "2026-01-31",
}


@pytest.fixture
def scheduled(make_job):
    return make_job(cron="0 6 * * *", timezone="Europe/Berlin", enabled=False)


def test_a_backfill_from_the_form_runs_each_slot_in_the_jobs_time_zone(scheduled, alice_client):
    page = alice_client.get(reverse("jobs-detail", args=[scheduled.pk])).content.decode()
    assert reverse("jobs-backfill", args=[scheduled.pk]) in page
    answer = alice_client.post(
        reverse("jobs-backfill", args=[scheduled.pk]),
        {
            "start": "2026-10-24T00:00",
            "end": "2026-10-26T23:00",
            "max_concurrent": "2",
            **PARAMS,
            "param-x": "7",
            "param-name": "berlin",
        },
    )
    group = RunGroup.objects.get()
    assert answer.status_code == 302 and answer["Location"] == group.get_absolute_url()
    runs = groups.latest_runs(group)
    assert [r.logical_date.hour for r in runs] == [4, 5, 5]  # 06:00 in Berlin, across DST
    assert all(r.parameters["x"] == 7 and r.parameters["name"] == "berlin" for r in runs)
    page = alice_client.get(group.get_absolute_url()).content.decode()
    assert "0 of 3 done" in page and page.count("06:00</td>") == 3  # each slot, in Berlin
    assert "2026-10-24 00:00 to 2026-10-26 23:00" in page  # the range, in Berlin time


def test_a_bad_backfill_says_why_and_starts_nothing(scheduled, alice_client):
    answer = alice_client.post(
        reverse("jobs-backfill", args=[scheduled.pk]),
        {"start": "2026-10-26T00:00", "end": "2026-10-24T00:00", "max_concurrent": "2", **PARAMS},
    )
    assert answer.status_code == 200
    assert "The range ends before it starts." in answer.content.decode()
    assert not Run.objects.exists()


def test_a_sweep_from_the_form(make_job, alice_client):
    job = make_job()
    answer = alice_client.post(
        reverse("jobs-sweep", args=[job.pk]),
        {"sweep-x": "1, 2", "sweep-name": "a, b c", "combine": "grid", "max_concurrent": "3"},
    )
    group = RunGroup.objects.get()
    assert answer.status_code == 302
    assert sorted((r.parameters["x"], r.parameters["name"]) for r in group.runs.all()) == [
        (1, "a"),
        (1, "b c"),
        (2, "a"),
        (2, "b c"),
    ]
    page = alice_client.get(group.get_absolute_url()).content.decode()
    assert "<th>x</th>" in page and "<th>name</th>" in page and "0 of 4 done" in page
    wrong = alice_client.post(
        reverse("jobs-sweep", args=[job.pk]),
        {"sweep-x": "one, two", "combine": "grid", "max_concurrent": "3"},
    )
    assert wrong.status_code == 200 and "x" in wrong.content.decode()
    assert RunGroup.objects.count() == 1


def test_cancel_all_and_retry_failed_from_the_page(make_job, alice, alice_client):
    group = groups.create_sweep(make_job(), alice, {"x": [1, 2, 3]}, max_concurrent=1)
    first = group.runs.get(waits_for_group=False)
    Run.objects.filter(pk=first.pk).update(state=Run.State.FAILED, finished_at=datetime.now(UTC))
    page = alice_client.get(group.get_absolute_url()).content.decode()
    assert 'id="group-cancel"' in page and 'id="group-retry"' in page
    alice_client.post(reverse("groups-cancel", args=[group.pk]))
    assert groups.progress(group).active is False
    alice_client.post(reverse("groups-retry", args=[group.pk]))
    assert groups.progress(group).queued == 1


def test_others_cannot_start_or_see_a_private_jobs_groups(scheduled, alice, bob, client):
    group = groups.create_sweep(scheduled, alice, {"x": [1]})
    client.force_login(bob)
    for url in [
        reverse("jobs-backfill", args=[scheduled.pk]),
        reverse("jobs-sweep", args=[scheduled.pk]),
        group.get_absolute_url(),
    ]:
        assert client.get(url).status_code == 404
    for name in ("groups-cancel", "groups-retry"):
        assert client.post(reverse(name, args=[group.pk])).status_code == 404
    assert group.runs.filter(state=Run.State.QUEUED).count() == 1


def test_a_sweeps_page_lists_recorded_values_and_charts_them(make_job, alice, alice_client):
    from recorded.models import RecordedValue

    group = groups.create_sweep(make_job(), alice, {"x": [1, 2]}, max_concurrent=2)
    for run in group.runs.all():
        x = run.parameters["x"]
        RecordedValue.objects.create(run=run, name="score", kind="number", number=x * 10.0)
        RecordedValue.objects.create(run=run, name="note", kind="text", text=f"<b>{x}</b>")
    page = alice_client.get(group.get_absolute_url()).content.decode()
    assert '<th class="recorded">score</th>' in page and "&lt;b&gt;1&lt;/b&gt;" in page
    assert 'id="sweep-data"' in page and 'id="sweep-value"' in page
    data = page[page.index('id="sweep-data"') :]
    assert '"values": ["score"]' in data and '"score": 20.0' in data


def test_a_notebook_without_a_parameters_cell_is_swept_from_the_form(make_job, alice_client):
    """Free parameters: the job's own (prefilled names) and new ones (blank rows), typed
    as free parameters are; a new row without values, or a reserved name, is refused."""
    job = make_job("no_parameters_cell.ipynb", parameters={"rate": 0.5})
    detail = alice_client.get(job.get_absolute_url()).content.decode()
    assert 'id="sweep"' in detail
    form = alice_client.get(reverse("jobs-sweep", args=[job.pk])).content.decode()
    assert 'name="sweep-rate"' in form and 'name="sweep-free-0-name"' in form
    answer = alice_client.post(
        reverse("jobs-sweep", args=[job.pk]),
        {
            "sweep-rate": "0.1, 0.2",
            "sweep-free-0-name": "label",
            "sweep-free-0-values": 'a, "b"',
            "combine": "grid",
            "max_concurrent": "2",
        },
    )
    assert answer.status_code == 302, answer.content.decode()[-2000:]
    group = RunGroup.objects.get()
    assert sorted((r.parameters["rate"], r.parameters["label"]) for r in group.runs.all()) == [
        (0.1, "a"),
        (0.1, "b"),
        (0.2, "a"),
        (0.2, "b"),
    ]
    for bad, message in (
        ({"sweep-free-0-name": "label"}, "Give the values of label."),
        ({"sweep-free-0-name": "run_id", "sweep-free-0-values": "1"}, "reserved"),
    ):
        answer = alice_client.post(
            reverse("jobs-sweep", args=[job.pk]), {**bad, "combine": "grid", "max_concurrent": "2"}
        )
        assert answer.status_code == 200 and message in answer.content.decode()
    assert RunGroup.objects.count() == 1
