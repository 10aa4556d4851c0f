"""Jobs through the API: list, create, get, change, delete, pause, resume, run now and
notebook versions, with the job form's messages, the per-user limits, scopes, 404 for
others' jobs, and the Idempotency-Key of "Run now"."""

import json
import threading
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.utils import timezone

from api import jobs as api_jobs
from api.models import ApiToken, IdempotencyKey
from jobs import services
from jobs.forms import JobForm
from jobs.models import Job, Run
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


def create(client, user, settings_=None, file=None, **headers):
    body = {"notebook": file or notebook(), "settings": json.dumps(settings_ or {"name": "Daily"})}
    return client.post("/api/jobs/", body, **(headers or bearer(user)))


def patch(client, user, job, changes, **headers):
    return client.patch(
        f"/api/jobs/{job.pk}/",
        json.dumps(changes),
        content_type="application/json",
        **(headers or bearer(user)),
    )


def run_now(client, user, job, parameters=None, key=None):
    headers = bearer(user)
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    body = json.dumps({"parameters": parameters} if parameters is not None else {})
    return client.post(f"/api/jobs/{job.pk}/run/", body, content_type="application/json", **headers)


# --- List and get ---------------------------------------------------------------------------


def test_the_list_holds_the_jobs_the_caller_may_see(client, alice, bob, staff, make_job):
    own = make_job(name="own")
    shared = make_job(name="shared", owner=bob, visibility=Job.Visibility.SIGNED_IN)
    private = make_job(name="private", owner=bob)

    def ids(user, query=""):
        response = client.get(f"/api/jobs/{query}", **bearer(user, ["read"]))
        assert response.status_code == 200
        return [job["id"] for job in response.json()]

    assert ids(alice) == [own.pk, shared.pk]
    assert ids(alice, "?mine=1") == [own.pk]
    assert ids(staff) == [own.pk, shared.pk, private.pk]
    assert ids(staff, "?mine=true") == []
    assert client.get("/api/jobs/?mine=perhaps", **bearer(alice)).status_code == 400


def test_a_job_reads_as_its_settings(client, alice, make_job):
    job = make_job(cron="0 6 * * *", timezone="Europe/Berlin", parameters={"x": 3})
    body = client.get(f"/api/jobs/{job.pk}/", **bearer(alice, ["read"])).json()
    assert body["id"] == job.pk and body["owner"] == alice.pk
    assert body["cron"] == "0 6 * * *" and body["timezone"] == "Europe/Berlin"
    assert body["parameters"] == {"x": 3} and body["latest_version"] == 1
    assert body["next_run_at"] is not None and body["cluster"] is None
    assert body["web_url"].endswith(job.get_absolute_url())


def test_others_private_jobs_are_404_and_shared_ones_readable(client, alice, bob, make_job):
    private = make_job(owner=bob)
    shared = make_job(owner=bob, visibility=Job.Visibility.SIGNED_IN)
    missing = client.get(f"/api/jobs/{private.pk}/", **bearer(alice))
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert client.get(f"/api/jobs/{private.pk}/versions/", **bearer(alice)).status_code == 404
    assert client.get(f"/api/jobs/{shared.pk}/", **bearer(alice)).status_code == 200
    # Seeing a shared job is not owning it: every change is a 404, as on the pages.
    for path in ("pause/", "resume/", "run/", "versions/"):
        response = client.post(f"/api/jobs/{shared.pk}/{path}", **bearer(alice))
        assert response.status_code == 404, path
    assert patch(client, alice, shared, {"name": "mine now"}).status_code == 404
    assert client.delete(f"/api/jobs/{shared.pk}/", **bearer(alice)).status_code == 404
    assert Job.objects.get(pk=shared.pk).name == shared.name


# --- Create ---------------------------------------------------------------------------------


def test_create_makes_a_job_with_its_first_version(client, alice):
    response = create(
        client,
        alice,
        {
            "name": "Nightly",
            "cron": "30  2 * * *",
            "timezone": "Europe/Berlin",
            "parameters": {"x": "7", "flag": "false"},
            "timeout_seconds": 600,
            "notify_on_failure": "alice@example.com; alice@example.com",
        },
    )
    assert response.status_code == 201, response.json()
    job = Job.objects.get()
    body = response.json()
    assert response["Location"] == f"/api/jobs/{job.pk}/"
    assert body["id"] == job.pk and body["latest_version"] == 1
    assert (job.owner, job.name, job.schedule_kind) == (alice, "Nightly", "cron")
    assert job.cron == "30 2 * * *" and job.next_run_at is not None
    assert job.parameters == {"x": 7, "flag": False}  # coerced against the notebook
    assert job.timeout_seconds == 600 and job.notify_on_failure == "alice@example.com"
    assert job.latest_version().original_name == "trivial.ipynb"


def test_a_manual_job_needs_no_cron(client, alice):
    response = create(client, alice, {"name": "By hand", "schedule_kind": "manual", "cron": "x"})
    assert response.status_code == 201
    job = Job.objects.get()
    assert job.cron == "" and job.next_run_at is None


def form_errors(alice, **fields):
    """The job form's errors for the new-job form of trivial.ipynb with ``fields``."""
    data = {
        "name": "Form",
        "schedule_kind": "cron",
        "cron": "0 6 * * *",
        "timezone": "UTC",
        "timeout_minutes": "60",
        "max_retries": "1",
        "catchup": "latest",
        "overlap": "skip",
        "visibility": "private",
        "cluster_size": "1",
        **fields,
    }
    form = JobForm(data, {"notebook": notebook()}, user=alice)
    assert not form.is_valid()
    return form.errors


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cron", "61 * * * *"),
        ("cron", "0 0 31 2 *"),
        ("timezone", "Mars/Olympus_Mons"),
        ("notify_on_failure", "not an address"),
        ("max_retries", 9),
    ],
)
def test_create_refuses_what_the_job_form_refuses_with_its_message(client, alice, field, value):
    response = create(client, alice, {"name": "Bad", "cron": "0 6 * * *", field: value})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert body["errors"][field] == form_errors(alice, **{field: str(value)})[field]
    assert not Job.objects.exists()


def test_create_refuses_a_bad_notebook_with_the_forms_message(client, alice, settings):
    empty = create(client, alice, file=notebook(content=b"  "))
    assert empty.status_code == 400
    assert empty.json()["errors"] == {"notebook": ["The file is empty."]}
    settings.NOTEBOOK_MAX_BYTES = 100
    large = create(client, alice)
    message = large.json()["errors"]["notebook"][0]
    assert large.status_code == 400 and message.startswith("The file is larger than")
    assert not Job.objects.exists()


def test_create_refuses_bad_parameters_and_settings(client, alice):
    wrong = create(client, alice, {"name": "P", "parameters": {"x": "many", "nope": 1}})
    assert wrong.status_code == 400
    message = wrong.json()["errors"]["parameters"][0]
    assert "x: expected a whole number (got 'many')" in message
    assert "the notebook has no parameter 'nope'" in message
    response = client.post(
        "/api/jobs/", {"notebook": notebook(), "settings": "[1, 2]"}, **bearer(alice)
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {"settings": ["Enter a JSON object of names and values."]}
    unnamed = create(client, alice, {"cron": "0 6 * * *"})
    assert unnamed.json()["errors"] == {"name": ["This field is required."]}
    cluster = create(client, alice, {"name": "C", "spark_target": "cluster"})
    assert cluster.json()["errors"] == {"cluster": ["Choose one of your running clusters."]}
    assert not Job.objects.exists()


def test_create_past_the_job_limit_is_403_with_the_pages_message(client, alice, make_job, settings):
    settings.USER_MAX_JOBS = 1
    make_job()
    response = create(client, alice)
    assert response.status_code == 403
    with pytest.raises(LimitExceeded) as page:
        limits.check_job_count(alice)
    assert response.json() == {"code": "limit_exceeded", "detail": page.value.message}


def test_a_too_frequent_schedule_is_403_naming_the_field(client, alice, settings):
    settings.USER_MIN_SCHEDULE_INTERVAL = 3600
    response = create(client, alice, {"name": "Often", "cron": "*/5 * * * *"})
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "limit_exceeded" and body["errors"] == {"cron": [body["detail"]]}
    assert "the shortest interval allowed is 1 hour" in body["detail"]


def test_uploads_past_the_rate_are_429(client, alice, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "upload": "1/h"}
    assert create(client, alice).status_code == 201
    response = create(client, alice)
    assert response.status_code == 429 and response.json()["code"] == "rate_limited"


# --- Change, delete, pause, resume ------------------------------------------------------------


def test_patch_changes_settings_and_moves_the_next_run(client, alice, make_job):
    job = make_job(schedule_kind="manual")
    assert job.next_run_at is None
    response = patch(client, alice, job, {"cron": "15 * * * *", "parameters": {"x": 2}})
    assert response.status_code == 200, response.json()
    job.refresh_from_db()
    assert job.schedule_kind == "cron" and job.cron == "15 * * * *"
    assert job.next_run_at is not None and job.next_run_at.minute == 15
    assert job.parameters == {"x": 2} and response.json()["parameters"] == {"x": 2}


def test_patch_refuses_bad_values_and_writes_nothing(client, alice, make_job, settings):
    job = make_job(cron="0 6 * * *")
    settings.JOB_MAX_TIMEOUT_SECONDS = 7200
    cases = [
        ({"cron": "0 6 * *"}, "cron"),
        ({"timeout_seconds": 7201}, "timeout_seconds"),
        ({"parameters": {"x": 1.5}}, "parameters"),
        ({"timezone": "Nowhere/City"}, "timezone"),
    ]
    for changes, field in cases:
        response = patch(client, alice, job, changes)
        assert response.status_code == 400, changes
        assert list(response.json()["errors"]) == [field]
    timeout = patch(client, alice, job, {"timeout_seconds": 7201}).json()
    assert timeout["detail"] == "Ensure this value is less than or equal to 7200."
    stored = Job.objects.get(pk=job.pk)
    assert (stored.cron, stored.timeout_seconds, stored.updated_at) == (
        job.cron,
        job.timeout_seconds,
        job.updated_at,
    )


def test_staff_may_change_and_delete_anyones_job(client, alice, staff, make_job):
    job = make_job()
    assert patch(client, staff, job, {"description": "checked"}).status_code == 200
    assert Job.objects.get(pk=job.pk).description == "checked"
    assert client.delete(f"/api/jobs/{job.pk}/", **bearer(staff)).status_code == 204
    assert not Job.objects.filter(pk=job.pk).exists()


def test_delete_removes_the_job_and_its_runs(client, alice, make_job):
    job = make_job()
    services.run_now(job, alice)
    response = client.delete(f"/api/jobs/{job.pk}/", **bearer(alice))
    assert response.status_code == 204
    assert not Job.objects.exists() and not Run.objects.exists()
    assert client.get(f"/api/jobs/{job.pk}/", **bearer(alice)).status_code == 404


def test_pause_and_resume(client, alice, make_job):
    job = make_job(cron="0 6 * * *")
    paused = client.post(f"/api/jobs/{job.pk}/pause/", **bearer(alice))
    assert paused.status_code == 200
    assert paused.json()["enabled"] is False and paused.json()["next_run_at"] is None
    resumed = client.post(f"/api/jobs/{job.pk}/resume/", **bearer(alice))
    assert resumed.json()["enabled"] is True and resumed.json()["next_run_at"] is not None
    assert Job.objects.get(pk=job.pk).enabled


def test_put_is_not_offered(client, alice, make_job):
    job = make_job()
    response = client.put(
        f"/api/jobs/{job.pk}/", "{}", content_type="application/json", **bearer(alice)
    )
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"


# --- Scopes ---------------------------------------------------------------------------------


def test_each_change_needs_its_scope(client, alice, make_job):
    job = make_job()
    read_only = bearer(alice, ["read"])
    needs_jobs = [
        lambda: create(client, alice, **read_only),
        lambda: patch(client, alice, job, {"name": "x"}, **read_only),
        lambda: client.delete(f"/api/jobs/{job.pk}/", **read_only),
        lambda: client.post(f"/api/jobs/{job.pk}/pause/", **read_only),
        lambda: client.post(f"/api/jobs/{job.pk}/resume/", **read_only),
        lambda: client.post(f"/api/jobs/{job.pk}/versions/", {"notebook": notebook()}, **read_only),
    ]
    for call in needs_jobs:
        response = call()
        assert response.status_code == 403
        assert response.json() == {
            "code": "missing_scope",
            "detail": "This token lacks the scope “jobs”.",
        }
    run = client.post(f"/api/jobs/{job.pk}/run/", **bearer(alice, ["read", "jobs"]))
    assert run.status_code == 403 and "“run”" in run.json()["detail"]
    for path in ("", f"{job.pk}/", f"{job.pk}/versions/"):
        response = client.get(f"/api/jobs/{path}", **bearer(alice, ["jobs", "run"]))
        assert response.status_code == 403 and "“read”" in response.json()["detail"]
    assert Job.objects.get(pk=job.pk).name == job.name and not Run.objects.exists()


# --- Versions -------------------------------------------------------------------------------


def test_versions_list_and_upload_naming_dropped_parameters(client, alice, make_job):
    job = make_job(parameters={"x": 5})
    upload = client.post(
        f"/api/jobs/{job.pk}/versions/",
        {"notebook": notebook("failing.ipynb")},
        **bearer(alice),
    )
    assert upload.status_code == 201
    body = upload.json()
    assert body["dropped_parameters"] == ["x"]
    assert body["version"]["number"] == 2 and body["version"]["original_name"] == "failing.ipynb"
    assert body["version"]["parameter_schema"]["divisor"]["type"] == "int"
    assert Job.objects.get(pk=job.pk).parameters == {}
    listed = client.get(f"/api/jobs/{job.pk}/versions/", **bearer(alice, ["read"])).json()
    assert [v["number"] for v in listed] == [2, 1]


def test_a_bad_version_is_400_and_uploads_are_rate_limited(client, alice, make_job, settings):
    job = make_job()
    bad = client.post(
        f"/api/jobs/{job.pk}/versions/", {"notebook": notebook(content=b"{}")}, **bearer(alice)
    )
    assert bad.status_code == 400 and list(bad.json()["errors"]) == ["notebook"]
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "upload": "1/h"}
    url = f"/api/jobs/{job.pk}/versions/"
    assert client.post(url, {"notebook": notebook()}, **bearer(alice)).status_code == 201
    assert client.post(url, {"notebook": notebook()}, **bearer(alice)).status_code == 429
    assert job.versions.count() == 2


# --- Run now --------------------------------------------------------------------------------


def test_run_now_queues_a_run_with_checked_parameters(client, alice, make_job):
    job = make_job(parameters={"x": 2})
    response = run_now(client, alice, job, {"name": "Ada", "ratio": "0.75"})
    assert response.status_code == 201, response.json()
    run = Run.objects.get()
    body = response.json()
    assert response["Location"] == f"/api/runs/{run.pk}/"
    assert body["id"] == run.pk and body["state"] == "QUEUED" and body["trigger"] == "manual"
    assert run.parameters == {"x": 2, "name": "Ada", "ratio": 0.75}
    assert run.created_by == alice and [e["state"] for e in body["events"]] == ["QUEUED"]


def test_run_now_refuses_parameters_that_do_not_fit(client, alice, make_job):
    job = make_job()
    response = run_now(client, alice, job, {"x": "lots", "run_id": "mine"})
    assert response.status_code == 400
    message = response.json()["errors"]["parameters"][0]
    assert "'run_id' is reserved" in message and "x: expected a whole number" in message
    assert run_now(client, alice, job, ["x"]).status_code == 400  # not an object
    assert not Run.objects.exists()


def test_run_now_past_the_queued_limit_is_403_with_the_pages_message(
    client, alice, make_job, settings
):
    settings.USER_MAX_ACTIVE_RUNS = 1
    job = make_job()
    assert run_now(client, alice, job).status_code == 201
    response = run_now(client, alice, job)
    with pytest.raises(LimitExceeded) as page:
        limits.check_active_runs(alice)
    assert response.status_code == 403
    assert response.json() == {"code": "limit_exceeded", "detail": page.value.message}
    assert Run.objects.count() == 1


def test_run_now_past_the_rate_is_429(client, alice, make_job, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "run_now": "2/h"}
    job = make_job()
    assert [run_now(client, alice, job).status_code for _ in range(3)] == [201, 201, 429]


def test_a_retried_run_now_with_the_same_key_returns_the_same_run(client, alice, make_job):
    job = make_job()
    first = run_now(client, alice, job, {"x": 4}, key="nightly-2026-03-02")
    again = run_now(client, alice, job, {"x": 4}, key="nightly-2026-03-02")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert Run.objects.count() == 1 and IdempotencyKey.objects.count() == 1
    other = run_now(client, alice, job, key="nightly-2026-03-03")
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


def test_idempotency_keys_are_per_user_and_per_job(client, alice, bob, make_job):
    job = make_job()
    bobs = make_job(owner=bob)
    mine = run_now(client, alice, job, key="k1")
    theirs = run_now(client, bob, bobs, key="k1")
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]
    elsewhere = run_now(client, alice, make_job(name="other"), key="k1")
    assert elsewhere.status_code == 409 and elsewhere.json()["code"] == "conflict"
    assert Run.objects.count() == 2


def test_a_key_is_forgotten_after_its_hours(client, alice, make_job, settings):
    settings.IDEMPOTENCY_KEY_HOURS = 24
    job = make_job()
    first = run_now(client, alice, job, key="old")
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
    later = run_now(client, alice, job, key="old")
    assert later.status_code == 201 and later.json()["id"] != first.json()["id"]
    assert IdempotencyKey.objects.get().run_id == later.json()["id"]


def test_a_malformed_key_is_400(client, alice, make_job):
    job = make_job()
    for key in ("", "with space", "x" * 201):
        response = run_now(client, alice, job, key=key)
        assert response.status_code == 400
        assert list(response.json()["errors"]) == ["Idempotency-Key"]
    assert not Run.objects.exists()


def test_a_concurrent_request_with_the_same_key_wins_and_ours_is_undone(
    alice, make_job, monkeypatch
):
    """The race the unique constraint settles: another request committed a run under the
    key after our look-up found nothing. Our insert of the key fails, our run is rolled
    back with it, and the other request's run is the answer."""
    job = make_job()
    theirs = services.run_now(job, alice)
    IdempotencyKey.objects.create(user=alice, key="raced", run=theirs)
    real = api_jobs.remembered_run
    looks = []

    def stale_first_look(*args, **kwargs):
        looks.append(args)
        return None if len(looks) == 1 else real(*args, **kwargs)

    monkeypatch.setattr(api_jobs, "remembered_run", stale_first_look)
    made = []

    def make():
        made.append(services.run_now(job, alice))
        return made[-1]

    run, created = api_jobs.idempotent_run(alice, "raced", make, job.pk)
    assert (run, created) == (theirs, False)
    assert len(made) == 1 and list(Run.objects.all()) == [theirs]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_make_one_run(alice, make_job):
    """Two requests with the same key at the same moment, on two database connections."""
    job = make_job()
    headers = {**bearer(alice), "HTTP_IDEMPOTENCY_KEY": "together"}
    start = threading.Barrier(2)
    statuses: list[int] = []

    def request():
        start.wait()
        try:
            response = Client().post(
                f"/api/jobs/{job.pk}/run/", "{}", content_type="application/json", **headers
            )
            statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 201]
    assert Run.objects.filter(job=job).count() == 1


def test_old_idempotency_keys_are_forgotten(client, alice, make_job, settings):
    from datetime import timedelta

    from django.utils import timezone

    from api.models import IdempotencyKey
    from api.tasks import forget_idempotency_keys

    job = make_job()
    run_now(client, alice, job, key="old")
    run_now(client, alice, job, key="new")
    IdempotencyKey.objects.filter(key="old").update(
        created_at=timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_HOURS, seconds=1)
    )
    assert forget_idempotency_keys() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]
