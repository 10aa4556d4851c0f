"""Fixtures of the notification tests: a webhook receiver on loopback, eager tasks, and
a job with a finished run."""

import hmac
import json
import threading
from dataclasses import dataclass, field
from hashlib import sha256
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jobs import services as job_services
from jobs.executor import Outcome
from jobs.models import Run
from portal.celery import app
from tests.jobs.test_runs import executed_notebook


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signed: bool | None  # None: no secret to check against

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: answers the statuses of ``script`` in turn (then
    200), and checks X-Portal-Signature when ``secret`` is set (401 if it is wrong)."""

    port: int = 0
    script: list[int] = field(default_factory=list)
    secret: str = ""
    location: str = ""
    received: list[Received] = field(default_factory=list)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def events(self) -> list[str]:
        return [r.json.get("event") or r.json.get("title") for r in self.received]


@pytest.fixture
def receiver():
    state = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            signed = None
            if state.secret:
                want = "sha256=" + hmac.new(state.secret.encode(), body, sha256).hexdigest()
                signed = hmac.compare_digest(want, self.headers.get("X-Portal-Signature", ""))
            with lock:
                state.received.append(Received(self.path, dict(self.headers), body, signed))
                status = state.script.pop(0) if state.script else 200
            if signed is False:
                status = 401
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", state.location)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _loopback_only(settings):
    """The tests allow loopback, and only loopback, as a destination; retries come at once
    (no waiting in tests: the backoff formula has its own tests)."""
    settings.NOTIFY_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
    settings.NOTIFY_RETRY_BACKOFF = 0.0
    settings.NOTIFY_RETRY_MAX_DELAY = 0.0


@pytest.fixture
def eager(django_capture_on_commit_callbacks):
    """``eager(fn, *args)``: call ``fn``, then the tasks it enqueued on commit and the tasks
    those enqueue, in this process, errors raised; returns what ``fn`` returned."""
    saved = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = app.conf.task_eager_propagates = True

    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    try:
        yield run
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = saved


@pytest.fixture
def finish(alice, tmp_path):
    """``finish(job, status)``: a run of ``job`` started now and ended with ``status``
    ("failed", "succeeded"...), through the services a worker calls."""

    def run(job, status: str) -> Run:
        run = job_services.claim_run(job_services.run_now(job, alice).pk, "w")
        message = "ZeroDivisionError: division by zero" if status == "failed" else ""
        error = (
            {"cell_index": 2, "ename": "ZeroDivisionError", "evalue": "division by zero"}
            if status == "failed"
            else None
        )
        outcome = Outcome(status, executed_notebook(tmp_path), error=error, message=message)
        return job_services.finish_run(run, outcome)

    return run
