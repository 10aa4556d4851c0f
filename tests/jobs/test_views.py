"""Job and run pages: creating, editing, uploading, and every bad input leaving nothing behind."""

import json

import nbformat
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from jobs import services
from jobs.models import Job, NotebookVersion, Run
from tests.conftest import notebook_bytes

pytestmark = pytest.mark.django_db


def form_data(**overrides):
    data = {
        "name": "My job",
        "description": "",
        "schedule_kind": "daily",
        "at_time": "06:30",
        "minute": "0",
        "weekday": "0",
        "day": "1",
        "cron": "",
        "timezone": "Europe/Berlin",
        "timeout_minutes": "30",
        "max_retries": "1",
        "catchup": "latest",
        "overlap": "skip",
        "visibility": "private",
        "notify_on_failure": "alice@example.com",
        "notify_on_success": "",
        "enabled": "on",
    }
    data.update(overrides)
    return data


ALL_PARAMS = {
    "param-x": "1",
    "param-name": "world",
    "param-ratio": "0.5",
    "param-flag": "on",
    "param-items": "[1, 2]",
    "param-day": "2026-01-31",
}


def upload(name="trivial.ipynb", content=None):
    return SimpleUploadedFile(
        name, content if content is not None else notebook_bytes(name), "application/x-ipynb+json"
    )


def test_create_job_with_typed_parameters(alice_client, alice):
    data = form_data(
        notebook=upload(),
        **{
            "param-x": "42",
            "param-name": "Ada",
            "param-ratio": "0.25",
            "param-items": "[3]",
            "param-day": "2026-05-01",
        },
    )
    response = alice_client.post(reverse("jobs-new"), data)
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    assert job.owner == alice and job.cron == "30 6 * * *" and job.timezone == "Europe/Berlin"
    assert job.parameters == {
        "x": 42,
        "name": "Ada",
        "ratio": 0.25,
        "flag": False,
        "items": [3],
        "day": "2026-05-01",
    }
    assert job.timeout_seconds == 1800 and job.next_run_at is not None
    version = job.latest_version()
    assert version.number == 1 and version.storage_key == f"notebooks/{job.pk}/1.ipynb"
    page = alice_client.get(job.get_absolute_url()).content.decode()
    assert "At 06:30" in page and "Europe/Berlin" in page


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"notebook": upload("bad.ipynb", b"not json at all")}, "not JSON"),
        ({"notebook": upload("bad.ipynb", b'{"cells": 1, "nbformat": 4}')}, "not valid"),
        ({"schedule_kind": "cron", "cron": "61 * * * *"}, "not a valid cron"),
        ({"schedule_kind": "cron", "cron": "* * *"}, "5 fields"),
        ({"schedule_kind": "cron", "cron": "0 0 30 2 *"}, "never fires"),
        ({"timezone": "Mars/Base"}, "Unknown time zone"),
        ({"param-x": "many"}, "Enter a whole number"),
        ({"param-items": "{oops"}, "JSON list"),
        ({"param-unknown": "1"}, "no parameter named unknown"),
        ({"notify_on_failure": "not-an-address"}, "is not an e-mail address"),
        ({"timeout_minutes": "999999"}, "less than or equal"),
        ({"notebook": None}, "Choose a notebook"),
    ],
)
def test_bad_input_is_refused_and_stores_nothing(alice_client, overrides, message, _clean_storage):
    files_before = sorted(_clean_storage.rglob("*"))
    data = form_data(notebook=upload())
    data.update(overrides)
    if data["notebook"] is None:
        del data["notebook"]
    response = alice_client.post(reverse("jobs-new"), data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert Job.objects.count() == 0 and NotebookVersion.objects.count() == 0
    assert sorted(_clean_storage.rglob("*")) == files_before


def test_oversized_upload_is_refused(alice_client, settings):
    settings.NOTEBOOK_MAX_BYTES = 1000
    response = alice_client.post(reverse("jobs-new"), form_data(notebook=upload()))
    assert "notebooks may be at most" in response.content.decode()
    assert Job.objects.count() == 0


def test_inspect_fragment_shows_typed_fields(alice_client):
    response = alice_client.post(
        reverse("jobs-inspect"), {"notebook": upload("telemetry_hello_world.ipynb")}
    )
    html = response.content.decode()
    assert 'name="param-top_n"' in html and 'type="number"' in html and 'value="10"' in html
    bad = alice_client.post(
        reverse("jobs-inspect"), {"notebook": upload("x.ipynb", b"[]")}
    ).content.decode()
    assert "not a Jupyter notebook" in bad


def test_schedule_preview_lists_the_next_runs(alice_client):
    html = alice_client.get(
        reverse("jobs-schedule-preview"),
        {"schedule_kind": "weekly", "at_time": "07:15", "weekday": "2", "timezone": "UTC"},
    ).content.decode()
    assert "Wednesday" in html and html.count("<li>") == 5
    bad = alice_client.get(
        reverse("jobs-schedule-preview"),
        {"schedule_kind": "cron", "cron": "nope", "timezone": "UTC"},
    ).content.decode()
    assert "5 fields" in bad
    never = alice_client.get(
        reverse("jobs-schedule-preview"),
        {"schedule_kind": "cron", "cron": "0 0 31 4 *", "timezone": "UTC"},
    )
    assert never.status_code == 200 and "never fires" in never.content.decode()


def test_edit_changes_schedule_and_keeps_versions(alice_client, make_job):
    job = make_job("trivial.ipynb", schedule_kind="daily", cron="0 6 * * *")
    response = alice_client.post(
        reverse("jobs-edit", args=[job.pk]),
        form_data(
            name="Renamed",
            schedule_kind="cron",
            cron="*/30 * * * *",
            **{**ALL_PARAMS, "param-x": "3"},
        ),
    )
    assert response.status_code == 302
    job.refresh_from_db()
    assert (job.name, job.cron, job.parameters["x"]) == ("Renamed", "*/30 * * * *", 3)


def test_new_version_is_immutable_and_runs_keep_theirs(alice_client, make_job, alice):
    from jobs import services

    job = make_job("trivial.ipynb", parameters={"x": 9})
    old_run = services.run_now(job, alice)
    nb = nbformat.reads(notebook_bytes("trivial.ipynb").decode(), as_version=4)
    nb.cells[0].source = "x = 1\nname = 'world'"  # drops ratio, flag, items, day
    response = alice_client.post(
        reverse("jobs-upload", args=[job.pk]),
        {"notebook": upload("v2.ipynb", nbformat.writes(nb).encode())},
    )
    assert response.status_code == 302
    assert [v.number for v in job.versions.all()] == [2, 1]
    assert Run.objects.get(pk=old_run.pk).version.number == 1
    assert services.run_now(job, alice).version.number == 2
    job.refresh_from_db()
    assert job.parameters == {"x": 9}


def test_run_now_and_rerun_and_cancel(alice_client, make_job):
    job = make_job("trivial.ipynb", parameters={"x": 4})
    response = alice_client.post(reverse("jobs-run", args=[job.pk]))
    run = Run.objects.get()
    assert response["Location"] == run.get_absolute_url()
    alice_client.post(reverse("runs-cancel", args=[run.pk]))
    assert Run.objects.get(pk=run.pk).state == Run.State.CANCELLED
    alice_client.post(reverse("runs-rerun", args=[run.pk]))
    rerun = Run.objects.exclude(pk=run.pk).get()
    assert (
        rerun.trigger == "rerun"
        and rerun.parameters == {"x": 4}
        and rerun.version_id == run.version_id
    )


def test_delete_removes_job_runs_and_files(
    alice_client, make_job, alice, _clean_storage, django_capture_on_commit_callbacks
):
    from jobs import services

    job = make_job("trivial.ipynb")
    services.run_now(job, alice)
    key = job.latest_version().storage_key
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(reverse("jobs-delete", args=[job.pk]))
    assert not Job.objects.exists() and not Run.objects.exists()
    assert not (_clean_storage / key).exists()


def test_pause_and_resume(alice_client, make_job):
    job = make_job("trivial.ipynb", schedule_kind="hourly", cron="0 * * * *")
    alice_client.post(reverse("jobs-pause", args=[job.pk]))
    job.refresh_from_db()
    assert not job.enabled and job.next_run_at is None
    alice_client.post(reverse("jobs-resume", args=[job.pk]))
    job.refresh_from_db()
    assert job.enabled and job.next_run_at is not None


def test_run_page_shows_the_error_summary_escaped(alice_client, make_job, alice):
    from jobs import services

    job = make_job("trivial.ipynb")
    run = services.run_now(job, alice)
    Run.objects.filter(pk=run.pk).update(
        state="FAILED",
        error_cell_index=2,
        error_ename="ValueError",
        error_evalue="<script>alert(1)</script>",
        error_traceback="tb",
    )
    html = alice_client.get(run.get_absolute_url()).content.decode()
    assert "ValueError" in html and "In cell 3 of the output notebook" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_dashboard_lists_my_jobs_and_visible_runs(alice_client, make_job, bob, alice):
    from jobs import services

    mine = make_job("trivial.ipynb", name="mine")
    theirs = make_job("trivial.ipynb", name="theirs", owner=bob)
    services.run_now(mine, alice)
    services.run_now(theirs, bob)
    html = alice_client.get(reverse("dashboard")).content.decode()
    assert "mine" in html and "theirs" not in html


def test_portal_pages_carry_a_strict_csp_and_no_inline_scripts(alice_client, make_job):
    job = make_job("trivial.ipynb")
    response = alice_client.get(job.get_absolute_url())
    csp = response["Content-Security-Policy"]
    assert (
        "script-src 'self'" in csp
        and "frame-ancestors 'none'" in csp
        and "frame-src http://127.0.0.1" in csp
    )
    html = response.content.decode()
    import re

    for tag in re.findall(r"<script[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag, tag
    assert " onclick=" not in html and " onload=" not in html
    assert response["X-Frame-Options"] == "DENY"


def test_version_download_is_an_attachment(alice_client, make_job):
    job = make_job("trivial.ipynb")
    response = alice_client.get(reverse("jobs-version-download", args=[job.pk, 1]))
    assert response["Content-Disposition"].startswith("attachment")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert json.loads(b"".join(response.streaming_content))["nbformat"] == 4


def test_next_runs_are_shown_in_the_jobs_own_time_zone(alice_client, make_job):
    job = make_job("trivial.ipynb", cron="0 9 * * *", timezone="Europe/Paris")
    page = alice_client.get(reverse("jobs-detail", args=[job.pk])).content.decode()
    assert page.count(" 09:00 CET") + page.count(" 09:00 CEST") == 5, page
    preview = alice_client.get(
        reverse("jobs-schedule-preview"),
        {"schedule_kind": "cron", "cron": "0 9 * * *", "timezone": "Europe/Paris"},
    ).content.decode()
    assert preview.count(" 09:00 CET") + preview.count(" 09:00 CEST") == 5, preview
    assert "(08:00 UTC)" in preview or "(07:00 UTC)" in preview


def test_errors_in_run_settings_are_shown_open_with_a_summary(alice_client):
    response = alice_client.post(
        reverse("jobs-new"), form_data(timeout_minutes="-5", notify_on_failure="not-an-address")
    )
    page = response.content.decode()
    assert response.status_code == 200 and "The job was not saved" in page
    assert "<details open>" in page
    assert "Choose the notebook file again" in page


def test_run_page_shows_the_values_the_notebook_ran_with(alice_client, make_job, alice):
    job = make_job("trivial.ipynb", parameters={"x": 7})
    run = services.run_now(job, alice, enqueue=False)
    page = alice_client.get(reverse("runs-detail", args=[run.pk])).content.decode()
    assert "&quot;x&quot;: 7" in page and "&quot;name&quot;: &quot;world&quot;" in page
    import re

    defaults = re.search(r"The notebook's own defaults: ([^.]*)\.", page)
    assert defaults and set(defaults.group(1).split(", ")) == {
        "name",
        "ratio",
        "flag",
        "items",
        "day",
    }


def test_live_progress_reloads_the_page_when_the_run_changes_state(alice_client, make_job, alice):
    run = services.run_now(make_job("trivial.ipynb"), alice, enqueue=False)
    url = reverse("runs-progress", args=[run.pk])
    same = alice_client.get(url, {"live": "1", "state": "QUEUED", "attempt": "0"})
    assert same.status_code == 200 and "HX-Refresh" not in same.headers
    assert "state=QUEUED&amp;attempt=0" in same.content.decode()
    services.claim_run(run.pk, "w1")
    moved = alice_client.get(url, {"live": "1", "state": "QUEUED", "attempt": "0"})
    assert moved.headers.get("HX-Refresh") == "true"


def test_states_read_the_same_everywhere(alice_client, make_job, alice):
    job = make_job("trivial.ipynb")
    run = services.run_now(job, alice, enqueue=False)
    services.cancel_run(run, alice)
    dashboard = alice_client.get(reverse("dashboard")).content.decode()
    page = alice_client.get(reverse("runs-detail", args=[run.pk])).content.decode()
    for html in (dashboard, page):
        assert ">Cancelled</span>" in html and ">CANCELLED<" not in html and ">QUEUED<" not in html


def test_a_job_on_an_ended_cluster_says_so(alice_client, make_job, alice):
    from clusters import services as cluster_services
    from clusters.models import Cluster

    cluster = cluster_services.launch_cluster(alice, cluster_services.ClusterSpec(name="gone"))
    Cluster.objects.filter(pk=cluster.pk).update(state="READY")
    job = make_job(
        "trivial.ipynb", spark_target="cluster", cluster=Cluster.objects.get(pk=cluster.pk)
    )
    assert (
        'id="cluster-ended"'
        not in alice_client.get(reverse("jobs-detail", args=[job.pk])).content.decode()
    )
    Cluster.objects.filter(pk=cluster.pk).update(state="TERMINATED")
    assert (
        'id="cluster-ended"'
        in alice_client.get(reverse("jobs-detail", args=[job.pk])).content.decode()
    )


def test_dashboard_lists_jobs_shared_with_everyone(client, make_job, bob):
    make_job("trivial.ipynb", name="Shared report", visibility="signed_in")
    make_job("trivial.ipynb", name="Private report")
    client.force_login(bob)
    page = client.get(reverse("dashboard")).content.decode()
    assert (
        "Shared with everyone" in page and "Shared report" in page and "Private report" not in page
    )


def test_schedule_preview_reports_out_of_range_preset_values(alice_client):
    day = alice_client.get(
        reverse("jobs-schedule-preview"),
        {"schedule_kind": "monthly", "at_time": "06:00", "day": "32", "timezone": "UTC"},
    ).content.decode()
    assert "errorlist" in day and "<li>" not in day
    minute = alice_client.get(
        reverse("jobs-schedule-preview"),
        {"schedule_kind": "hourly", "minute": "75", "timezone": "UTC"},
    ).content.decode()
    assert "errorlist" in minute and "<li>" not in minute


def test_a_shared_job_shows_its_results_not_its_owners_notification_lists(
    client, make_job, alice, bob, settings
):
    settings.ALERT_ALLOWED_DOMAINS = ["corp.example"]
    job = make_job(
        "trivial.ipynb",
        name="Shared report",
        visibility="signed_in",
        notify_on_failure="alice@example.com, oncall@corp.example",
        notify_on_success="boss@corp.example",
    )
    client.force_login(bob)
    page = client.get(reverse("jobs-detail", args=[job.pk])).content.decode()
    assert "Shared report" in page
    assert "oncall@corp.example" not in page and "boss@corp.example" not in page
    client.force_login(alice)
    page = client.get(reverse("jobs-detail", args=[job.pk])).content.decode()
    assert "oncall@corp.example" in page and "boss@corp.example" in page
