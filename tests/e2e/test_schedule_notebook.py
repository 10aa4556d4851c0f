"""A user schedules the telemetry example in the browser, runs it, watches it progress,
sees its chart and downloads the output notebook with their parameter injected."""

import re
import time
from urllib.parse import urlsplit

import nbformat
import pytest
from playwright.sync_api import expect

from tests.conftest import EXAMPLES
from tests.e2e.conftest import login

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUN_TIMEOUT = 180  # s from "Run now" to the end: kernel + Spark start, then a tiny dataset


def watch_run(page, timeout: float) -> tuple[str, list[dict]]:
    """Poll the run page until the run has ended; return the final state class and what
    was seen while the run was running (#run-cells text, #run-progressbar value)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = page.evaluate(
                """() => {
                  const state = document.querySelector('#run-state');
                  const bar = document.querySelector('#run-progressbar');
                  const cells = document.querySelector('#run-cells');
                  return {
                    state: state ? state.className : null,
                    cells: cells ? cells.textContent.trim() : null,
                    value: bar ? bar.value : null,
                    max: bar ? bar.max : null,
                    frame: !!document.querySelector('#notebook-frame'),
                  };
                }"""
            )
        except Exception:  # the page reloads itself (HX-Refresh) when the run ends
            status = None
        if status and status["state"]:
            match = re.search(r"state-([A-Z_]+)", status["state"])
            state = match.group(1) if match else ""
            if state == "RUNNING":
                if not seen or (seen[-1]["cells"], seen[-1]["value"]) != (
                    status["cells"],
                    status["value"],
                ):
                    seen.append({k: status[k] for k in ("cells", "value", "max")})
            elif state in ("SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "LOST", "SKIPPED"):
                # The run ended: wait for the reload that shows the output frame.
                if state != "SUCCEEDED" or status["frame"]:
                    return state, seen
        page.wait_for_timeout(150)  # keeps Playwright's event loop turning, unlike sleep
    raise AssertionError(f"the run did not end within {timeout} s; seen while running: {seen}")


def test_schedule_run_and_download(page, context, portal, worker, alice, pings_sample, tmp_path):
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text} @ {m.location.get('url')}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    login(page, portal, "alice")

    # --- Create the job: name, daily at 06:00, notebook, one parameter changed.
    page.goto(f"{portal.url}/jobs/new/")
    page.fill("#id_name", "Telemetry hello world")
    page.select_option("#id_schedule_kind", label="Daily")
    page.fill("#id_at_time", "06:00")
    page.set_input_files("#id_notebook", str(EXAMPLES / "telemetry_hello_world.ipynb"))
    top_n = page.locator('[name="param-top_n"]')
    expect(top_n).to_be_visible()  # the htmx fragment read from the notebook
    expect(top_n).to_have_value("10")
    top_n.fill("3")
    page.fill('[name="param-data_path"]', str(pings_sample))
    expect(page.locator("#schedule-preview")).to_contain_text("At 06:00 (UTC)")
    with page.expect_navigation():
        page.click('#job-form button[type="submit"]')
    assert re.fullmatch(r"/jobs/\d+/", urlsplit(page.url).path), (
        f"not on the job page: {page.url}\n{page.inner_text('main')[:1500]}"
    )

    # --- The job page shows the schedule in words and its next runs.
    schedule = page.locator("article", has=page.locator("header", has_text="Schedule"))
    expect(schedule).to_contain_text("At 06:00 (UTC)")
    next_runs = schedule.locator("ol li")
    expect(next_runs).to_have_count(5)
    for text in next_runs.all_inner_texts():
        assert re.search(r"\d{4}-\d\d-\d\d 06:00 UTC$", text), text
    expect(page.locator("main")).to_contain_text("top_n")

    # --- Run now: the page follows the run until it has ended, then reloads.
    with page.expect_navigation():
        page.click("#run-now")
    assert re.fullmatch(r"/runs/\d+/", urlsplit(page.url).path), page.url
    state, seen = watch_run(page, RUN_TIMEOUT)
    print("progress seen while running:", seen)
    assert state == "SUCCEEDED", (
        f"run ended {state}: {page.inner_text('main')[:3000]}\n{worker.tail()}"
    )
    assert len({s["cells"] for s in seen}) >= 2 or any((s["value"] or 0) > 0 for s in seen), (
        f"no progress was shown while the run was running: {seen}"
    )
    expect(page.locator("#run-state")).to_have_text("Succeeded")
    expect(page.locator("#run-progressbar")).to_have_attribute("value", re.compile(r"^[1-9]\d*$"))

    # --- The output notebook, served from the user-content origin, draws the Plotly chart.
    frame_el = page.locator("#notebook-frame")
    assert frame_el.get_attribute("src").startswith(f"{portal.content_origin}/content/")
    notebook = page.frame_locator("#notebook-frame")
    expect(notebook.locator(".nb-plotly-figure")).to_have_count(1)
    notebook.locator(".nb-plotly-figure").scroll_into_view_if_needed()  # drawn in view
    expect(notebook.locator("svg.main-svg").first).to_be_attached(timeout=60_000)

    # --- The downloaded .ipynb carries the injected parameters.
    with page.expect_download() as info:
        page.click("#download-ipynb")
    download = info.value
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    assert target.suffix == ".ipynb", download.suggested_filename
    nb = nbformat.read(str(target), as_version=4)
    injected = [
        c for c in nb.cells if "injected-parameters" in c.get("metadata", {}).get("tags", [])
    ]
    assert len(injected) == 1, [c.get("metadata") for c in nb.cells]
    source = injected[0].source
    assert re.search(r"^top_n = 3$", source, re.M), source
    assert str(pings_sample) in source, source

    # --- The downloaded .html draws its chart opened from disk (plotly.js inlined).
    with page.expect_download() as info:
        page.click("#download-html")
    html_file = tmp_path / "downloaded.html"
    info.value.save_as(html_file)
    offline = context.new_page()
    offline.goto(html_file.as_uri())
    offline.locator(".nb-plotly-figure").scroll_into_view_if_needed()
    expect(offline.locator("svg.main-svg").first).to_be_attached(timeout=60_000)
    offline.close()

    # --- No script broke and no portal CSP violation on the way.
    broken = [c for c in console if c.startswith("pageerror") or "Content Security Policy" in c]
    assert broken == [], broken

    # --- Nothing left the machine: every request went to the portal or user-content host.
    hosts = {urlsplit(r.url).hostname for r in context.requests} - {None}  # data: URLs have no host
    assert hosts <= {"localhost", "127.0.0.1"}, sorted(
        r.url
        for r in context.requests
        if urlsplit(r.url).hostname in hosts - {"localhost", "127.0.0.1"}
    )
    assert "127.0.0.1" in hosts  # the notebook frame and its scripts came from user content
