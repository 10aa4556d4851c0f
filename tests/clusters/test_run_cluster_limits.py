"""A run's own cluster obeys what a launch by hand obeys: the enabled backends, the
per-user and per-host caps, and its owner's budget. A refusal ends the run FAILED with the
reason (or, for a cap that may free up, retries it), and never reaches a backend."""

from datetime import timedelta

import pytest
from django.utils import timezone

from clusters import services
from clusters.models import Cluster
from clusters.services import ClusterError, ClusterSpec
from jobs import services as job_services
from jobs.models import Run
from quotas.limits import LimitExceeded
from quotas.models import UserLimits

pytestmark = pytest.mark.django_db


@pytest.fixture
def run_of(make_job, alice):
    """Factory: a QUEUED run of a job of alice's on ``target`` with ``fields``."""

    def make(target="new_cluster", **fields):
        job = make_job(spark_target=target, **fields)
        return job_services.run_now(job, alice, enqueue=False)

    return make


def live_cluster(owner, name, backend="local"):
    return Cluster.objects.create(
        owner=owner,
        name=name,
        backend=backend,
        state=Cluster.State.READY,
        started_at=timezone.now(),
        expires_at=timezone.now() + timedelta(hours=1),
    )


def test_an_emr_run_fails_when_emr_is_not_enabled(run_of, settings):
    settings.CLUSTER_BACKENDS = ["local", "emr"]
    queued = run_of("emr_cluster", max_retries=2)
    settings.CLUSTER_BACKENDS = ["local"]  # turned off after the job was made
    run = job_services.execute_run(queued.pk)
    assert run.state == Run.State.FAILED and run.attempt == 1  # not retried
    assert "fresh AWS EMR cluster, but AWS EMR is not enabled" in run.state_reason
    assert not Cluster.objects.exists()


def test_a_local_run_fails_when_local_clusters_are_not_enabled(run_of, settings):
    queued = run_of()
    settings.CLUSTER_BACKENDS = ["emr"]
    run = job_services.execute_run(queued.pk)
    assert run.state == Run.State.FAILED and "Local Spark standalone is not" in run.state_reason


def test_run_clusters_count_against_the_per_user_cap(run_of, alice, settings):
    settings.LOCAL_CLUSTER_MAX_PER_USER = 2
    live_cluster(alice, "mine")
    first = run_of()
    first.attempt = 1
    services.launch_cluster_for_run(first, "local", margin_seconds=600)  # 2 of 2
    with pytest.raises(ClusterError, match="already have 2 live local clusters") as refused:
        services.launch_cluster(alice, ClusterSpec(name="by-hand"))
    assert refused.value.retry
    second = run_of(name="second")
    second.attempt = 1
    with pytest.raises(ClusterError, match="already have 2 live local clusters"):
        services.launch_cluster_for_run(second, "local", margin_seconds=600)


def test_a_run_refused_by_the_host_cap_is_retried_then_fails(run_of, bob, settings):
    settings.LOCAL_CLUSTER_MAX_PER_HOST = 1
    live_cluster(bob, "bobs")
    run = run_of(max_retries=1)
    retried = job_services.execute_run(run.pk)
    assert retried.state == Run.State.QUEUED and "as many local clusters as it can" in (
        retried.state_reason
    )
    Run.objects.filter(pk=run.pk).update(not_before=None)
    failed = job_services.execute_run(run.pk)
    assert failed.state == Run.State.FAILED and failed.attempt == 2
    assert "as many local clusters as it can" in failed.state_reason
    assert Cluster.objects.count() == 1  # only bob's


def test_a_run_whose_cluster_would_pass_the_budget_fails_with_the_reason(run_of, alice):
    run = run_of(cluster_size=2, timeout_seconds=3600, max_retries=2)  # 2 x 2 h = 4 node-hours
    UserLimits.objects.create(user=alice, monthly_node_hours=3)  # lowered after it was queued
    run = job_services.execute_run(run.pk)
    assert run.state == Run.State.FAILED and run.attempt == 1
    assert "This needs about 4.0 node-hours" in run.state_reason
    assert not Cluster.objects.exists()


def test_staff_are_not_held_by_the_per_user_cap_but_by_the_host(run_of, staff, settings, make_job):
    settings.LOCAL_CLUSTER_MAX_PER_USER = 1
    settings.LOCAL_CLUSTER_MAX_PER_HOST = 2
    live_cluster(staff, "one")
    job = make_job(owner=staff, spark_target="new_cluster")
    run = job_services.run_now(job, staff, enqueue=False)
    run.attempt = 1
    services.launch_cluster_for_run(run, "local", margin_seconds=600)
    run.attempt = 2
    with pytest.raises(ClusterError, match="as many local clusters"):
        services.launch_cluster_for_run(run, "local", margin_seconds=600)


def test_the_budget_refusal_of_a_run_cluster_is_a_limit(run_of, alice):
    run = run_of()
    UserLimits.objects.create(user=alice, monthly_node_hours=1)
    run.attempt = 1
    with pytest.raises(LimitExceeded):
        services.launch_cluster_for_run(run, "local", margin_seconds=600)
