"""Runs through the API: the filtered, cursor-paginated list; a run's state, progress,
timings, events and error summary; cancel and re-run; the outputs, streamed; and running a
notebook file (one manual job per user and file name), with its Idempotency-Key."""

import json
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from api.models import ApiToken, IdempotencyKey
from jobs import services
from jobs.models import Job, Run, RunEvent
from quotas import limits
from quotas.limits import LimitExceeded
from tests.conftest import notebook_bytes

pytestmark = pytest.mark.django_db

ALL_SCOPES = ["read", "run", "jobs", "clusters"]


def bearer(user, scopes=ALL_SCOPES):
    _, token = ApiToken.issue(user, "test", scopes)
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def notebook(name="trivial.ipynb", content=None):
    data = content if content is not None else notebook_bytes(name)
    return SimpleUploadedFile(name, data, "application/x-ipynb+json")


def changed_trivial() -> bytes:
    nb = json.loads(notebook_bytes("trivial.ipynb"))
    nb["cells"].append({"cell_type": "markdown", "id": "more", "metadata": {}, "source": ["More."]})
    return json.dumps(nb).encode()


def set_run(run, **fields):
    """Put ``run`` in the state a worker would have left it in."""
    Run.objects.filter(pk=run.pk).update(**fields)
    run.refresh_from_db()
    return run


def ids(response):
    assert response.status_code == 200, response.json()
    return [run["id"] for run in response.json()["results"]]


# --- List ----------------------------------------------------------------------------------


def test_the_list_holds_visible_runs_newest_first(client, alice, bob, staff, make_job):
    own = services.run_now(make_job(), alice)
    shared_job = make_job(owner=bob, visibility=Job.Visibility.SIGNED_IN)
    shared = services.run_now(shared_job, bob)
    private = services.run_now(make_job(owner=bob), bob)
    assert ids(client.get("/api/runs/", **bearer(alice, ["read"]))) == [shared.pk, own.pk]
    assert ids(client.get("/api/runs/", **bearer(staff))) == [private.pk, shared.pk, own.pk]
    body = client.get("/api/runs/", **bearer(alice)).json()
    assert body["next"] is None and body["previous"] is None


def test_the_list_filters_by_job_state_owner_and_time(client, alice, bob, make_job):
    job, other = make_job(), make_job(name="other")
    shared = make_job(owner=bob, visibility=Job.Visibility.SIGNED_IN)
    first = set_run(services.run_now(job, alice), state=Run.State.SUCCEEDED)
    second = services.run_now(other, alice)
    bobs = services.run_now(shared, bob)
    Run.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(days=2))

    def listed(query):
        return ids(client.get(f"/api/runs/?{query}", **bearer(alice)))

    assert listed(f"job={job.pk}") == [first.pk]
    assert listed("state=QUEUED") == [bobs.pk, second.pk]
    assert listed(f"owner={bob.pk}") == [bobs.pk]
    day_ago = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert listed(f"created_after={day_ago}") == [bobs.pk, second.pk]
    assert listed(f"created_before={day_ago}") == [first.pk]
    assert listed(f"owner={alice.pk}&state=SUCCEEDED") == [first.pk]


def test_bad_filters_are_400(client, alice):
    too_big = "99999999999999999999"  # no id column holds it: a 400, not a database error
    bad = ("state=DONE", "job=first", "created_after=yesterday", f"job={too_big}", "owner=0")
    for query in bad:
        response = client.get(f"/api/runs/?{query}", **bearer(alice))
        assert response.status_code == 400 and response.json()["code"] == "invalid", query


def test_the_list_is_paginated_by_cursor(client, alice, make_job):
    job = make_job()
    made = [services.run_now(job, alice).pk for _ in range(5)]
    seen, url = [], "/api/runs/?page_size=2"
    while url:
        response = client.get(url, **bearer(alice))
        seen += ids(response)
        url = response.json()["next"]
    assert seen == made[::-1]
    assert client.get("/api/runs/?cursor=bogus", **bearer(alice)).status_code == 404


# --- One run ---------------------------------------------------------------------------------


def test_a_run_reads_with_progress_timings_and_events(client, alice, make_job):
    job = make_job()
    run = services.run_now(job, alice, {"x": 9})
    started = timezone.now() - timedelta(seconds=41)
    set_run(
        run,
        state=Run.State.RUNNING,
        attempt=1,
        started_at=started,
        cells_total=12,
        cells_done=2,
        current_cell_index=4,
        current_cell_head="total = x * 2",
    )
    RunEvent.objects.create(run=run, attempt=1, state=Run.State.RUNNING, worker="w1")
    response = client.get(f"/api/runs/{run.pk}/", **bearer(alice, ["read"]))
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "RUNNING" and body["attempt"] == 1
    assert body["job"] == job.pk and body["job_name"] == job.name and body["owner"] == alice.pk
    assert body["parameters"] == {"x": 9}
    assert body["progress"] == {
        "cells_done": 2,
        "cells_total": 12,
        "current_cell_index": 4,
        "current_cell_head": "total = x * 2",
        "text": "cell 3 of 12",
    }
    assert 41 <= body["duration_seconds"] < 100 and body["finished_at"] is None
    assert [(e["state"], e["attempt"], e["worker"]) for e in body["events"]] == [
        ("QUEUED", 0, ""),
        ("RUNNING", 1, "w1"),
    ]
    assert body["error"] is None and body["outputs"] == {"ipynb": None, "html": None}
    assert body["web_url"].endswith(run.get_absolute_url())
    events = client.get(f"/api/runs/{run.pk}/events/", **bearer(alice)).json()
    assert events == body["events"]


def test_a_failed_run_reads_with_its_error_summary(client, alice, make_job):
    run = services.run_now(make_job(), alice)
    now = timezone.now()
    set_run(
        run,
        state=Run.State.FAILED,
        started_at=now - timedelta(seconds=3),
        finished_at=now,
        cells_total=5,
        cells_done=4,
        error_cell_index=3,
        error_ename="ZeroDivisionError",
        error_evalue="division by zero",
        error_traceback="Traceback ...\nZeroDivisionError: division by zero",
    )
    body = client.get(f"/api/runs/{run.pk}/", **bearer(alice)).json()
    assert body["error"] == {
        "cell_index": 3,
        "ename": "ZeroDivisionError",
        "evalue": "division by zero",
        "traceback": "Traceback ...\nZeroDivisionError: division by zero",
    }
    assert body["progress"]["text"] == "cell 4 of 5" and body["duration_seconds"] == 3.0


def test_others_private_runs_are_404(client, alice, bob, make_job):
    private = services.run_now(make_job(owner=bob), bob)
    for path in ("", "events/", "output.ipynb", "output.html"):
        response = client.get(f"/api/runs/{private.pk}/{path}", **bearer(alice))
        assert response.status_code == 404 and response.json()["code"] == "not_found", path
    for path in ("cancel/", "rerun/"):
        assert client.post(f"/api/runs/{private.pk}/{path}", **bearer(alice)).status_code == 404


# --- Cancel and re-run -------------------------------------------------------------------------


def test_cancel_a_queued_run(client, alice, make_job):
    run = services.run_now(make_job(), alice)
    response = client.post(f"/api/runs/{run.pk}/cancel/", **bearer(alice, ["run"]))
    assert response.status_code == 200
    assert response.json()["state"] == "CANCELLED"
    assert Run.objects.get(pk=run.pk).state == Run.State.CANCELLED
    again = client.post(f"/api/runs/{run.pk}/cancel/", **bearer(alice))
    assert again.status_code == 409
    assert again.json() == {"code": "conflict", "detail": "The run had already ended (Cancelled)."}


def test_cancel_a_running_run_asks_its_worker(client, alice, make_job):
    run = set_run(services.run_now(make_job(), alice), state=Run.State.RUNNING, attempt=1)
    body = client.post(f"/api/runs/{run.pk}/cancel/", **bearer(alice)).json()
    assert body["state"] == "RUNNING" and body["cancel_requested_at"] is not None


def test_a_shared_run_is_readable_but_not_cancelled_by_others(client, alice, bob, make_job):
    shared = make_job(owner=bob, visibility=Job.Visibility.SIGNED_IN)
    run = services.run_now(shared, bob)
    assert client.get(f"/api/runs/{run.pk}/", **bearer(alice)).status_code == 200
    assert client.post(f"/api/runs/{run.pk}/cancel/", **bearer(alice)).status_code == 404
    assert client.post(f"/api/runs/{run.pk}/rerun/", **bearer(alice)).status_code == 404
    assert Run.objects.get(pk=run.pk).state == Run.State.QUEUED and Run.objects.count() == 1


def test_rerun_repeats_the_version_and_parameters(client, alice, make_job):
    job = make_job()
    run = set_run(services.run_now(job, alice, {"x": 3}), state=Run.State.FAILED)
    services.upload_version(job, alice, changed_trivial(), "trivial.ipynb")
    response = client.post(f"/api/runs/{run.pk}/rerun/", **bearer(alice))
    assert response.status_code == 201
    new = Run.objects.get(pk=response.json()["id"])
    assert new.trigger == Run.Trigger.RERUN and new.version_id == run.version_id
    assert new.parameters == {"x": 3} and response["Location"] == f"/api/runs/{new.pk}/"


def test_rerun_obeys_the_limits(client, alice, make_job, settings):
    settings.USER_MAX_ACTIVE_RUNS = 1
    run = services.run_now(make_job(), alice)
    response = client.post(f"/api/runs/{run.pk}/rerun/", **bearer(alice))
    with pytest.raises(LimitExceeded) as page:
        limits.check_active_runs(alice)
    assert response.status_code == 403
    assert response.json() == {"code": "limit_exceeded", "detail": page.value.message}
    settings.USER_MAX_ACTIVE_RUNS = 10
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "rerun": "1/h"}
    assert client.post(f"/api/runs/{run.pk}/rerun/", **bearer(alice)).status_code == 201
    assert client.post(f"/api/runs/{run.pk}/rerun/", **bearer(alice)).status_code == 429


def test_changes_to_runs_need_the_run_scope(client, alice, make_job):
    run = services.run_now(make_job(), alice)
    read_only = bearer(alice, ["read", "jobs"])
    for path in ("cancel/", "rerun/"):
        response = client.post(f"/api/runs/{run.pk}/{path}", **read_only)
        assert response.status_code == 403
        assert response.json()["detail"] == "This token lacks the scope “run”."
    upload = client.post("/api/runs/", {"notebook": notebook()}, **read_only)
    assert upload.status_code == 403
    for path in ("", f"{run.pk}/", f"{run.pk}/events/", f"{run.pk}/output.ipynb"):
        response = client.get(f"/api/runs/{path}", **bearer(alice, ["run"]))
        assert response.status_code == 403 and "“read”" in response.json()["detail"], path
    assert Run.objects.get().state == Run.State.QUEUED


# --- Outputs ---------------------------------------------------------------------------------


def finished_with_outputs(run):
    ipynb = default_storage.save(f"runs/{run.uuid}/output.ipynb", ContentFile(b'{"cells": []}'))
    page = (
        b'<html><head><script src="/static/plotly/plotly.min.js"></script></head>'
        b"<body>report</body></html>"
    )
    html = default_storage.save(f"runs/{run.uuid}/output.html", ContentFile(page))
    return set_run(run, state=Run.State.SUCCEEDED, output_key=ipynb, html_key=html)


def test_outputs_are_streamed_as_downloads(client, alice, make_job):
    run = finished_with_outputs(services.run_now(make_job(name="Daily report"), alice))
    body = client.get(f"/api/runs/{run.pk}/", **bearer(alice)).json()
    assert body["outputs"] == {
        "ipynb": f"http://testserver/api/runs/{run.pk}/output.ipynb",
        "html": f"http://testserver/api/runs/{run.pk}/output.html",
    }
    response = client.get(f"/api/runs/{run.pk}/output.ipynb", **bearer(alice, ["read"]))
    assert response.status_code == 200 and response.streaming
    assert b"".join(response.streaming_content) == b'{"cells": []}'
    assert response["Content-Type"] == "application/x-ipynb+json"
    assert response["Content-Disposition"].startswith("attachment")
    assert f"Daily_report-run-{run.pk}.ipynb" in response["Content-Disposition"]
    page = client.get(f"/api/runs/{run.pk}/output.html", HTTP_ACCEPT="text/html", **bearer(alice))
    assert page.status_code == 200 and page["Content-Type"] == "application/octet-stream"
    assert page["Content-Security-Policy"] == "sandbox"
    assert page["X-Content-Type-Options"] == "nosniff"
    content = b"".join(page.streaming_content)
    # As the run page's download: plotly.js inlined, so its charts draw offline.
    assert b"<body>report</body>" in content and b'src="/static/plotly' not in content


def test_no_output_is_404_saying_why(client, alice, make_job):
    queued = services.run_now(make_job(), alice)
    response = client.get(
        f"/api/runs/{queued.pk}/output.ipynb",
        HTTP_ACCEPT="application/x-ipynb+json",
        **bearer(alice),
    )
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert response.json() == {
        "code": "no_output",
        "detail": "The run has not finished: its output is not there yet.",
    }
    expired = finished_with_outputs(services.run_now(make_job(name="old"), alice))
    set_run(expired, output_expired_at=timezone.now(), output_key="", html_key="")
    body = client.get(f"/api/runs/{expired.pk}/", **bearer(alice)).json()
    assert body["outputs"] == {"ipynb": None, "html": None}
    gone = client.get(f"/api/runs/{expired.pk}/output.html", **bearer(alice))
    assert gone.status_code == 404 and gone.json()["code"] == "no_output"
    assert "expired" in gone.json()["detail"]


# --- Run a notebook file ----------------------------------------------------------------------


def run_file(client, user, file=None, key=None, **fields):
    headers = bearer(user)
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    body = {"notebook": file or notebook(), **fields}
    return client.post("/api/runs/", body, **headers)


def test_running_a_file_reuses_one_manual_job_per_file_name(client, alice):
    first = run_file(client, alice, parameters=json.dumps({"x": "21", "flag": "false"}))
    assert first.status_code == 201, first.json()
    job = Job.objects.get()
    assert (job.owner, job.name, job.schedule_kind, job.cron) == (
        alice,
        "CLI: trivial.ipynb",
        "manual",
        "",
    )
    run = Run.objects.get(pk=first.json()["id"])
    assert run.trigger == Run.Trigger.CLI and run.parameters == {"x": 21, "flag": False}
    assert run_file(client, alice).status_code == 201
    assert Job.objects.count() == 1 and job.versions.count() == 1  # the same file
    assert run_file(client, alice, notebook(content=changed_trivial())).status_code == 201
    assert Job.objects.count() == 1 and job.versions.count() == 2  # changed: a new version
    assert Run.objects.latest("pk").version.number == 2
    assert run_file(client, alice, notebook("failing.ipynb")).status_code == 201
    assert Job.objects.count() == 2  # another file name, another job


def test_running_a_file_as_a_version_of_an_own_job(client, alice, bob, make_job):
    job = make_job()
    response = run_file(client, alice, notebook(content=changed_trivial()), job=job.pk)
    assert response.status_code == 201 and response.json()["job"] == job.pk
    assert job.versions.count() == 2 and Job.objects.count() == 1
    bobs = make_job(owner=bob, visibility=Job.Visibility.SIGNED_IN)
    refused = run_file(client, alice, job=bobs.pk)
    assert refused.status_code == 400 and list(refused.json()["errors"]) == ["job"]
    assert bobs.versions.count() == 1


def test_running_a_file_checks_the_file_and_the_parameters(client, alice):
    bad = run_file(client, alice, notebook(content=b"not json"))
    assert bad.status_code == 400 and list(bad.json()["errors"]) == ["notebook"]
    wrong = run_file(client, alice, parameters=json.dumps({"x": "two"}))
    assert wrong.status_code == 400
    assert "x: expected a whole number (got 'two')" in wrong.json()["errors"]["parameters"][0]
    not_object = run_file(client, alice, parameters="[1]")
    assert list(not_object.json()["errors"]) == ["parameters"]
    assert not Run.objects.exists()


def test_a_retried_file_run_with_the_same_key_returns_the_same_run(client, alice):
    first = run_file(client, alice, key="ci-build-81")
    again = run_file(client, alice, notebook(content=changed_trivial()), key="ci-build-81")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    # The retry made nothing: no run, and no version of the changed file either.
    assert Run.objects.count() == 1 and Job.objects.get().versions.count() == 1
    assert IdempotencyKey.objects.get().run_id == first.json()["id"]


def test_running_files_obeys_the_limits(client, alice, settings):
    settings.USER_MAX_ACTIVE_RUNS = 1
    assert run_file(client, alice).status_code == 201
    refused = run_file(client, alice, key="second")
    assert refused.status_code == 403 and refused.json()["code"] == "limit_exceeded"
    assert Run.objects.count() == 1 and not IdempotencyKey.objects.filter(key="second").exists()
    settings.USER_MAX_ACTIVE_RUNS = 10
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "run_now": "1/h"}
    assert [run_file(client, alice).status_code for _ in range(2)] == [201, 429]


def test_job_for_notebook_updates_the_timeout_only_when_given(alice, settings):
    settings.JOB_MAX_TIMEOUT_SECONDS = 7200
    data = notebook_bytes("trivial.ipynb")
    job = services.job_for_notebook(alice, data, "dir/trivial.ipynb", timeout_seconds=600)
    assert job.name == "CLI: trivial.ipynb" and job.timeout_seconds == 600
    assert job.max_retries == 0 and job.latest_version().original_name == "trivial.ipynb"
    assert services.job_for_notebook(alice, data, "trivial.ipynb").timeout_seconds == 600
    again = services.job_for_notebook(alice, data, "trivial.ipynb", timeout_seconds=10**6)
    assert again.pk == job.pk and again.timeout_seconds == 7200
