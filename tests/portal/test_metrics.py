"""The operators' Prometheus endpoint: access by bearer token, and what it counts."""

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from clusters.models import Cluster
from jobs import services
from jobs.models import Run

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-0123456789"
CONTENT_HOST = "127.0.0.1:8000"


@pytest.fixture(autouse=True)
def _token(settings):
    settings.METRICS_TOKEN = TOKEN


@pytest.fixture
def broker_down(settings, tmp_path):
    settings.REDIS_URL = f"unix://{tmp_path}/no-redis.sock"


def scrape(client, token=TOKEN, **extra):
    return client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}", **extra)


def samples(client) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted label pairs): value}`` of a successful scrape."""
    response = scrape(client)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }


def make_run(job, user, state, **fields) -> Run:
    run = services.run_now(job, user, enqueue=False)
    Run.objects.filter(pk=run.pk).update(state=state, **fields)
    return Run.objects.get(pk=run.pk)


# --- Access -------------------------------------------------------------------------------


def test_the_endpoint_is_off_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    assert scrape(client, token="").status_code == 404
    assert scrape(client, token="anything").status_code == 404


def test_a_missing_or_malformed_authorization_is_401(client):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


@pytest.mark.parametrize("wrong", ["nope", TOKEN[:-1], TOKEN + "x", TOKEN.upper()])
def test_a_wrong_token_is_403(client, wrong):
    assert scrape(client, token=wrong).status_code == 403


def test_a_signed_in_session_is_not_a_token(client, staff):
    client.force_login(staff)
    assert client.get("/metrics").status_code == 401


def test_the_right_token_needs_no_sign_in(client, broker_down):
    response = scrape(client)
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    assert "portal_runs" in {f.name for f in text_string_to_metric_families(response.text)}


def test_the_user_content_host_never_serves_metrics(client):
    response = scrape(client, HTTP_HOST=CONTENT_HOST)
    assert response.status_code != 200
    assert b"portal_runs" not in response.content


def test_openmetrics_when_the_scraper_asks(client, broker_down):
    response = scrape(client, HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response["Content-Type"].startswith("application/openmetrics-text")
    names = {f.name for f in openmetrics_families(response.content.decode())}
    assert {"portal_runs", "portal_run_duration_seconds"} <= names


# --- What it counts -----------------------------------------------------------------------


def test_runs_by_state_include_every_state(client, make_job, alice, broker_down):
    job = make_job()
    make_run(job, alice, Run.State.QUEUED)
    make_run(job, alice, Run.State.FAILED)
    make_run(job, alice, Run.State.FAILED)
    got = samples(client)
    assert got[("portal_runs", (("state", "QUEUED"),))] == 1
    assert got[("portal_runs", (("state", "FAILED"),))] == 2
    assert got[("portal_runs", (("state", "RUNNING"),))] == 0
    assert {labels for name, labels in got if name == "portal_runs"} == {
        (("state", s.value),) for s in Run.State
    }


def test_duration_and_lag_histograms_cover_the_last_hour(client, make_job, alice, broker_down):
    now = timezone.now()
    job = make_job()
    ago = lambda minutes, seconds=0: now - timedelta(minutes=minutes, seconds=seconds)  # noqa: E731
    # Finished in the window: 45 s and 20 min; a failure of 3 s; one finished long ago.
    make_run(job, alice, Run.State.SUCCEEDED, started_at=ago(10, 45), finished_at=ago(10))
    make_run(job, alice, Run.State.SUCCEEDED, started_at=ago(30), finished_at=ago(10))
    make_run(job, alice, Run.State.FAILED, started_at=ago(5, 3), finished_at=ago(5))
    make_run(job, alice, Run.State.SUCCEEDED, started_at=ago(180, 1), finished_at=ago(180))
    # Scheduled runs that started in the window 3 s and 90 s after their slot; one that
    # started long ago; a manual run (no slot, no lag).
    for lag, started in ((3, ago(20)), (90, ago(40)), (1, ago(120))):
        make_run(
            job,
            alice,
            Run.State.RUNNING,
            trigger=Run.Trigger.SCHEDULE,
            scheduled_for=started - timedelta(seconds=lag),
            started_at=started,
        )

    got = samples(client)

    def bucket(name, le, **labels):
        return got[(name + "_bucket", tuple(sorted({**labels, "le": le}.items())))]

    ok = {"state": "SUCCEEDED"}
    assert bucket("portal_run_duration_seconds", "30.0", **ok) == 0
    assert bucket("portal_run_duration_seconds", "60.0", **ok) == 1
    assert bucket("portal_run_duration_seconds", "1800.0", **ok) == 2
    assert bucket("portal_run_duration_seconds", "+Inf", **ok) == 2
    assert got[("portal_run_duration_seconds_gsum", (("state", "SUCCEEDED"),))] == 45 + 1200
    assert bucket("portal_run_duration_seconds", "5.0", state="FAILED") == 1
    assert bucket("portal_run_start_lag_seconds", "2.0") == 0
    assert bucket("portal_run_start_lag_seconds", "5.0") == 1
    assert bucket("portal_run_start_lag_seconds", "120.0") == 2
    assert bucket("portal_run_start_lag_seconds", "+Inf") == 2
    assert got[("portal_run_start_lag_seconds_gsum", ())] == 93
    last = got[("portal_run_last_started_timestamp_seconds", ())]
    assert last == pytest.approx(ago(5, 3).timestamp())


def test_live_clusters_and_their_node_hours(client, alice, broker_down):
    now = timezone.now()
    later = now + timedelta(hours=8)
    Cluster.objects.create(
        owner=alice,
        name="local-ready",
        size=2,
        state=Cluster.State.READY,
        started_at=now - timedelta(hours=3),
        expires_at=later,
    )
    Cluster.objects.create(
        owner=alice,
        name="emr-starting",
        backend=Cluster.Backend.EMR,
        size=1,
        state=Cluster.State.STARTING,
        started_at=now - timedelta(hours=1),
        expires_at=later,
    )
    Cluster.objects.create(
        owner=alice,
        name="gone",
        size=8,
        state=Cluster.State.TERMINATED,
        started_at=now - timedelta(hours=5),
        terminated_at=now - timedelta(hours=1),
        expires_at=later,
    )

    got = samples(client)

    def live(backend, state):
        return got[("portal_clusters", (("backend", backend), ("state", state)))]

    assert live("local", "READY") == 1
    assert live("emr", "STARTING") == 1
    assert live("local", "STARTING") == 0
    assert ("portal_clusters", (("backend", "local"), ("state", "TERMINATED"))) not in got
    # 2 workers for 3 h; EMR bills its master too: 2 nodes for 1 h. The scrape is later
    # than ``now``, by well under a minute.
    assert 6.0 <= got[("portal_cluster_node_hours", (("backend", "local"),))] < 6.05
    assert 2.0 <= got[("portal_cluster_node_hours", (("backend", "emr"),))] < 2.05


def test_running_and_held_runs_per_user_by_id_only(client, make_job, alice, bob, broker_down):
    mine, theirs = make_job(), make_job(owner=bob)
    make_run(mine, alice, Run.State.RUNNING, started_at=timezone.now())
    make_run(mine, alice, Run.State.QUEUED, held_since=timezone.now())
    make_run(theirs, bob, Run.State.RUNNING, started_at=timezone.now())
    make_run(theirs, bob, Run.State.RUNNING, started_at=timezone.now())
    make_run(theirs, bob, Run.State.QUEUED)  # queued, not held

    response = scrape(client)
    got = samples(client)

    assert got[("portal_user_running_runs", (("user", str(alice.pk)),))] == 1
    assert got[("portal_user_running_runs", (("user", str(bob.pk)),))] == 2
    assert got[("portal_user_held_runs", (("user", str(alice.pk)),))] == 1
    assert ("portal_user_held_runs", (("user", str(bob.pk)),)) not in got
    # No personal data: neither addresses nor user names.
    assert b"@" not in response.content
    assert b"alice" not in response.content and b"bob" not in response.content


def test_a_broker_that_is_down_is_reported_not_raised(client, broker_down):
    got = samples(client)
    assert got[("portal_broker_up", ())] == 0
    assert not any(name == "portal_queue_depth" for name, _ in got)


@pytest.mark.redis
def test_queue_depth_per_queue_from_the_broker(client):
    import redis
    from kombu.transport.redis import Channel

    from tests.processes import flush_broker

    prefix = django_settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", "")
    broker = redis.Redis.from_url(django_settings.REDIS_URL)
    keys = [f"{prefix}runs", f"{prefix}runs{Channel.sep}3", f"{prefix}clusters"]
    flush_broker()  # messages earlier tests of the session left for no worker
    try:
        broker.rpush(keys[0], "m1", "m2", "m3")
        broker.rpush(keys[1], "m4")  # a message with a priority: its own list
        broker.rpush(keys[2], "m5")
        got = samples(client)
    finally:
        broker.delete(*keys)
    assert got[("portal_broker_up", ())] == 1
    assert got[("portal_queue_depth", (("queue", "runs"),))] == 4
    assert got[("portal_queue_depth", (("queue", "clusters"),))] == 1
    assert got[("portal_queue_depth", (("queue", "control"),))] == 0
