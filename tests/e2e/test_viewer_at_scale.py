"""The run viewer at scale (issue 14), in Chromium: a run of 20 Plotly charts of 60,000
points draws the chart in view first and the others as they scroll into view; the
output frame grows to its notebook's height, so the page has one scroll bar; only the
frame's own numbers size it; the downloaded .html draws every chart offline.

The output notebooks are built here with nbformat and plotly's JSON output, then stored
and rendered by the real end of a run (``claim_run``, ``finish_run``): no kernel is
needed to make 26 MB of charts.
"""

import json
import random
import time

import nbformat
import plotly.graph_objects as go
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.processes import flush_broker

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FIGURES = ".nb-plotly-figure"
#: A figure plotly.js has finished drawing (the loader then drops the placeholder's class).
DRAWN = ".nb-plotly-figure:not(.nb-plotly-pending)"
#: plotly.js's first layer of a drawn figure (it makes three).
PLOT = "svg.main-svg >> nth=0"
#: The heights the portal page clamps a frame's reported height to (frame-height.js).
MAX_HEIGHT = 200_000

# Measured inside the user-content frame: the notebook's height, and whether the frame's
# document can scroll vertically (it must not once the frame has grown).
CONTENT = """() => ({
  height: Math.ceil(document.documentElement.getBoundingClientRect().height),
  scrollable: document.scrollingElement.scrollHeight > window.innerHeight,
})"""


def chart_notebook(charts: int, points: int) -> nbformat.NotebookNode:
    """An executed notebook of ``charts`` cells, each showing one line chart of ``points``
    points as plotly's JSON output (what PLOTLY_RENDERER=plotly_mimetype stores)."""
    rng = random.Random(14)
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("# Twenty charts"))
    x = list(range(points))
    for i in range(charts):
        y = [round(rng.random() * 100, 12) for _ in x]
        fig = go.Figure(go.Scatter(x=x, y=y, mode="lines"), layout={"title": f"chart {i}"})
        output = nbformat.v4.new_output(
            "display_data",
            data={
                "application/vnd.plotly.v1+json": json.loads(fig.to_json()),
                "text/plain": "Figure",
            },
        )
        nb.cells.append(
            nbformat.v4.new_code_cell(f"fig{i}.show()", execution_count=i + 1, outputs=[output])
        )
    return nb


def finished_run(make_job, alice, tmp_path, nb):
    """A SUCCEEDED run of a job of alice's whose output notebook is ``nb``, stored and
    rendered as a worker does at a run's end."""
    from jobs import services
    from jobs.executor import Outcome, OutcomeStatus

    path = tmp_path / "output.ipynb"
    # Unindented: with nbformat's indent of 1 these figures would make an .ipynb over
    # OUTPUT_RENDER_MAX_BYTES, which is kept unrendered.
    nbformat.validate(nb)
    path.write_text(json.dumps(nb, separators=(",", ":")))
    job = make_job("trivial.ipynb", name="charts", max_retries=0)
    run = services.run_now(job, alice)
    flush_broker()  # no worker here: the message would wait for the next test's
    claimed = services.claim_run(run.pk, "e2e-test")
    done = services.finish_run(claimed, Outcome(OutcomeStatus.SUCCEEDED, path))
    assert done is not None and done.html_key, done
    return done


def content_frame(page, selector="#notebook-frame"):
    return page.locator(selector).element_handle().content_frame()


def wait_grown(page, portal, timeout=60.0) -> dict:
    """Wait until the output frame's height is its notebook's height; return both."""
    frame_el = page.locator("#notebook-frame")
    deadline = time.monotonic() + timeout
    while True:
        content = content_frame(page).evaluate(CONTENT)
        inner = frame_el.evaluate("f => f.clientHeight")
        if inner == content["height"]:
            return {"frame": inner, **content}
        if time.monotonic() > deadline:
            raise AssertionError(f"frame {inner}px, its notebook {content}")
        time.sleep(0.2)


def test_twenty_charts_draw_the_first_at_once_and_the_rest_as_they_scroll_into_view(
    request, page, context, portal, make_job, alice, tmp_path
):
    nb = chart_notebook(charts=20, points=60_000)
    run = finished_run(make_job, alice, tmp_path, nb)
    from django.core.files.storage import default_storage

    print(f"rendered page: {default_storage.size(run.html_key) / 1e6:.1f} MB")

    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    login(page, portal, "alice")
    page.goto(f"{portal.url}/runs/{run.pk}/")
    notebook = page.frame_locator("#notebook-frame")
    expect(notebook.locator(FIGURES)).to_have_count(20)
    figures = notebook.locator(FIGURES)
    # The chart in view is drawn, while the last one is still its placeholder, of the
    # height the chart will have.
    expect(figures.first.locator(PLOT)).to_be_attached(timeout=60_000)
    expect(figures.first.locator(".gtitle")).to_have_text("chart 0")
    last = figures.last
    assert last.locator("svg.main-svg").count() == 0
    expect(last).to_have_class("nb-plotly-figure nb-plotly-pending")
    assert last.evaluate("e => e.getBoundingClientRect().height") == 450
    expect(notebook.locator(DRAWN).first).to_be_attached()
    drawn_first = notebook.locator(DRAWN).count()
    assert 1 <= drawn_first < 20, drawn_first

    # Scrolling the portal page (the frame has grown: it does not scroll) draws the last.
    wait_grown(page, portal)
    page.evaluate("window.scrollTo(0, document.scrollingElement.scrollHeight)")
    expect(last.locator(PLOT)).to_be_attached(timeout=60_000)
    expect(last.locator(".gtitle")).to_have_text("chart 19")
    assert last.evaluate("e => e.getBoundingClientRect().height") == 450
    assert notebook.locator(DRAWN).count() < 20  # the middle ones were never in view
    # Line charts only: the page loads plotly.js's basic bundle, which draws them.
    assert content_frame(page).evaluate(
        "() => [...document.scripts].map(s => s.src).filter(Boolean)"
    ) == [
        f"{portal.content_origin}/static/vendor/plotly-basic-4.1.1.min.js",
        f"{portal.content_origin}/static/jobs/nb-plotly-loader.js",
    ]
    assert errors == []

    # The downloaded .html, opened from disk, draws every chart as it scrolls into view,
    # its own CSP allowing the inlined plotly.js and loader.
    with page.expect_download() as info:
        page.click("#download-html")
    downloaded = tmp_path / "run.html"
    info.value.save_as(downloaded)
    offline = context.new_page()
    request.node._e2e_pages["offline"] = offline
    refused = []
    offline.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    offline.on("pageerror", lambda exc: errors.append(str(exc)))
    offline.goto(downloaded.as_uri())
    expect(offline.locator(DRAWN).first).to_be_attached(timeout=60_000)
    for i in range(20):
        figure = offline.locator(FIGURES).nth(i)
        figure.scroll_into_view_if_needed()
        expect(figure.locator(PLOT)).to_be_attached(timeout=60_000)
    expect(offline.locator(DRAWN)).to_have_count(20)
    assert refused == [] and errors == []
    assert offline.locator("script[src]").count() == 0


def test_the_frame_grows_to_its_notebook_and_only_its_own_numbers_size_it(
    request, page, portal, make_job, alice, tmp_path
):
    run = finished_run(make_job, alice, tmp_path, chart_notebook(charts=12, points=200))
    login(page, portal, "alice")
    page.goto(f"{portal.url}/runs/{run.pk}/")
    frame_el = page.locator("#notebook-frame")
    assert frame_el.get_attribute("sandbox") == "allow-scripts"  # no allow-same-origin

    grown = wait_grown(page, portal)
    assert grown["frame"] > 12 * 450, grown
    assert not grown["scrollable"], grown
    assert page.evaluate("document.scrollingElement.scrollHeight > window.innerHeight")
    # Drawing the charts in view changes no height: the placeholders had theirs.
    notebook = page.frame_locator("#notebook-frame")
    expect(notebook.locator(DRAWN).first).to_be_attached(timeout=60_000)
    assert wait_grown(page, portal) == grown
    height = frame_el.evaluate("f => f.getBoundingClientRect().height")

    # Messages from any other window change nothing: the portal page itself (its own
    # origin), a forged event claiming the user-content origin, and a second frame from
    # the user-content origin (the same "null" origin as the real one).
    page.evaluate("window.postMessage(5000, '*')")
    page.evaluate(
        """origin => window.dispatchEvent(new MessageEvent("message",
            {data: 5000, origin: origin, source: window}))""",
        portal.content_origin,
    )
    page.evaluate(
        """src => {
          const f = document.createElement("iframe");
          f.id = "intruder"; f.sandbox = "allow-scripts"; f.src = src;
          f.style.width = "300px";
          document.body.appendChild(f);
        }""",
        frame_el.get_attribute("src"),
    )
    # It loads the same notebook and reports its own height, as the real frame does.
    expect(page.frame_locator("#intruder").locator(FIGURES)).to_have_count(12)
    content_frame(page, "#intruder").evaluate(
        "parent.postMessage(5000, '*'); parent.postMessage(7, '*')"
    )
    page.wait_for_timeout(500)
    assert frame_el.evaluate("f => f.getBoundingClientRect().height") == height

    # From the frame itself, anything but a finite number is ignored, and a number is
    # clamped.
    real = content_frame(page)
    real.evaluate(
        """() => ["5000", {height: 5000}, [5000], null, NaN, Infinity, -Infinity, true]
            .forEach(v => parent.postMessage(v, "*"))"""
    )
    page.wait_for_timeout(500)
    assert frame_el.evaluate("f => f.getBoundingClientRect().height") == height
    real.evaluate("parent.postMessage(1e12, '*')")
    expect(frame_el).to_have_js_property("clientHeight", MAX_HEIGHT)
    real.evaluate("parent.postMessage(-5, '*')")
    expect(frame_el).to_have_js_property("clientHeight", 100)
    assert frame_el.get_attribute("sandbox") == "allow-scripts"
