"""Recorded values in the browser, with a real worker and kernels: they appear on the run
page and the job page charts a numeric one across the runs, under the portal's CSP."""

import pytest
from playwright.sync_api import expect

from jobs import services
from jobs.models import Run
from tests.e2e.conftest import login, wait_run_state

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUN_TIMEOUT = 180  # s per run: a sandboxed kernel, no Spark


def test_recorded_values_appear_and_are_charted(page, portal, worker, alice, make_job):
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    job = make_job("recorded.ipynb", name="Recorded")
    first = services.run_now(job, alice, parameters={"answer": 7})
    wait_run_state(first.pk, {Run.State.SUCCEEDED}, RUN_TIMEOUT, worker)
    second = services.run_now(job, alice, parameters={"answer": 9})
    wait_run_state(second.pk, {Run.State.SUCCEEDED}, RUN_TIMEOUT, worker)
    login(page, portal, "alice")

    # The run page: numbers, text (escaped), the table, and the figure left to the frame.
    page.goto(f"{portal.url}/runs/{second.pk}/")
    values = page.locator("#recorded-values")
    expect(values.locator("tr.value-number").first).to_contain_text("answer")
    expect(values.locator("tr.value-number").first).to_contain_text("9.0")
    expect(values.locator(".recorded-text")).to_have_text("<b>not bold</b>")
    expect(values.locator("b")).to_have_count(0)
    expect(values.locator(".recorded-table tbody tr")).to_have_count(2)
    expect(values.locator("tr.value-figure")).to_contain_text("drawn in the notebook output")
    expect(page.locator("#notebook-frame")).to_be_attached()

    # The job page: "answer" across both runs, in logical-date order; then "ratio".
    page.goto(f"{portal.url}/jobs/{job.pk}/")
    expect(page.locator("#recorded-name option")).to_have_text(["answer", "ratio"])
    points = page.locator("#recorded-chart .scatterlayer .trace .points path")
    expect(points).to_have_count(2)
    ys = page.evaluate("() => document.getElementById('recorded-chart').data[0].y")
    assert ys == [7, 9]
    page.select_option("#recorded-name", "ratio")
    expect(page.locator("#recorded-chart .gtitle, #recorded-chart .ytitle")).to_contain_text(
        "ratio"
    )
    expect(points).to_have_count(2)
    broken = [c for c in console if c.startswith("pageerror") or "Content Security" in c]
    assert broken == [], broken
