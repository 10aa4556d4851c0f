"""The run page lists a run's recorded values, escaped; the job page charts its numeric
values across runs by logical date; both only for who may see the job."""

import json
import re
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from jobs.models import Run
from recorded.models import RecordedValue

pytestmark = pytest.mark.django_db

Kind = RecordedValue.Kind
SCRIPT = "<script>alert(1)</script>"


def value(run, name, kind, **fields):
    return RecordedValue.objects.create(run=run, name=name, kind=kind, **fields)


@pytest.fixture
def job(make_job):
    return make_job()


def make_run(job, slot):
    return Run.objects.create(
        job=job, version=job.latest_version(), scheduled_for=slot, state=Run.State.SUCCEEDED
    )


def test_the_run_page_shows_values_escaped(job, alice_client):
    run = make_run(job, None)
    value(run, SCRIPT, Kind.NUMBER, number=3.5)
    value(run, "label", Kind.TEXT, text=SCRIPT)
    value(run, "per_os", Kind.TABLE, data={"columns": [SCRIPT], "rows": [[SCRIPT], [None]]})
    value(run, "chart", Kind.FIGURE, data={"data": [{"name": SCRIPT}], "layout": {}})
    value(run, "big", Kind.FIGURE, note="Not kept: 3 bytes, over 2.")
    page = alice_client.get(reverse("runs-detail", args=[run.pk])).content.decode()
    assert 'id="recorded-values"' in page
    assert SCRIPT not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 4  # name, text, header, cell
    assert "3.5" in page
    assert page.count("figure — drawn in the notebook output") == 2
    assert "Not kept: 3 bytes, over 2." in page


def test_a_run_without_values_has_no_section(job, alice_client):
    run = make_run(job, None)
    page = alice_client.get(reverse("runs-detail", args=[run.pk])).content.decode()
    assert "recorded-values" not in page


def test_the_job_page_charts_numbers_by_logical_date(job, alice_client, bob, client):
    late = make_run(job, datetime(2026, 5, 2, 6, tzinfo=UTC))
    early = make_run(job, datetime(2026, 5, 1, 6, tzinfo=UTC))
    value(late, "precision", Kind.NUMBER, number=0.9)
    value(early, "precision", Kind.NUMBER, number=0.8)
    value(early, SCRIPT, Kind.NUMBER, number=1)
    value(early, "label", Kind.TEXT, text="not charted")
    response = alice_client.get(reverse("jobs-detail", args=[job.pk]))
    page = response.content.decode()
    assert SCRIPT not in page
    assert 'id="recorded-chart"' in page and "recorded/values-chart.js" in page
    found = re.search(r'<script id="recorded-data" type="application/json">(.*?)</script>', page)
    data = json.loads(found.group(1))
    assert list(data) == [SCRIPT, "precision"]
    assert [(p["x"], p["y"], p["run"]) for p in data["precision"]] == [
        ("2026-05-01T06:00:00+00:00", 0.8, early.pk),
        ("2026-05-02T06:00:00+00:00", 0.9, late.pk),
    ]
    assert '<option value="precision">precision</option>' in page
    # A private job's page (and its values) is a 404 for another user.
    client.force_login(bob)
    assert client.get(reverse("jobs-detail", args=[job.pk])).status_code == 404


def test_the_api_lists_a_runs_values_in_order(job, alice_client):
    run = make_run(job, None)
    value(run, "b", Kind.NUMBER, number=2, position=0)
    value(run, "a", Kind.TABLE, data={"columns": ["x"], "rows": [[1]]}, position=1)
    response = alice_client.get(f"/api/runs/{run.pk}/values/")
    assert response.status_code == 200
    assert response.json() == [
        {"name": "b", "kind": "number", "number": 2.0, "text": "", "data": None, "note": ""},
        {
            "name": "a",
            "kind": "table",
            "number": None,
            "text": "",
            "data": {"columns": ["x"], "rows": [[1]]},
            "note": "",
        },
    ]


def test_the_chart_keeps_the_latest_runs_by_logical_date(job, alice_client, monkeypatch):
    from recorded.templatetags import recorded_tags

    monkeypatch.setattr(recorded_tags, "CHART_RUNS", 2)
    runs = [make_run(job, datetime(2026, 5, day, tzinfo=UTC)) for day in (3, 1, 2)]
    for run in runs:
        value(run, "a", Kind.NUMBER, number=run.scheduled_for.day, position=0)
        value(run, "b", Kind.NUMBER, number=1, position=1)
    series = recorded_tags.chart_series(job)
    assert [p["y"] for p in series["a"]] == [2, 3]
