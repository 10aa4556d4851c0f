"""Compare two runs in Chromium, with a real worker and kernels: the page shows the changed
parameter and the changed output, and hostile output of either run stays inert
(tests/notebooks/compare_hostile.ipynb: a script, handlers and a JavaScript output that
would alert or mark the portal page)."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login, wait_run_state
from tests.e2e.test_viewer_isolation import PROBES, assert_isolated

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "LOST", "CANCELLED")


def test_compare_shows_the_changes_and_keeps_hostile_output_inert(
    page, context, portal, worker, make_job, alice
):
    from jobs import services

    job = make_job("compare_hostile.ipynb", name="compare me")
    runs = []
    for label in ("first", "second"):
        run = services.run_now(job, alice, {"label": label})
        run = wait_run_state(run.pk, FINAL, timeout=180, worker=worker)
        assert run.state == "SUCCEEDED", (
            f"{run.state}: {run.state_reason} {run.error_ename}: {run.error_evalue}\n"
            f"{worker.tail()}"
        )
        runs.append(run)
    a, b = runs

    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login(page, portal, "alice")

    # The job page's picker leads to the comparison (B: the newest, A: the one before).
    page.goto(f"{portal.url}/jobs/{job.pk}/")
    expect(page.locator("#compare-b")).to_have_value(str(b.pk))
    expect(page.locator("#compare-a")).to_have_value(str(a.pk))
    with page.expect_navigation():
        page.click("#compare-submit")
    assert page.url == f"{portal.url}/runs/{a.pk}/compare/{b.pk}/", page.url
    title = page.title()

    # The changed parameter, highlighted, on the portal page.
    row = page.locator('#compare-parameters tr[data-name="label"]')
    expect(row).to_have_class("changed")
    expect(row.locator("td").nth(0)).to_have_text('"first"')
    expect(row.locator("td mark")).to_have_text('"second"')

    # The cells, in the sandboxed frame on the user-content origin.
    frame_el = page.locator("#compare-frame")
    src = frame_el.get_attribute("src")
    assert src.startswith(f"{portal.content_origin}/content/"), src
    assert frame_el.get_attribute("sandbox") == "allow-scripts"
    frame = page.frame_locator("#compare-frame")
    expect(frame.locator(".cmp-side.cmp-a", has_text="label is first")).to_have_count(1)
    expect(frame.locator(".cmp-side.cmp-b", has_text="label is second")).to_have_count(1)
    expect(frame.locator(".cmp-head.cmp-changed").first).to_be_attached()
    expect(frame.locator(".cmp-diff .cmp-add", has_text='label = "second"')).to_have_count(1)
    # Both runs' Plotly charts are drawn by the portal's plotly.js, as they come into view.
    for figure in frame.locator(".nb-plotly-figure").all():
        figure.scroll_into_view_if_needed()
    expect(frame.locator("svg.main-svg .gtitle", has_text="chart second")).to_have_count(1)
    expect(frame.locator("svg.main-svg .gtitle", has_text="chart first")).to_have_count(1)
    # The hostile HTML is there as text, without its script or handlers.
    expect(frame.locator("div", has_text="hostile second").last).to_be_attached()
    assert frame.locator("script:not([src]):not([type='application/json'])").count() == 0
    assert frame.locator("[onerror], [onload]").count() == 0
    page.wait_for_timeout(1000)  # give anything that slipped through time to act

    # Nothing reached the portal page.
    assert dialogs == []
    assert page.title() == title
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    [content] = [f for f in page.frames if f.url.startswith(portal.content_origin + "/content/")]
    probes = content.evaluate(PROBES, portal.url)
    assert_isolated(probes, portal.url, "compare frame")
    assert probes["parent"].startswith("threw:"), probes

    # A failed run's page links here too (the link is checked in tests/jobs/test_compare.py);
    # the swap link compares the other way round.
    page.click("#compare-swap")
    expect(page.locator('#compare-parameters tr[data-name="label"] td mark')).to_have_text(
        '"first"'
    )
    assert dialogs == []
