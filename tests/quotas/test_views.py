"""The Usage page: a user's month by day, by job and by cluster, their budgets, and for
staff every user."""

import json
from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse

from jobs import services as job_services
from jobs.models import Run
from quotas.models import UserLimits
from tests.quotas.conftest import NOW

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen")]


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def used(alice, bob, make_job, make_cluster):
    """Alice: 2 runs of "report" this month (one with its own 2-node cluster) and one last
    month, an ad-hoc cluster; Bob: a run and a cluster of his own."""
    report = make_job(name="report")
    runs = [job_services.run_now(report, alice, enqueue=False) for _ in range(3)]
    own = make_cluster(alice, NOW - timedelta(days=1, hours=2), hours=1, size=2, name="run-x")
    Run.objects.filter(pk=runs[0].pk).update(
        state=Run.State.SUCCEEDED,
        created_at=NOW - timedelta(days=1, hours=2),
        wall_seconds=3600,
        cpu_seconds=5400,
        node_hours=2.0,
        cluster=own,
        output_bytes=1_000_000,
    )
    Run.objects.filter(pk=runs[1].pk).update(state=Run.State.FAILED, cpu_seconds=1800)
    Run.objects.filter(pk=runs[2].pk).update(
        created_at=NOW - timedelta(days=30), cpu_seconds=36000, state=Run.State.SUCCEEDED
    )
    make_cluster(alice, NOW - timedelta(hours=3), hours=2, size=3, name="adhoc")  # 6
    bobs = make_job(name="bob's secret job", owner=bob)
    Run.objects.filter(pk=job_services.run_now(bobs, bob, enqueue=False).pk).update(
        cpu_seconds=7200
    )
    make_cluster(bob, NOW - timedelta(hours=5), hours=4, name="bobs-cluster")
    UserLimits.objects.create(user=alice, monthly_node_hours=10)
    return runs


def chart(page):
    html = page.content.decode()
    start = html.index('<script id="usage-data" type="application/json">') + len(
        '<script id="usage-data" type="application/json">'
    )
    return json.loads(html[start : html.index("</script>", start)])


def test_a_user_sees_their_month_by_day_by_job_and_against_their_budget(alice_client, used):
    page = alice_client.get(reverse("usage"))
    assert page.status_code == 200
    html = page.content.decode()
    report = page.context["report"]
    t = report.totals
    assert (t.runs, t.cpu_hours, t.wall_hours, t.node_hours) == (2, 2.0, 1.0, 8.0)
    [job] = report.jobs
    assert (job.job.name, job.totals.runs, job.totals.node_hours) == ("report", 2, 2.0)
    # Stored: the run's output and the notebook version.
    assert job.totals.stored_bytes == 1_000_000 + job.job.latest_version().size_bytes
    assert {c.cluster.name for c in report.clusters} == {"run-x", "adhoc"}
    [budget] = report.budgets
    assert (budget.used, budget.limit, budget.percent) == (8.0, 10, 80)
    assert '<progress value="8.000" max="10.000">' in html
    assert "8.0 of 10.0 node-hours (80%)" in html
    assert "bob" not in html and "bobs-cluster" not in html
    days = {d["day"]: d for d in chart(page)}
    assert list(days)[0] == "2026-11-01" and list(days)[-1] == "2026-11-20"
    assert days["2026-11-19"] == {
        "day": "2026-11-19",
        "runs": 1,
        "cpu_hours": 1.5,
        "node_hours": 2.0,
    }
    assert days["2026-11-20"]["node_hours"] == 6.0 and days["2026-11-20"]["runs"] == 1
    assert 'src="/static/quotas/usage-chart.js"' in html and "<script>" not in html


def test_last_month_is_a_click_away(alice_client, used):
    page = alice_client.get(reverse("usage"), {"month": "last"})
    t = page.context["report"].totals
    assert (t.runs, t.cpu_hours, t.node_hours) == (1, 10.0, 0.0)
    assert len(chart(page)) == 31  # every day of October


def test_others_cannot_look_at_another_users_page(alice_client, bob, used):
    page = alice_client.get(reverse("usage"), {"user": bob.pk})
    assert page.context["subject"].username == "alice" and page.context["users"] is None


def test_staff_see_every_user_and_each_users_page(client, staff, alice, bob, used):
    client.force_login(staff)
    page = client.get(reverse("usage"))
    rows = {row.user.username: row for row in page.context["users"]}
    assert rows["alice"].totals.node_hours == 8.0 and rows["alice"].budgets[0].percent == 80
    assert rows["bob"].totals.runs == 1 and rows["bob"].totals.cpu_hours == 2.0
    assert f"?user={bob.pk}" in page.content.decode()
    bobs = client.get(reverse("usage"), {"user": bob.pk})
    assert bobs.context["subject"] == bob and "bob&#x27;s secret job" in bobs.content.decode()
    assert client.get(reverse("usage"), {"user": 99999}).status_code == 404


def test_every_page_links_to_usage(alice_client):
    assert f'href="{reverse("usage")}"' in alice_client.get(reverse("dashboard")).content.decode()
