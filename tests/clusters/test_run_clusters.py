"""The cluster of a run (launch_cluster_for_run): its lifetime, name, size and release, and
what becomes of the cluster an earlier attempt left."""

from datetime import timedelta

import pytest
from django.utils import timezone

from clusters import services
from clusters.models import Cluster, EMRRelease
from jobs import services as job_services

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(make_job, alice):
    """A run of a job with 2-worker clusters, in its first attempt."""
    run = job_services.run_now(make_job(cluster_size=2), alice, enqueue=False)
    run.attempt = 1
    return run


@pytest.mark.parametrize(
    ("timeout", "margin", "hours"),
    [
        (60, 600, 1),  # rounded up to a whole hour
        (3000, 600, 1),  # exactly one hour
        (3001, 600, 2),  # one second more: two
        (0, 0, 1),  # at least one
        (5400, 1800, 2),
        (5401, 1800, 3),
        (86400, 1800, 25),  # a run may outlive CLUSTER_MAX_LIFETIME_HOURS: not checked
    ],
)
def test_lifetime_is_timeout_plus_margin_in_whole_hours(run, timeout, margin, hours):
    run.timeout_seconds = timeout
    before = timezone.now()
    cluster = services.launch_cluster_for_run(run, "local", margin_seconds=margin)
    assert cluster.lifetime_hours == hours
    expected = before + timedelta(hours=hours)
    assert expected <= cluster.expires_at <= expected + timedelta(seconds=5)


def test_a_run_cluster_is_the_jobs_owners_and_not_started_here(
    run, alice, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as enqueued:
        cluster = services.launch_cluster_for_run(run, "local", margin_seconds=600)
    assert enqueued == []  # the run's worker starts it, not a task
    assert (cluster.name, cluster.owner, cluster.for_run, cluster.size) == (
        f"run-{run.pk}-a1",
        alice,
        run,
        2,
    )
    assert (cluster.backend, cluster.state, cluster.release) == (
        "local",
        Cluster.State.PENDING,
        settings.LOCAL_SPARK_VERSION,
    )


def test_an_emr_run_cluster_gets_the_newest_stable_release_offered(run, settings):
    settings.CLUSTER_BACKENDS = ["local", "emr"]
    settings.EMR_DEFAULT_RELEASE = "emr-7.0.0"
    cluster = services.launch_cluster_for_run(run, "emr", margin_seconds=1800)
    assert (cluster.backend, cluster.release) == ("emr", "emr-7.0.0")
    EMRRelease.objects.create(label="emr-7.5.0", status=EMRRelease.Status.STABLE)
    EMRRelease.objects.create(label="emr-7.6.0", status=EMRRelease.Status.EXPERIMENTAL)
    EMRRelease.objects.create(label="emr-7.1.0", status=EMRRelease.Status.STABLE)
    run.attempt = 2
    assert services.launch_cluster_for_run(run, "emr", margin_seconds=1800).release == "emr-7.5.0"


def test_a_retry_reuses_the_ready_cluster_of_an_earlier_attempt_when_asked(run):
    first = services.launch_cluster_for_run(run, "local", margin_seconds=600)
    Cluster.objects.filter(pk=first.pk).update(state=Cluster.State.READY)
    run.attempt = 2
    again = services.launch_cluster_for_run(run, "local", margin_seconds=600, reuse_ready=True)
    assert again.pk == first.pk and again.state == Cluster.State.READY
    assert Cluster.objects.count() == 1


@pytest.mark.parametrize(
    ("state", "reuse_ready"),
    [(Cluster.State.STARTING, True), (Cluster.State.READY, False), (Cluster.State.FAILED, True)],
)
def test_a_retry_replaces_a_cluster_it_does_not_reuse(
    run, state, reuse_ready, django_capture_on_commit_callbacks
):
    first = services.launch_cluster_for_run(run, "local", margin_seconds=600)
    Cluster.objects.filter(pk=first.pk).update(state=state)
    run.attempt = 2
    with django_capture_on_commit_callbacks() as enqueued:
        second = services.launch_cluster_for_run(
            run, "local", margin_seconds=600, reuse_ready=reuse_ready
        )
    first.refresh_from_db()
    assert second.pk != first.pk and second.name == f"run-{run.pk}-a2"
    assert Cluster.objects.get(for_run=run) == second and first.for_run is None
    if state in Cluster.FINAL_STATES:  # ended already: nothing to terminate
        assert first.state == state and enqueued == []
    else:  # terminated by a task, as any termination asked for outside its worker
        assert (first.state, first.state_reason) == ("TERMINATING", "Replaced by a new attempt.")
        assert len(enqueued) == 1
