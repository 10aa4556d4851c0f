"""Fixtures of the end-to-end tests: a live portal on two origins, a Celery worker and
headless Chromium (Debian's /usr/bin/chromium driven by Python Playwright).

The portal is served by one live server thread bound to 127.0.0.1. The browser reaches
it as http://localhost:PORT (the portal origin) and http://127.0.0.1:PORT (the
user-content origin): two different hosts, hence two origins and two cookie jars, exactly
like the production split of portal and user-content domains. The ``portal`` fixture
points the settings at these origins before anything (the worker) reads them.

On a failing test the page is saved as var/test/e2e-<test>.png, and the worker's log
tail and the requests the server saw are attached to the report.
"""

import copy
import os
import re
import threading
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from telemetry import sample
from tests.processes import ROOT, Worker, flush_broker, wait_for

ARTIFACTS = ROOT / "var" / "test"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Default patience of Playwright actions and assertions (ms): generous, but bounded.
ACTION_TIMEOUT_MS = 30_000


# --- Reporting -------------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, save a screenshot and attach the worker log and the server's requests."""
    outcome = yield
    report = outcome.get_result()
    if report.when not in ("setup", "call") or not report.failed:
        return
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.name)
    for name in ("page", "page2"):
        page = getattr(item, "_e2e_pages", {}).get(name)
        if page is None or page.is_closed():
            continue
        path = ARTIFACTS / f"e2e-{safe}{'' if name == 'page' else '-' + name}.png"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path), full_page=True, timeout=10_000)
            report.sections.append((f"e2e screenshot ({name})", f"{path}\nURL: {page.url}"))
        except Exception as exc:  # the browser may be the thing that broke
            report.sections.append((f"e2e screenshot ({name})", f"failed: {exc}"))
    worker = getattr(item, "_e2e_worker", None)
    if worker is not None:
        report.sections.append(("worker log (tail)", worker.tail()))
    server = getattr(item, "_e2e_server", None)
    if server is not None:
        seen = "\n".join(
            f"{status} {host}{path}" for host, path, status in list(server.requests)[-60:]
        )
        report.sections.append(("requests the live server saw (last 60)", seen or "none"))


# --- The live portal ----------------------------------------------------------------------------


class _Recorder:
    """WSGI wrapper noting (host, path, status) of every request the server answers."""

    def __init__(self, app):
        self.app = app
        self.requests = []
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        entry = [environ.get("HTTP_HOST", ""), environ.get("PATH_INFO", ""), None]
        with self.lock:
            self.requests.append(entry)

        def recording_start_response(status, headers, exc_info=None):
            entry[2] = status.split(" ", 1)[0]
            return (
                start_response(status, headers, exc_info)
                if exc_info
                else start_response(status, headers)
            )

        return self.app(environ, recording_start_response)

    def clear(self):
        with self.lock:
            self.requests.clear()


@pytest.fixture(scope="package")
def e2e_server():
    """A live server thread bound to 127.0.0.1 on a free port, serving the plain WSGI app.

    Django's LiveServerThread wraps the application in its media-files handler (which,
    with MEDIA_URL unset, would answer any path that exists under the working directory)
    and optionally a static handler; unwrapping it here leaves WhiteNoise and the
    middleware stack to answer every request, as gunicorn does in production.
    """
    from django.conf import settings
    from django.test.testcases import LiveServerThread

    # WhiteNoise warns about a missing STATIC_ROOT (statics come from the finders here).
    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
    recorder = None

    def handler(media_handler):
        nonlocal recorder
        recorder = _Recorder(media_handler.application)
        return recorder

    thread = LiveServerThread("127.0.0.1", static_handler=handler)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait(timeout=30)
    if thread.error:
        raise thread.error
    try:
        yield SimpleNamespace(thread=thread, port=thread.port, recorder=recorder)
    finally:
        thread.terminate()


@pytest.fixture
def portal(request, e2e_server, settings):
    """The portal on http://localhost:PORT and user content on http://127.0.0.1:PORT.

    Overrides every setting derived from the two origins (they are computed once at import
    from the environment). django-csp and the user-content middleware read the settings
    at request time, so the live server thread picks the overrides up at once.
    """
    port = e2e_server.port
    origin = f"http://localhost:{port}"
    content_origin = f"http://127.0.0.1:{port}"
    settings.PORTAL_ORIGIN = origin
    settings.USERCONTENT_ORIGIN = content_origin
    settings.USERCONTENT_HOST = "127.0.0.1"
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
    settings.CSRF_TRUSTED_ORIGINS = [origin]
    policy = copy.deepcopy(settings.CONTENT_SECURITY_POLICY)
    policy["DIRECTIVES"]["frame-src"] = [content_origin]
    settings.CONTENT_SECURITY_POLICY = policy
    e2e_server.recorder.clear()
    request.node._e2e_server = e2e_server.recorder
    return SimpleNamespace(
        url=origin,
        content_origin=content_origin,
        port=port,
        server_requests=e2e_server.recorder.requests,
    )


# --- The worker ----------------------------------------------------------------------------------


E2EWorker = Worker  # kills itself if it fails to start, and shows its log's tail


@pytest.fixture
def worker(request, portal):
    """A real Celery worker (queues runs, control and clusters) on this session's broker prefix.

    Started after ``portal``: its environment copies PORTAL_ORIGIN/USERCONTENT_ORIGIN.
    It gets Django's async-safety check back (see ``playwright_instance``).
    """
    flush_broker()
    proc = E2EWorker(name="e2e", DJANGO_ALLOW_ASYNC_UNSAFE="")
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


def wait_run_state(run_id, states, timeout, worker=None):
    """Poll the database until run ``run_id`` is in one of ``states``; return the run."""
    from jobs.models import Run

    def check():
        run = Run.objects.filter(pk=run_id).first()
        return run if run is not None and run.state in states else None

    try:
        return wait_for(check, timeout=timeout, interval=0.25, message=f"run {run_id} in {states}")
    except AssertionError as exc:
        run = Run.objects.filter(pk=run_id).first()
        story = (
            f"state={run.state} reason={run.state_reason!r} "
            f"error={run.error_ename}: {run.error_evalue}"
            if run
            else "missing"
        )
        raise AssertionError(f"{exc}: {story}\n{worker.tail() if worker else ''}") from None


# --- Data ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pings_sample() -> Path:
    """A small synthetic pings dataset for examples/telemetry_hello_world.ipynb, where
    notebooks' sandboxes may read it."""
    from tests.sandboxes import shared_dir

    out = shared_dir("pings") / "pings"
    sample.generate(str(out), pings=5000, days=3)
    return out


# --- The browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def playwright_instance():
    """Playwright (sync API) for the e2e package.

    The sync API keeps an asyncio event loop running in the test thread (in a greenlet)
    from start() to stop(); Django's ORM then refuses every call from that thread with
    SynchronousOnlyOperation, although the calls are plain blocking ones that never run
    inside the loop. DJANGO_ALLOW_ASYNC_UNSAFE lifts the check while Playwright runs; the
    package scope ends both before any test outside tests/e2e runs.
    """
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    pw = sync_playwright().start()
    try:
        yield pw
    finally:
        pw.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="package")
def browser(playwright_instance):
    """Debian's Chromium, headless (never a Playwright-downloaded browser)."""
    browser = playwright_instance.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000
    )
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def context(browser, portal):
    """A fresh browser context (empty cookie jar) that records every request it makes."""
    ctx = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1000})
    ctx.set_default_timeout(ACTION_TIMEOUT_MS)
    ctx.set_default_navigation_timeout(ACTION_TIMEOUT_MS)
    requests = ctx.requests = []  # every Request object, in order (frames and downloads included)
    ctx.on("request", lambda req: requests.append(req))
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(request, context):
    page = context.new_page()
    request.node._e2e_pages = {"page": page}
    return page


# --- Helpers --------------------------------------------------------------------------------------


def login(page, portal, name: str) -> None:
    """Sign in through the allauth form as the test user ``name`` (see tests/conftest.py)."""
    page.goto(f"{portal.url}/accounts/login/")
    page.fill('input[name="login"]', f"{name}@example.com")
    page.fill('input[name="password"]', f"{name}-password-1")
    with page.expect_navigation():
        page.press('input[name="password"]', "Enter")
    if urlsplit(page.url).path.startswith("/accounts/login"):
        raise AssertionError(f"sign-in as {name} failed: {page.inner_text('main')[:500]}")
