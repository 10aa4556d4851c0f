"""The API's docs in the browser: Swagger UI and Redoc draw the portal's schema from the
portal's own static files, with no request elsewhere and no CSP violation."""

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize(
    ("path", "operation"),
    [
        ("/api/docs/", ".opblock-summary-path[data-path='/api/runs/{id}/']"),
        ("/api/docs/redoc/", "text=Run a notebook file"),
    ],
    ids=["swagger-ui", "redoc"],
)
def test_the_docs_draw_the_schema_offline_under_the_csp(page, portal, alice, path, operation):
    console, finished = [], []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("requestfinished", lambda r: finished.append(r))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    login(page, portal, "alice")
    page.goto(f"{portal.url}{path}")
    expect(page.locator(operation).first).to_be_attached(timeout=30_000)
    # Redoc's bundle always draws the "API docs by Redocly" logo from its CDN: the CSP
    # blocks it before any request leaves (the hosts check below), and the bundle hides
    # the image when it fails. Every other violation is a failure.
    broken = [
        c
        for c in console
        if (c.startswith("pageerror") or "Content Security" in c)
        and "https://cdn.redoc.ly/redoc/logo-mini.svg" not in c
    ]
    assert broken == [], broken
    # What reached a server: requests the CSP blocked never leave the machine (Chromium
    # may still report them as requests, then as failed).
    hosts = {urlsplit(r.url).hostname for r in finished} - {None}
    assert hosts <= {"localhost", "127.0.0.1"}, hosts
