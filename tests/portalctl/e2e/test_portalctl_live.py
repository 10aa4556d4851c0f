"""portalctl end to end: the installed console script, as a subprocess, against a live
portal and a real worker, authenticated with an API token in its environment."""

import http.server
import os
import subprocess
import threading
from pathlib import Path

import httpx
import nbformat
import pytest

from jobs.models import Run
from tests.conftest import NOTEBOOKS
from tests.processes import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PORTALCTL = ROOT / ".venv" / "bin" / "portalctl"
RUN_TIMEOUT = 240  # s for one portalctl invocation: kernel start, a few cells, download


@pytest.fixture
def token(alice):
    from api.models import ApiToken

    return ApiToken.issue(alice, "CI", ["read", "run"])[1]


def portalctl(
    url: str, token: str, home: Path, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run the console script the project installs, configured by its environment only."""
    env = {
        **os.environ,
        "PORTAL_URL": url,
        "PORTAL_TOKEN": token,
        "HOME": str(home),
        "PORTALCTL_CONFIG": str(home / "no-config.toml"),
    }
    return subprocess.run(
        [str(PORTALCTL), *args],
        env=env,
        cwd=cwd or home,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def copy_notebook(name: str, directory: Path) -> Path:
    path = directory / name
    path.write_bytes((NOTEBOOKS / name).read_bytes())
    return path


def test_run_with_a_parameter_waits_and_downloads_the_output(
    portal, worker, alice, token, tmp_path
):
    notebook = copy_notebook("trivial.ipynb", tmp_path)
    out = tmp_path / "out" / "result.ipynb"
    out.parent.mkdir()
    done = portalctl(
        portal.url,
        token,
        tmp_path,
        "run",
        str(notebook),
        "-p",
        "name",
        "from CI",
        "-p",
        "x",
        "21",
        "--wait",
        "--output",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert f"output: {out}" in done.stdout
    assert "cell " in done.stderr  # the progress line
    run = Run.objects.get(job__owner=alice)
    assert run.state == Run.State.SUCCEEDED and run.trigger == Run.Trigger.CLI
    assert run.job.name == "CLI: trivial.ipynb"
    assert run.parameters == {"name": "from CI", "x": 21}
    output = nbformat.read(out, as_version=4)
    injected = [c for c in output.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "from CI" in injected[0].source
    texts = [
        o.get("data", {}).get("text/plain", "") + o.get("text", "")
        for c in output.cells
        if c.cell_type == "code"
        for o in c.outputs
    ]
    assert "total 42\n" in texts and "'hello from CI'" in texts
    # The same file again reuses the job (one manual job per user and file name).
    again = portalctl(portal.url, token, tmp_path, "run", str(notebook), "--json")
    assert again.returncode == 0, again.stderr
    assert Run.objects.filter(job=run.job).count() == 2


def test_a_failing_notebook_exits_1_naming_the_cell_and_exception(
    portal, worker, alice, token, tmp_path
):
    notebook = copy_notebook("failing.ipynb", tmp_path)
    done = portalctl(portal.url, token, tmp_path, "run", str(notebook), "--wait", "--json")
    assert done.returncode == 1, done.stderr
    run = Run.objects.get(job__owner=alice)
    assert run.state == Run.State.FAILED
    assert f"run {run.pk} FAILED at cell index {run.error_cell_index}" in done.stderr
    assert "ZeroDivisionError: division by zero" in done.stderr
    assert '"state": "FAILED"' in done.stdout  # --json: the run, and only it, on stdout
    assert tmp_path.joinpath("failing.output.ipynb").exists()  # the traceback is in it


class FlakyProxy(http.server.ThreadingHTTPServer):
    """A loopback proxy to the portal that loses the answer to the first POST /api/runs/:
    the portal did the work, the client sees a 502 and must retry."""

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.posts: list[dict[str, str]] = []


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: FlakyProxy

    def log_message(self, format, *args):  # keep the test output quiet
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
        upstream = httpx.request(
            self.command,
            self.server.upstream + self.path,
            headers=headers,
            content=body,
            timeout=60,
        )
        if self.command == "POST" and self.path == "/api/runs/":
            self.server.posts.append(dict(self.headers))
            if len(self.server.posts) == 1:
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(upstream.status_code)
        for name in ("Content-Type", "Date"):
            if name in upstream.headers:
                self.send_header(name, upstream.headers[name])
        self.send_header("Content-Length", str(len(upstream.content)))
        self.end_headers()
        self.wfile.write(upstream.content)

    do_GET = do_POST = _forward


def test_a_retried_run_now_with_the_same_key_makes_one_run(portal, alice, token, tmp_path):
    notebook = copy_notebook("trivial.ipynb", tmp_path)
    proxy = FlakyProxy(portal.url)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        done = portalctl(url, token, tmp_path, "run", str(notebook), "-p", "x", "2")
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert done.returncode == 0, done.stderr
    first, second = proxy.posts
    assert first["Idempotency-Key"] == second["Idempotency-Key"]
    (run,) = Run.objects.filter(job__owner=alice)
    assert done.stdout == f"{run.pk}\n"
    # An explicit key does the same across invocations (a CI job re-run, say).
    args = ("run", str(notebook), "--idempotency-key", "build-1234")
    first_id = portalctl(portal.url, token, tmp_path, *args).stdout
    assert portalctl(portal.url, token, tmp_path, *args).stdout == first_id
    assert Run.objects.filter(job__owner=alice).count() == 2
