"""Every URL × persona (owner, other user, staff, anonymous) → the expected status.

Others' objects are 404, never 403. A new URL must get a row here:
test_every_url_is_in_the_matrix fails otherwise.
"""

import gzip
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from api.models import ApiToken
from clusters.models import Cluster, SSHKey
from jobs import logs as job_logs
from jobs import services, spark_ui
from jobs.services import groups, streams
from notify.models import NotificationTarget
from tests.clusters.test_emr import (  # noqa: F401 (moto fixtures, for the EMR logs rows)
    LOG_BUCKET,
    aws,
    aws_env,
    emr_settings,
    moto_server,
)
from tests.conftest import succeeded_quickly

pytestmark = pytest.mark.django_db

LOGIN = "login"  # a redirect to the sign-in page

# name: (method, args kind, {persona: expected})
OWNER_GET = {"alice": 200, "bob": 404, "staff": 200, "anon": LOGIN}
OWNER_POST = {"alice": 302, "bob": 404, "staff": 302, "anon": LOGIN}
MATRIX = {
    "dashboard": ("get", None, {"alice": 200, "bob": 200, "staff": 200, "anon": LOGIN}),
    "jobs-new": ("get", None, {"alice": 200, "bob": 200, "staff": 200, "anon": LOGIN}),
    "jobs-inspect": ("post", None, {"alice": 200, "bob": 200, "staff": 200, "anon": LOGIN}),
    "jobs-schedule-preview": ("get", None, {"alice": 200, "bob": 200, "staff": 200, "anon": LOGIN}),
    "jobs-detail": ("get", "job", OWNER_GET),
    "jobs-edit": ("get", "job", OWNER_GET),
    "jobs-delete": ("get", "job", OWNER_GET),
    "jobs-run": ("post", "job", OWNER_POST),
    "jobs-pause": ("post", "job", OWNER_POST),
    "jobs-resume": ("post", "job", OWNER_POST),
    "jobs-upload": ("post", "job", OWNER_POST),
    "jobs-stop": ("post", "stream-job", OWNER_POST),
    "jobs-reset-checkpoint": ("get", "stream-job", OWNER_GET),
    "jobs-version-download": ("get", "version", OWNER_GET),
    "runs-detail": ("get", "run", OWNER_GET),
    "runs-progress": ("get", "run", OWNER_GET),
    "runs-partial": ("get", "run", {"alice": 204, "bob": 404, "staff": 204, "anon": LOGIN}),
    "runs-cancel": ("post", "run", OWNER_POST),
    "runs-rerun": ("post", "run", OWNER_POST),
    "runs-stop": ("post", "stream-run", OWNER_POST),
    # A continuous run's live metrics: the owner and staff, even for a shared job.
    "runs-stream-progress": ("get", "stream-run", OWNER_GET),
    "runs-download": ("get", "download", OWNER_GET),
    "runs-logs": ("get", "run", OWNER_GET),
    "runs-log-download": ("get", "run-log", OWNER_GET),
    # Both runs must be visible (here a run beside itself); the picker redirects.
    "runs-compare": ("get", "run-pair", OWNER_GET),
    "jobs-compare": ("get", "job", {"alice": 302, "bob": 404, "staff": 302, "anon": LOGIN}),
    "targets-new": ("get", "job", OWNER_GET),
    "targets-edit": ("get", "target", OWNER_GET),
    "targets-delete": ("get", "target", OWNER_GET),
    # Shows a new secret, once: a page, not a redirect.
    "targets-secret": ("post", "target", {"alice": 200, "bob": 404, "staff": 200, "anon": LOGIN}),
    "clusters-list": ("get", None, {"alice": 200, "bob": 200, "staff": 200, "anon": LOGIN}),
    "clusters-new": ("get", None, {"alice": 200, "bob": 200, "staff": 200, "anon": LOGIN}),
    "clusters-detail": ("get", "cluster", OWNER_GET),
    "clusters-status": ("get", "cluster", OWNER_GET),
    "clusters-extend": ("post", "cluster", OWNER_POST),
    "clusters-terminate": ("get", "cluster", OWNER_GET),
    # The gateway token opens the cluster as its owner: nobody else, staff neither.
    "clusters-rotate-token": (
        "post",
        "cluster",
        {"alice": 302, "bob": 404, "staff": 404, "anon": LOGIN},
    ),
    "keys-list": ("get", None, {"alice": 200, "bob": 200, "staff": 200, "anon": LOGIN}),
    "keys-new": ("get", None, {"alice": 200, "bob": 200, "staff": 200, "anon": LOGIN}),
    "keys-delete": ("get", "key", {"alice": 200, "bob": 404, "staff": 404, "anon": LOGIN}),
    "operations": ("get", None, {"alice": 403, "bob": 403, "staff": 200, "anon": 302}),
    "usage": ("get", None, {"alice": 200, "bob": 200, "staff": 200, "anon": LOGIN}),
    "health": ("get", None, {"alice": 200, "bob": 200, "staff": 200, "anon": 200}),
    # Off without METRICS_TOKEN; with one, a bearer token and no session (test_metrics.py).
    "metrics": ("get", None, {"alice": 404, "bob": 404, "staff": 404, "anon": 404}),
    "admin-login": ("get", None, {"alice": 403, "bob": 403, "staff": 302, "anon": LOGIN}),
    "tokens-list": ("get", None, {"alice": 200, "bob": 200, "staff": 200, "anon": LOGIN}),
    # Staff revoke others' tokens in the admin, not here.
    "tokens-revoke": ("get", "token", {"alice": 200, "bob": 404, "staff": 404, "anon": LOGIN}),
    # The Spark UI carries markup the cluster's user controls: its owner only, staff neither.
    # Its cluster's UI is on a closed port here: the owner passes and gets 502.
    "clusters-ui": ("get", "cluster-ui", {"alice": 502, "bob": 404, "staff": 404, "anon": LOGIN}),
    "clusters-ui-path": (
        "get",
        "cluster-ui-path",
        {"alice": 502, "bob": 404, "staff": 404, "anon": LOGIN},
    ),
    # Spark's own static files, the same for everyone (a sandboxed page sends no cookies).
    "clusters-ui-static": (
        "get",
        "spark-static",
        {"alice": 200, "bob": 200, "staff": 200, "anon": 200},
    ),
    "clusters-ui-proxied-static": (
        "get",
        "spark-proxied-static",
        {"alice": 200, "bob": 200, "staff": 200, "anon": 200},
    ),
    # EMR's logs carry what the cluster's user wrote: its owner only, staff neither (read
    # from moto's S3 here).
    "clusters-logs": ("get", "emr-logs", {"alice": 200, "bob": 404, "staff": 404, "anon": LOGIN}),
    "clusters-log": ("get", "emr-log", {"alice": 200, "bob": 404, "staff": 404, "anon": LOGIN}),
    # A run's Spark UI carries markup its notebook controls: the job's owner only, staff
    # neither. The run here has finished: no live UI, even for its owner.
    "runs-ui": ("get", "run", {"alice": 404, "bob": 404, "staff": 404, "anon": LOGIN}),
    "runs-ui-path": (
        "get",
        "run-history-path",
        {"alice": 404, "bob": 404, "staff": 404, "anon": LOGIN},
    ),
    # Its history: the owner is sent to the application's page; a path that leaves the
    # application is refused (400) before any History Server is asked.
    "runs-history": ("get", "run", {"alice": 302, "bob": 404, "staff": 404, "anon": LOGIN}),
    "runs-history-path": (
        "get",
        "run-history-path",
        {"alice": 400, "bob": 404, "staff": 404, "anon": LOGIN},
    ),
    "runs-ui-static": (
        "get",
        "run-spark-static",
        {"alice": 200, "bob": 200, "staff": 200, "anon": 200},
    ),
    "runs-history-static": (
        "get",
        "run-spark-static",
        {"alice": 200, "bob": 200, "staff": 200, "anon": 200},
    ),
    "jobs-backfill": ("get", "scheduled-job", OWNER_GET),
    "jobs-sweep": ("get", "job", OWNER_GET),
    "groups-detail": ("get", "group", OWNER_GET),
    "groups-cancel": ("post", "group", OWNER_POST),
    "groups-retry": ("post", "group", OWNER_POST),
}


def portal_url_names():
    """Names of every portal URL outside the admin, allauth and the API (whose routes have
    their own matrix, with tokens and scopes: tests/api/test_permissions.py)."""
    names = set()

    def walk(patterns, skip):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, skip or str(p.pattern) in ("admin/", "accounts/", "api/"))
            elif isinstance(p, URLPattern) and not skip and p.name:
                names.add(p.name)

    walk(get_resolver().url_patterns, False)
    return names


def test_every_url_is_in_the_matrix():
    assert portal_url_names() == set(MATRIX)


@pytest.fixture
def objects(make_job, alice, tmp_path):
    job = make_job("trivial.ipynb", name="private job")
    run = services.claim_run(services.run_now(job, alice).pk, "w")
    default_storage.save(job_logs.storage_key(run, "kernel.log"), ContentFile(b"kernel says"))
    run = succeeded_quickly(run)
    target = NotificationTarget.objects.create(
        job=job, kind="webhook", url="http://127.0.0.1:9/hook", events=["run.failed"], secret="s"
    )
    cluster = Cluster.objects.create(
        owner=alice, name="c1", expires_at=timezone.now() + timedelta(hours=1)
    )
    with_ui = Cluster.objects.create(
        owner=alice,
        name="c2",
        state=Cluster.State.READY,
        expires_at=timezone.now() + timedelta(hours=1),
        ui_url="http://127.0.0.1:9",
    )
    key = SSHKey.objects.create(
        owner=alice,
        title="k",
        key="ssh-ed25519 AAAA",
        key_type="ssh-ed25519",
        bits=256,
        fingerprint="SHA256:x",
    )
    emr = Cluster.objects.create(
        owner=alice,
        name="e1",
        backend=Cluster.Backend.EMR,
        jobflow_id="j-MATRIX",
        expires_at=timezone.now() + timedelta(hours=1),
    )
    token, _ = ApiToken.issue(alice, "CI", ["read"])
    default_storage.save(spark_ui.event_log_key(run), ContentFile(b"{}"))
    scheduled = make_job("trivial.ipynb", name="scheduled", cron="0 6 * * *", enabled=False)
    group = groups.create_sweep(job, alice, {"x": [1, 2]})
    stream = make_job("trivial.ipynb", name="stream", continuous=True)
    stream_run = streams.start_run(stream, stream.latest_version(), timezone.now())
    return {
        "stream-job": [stream.pk],
        "stream-run": [stream_run.pk],
        "scheduled-job": [scheduled.pk],
        "group": [group.pk],
        "run-history-path": [run.pk, f"history/{spark_ui.history_app_id(run)}/../x/"],
        "run-spark-static": [run.pk, "webui.js"],
        "emr-logs": [emr.pk],
        "emr-log": [emr.pk, "steps/s-1/stderr.gz"],
        "token": [token.pk],
        "cluster": [cluster.pk],
        "cluster-ui": [with_ui.pk],
        "cluster-ui-path": [with_ui.pk, "environment/"],
        "spark-static": [with_ui.pk, "webui.js"],
        "spark-proxied-static": [with_ui.pk, "app-1", "webui.js"],
        "key": [key.pk],
        None: [],
        "job": [job.pk],
        "version": [job.pk, job.latest_version().number],
        "run": [run.pk],
        "run-pair": [run.pk, run.pk],
        "download": [run.pk, "ipynb"],
        "run-log": [run.pk, "kernel.log"],
        "target": [target.pk],
    }


# Every route for every caller: about 250 requests, each with its objects made afresh,
# which together pass the fast subset's two minutes. The full suite (CI) runs them; the
# check that every route has its rows stays in the fast subset.
@pytest.mark.slow
@pytest.mark.parametrize("persona", ["alice", "bob", "staff", "anon"])
@pytest.mark.parametrize("name", sorted(MATRIX))
def test_permission_matrix(name, persona, objects, client, alice, bob, staff, request):
    method, kind, expected = MATRIX[name]
    if kind in ("emr-logs", "emr-log"):
        moto = request.getfixturevalue("aws")
        request.getfixturevalue("emr_settings").EMR_S3_ENDPOINT_URL = moto.endpoint
        key = "emr/j-MATRIX/steps/s-1/stderr.gz"
        moto.s3.put_object(Bucket=LOG_BUCKET, Key=key, Body=gzip.compress(b"log"))
    users = {"alice": alice, "bob": bob, "staff": staff, "anon": None}
    if users[persona]:
        client.force_login(users[persona])
    url = reverse(name, args=objects[kind])
    response = getattr(client, method)(url)
    want = expected[persona]
    if want == LOGIN:
        assert response.status_code == 302 and response["Location"].startswith(
            reverse("account_login")
        ), response
    else:
        assert response.status_code == want, (name, persona, response.status_code)


def test_shared_jobs_are_visible_but_not_changeable_by_others(make_job, client, bob):
    job = make_job("trivial.ipynb", visibility="signed_in")
    client.force_login(bob)
    assert client.get(reverse("jobs-detail", args=[job.pk])).status_code == 200
    assert client.post(reverse("jobs-run", args=[job.pk])).status_code == 404
    assert client.get(reverse("jobs-edit", args=[job.pk])).status_code == 404


@pytest.mark.parametrize(
    "name",
    [
        "jobs-run",
        "jobs-pause",
        "jobs-resume",
        "jobs-stop",
        "runs-cancel",
        "runs-rerun",
        "runs-stop",
    ],
)
def test_state_changes_need_post(name, objects, alice_client):
    kind = MATRIX[name][1]
    assert alice_client.get(reverse(name, args=objects[kind])).status_code == 405


def test_state_changes_need_a_csrf_token(objects, alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(reverse("jobs-run", args=objects["job"])).status_code == 403
