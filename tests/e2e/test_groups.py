"""Backfills and sweeps in the browser, run by a real worker and real kernels."""

from datetime import UTC, datetime

import nbformat
import pytest
from playwright.sync_api import expect

from jobs import services
from jobs.models import Job, Run, RunGroup
from tests.e2e.conftest import login, wait_run_state
from tests.processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FINAL = Run.FINAL_STATES


def notebook(*cells: str, parameters: str) -> bytes:
    first = nbformat.v4.new_code_cell(parameters)
    first.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[first, *map(nbformat.v4.new_code_cell, cells)])
    return nbformat.writes(nb).encode()


def wait_group_done(group: RunGroup, worker, timeout: float = 180) -> list[Run]:
    def done():
        runs = list(group.runs.all())
        return runs if runs and all(r.state in FINAL for r in runs) else None

    try:
        return wait_for(done, timeout=timeout, interval=0.5, message="the group's runs")
    except AssertionError:
        for run in group.runs.exclude(state__in=FINAL):
            wait_run_state(run.pk, FINAL, 1, worker)
        raise


def console_errors(page) -> list[str]:
    seen: list[str] = []
    page.on("console", lambda m: seen.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.append(f"pageerror: {e}"))
    return seen


def test_a_backfill_across_the_dst_change_runs_each_local_slot(page, portal, worker, alice):
    """Clocks go back in Berlin on 25 October 2026: the three 06:00 slots are 04:00, then
    05:00 and 05:00 UTC, and each run gets its slot as its logical date."""
    errors = console_errors(page)
    job = services.create_job(
        alice,
        Job(
            name="Daily in Berlin",
            cron="0 6 * * *",
            schedule_kind="cron",
            timezone="Europe/Berlin",
            enabled=False,
        ),
        notebook("seen = logical_date\nprint(seen)", parameters="x = 1"),
        "daily.ipynb",
    )
    login(page, portal, "alice")
    page.goto(f"{portal.url}/jobs/{job.pk}/")
    page.click("#backfill")
    page.fill("#id_start", "2026-10-24T00:00")
    page.fill("#id_end", "2026-10-26T23:00")
    page.fill("#id_max_concurrent", "2")
    with page.expect_navigation():
        page.click("#group-submit")
    expect(page.locator("#group-progress")).to_contain_text("of 3 done")
    group = RunGroup.objects.get()
    runs = sorted(wait_group_done(group, worker), key=lambda r: r.logical_date)
    assert [r.state for r in runs] == [Run.State.SUCCEEDED] * 3, [r.state_reason for r in runs]
    assert [r.logical_date for r in runs] == [
        datetime(2026, 10, 24, 4, tzinfo=UTC),
        datetime(2026, 10, 25, 5, tzinfo=UTC),
        datetime(2026, 10, 26, 5, tzinfo=UTC),
    ]
    # The page polls itself to the end, and lists each slot at 06:00 Berlin time.
    expect(page.locator("#group-progress")).to_contain_text("3 of 3 done", timeout=15_000)
    expect(page.locator("#group-table td.slot")).to_have_text(
        ["2026-10-24 06:00", "2026-10-25 06:00", "2026-10-26 06:00"]
    )
    assert errors == [], errors


def test_a_two_by_two_sweep_gives_four_runs_a_table_and_a_chart(page, portal, worker, alice):
    errors = console_errors(page)
    job = services.create_job(
        alice,
        Job(name="Tuning"),
        notebook(
            "import scrapbook as sb\nsb.glue('score', alpha * 10 + beta)",
            parameters="alpha = 1\nbeta = 0.5",
        ),
        "tuning.ipynb",
    )
    login(page, portal, "alice")
    page.goto(f"{portal.url}/jobs/{job.pk}/")
    page.click("#sweep")
    page.fill("#id_sweep-alpha", "1, 2")
    page.fill("#id_sweep-beta", "0.1, 0.2")
    page.fill("#id_max_concurrent", "2")
    with page.expect_navigation():
        page.click("#group-submit")
    group = RunGroup.objects.get()
    runs = wait_group_done(group, worker)
    assert sorted((r.parameters["alpha"], r.parameters["beta"]) for r in runs) == [
        (1, 0.1),
        (1, 0.2),
        (2, 0.1),
        (2, 0.2),
    ]
    assert all(r.state == Run.State.SUCCEEDED for r in runs), [r.state_reason for r in runs]
    page.reload()
    table = page.locator("#group-table")
    expect(table.locator("tbody tr")).to_have_count(4)
    expect(table.locator("thead")).to_contain_text("score")
    # Sorted by the recorded score, descending: 20.2 first.
    header = table.locator("thead th", has_text="score")
    header.click()
    header.click()
    expect(table.locator("tbody tr").first).to_contain_text("20.2")
    # The chart: score against alpha, four points.
    page.select_option("#sweep-value", "score")
    page.select_option("#sweep-parameter", "alpha")
    expect(page.locator("#sweep-chart .scatterlayer .point")).to_have_count(4)
    assert errors == [], errors
