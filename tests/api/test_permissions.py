"""Every API route × caller (owner, another user, staff, anonymous, a token of the owner
without the route's scope) → the expected status.

The objects belong to alice. Others' objects are 404, never 403; a missing token is 401;
a token without the scope is 403 naming it. A new API route must get a row here:
test_every_api_route_is_in_the_matrix fails otherwise.
"""

import json
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from api.models import SCOPES, ApiToken
from clusters import services as cluster_services
from clusters.models import Cluster
from jobs import logs as job_logs
from jobs import services
from jobs.services import groups
from tests.api.test_clusters import public_key
from tests.clusters.test_emr import (  # noqa: F401 (moto fixtures, for the EMR logs row)
    aws,
    aws_env,
    emr_settings,
    moto_server,
)
from tests.conftest import notebook_bytes, succeeded_quickly

pytestmark = pytest.mark.django_db

CALLERS = ["owner", "other", "staff", "anon", "wrong_scope"]


def statuses(owner, other, staff, anon=401, wrong_scope=403):
    return {
        "owner": owner,
        "other": other,
        "staff": staff,
        "anon": anon,
        "wrong_scope": wrong_scope,
    }


EVERYONE = statuses(200, 200, 200)
OWNER_READ = statuses(200, 404, 200)


def notebook_file():
    return SimpleUploadedFile("trivial.ipynb", notebook_bytes("trivial.ipynb"))


# name: (method, object, scope, body() -> (data, format), {caller: status})
MATRIX = {
    "api-me": ("get", None, "read", None, EVERYONE),
    # Any path under /api/ that names no route: a JSON 404, whoever asks.
    "api-not-found": ("get", "nowhere", "read", None, statuses(404, 404, 404, 404, 404)),
    # The schema and the docs describe the API, no one's data: public, like the code.
    "api-schema": ("get", None, "read", None, statuses(200, 200, 200, 200, 200)),
    "api-docs": ("get", None, "read", None, statuses(200, 200, 200, 200, 200)),
    "api-redoc": ("get", None, "read", None, statuses(200, 200, 200, 200, 200)),
    "api-jobs-list": ("get", None, "read", None, EVERYONE),
    "api-jobs-list:post": (
        "post",
        None,
        "jobs",
        lambda: (
            {
                "notebook": notebook_file(),
                "settings": json.dumps({"name": "new", "parameters": {"x": 1}}),
            },
            "multipart",
        ),
        statuses(201, 201, 201),
    ),
    "api-jobs-detail": ("get", "job", "read", None, OWNER_READ),
    "api-jobs-detail:patch": (
        "patch",
        "job",
        "jobs",
        lambda: ({"description": "changed"}, "json"),
        statuses(200, 404, 200),
    ),
    "api-jobs-detail:delete": ("delete", "job", "jobs", None, statuses(204, 404, 204)),
    "api-jobs-pause": ("post", "job", "jobs", None, statuses(200, 404, 200)),
    "api-jobs-resume": ("post", "job", "jobs", None, statuses(200, 404, 200)),
    "api-jobs-run": ("post", "job", "run", lambda: ({}, "json"), statuses(201, 404, 201)),
    "api-jobs-versions": ("get", "job", "read", None, OWNER_READ),
    "api-jobs-versions:post": (
        "post",
        "job",
        "jobs",
        lambda: ({"notebook": notebook_file()}, "multipart"),
        statuses(201, 404, 201),
    ),
    "api-runs-list": ("get", None, "read", None, EVERYONE),
    "api-runs-list:post": (
        "post",
        None,
        "run",
        lambda: ({"notebook": notebook_file()}, "multipart"),
        statuses(201, 201, 201),
    ),
    "api-runs-detail": ("get", "run", "read", None, OWNER_READ),
    "api-runs-cancel": ("post", "queued_run", "run", None, statuses(200, 404, 200)),
    "api-runs-rerun": ("post", "run", "run", None, statuses(201, 404, 201)),
    "api-runs-events": ("get", "run", "read", None, OWNER_READ),
    "api-runs-values": ("get", "run", "read", None, OWNER_READ),
    "api-runs-output-ipynb": ("get", "run", "read", None, OWNER_READ),
    "api-runs-output-html": ("get", "run", "read", None, OWNER_READ),
    "api-runs-logs": ("get", "run", "read", None, OWNER_READ),
    "api-runs-log": ("get", "run_log", "read", None, OWNER_READ),
    # Both runs must be visible to the caller (here a run beside itself).
    "api-runs-compare": ("get", "run_pair", "read", None, OWNER_READ),
    "api-clusters-list": ("get", None, "read", None, EVERYONE),
    "api-clusters-list:post": (
        "post",
        None,
        "clusters",
        lambda: ({"name": "another", "size": 1, "lifetime_hours": 1}, "json"),
        statuses(201, 201, 201),
    ),
    "api-clusters-detail": ("get", "cluster", "read", None, OWNER_READ),
    "api-clusters-extend": (
        "post",
        "cluster",
        "clusters",
        lambda: ({"hours": 1}, "json"),
        statuses(200, 404, 200),
    ),
    "api-clusters-terminate": ("post", "cluster", "clusters", None, statuses(202, 404, 202)),
    # EMR's logs of a cluster: its owner only, as on the pages (read from moto's S3 here).
    "api-clusters-logs": ("get", "emr_cluster", "read", None, statuses(200, 404, 404)),
    "api-keys-list": ("get", None, "read", None, EVERYONE),
    "api-keys-list:post": (
        "post",
        None,
        "clusters",
        lambda: ({"title": "laptop", "key": public_key()}, "json"),
        statuses(201, 201, 201),
    ),
    # SSH keys are their owner's alone, as on the pages: staff too get 404.
    "api-keys-detail": ("get", "key", "read", None, statuses(200, 404, 404)),
    "api-keys-detail:delete": ("delete", "key", "clusters", None, statuses(204, 404, 404)),
    "api-jobs-backfill": (
        "post",
        "scheduled_job",
        "run",
        lambda: ({"start": "2026-03-01T00:00", "end": "2026-03-02T23:00"}, "json"),
        statuses(201, 404, 201),
    ),
    "api-jobs-sweep": (
        "post",
        "job",
        "run",
        lambda: ({"parameters": {"x": [1, 2]}}, "json"),
        statuses(201, 404, 201),
    ),
    "api-groups-list": ("get", None, "read", None, EVERYONE),
    "api-groups-detail": ("get", "group", "read", None, OWNER_READ),
    "api-groups-cancel": ("post", "group", "run", None, statuses(200, 404, 200)),
    "api-groups-retry": ("post", "group", "run", None, statuses(200, 404, 200)),
}


def api_routes() -> set[tuple[str, str]]:
    """(url name, method) of every API route and method it answers, from the URLconf."""
    routes = set()

    def walk(patterns, prefix):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern) and prefix.startswith("api/"):
                actions = getattr(p.callback, "actions", None)
                # DRF adds "head" beside "get" in a viewset's actions once it served one.
                for method in set(actions or ["get"]) - {"head", "options"}:
                    routes.add((p.name, method))

    walk(get_resolver().url_patterns, "")
    return routes


def row_route(key: str) -> tuple[str, str]:
    name, _, _ = key.partition(":")
    return name, MATRIX[key][0]


def test_every_api_route_is_in_the_matrix():
    assert {row_route(key) for key in MATRIX} == api_routes()


@pytest.fixture
def objects(make_job, alice, tmp_path):
    job = make_job("trivial.ipynb", name="private job")
    run = services.claim_run(services.run_now(job, alice).pk, "w")
    default_storage.save(job_logs.storage_key(run, "kernel.log"), ContentFile(b"kernel says"))
    run = succeeded_quickly(run)
    queued = services.run_now(job, alice)
    cluster = Cluster.objects.create(
        owner=alice,
        name="c1",
        state=Cluster.State.READY,
        started_at=timezone.now(),
        expires_at=timezone.now() + timedelta(hours=1),
    )
    key = cluster_services.add_ssh_key(alice, "desk", public_key())
    emr = Cluster.objects.create(
        owner=alice,
        name="e1",
        backend=Cluster.Backend.EMR,
        jobflow_id="j-MATRIX",
        expires_at=timezone.now() + timedelta(hours=1),
    )
    scheduled = make_job("trivial.ipynb", name="scheduled", cron="0 6 * * *", enabled=False)
    group = groups.create_sweep(job, alice, {"x": [1, 2]})
    return {
        "scheduled_job": [scheduled.pk],
        "group": [group.pk],
        "emr_cluster": [emr.pk],
        None: [],
        "nowhere": ["runs/-1/"],
        "job": [job.pk],
        "run": [run.pk],
        "run_pair": [run.pk, run.pk],
        "run_log": [run.pk, "kernel.log"],
        "queued_run": [queued.pk],
        "cluster": [cluster.pk],
        "key": [key.pk],
    }


# Every route for every caller: about 250 requests, each with its objects made afresh,
# which together pass the fast subset's two minutes. The full suite (CI) runs them; the
# check that every route has its rows stays in the fast subset.
@pytest.mark.slow
@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("key", sorted(MATRIX))
def test_api_permission_matrix(key, caller, objects, client, alice, bob, staff, request):
    method, kind, scope, body, expected = MATRIX[key]
    if kind == "emr_cluster":
        moto = request.getfixturevalue("aws")
        request.getfixturevalue("emr_settings").EMR_S3_ENDPOINT_URL = moto.endpoint
    name = key.partition(":")[0]
    user = {"owner": alice, "other": bob, "staff": staff, "wrong_scope": alice}.get(caller)
    headers = {}
    if user is not None:
        scopes = [s for s in SCOPES if s != scope] if caller == "wrong_scope" else list(SCOPES)
        _, token = ApiToken.issue(user, "matrix", scopes)
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    url = reverse(name, args=objects[kind])
    kwargs = {}
    if body is not None:
        data, form = body()
        if form == "json":
            kwargs = {"data": json.dumps(data), "content_type": "application/json"}
        else:
            kwargs = {"data": data}
    response = getattr(client, method)(url, **kwargs, **headers)
    assert response.status_code == expected[caller], (
        f"{method.upper()} {url} as {caller}: {response.status_code} {response.content[:300]!r}"
    )
    if response.status_code >= 400 and response["Content-Type"].startswith("application/json"):
        code = response.json()["code"]
        assert code == {401: "not_authenticated", 403: "missing_scope", 404: "not_found"}.get(
            response.status_code, code
        )
