"""A continuous job's live metrics in Chromium: a real worker on the ``streams`` queue runs
a notebook whose rate-source query reports a batch a second through the kernel's helper;
the run page's chart grows while it runs; the operations page lists its rates; Stop ends
it as a success."""

import pytest
from playwright.sync_api import expect

from jobs.models import Run
from jobs.services import streams
from tests.e2e.conftest import E2EWorker, login, wait_run_state
from tests.processes import flush_broker, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.sandbox,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def streams_worker(request, portal):
    """A real worker on the ``streams`` queue only, without task time limits."""
    flush_broker()
    proc = E2EWorker(
        name="e2e-streams",
        queues="streams",
        DJANGO_ALLOW_ASYNC_UNSAFE="",
        CELERY_TIME_LIMITS="false",
    )
    request.node._e2e_worker = proc
    try:
        yield proc
    finally:
        try:
            proc.stop()
        finally:
            if proc.proc.poll() is None:
                proc.kill()
            flush_broker()


def points(page) -> int:
    return int(page.locator("#stream-chart").get_attribute("data-points") or 0)


def test_the_live_metrics_chart_grows_while_the_stream_runs(
    portal, browser, page, streams_worker, make_job, alice, staff
):
    console = []
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    job = make_job("stream_rate_until_stopped.ipynb", name="rates", continuous=True)
    assert streams.supervise_streams()["started"] == 1
    (run,) = job.runs.all()
    wait_run_state(run.pk, (Run.State.RUNNING,), timeout=120, worker=streams_worker)

    login(page, portal, "alice")
    page.goto(f"{portal.url}/runs/{run.pk}/")
    chart = page.locator("#stream-chart")
    expect(chart).to_be_visible()
    # The first batches: the kernel starts Spark, the query reports, the worker stores.
    wait_for(lambda: points(page) >= 2, timeout=180, interval=1, message="first points")
    first = points(page)
    expect(chart.locator(".main-svg").first).to_be_visible()  # drawn by plotly.js
    wait_for(lambda: points(page) > first, timeout=30, interval=1, message="more points")
    assert "rates: input rows/s" in chart.inner_text()
    assert not [line for line in console if line.startswith(("pageerror", "error"))], console

    # Staff (in a browser of their own) see the job on the operations page, with its
    # rates and no stall.
    ops_context = browser.new_context()
    try:
        ops = ops_context.new_page()
        login(ops, portal, "staff")
        ops.goto(f"{portal.url}/ops/")
        row = ops.locator(f"#stream-job-{job.pk}")
        expect(row).to_contain_text("Running")
        expect(row).not_to_contain_text("stalled")
    finally:
        ops_context.close()
    assert Run.objects.get(pk=run.pk).stream_rates()["processed"] is not None

    # Stop: the run ends SUCCEEDED, and its page keeps the last points drawn.
    page.goto(f"{portal.url}/runs/{run.pk}/")
    page.locator("#stop-run").click()
    done = wait_run_state(run.pk, Run.FINAL_STATES, timeout=90, worker=streams_worker)
    assert done.state == Run.State.SUCCEEDED, done.state_reason
    page.goto(f"{portal.url}/runs/{run.pk}/")
    wait_for(lambda: points(page) >= first, timeout=15, interval=0.5, message="last points")
