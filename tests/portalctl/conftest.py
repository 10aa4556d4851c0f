"""A fake portal API for portalctl's unit tests: an httpx.MockTransport answering from a
script of responses per route, and recording every request it saw."""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from portalctl import cli
from portalctl.client import PortalClient

URL = "http://portal.test"
TOKEN = "pap_test_token"

#: One scripted answer: a response, an exception to raise, or a function of the request.
Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


@dataclass
class FakePortal:
    """Routes ``(METHOD, path)`` to a list of answers, given in turn; the last one repeats."""

    routes: dict[tuple[str, str], list[Answer]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)

    def on(self, method: str, path: str, *answers: Answer) -> None:
        self.routes[(method, path)] = list(answers)

    def json(self, method: str, path: str, *bodies: Any, status: int = 200) -> None:
        self.on(method, path, *(httpx.Response(status, json=body) for body in bodies))

    def handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answers = self.routes.get((request.method, request.url.path))
        if not answers:
            return httpx.Response(404, json={"code": "not_found", "detail": "Not found."})
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


@pytest.fixture
def fake(monkeypatch, tmp_path) -> FakePortal:
    """The fake portal, with portalctl configured for it through the environment and an
    empty config file of its own (never the user's)."""
    portal = FakePortal()
    monkeypatch.setenv("PORTAL_URL", URL)
    monkeypatch.setenv("PORTAL_TOKEN", TOKEN)
    monkeypatch.setenv("PORTALCTL_CONFIG", str(tmp_path / "config.toml"))

    def make(config):
        return PortalClient(
            config, transport=httpx.MockTransport(portal.handle), sleep=portal.sleeps.append
        )

    monkeypatch.setattr(cli, "make_client", make)
    return portal


@pytest.fixture
def portalctl() -> Callable[..., Any]:
    """Run portalctl in-process: ``portalctl("runs", "show", "3")`` returns the result with
    ``exit_code``, ``stdout`` and ``stderr``."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(cli.app, list(args), input=input, prog_name="portalctl")

    return invoke


def multipart_fields(request: httpx.Request) -> dict[str, tuple[str | None, bytes]]:
    """A multipart body's parts as ``{name: (file name or None, content)}``."""
    boundary = request.headers["Content-Type"].split("boundary=", 1)[1].encode()
    parts = {}
    for chunk in request.content.split(b"--" + boundary)[1:-1]:
        # Each part sits between "\r\n" after its boundary and "\r\n" before the next.
        head, _, body = chunk[2:-2].partition(b"\r\n\r\n")
        disposition = head.split(b"\r\n")[0].decode()
        name = disposition.split('name="', 1)[1].split('"', 1)[0]
        filename = (
            disposition.split('filename="', 1)[1].split('"', 1)[0]
            if "filename=" in disposition
            else None
        )
        parts[name] = (filename, body)
    return parts


def run_body(
    run_id: int = 42,
    state: str = "QUEUED",
    *,
    done: int = 0,
    total: int = 0,
    text: str | None = None,
    error: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A run as the API shows it (api/jobs.py RunDetailSerializer, abridged)."""
    if text is None:
        current = min(done + 1, total) if state == "RUNNING" else done
        text = f"cell {current} of {total}" if total else ""
    body = {
        "id": run_id,
        "job": 7,
        "job_name": "CLI: report.ipynb",
        "trigger": "cli",
        "state": state,
        "state_reason": "",
        "attempt": 1,
        "parameters": {},
        "created_at": "2026-02-01T10:00:00Z",
        "started_at": None,
        "finished_at": None,
        "duration_seconds": None,
        "progress": {
            "cells_done": done,
            "cells_total": total,
            "current_cell_index": None,
            "current_cell_head": "",
            "text": text,
        },
        "error": error,
        "web_url": f"http://portal.test/runs/{run_id}/",
    }
    body.update(fields)
    return body


def loads(text: str) -> Any:
    return json.loads(text)
