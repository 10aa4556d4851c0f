"""Fair share in the browser: a refused Run now says why, a held run says what it waits
for, and the Usage page draws its chart under the portal's CSP."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from jobs import services
from jobs.models import Run
from quotas.models import UserLimits
from tests.e2e.conftest import login

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_limits_and_usage_in_the_browser(page, portal, alice, make_job):
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    UserLimits.objects.create(user=alice, max_active_runs=2, max_running_runs=1)
    job = make_job(name="Weekly report")
    first = services.run_now(job, alice)
    held = services.run_now(job, alice)
    login(page, portal, "alice")

    # The second run waits for the first, and says so on its page.
    page.goto(f"{portal.url}/runs/{held.pk}/")
    expect(page.locator("#run-waiting")).to_have_text(
        "Waiting: 1 of your runs is queued or running, limit 1."
    )

    # A third Run now passes the limit of runs queued or running: a message, no run.
    page.goto(f"{portal.url}/jobs/{job.pk}/")
    with page.expect_navigation():
        page.click("#run-now")
    expect(page.locator("main")).to_contain_text(
        "You have 2 runs queued or running, and your limit is 2."
    )
    assert job.runs.count() == 2

    # The Usage page: a finished run's figures, the table by job, the chart by day.
    Run.objects.filter(pk=first.pk).update(
        state=Run.State.SUCCEEDED,
        started_at=timezone.now() - timedelta(minutes=30),
        finished_at=timezone.now(),
        wall_seconds=1800,
        cpu_seconds=3600,
        output_bytes=2_000_000,
    )
    page.goto(f"{portal.url}/usage/")
    expect(page.locator("#usage-totals")).to_contain_text("1.00")  # CPU-hours
    expect(page.locator("#usage-jobs")).to_contain_text("Weekly report")
    expect(page.locator("#usage-chart svg.main-svg").first).to_be_attached()
    expect(page.locator(".budget").first).to_contain_text("node-hours")
    broken = [c for c in console if c.startswith("pageerror") or "Content Security" in c]
    assert broken == [], broken
