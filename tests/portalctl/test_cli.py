"""portalctl against a fake API (httpx.MockTransport): arguments, --json, exit codes,
retries with one Idempotency-Key, and what it prints when a run fails."""

import gzip
import json
import uuid

import httpx
import pytest

from tests.conftest import NOTEBOOKS
from tests.portalctl.conftest import URL, multipart_fields, run_body

RUNNING = {"started_at": "2026-02-01T10:00:00Z", "total": 4}


@pytest.fixture
def notebook(tmp_path):
    path = tmp_path / "report.ipynb"
    path.write_bytes((NOTEBOOKS / "trivial.ipynb").read_bytes())
    return path


def test_run_uploads_the_notebook_with_its_parameters_and_a_fresh_key(fake, portalctl, notebook):
    fake.json("POST", "/api/runs/", run_body(), status=201)
    result = portalctl("run", str(notebook), "-p", "x", "3", "-p", "name", "two words -p")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "42\n"
    (request,) = fake.sent("POST", "/api/runs/")
    assert request.headers["Authorization"] == "Bearer pap_test_token"
    uuid.UUID(request.headers["Idempotency-Key"])  # a random UUID
    fields = multipart_fields(request)
    assert fields["notebook"] == ("report.ipynb", notebook.read_bytes())
    assert json.loads(fields["parameters"][1]) == {"x": "3", "name": "two words -p"}
    assert "job" not in fields
    assert f"{URL}/runs/42/" in result.stderr
    # Another invocation is another request: another key.
    portalctl("run", str(notebook))
    keys = {r.headers["Idempotency-Key"] for r in fake.sent("POST", "/api/runs/")}
    assert len(keys) == 2


def test_run_job_without_a_notebook_runs_the_jobs_current_version(fake, portalctl):
    fake.json("POST", "/api/jobs/7/run/", run_body(), status=201)
    result = portalctl("run", "--job", "7", "-p", "x", "5", "--idempotency-key", "ci-123", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == run_body()
    (request,) = fake.sent("POST", "/api/jobs/7/run/")
    assert json.loads(request.content) == {"parameters": {"x": "5"}}
    assert request.headers["Idempotency-Key"] == "ci-123"


def test_run_job_with_a_notebook_sends_it_as_that_jobs_file(fake, portalctl, notebook):
    fake.json("POST", "/api/runs/", run_body(), status=201)
    assert portalctl("run", str(notebook), "--job", "7").exit_code == 0
    assert multipart_fields(fake.sent("POST", "/api/runs/")[0])["job"] == (None, b"7")


@pytest.mark.parametrize(
    "args, message",
    [
        (["run"], "Usage"),
        (["run", "--json"], "NOTEBOOK file, or --job"),
        (["run", "--job", "7", "-p", "x"], "needs a NAME and a VALUE"),
        (["run", "missing.ipynb"], "does not exist"),
    ],
)
def test_bad_arguments_exit_2_without_a_request(fake, portalctl, args, message):
    result = portalctl(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert result.stdout == "" or "Usage" in result.stdout
    assert fake.requests == []


def test_wait_shows_progress_and_downloads_the_output_next_to_the_notebook(
    fake, portalctl, notebook
):
    fake.json("POST", "/api/runs/", run_body(), status=201)
    fake.on(
        "GET",
        "/api/runs/42/",
        # The clock is the server's: duration_seconds, or started_at to its Date header.
        httpx.Response(
            200,
            json=run_body(state="RUNNING", **RUNNING, done=2),
            headers={"Date": "Sun, 01 Feb 2026 10:00:41 GMT"},
        ),
        httpx.Response(
            200, json=run_body(state="SUCCEEDED", **RUNNING, done=4, duration_seconds=65.2)
        ),
    )
    fake.on("GET", "/api/runs/42/output.ipynb", httpx.Response(200, content=b'{"cells": []}'))
    result = portalctl("run", str(notebook), "--wait")
    assert result.exit_code == 0, result.stderr
    assert "run 42: cell 3 of 4 · 0:41" in result.stderr
    output = notebook.with_name("report.output.ipynb")
    assert output.read_bytes() == b'{"cells": []}'
    assert result.stdout == f"run 42 SUCCEEDED in 1:05; output: {output}\n"
    assert fake.sleeps == [1.0, 1.0]  # one poll interval before each GET


def test_wait_json_prints_only_the_final_run(fake, portalctl, notebook, tmp_path):
    final = run_body(state="SUCCEEDED", **RUNNING, done=4)
    fake.json("POST", "/api/runs/", run_body(), status=201)
    fake.json("GET", "/api/runs/42/", final)
    fake.on("GET", "/api/runs/42/output.ipynb", httpx.Response(200, content=b"{}"))
    out = tmp_path / "elsewhere.ipynb"
    result = portalctl("run", str(notebook), "--output", str(out), "--json")  # implies --wait
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == final
    assert out.read_bytes() == b"{}"


def test_a_failed_run_prints_its_cell_and_exception_and_exits_1(fake, portalctl, notebook):
    failed = run_body(
        state="FAILED",
        **RUNNING,
        done=3,
        error={
            "cell_index": 2,
            "ename": "ZeroDivisionError",
            "evalue": "division by zero",
            "traceback": "...",
        },
    )
    fake.json("POST", "/api/runs/", failed, status=201)
    fake.on("GET", "/api/runs/42/output.ipynb", httpx.Response(200, content=b"{}"))
    result = portalctl("run", str(notebook), "--wait", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == failed
    assert (
        "run 42 FAILED at cell index 2 (code cell 3 of 4): ZeroDivisionError: division by zero"
        in result.stderr
    )
    assert notebook.with_name("report.output.ipynb").exists()  # to look at the traceback


@pytest.mark.parametrize("state", ["TIMED_OUT", "CANCELLED", "LOST"])
def test_any_other_end_than_success_exits_1(fake, portalctl, state):
    fake.json("POST", "/api/jobs/7/run/", run_body(state=state, state_reason="why"), status=201)
    fake.json(
        "GET",
        "/api/runs/42/output.ipynb",
        {"code": "no_output", "detail": "No output."},
        status=404,
    )
    result = portalctl("run", "--job", "7", "--wait")
    assert result.exit_code == 1
    assert f"run 42 {state}: why" in result.stderr
    assert "no output notebook: No output. (no_output)" in result.stderr


def test_a_succeeded_run_whose_output_cannot_be_saved_exits_2(fake, portalctl, notebook):
    fake.json("POST", "/api/runs/", run_body(state="SUCCEEDED"), status=201)
    fake.json(
        "GET", "/api/runs/42/output.ipynb", {"code": "no_output", "detail": "Gone."}, status=404
    )
    assert portalctl("run", str(notebook), "--wait").exit_code == 2


def test_transient_errors_are_retried_with_the_same_idempotency_key(fake, portalctl, notebook):
    fake.on(
        "POST",
        "/api/runs/",
        httpx.ConnectError("refused"),
        httpx.Response(502),
        httpx.Response(503, headers={"Retry-After": "3"}),
        httpx.ReadError("reset after sending"),
        httpx.Response(201, json=run_body()),
    )
    result = portalctl("run", str(notebook))
    assert result.exit_code == 0, result.stderr
    sent = fake.sent("POST", "/api/runs/")
    assert len(sent) == 5
    assert len({r.headers["Idempotency-Key"] for r in sent}) == 1
    assert {multipart_fields(r)["notebook"][1] for r in sent} == {notebook.read_bytes()}
    # Backoff: 0.5 s then 1 s (each with jitter down to half), Retry-After, then 4 s.
    first, second, third, fourth = fake.sleeps
    assert 0.25 <= first <= 0.5 and 0.5 <= second <= 1 and third == 3 and 2 <= fourth <= 4


def test_giving_up_after_the_last_attempt_exits_2(fake, portalctl, notebook):
    fake.on("POST", "/api/runs/", httpx.ConnectError("Connection refused"))
    result = portalctl("run", str(notebook), "--json")
    assert result.exit_code == 2
    assert len(fake.sent("POST", "/api/runs/")) == 5
    assert f"cannot reach {URL}: Connection refused (connection_error)" in result.stderr
    assert result.stdout == ""


def test_a_launch_is_not_repeated_once_the_server_may_have_seen_it(fake, portalctl):
    fake.on("POST", "/api/clusters/", httpx.ReadError("reset"))
    assert portalctl("clusters", "launch", "--workers", "2").exit_code == 2
    assert len(fake.sent("POST", "/api/clusters/")) == 1
    fake.on("POST", "/api/clusters/", httpx.Response(503))
    assert portalctl("clusters", "launch", "--workers", "2").exit_code == 2
    assert len(fake.sent("POST", "/api/clusters/")) == 2
    # A connection never made: nothing reached the server, so it is tried again.
    fake.on(
        "POST",
        "/api/clusters/",
        httpx.ConnectError("refused"),
        httpx.Response(201, json={"id": 5, "name": "curie", "state": "PENDING"}),
    )
    assert portalctl("clusters", "launch", "--workers", "2").exit_code == 0
    assert len(fake.sent("POST", "/api/clusters/")) == 4


@pytest.mark.parametrize(
    "status, body",
    [
        (401, {"code": "invalid_token", "detail": "Invalid token."}),
        (403, {"code": "missing_scope", "detail": "This token lacks the scope “run”."}),
        (403, {"code": "limit_exceeded", "detail": "You have 3 runs running; the limit is 3."}),
        (429, {"code": "rate_limited", "detail": "Too many uploads; try again in 5 minutes."}),
        (
            400,
            {
                "code": "invalid",
                "detail": "x: expected a whole number (got 'abc')",
                "errors": {"parameters": ["x: expected a whole number (got 'abc')"]},
            },
        ),
    ],
)
def test_refusals_print_the_apis_detail_and_exit_2(fake, portalctl, notebook, status, body):
    fake.json("POST", "/api/runs/", body, status=status)
    result = portalctl("run", str(notebook), "--wait", "--json")
    assert result.exit_code == 2
    assert f"portalctl: {body['detail']} ({body['code']})" in result.stderr
    assert result.stdout == ""
    assert len(fake.sent("POST", "/api/runs/")) == 1  # refusals are not retried


def test_a_non_json_error_page_is_reported_by_its_status(fake, portalctl):
    fake.on("GET", "/api/runs/3/", httpx.Response(500, text="<h1>Server Error</h1>"))
    result = portalctl("runs", "show", "3")
    assert result.exit_code == 2
    assert f"HTTP 500 Internal Server Error from {URL}/api/runs/3/ (http_500)" in result.stderr


JOB = {"id": 7, "name": "Daily", "schedule_kind": "daily", "enabled": True, "next_run_at": None}
CLUSTER = {"id": 5, "name": "curie", "backend": "local", "size": 2, "state": "READY"}


@pytest.mark.parametrize(
    "args, method, path, body",
    [
        (["whoami"], "GET", "/api/me/", {"id": 1, "email": "a@example.com", "scopes": ["read"]}),
        (["jobs", "list"], "GET", "/api/jobs/", [JOB]),
        (["jobs", "show", "7"], "GET", "/api/jobs/7/", JOB),
        (["jobs", "pause", "7"], "POST", "/api/jobs/7/pause/", {**JOB, "enabled": False}),
        (["jobs", "resume", "7"], "POST", "/api/jobs/7/resume/", JOB),
        (["runs", "list"], "GET", "/api/runs/", [run_body()]),
        (["runs", "show", "42"], "GET", "/api/runs/42/", run_body()),
        (["runs", "cancel", "42"], "POST", "/api/runs/42/cancel/", run_body(state="CANCELLED")),
        (["clusters", "list"], "GET", "/api/clusters/", [CLUSTER]),
        (["clusters", "launch", "--workers", "2"], "POST", "/api/clusters/", CLUSTER),
        (["clusters", "terminate", "5"], "POST", "/api/clusters/5/terminate/", CLUSTER),
    ],
)
def test_json_prints_the_apis_json_and_nothing_else(fake, portalctl, args, method, path, body):
    fake.json(method, path, body)
    result = portalctl(*args, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == body
    assert [(r.method, r.url.path) for r in fake.requests] == [(method, path)]
    # Without --json: a human rendering that mentions the object.
    human = portalctl(*args)
    assert human.exit_code == 0
    assert str(body[0]["id"] if isinstance(body, list) else body["id"]) in human.stdout


def test_runs_list_filters_and_follows_cursor_pages_on_the_configured_origin(fake, portalctl):
    page1 = {"next": "http://elsewhere.example/api/runs/?cursor=abc", "results": [run_body(3)]}
    page2 = {"next": "http://portal.test/api/runs/?cursor=def", "results": [run_body(2)]}
    fake.json("GET", "/api/runs/", page1, page2, {"next": None, "results": [run_body(1)]})
    result = portalctl("runs", "list", "--job", "7", "--state", "failed", "--limit", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert [r["id"] for r in json.loads(result.stdout)] == [3, 2]
    first, second = fake.requests  # stops once it has --limit runs
    assert dict(first.url.params) == {"job": "7", "state": "FAILED"}
    assert second.url.host == "portal.test" and dict(second.url.params) == {"cursor": "abc"}


def test_runs_output_streams_to_a_file(fake, portalctl, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake.on("GET", "/api/runs/42/output.html", httpx.Response(200, content=b"<html>"))
    result = portalctl("runs", "output", "42", "--html")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "run-42.output.html").read_bytes() == b"<html>"
    fake.json(
        "GET",
        "/api/runs/43/output.ipynb",
        {"code": "no_output", "detail": "No output."},
        status=404,
    )
    result = portalctl("runs", "output", "43")
    assert result.exit_code == 2 and "No output." in result.stderr
    assert not (tmp_path / "run-43.output.ipynb").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-42.output.html"]  # no .part


def test_runs_output_saves_a_gzip_answer_decoded(fake, portalctl, tmp_path, monkeypatch):
    # The portal sends outputs gzipped to clients that accept it (jobs.compression).
    monkeypatch.chdir(tmp_path)
    notebook = b'{"cells": []}' * 1000
    answer = httpx.Response(
        200, content=gzip.compress(notebook), headers={"Content-Encoding": "gzip"}
    )
    fake.on("GET", "/api/runs/42/output.ipynb", answer)
    result = portalctl("runs", "output", "42")
    assert result.exit_code == 0, result.stderr
    assert "gzip" in fake.requests[0].headers["Accept-Encoding"]
    assert (tmp_path / "run-42.output.ipynb").read_bytes() == notebook


def test_runs_show_explains_a_failure(fake, portalctl):
    fake.json(
        "GET",
        "/api/runs/9/",
        run_body(9, "FAILED", error={"cell_index": 1, "ename": "KeyError", "evalue": "'a'"}),
    )
    result = portalctl("runs", "show", "9")
    assert result.exit_code == 0
    assert "state: FAILED" in result.stdout
    assert "run 9 FAILED at cell index 1: KeyError: 'a'" in result.stderr


@pytest.mark.parametrize("final, code", [("READY", 0), ("FAILED", 1)])
def test_clusters_launch_wait_polls_until_ready(fake, portalctl, final, code):
    fake.json("POST", "/api/clusters/", {**CLUSTER, "state": "PENDING"}, status=201)
    fake.json(
        "GET",
        "/api/clusters/5/",
        {**CLUSTER, "state": "STARTING"},
        {**CLUSTER, "state": final, "state_reason": "no capacity" if code else ""},
    )
    result = portalctl("clusters", "launch", "--workers", "3", "--name", "curie", "--wait")
    assert result.exit_code == code, result.stderr
    (launch,) = fake.sent("POST", "/api/clusters/")
    assert json.loads(launch.content) == {"size": 3, "name": "curie"}
    assert len(fake.sent("GET", "/api/clusters/5/")) == 2
    assert f"state: {final}" in result.stdout
    assert fake.sleeps == [2.0, 2.0]
