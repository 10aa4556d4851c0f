"""Launch rules, lifetimes and expiry of clusters (no backend processes involved)."""

from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from clusters import services
from clusters.models import Cluster
from clusters.services import ClusterError, ClusterSpec

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ClusterSpec(name="a", size=0), "1 to 4 workers"),
        (ClusterSpec(name="a", size=5), "1 to 4 workers"),
        (ClusterSpec(name="a", lifetime_hours=0), "1 to 24 hours"),
        (ClusterSpec(name="a", lifetime_hours=25), "1 to 24 hours"),
        (ClusterSpec(name="a", backend="emr"), "not enabled"),
    ],
)
def test_out_of_bounds_launches_are_refused(alice, spec, message):
    with pytest.raises(ClusterError, match=message):
        services.launch_cluster(alice, spec)
    assert not Cluster.objects.exists()


def test_staff_may_exceed_size_and_lifetime(staff):
    cluster = services.launch_cluster(staff, ClusterSpec(name="big", size=6, lifetime_hours=48))
    assert cluster.size == 6 and cluster.state == Cluster.State.PENDING


def test_emr_needs_an_ssh_key(alice, settings):
    settings.CLUSTER_BACKENDS = ["local", "emr"]
    with pytest.raises(ClusterError, match="need an SSH key"):
        services.launch_cluster(alice, ClusterSpec(name="e", backend="emr", release="emr-7.5.0"))


def test_live_names_are_unique_per_owner_and_limits_hold(alice, bob, settings):
    services.launch_cluster(alice, ClusterSpec(name="one"))
    with pytest.raises(ClusterError, match="already have a live cluster named"):
        services.launch_cluster(alice, ClusterSpec(name="one"))
    services.launch_cluster(bob, ClusterSpec(name="one"))
    services.launch_cluster(alice, ClusterSpec(name="two"))
    with pytest.raises(ClusterError, match="already have 2 live local clusters"):
        services.launch_cluster(alice, ClusterSpec(name="three"))
    settings.LOCAL_CLUSTER_MAX_PER_HOST = 3
    with pytest.raises(ClusterError, match="as many local clusters as it can"):
        services.launch_cluster(bob, ClusterSpec(name="four"))


def test_suggested_names_avoid_live_ones(alice):
    first = services.suggest_name(alice)
    services.launch_cluster(alice, ClusterSpec(name=first))
    assert services.suggest_name(alice) != first


def test_extension_moves_expiry_and_rearms_the_warning(alice, staff):
    cluster = services.launch_cluster(alice, ClusterSpec(name="x", lifetime_hours=2))
    Cluster.objects.filter(pk=cluster.pk).update(
        state="READY", expiry_warning_sent_at=timezone.now()
    )
    before = cluster.expires_at
    cluster = services.extend_cluster(cluster, 3, alice)
    assert cluster.expires_at == before + timedelta(hours=3) and cluster.extension_count == 1
    assert cluster.expiry_warning_sent_at is None
    with pytest.raises(ClusterError, match="Extend by 1 to 8 hours"):
        services.extend_cluster(cluster, 9, alice)
    services.extend_cluster(cluster, 8, alice)
    services.extend_cluster(cluster, 8, alice)  # 2 + 3 + 8 + 8 = 21 hours
    with pytest.raises(ClusterError, match="at most 24 hours in all"):
        services.extend_cluster(cluster, 4, alice)
    assert services.extend_cluster(cluster, 4, staff).extension_count == 4


def test_expiry_warning_is_sent_once_per_expiry(alice, on_commit_tasks):
    cluster = services.launch_cluster(alice, ClusterSpec(name="x", lifetime_hours=1))
    Cluster.objects.filter(pk=cluster.pk).update(
        state="READY", expires_at=timezone.now() + timedelta(minutes=30)
    )
    assert on_commit_tasks(services.warn_expiring_clusters) == 1
    assert on_commit_tasks(services.warn_expiring_clusters) == 0
    assert (
        len(mail.outbox) == 1
        and "“x” expires in" in mail.outbox[0].subject
        and mail.outbox[0].to == [alice.email]
    )
    services.extend_cluster(Cluster.objects.get(pk=cluster.pk), 1, alice)
    assert on_commit_tasks(services.warn_expiring_clusters) == 0  # 90 minutes left
    Cluster.objects.filter(pk=cluster.pk).update(expires_at=timezone.now() + timedelta(minutes=5))
    assert on_commit_tasks(services.warn_expiring_clusters) == 1
    assert len(mail.outbox) == 2 and "expires in 4 minutes" in mail.outbox[1].subject


def test_an_expiry_warning_is_sent_once_even_when_its_task_runs_again(alice):
    """The task may run twice (enqueued by two passes, or redelivered): one e-mail."""
    cluster = services.launch_cluster(alice, ClusterSpec(name="x"))
    Cluster.objects.filter(pk=cluster.pk).update(
        state="READY", expires_at=timezone.now() + timedelta(minutes=30)
    )
    assert services.send_expiry_warning(cluster.pk) is True
    assert services.send_expiry_warning(cluster.pk) is False
    assert len(mail.outbox) == 1


def test_a_failed_expiry_warning_is_retried_and_sent_once(alice, bob, monkeypatch):
    """A mail server that fails for one owner fails that warning only (OSError, which the
    task retries); a retry sends it, once; the owners already warned are not mailed again."""
    from smtplib import SMTPServerDisconnected

    from django.core.mail import EmailMessage

    for owner in (alice, bob):
        cluster = services.launch_cluster(owner, ClusterSpec(name="x"))
        Cluster.objects.filter(pk=cluster.pk).update(
            state="READY", expires_at=timezone.now() + timedelta(minutes=30)
        )
    mine, bobs = Cluster.objects.get(owner=alice), Cluster.objects.get(owner=bob)
    send = EmailMessage.send

    def flaky(message, *args, **kwargs):
        if message.to == [bob.email]:
            raise SMTPServerDisconnected("Connection unexpectedly closed")
        return send(message, *args, **kwargs)

    monkeypatch.setattr(EmailMessage, "send", flaky)
    assert services.send_expiry_warning(mine.pk) is True
    with pytest.raises(OSError):
        services.send_expiry_warning(bobs.pk)
    assert Cluster.objects.get(pk=bobs.pk).expiry_warning_sent_at is None

    monkeypatch.setattr(EmailMessage, "send", send)
    assert [services.send_expiry_warning(c.pk) for c in (mine, bobs)] == [False, True]
    assert [m.to for m in mail.outbox] == [[alice.email], [bob.email]]


def test_the_expiry_warning_task_retries_mail_server_errors():
    from clusters.tasks import send_expiry_warning

    assert send_expiry_warning.autoretry_for == (OSError,) and send_expiry_warning.max_retries


def test_an_extended_cluster_gets_no_warning_for_its_old_expiry(alice):
    """A warning enqueued before an extension finds the cluster no longer expiring."""
    cluster = services.launch_cluster(alice, ClusterSpec(name="x", lifetime_hours=1))
    Cluster.objects.filter(pk=cluster.pk).update(
        state="READY", expires_at=timezone.now() + timedelta(minutes=30)
    )
    services.extend_cluster(Cluster.objects.get(pk=cluster.pk), 2, alice)
    assert services.send_expiry_warning(cluster.pk) is False and not mail.outbox


def test_expired_clusters_are_terminated(alice):
    cluster = services.launch_cluster(alice, ClusterSpec(name="x", lifetime_hours=1))
    Cluster.objects.filter(pk=cluster.pk).update(
        state="READY", expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert services.terminate_expired_clusters() == 1
    cluster.refresh_from_db()
    assert cluster.state == Cluster.State.TERMINATING and "Expired" in cluster.state_reason
    assert services.terminate_expired_clusters() == 0


def test_cost_counts_whole_days_of_node_hours(alice, settings):
    settings.CLUSTER_PRICE_PER_NODE_HOUR = 0.5
    cluster = services.launch_cluster(alice, ClusterSpec(name="x", size=2))
    now = timezone.now()
    Cluster.objects.filter(pk=cluster.pk).update(
        state="TERMINATED", started_at=now - timedelta(days=1, hours=2), terminated_at=now
    )
    cluster.refresh_from_db()
    assert cluster.node_hours == pytest.approx(52.0) and cluster.estimated_cost == pytest.approx(
        26.0
    )
    assert services.usage_by_user()[0]["node_hours"] == pytest.approx(52.0)


def test_launch_form_refuses_bad_input(alice_client):
    response = alice_client.post(
        reverse("clusters-new"),
        {"name": "bad name!", "backend": "local", "size": "99", "lifetime_hours": "0"},
    )
    html = response.content.decode()
    assert response.status_code == 200 and "valid" in html and not Cluster.objects.exists()


def test_launch_form_creates_a_pending_cluster(alice_client, alice):
    response = alice_client.post(
        reverse("clusters-new"),
        {"name": "my-cluster", "backend": "local", "size": "2", "lifetime_hours": "3"},
    )
    cluster = Cluster.objects.get()
    assert response["Location"] == cluster.get_absolute_url()
    assert (cluster.owner, cluster.size, cluster.state) == (alice, 2, Cluster.State.PENDING)
    assert cluster.expires_at - cluster.created_at == pytest.approx(
        timedelta(hours=3), abs=timedelta(seconds=5)
    )


def test_choosing_emr_without_a_key_sends_the_user_to_add_one(alice_client, settings):
    settings.CLUSTER_BACKENDS = ["local", "emr"]
    response = alice_client.get(reverse("clusters-new") + "?backend=emr")
    assert response.status_code == 302 and response["Location"].startswith(reverse("keys-new"))


def test_terminate_needs_post_and_is_idempotent(alice_client, alice):
    cluster = services.launch_cluster(alice, ClusterSpec(name="x"))
    assert alice_client.get(reverse("clusters-terminate", args=[cluster.pk])).status_code == 200
    alice_client.post(reverse("clusters-terminate", args=[cluster.pk]))
    alice_client.post(reverse("clusters-terminate", args=[cluster.pk]))
    cluster.refresh_from_db()
    assert cluster.state == Cluster.State.TERMINATING


def test_processes_exiting_during_termination_end_terminated_not_failed(alice):
    """Local describe: a cluster asked to stop whose Spark processes exited is TERMINATED
    once none is left (TERMINATING while one is), never FAILED; the same exit of a
    running cluster is a failure. Worker counts stay as recorded."""
    import socket
    import subprocess

    from clusters.backends.local import LocalBackend

    left = subprocess.Popen(["sleep", "60"])  # a process of the cluster still alive
    try:
        info = {
            "host": socket.gethostname(),
            "pids": {"master": 2**22 + 1, "workers": [], "connect": left.pid},
        }
        cluster = services.launch_cluster(alice, ClusterSpec(name="x"))
        Cluster.objects.filter(pk=cluster.pk).update(
            state="READY", backend_info=info, workers_registered=1, cores=1
        )
        cluster.refresh_from_db()
        assert LocalBackend().describe(cluster).state == "FAILED"

        Cluster.objects.filter(pk=cluster.pk).update(
            state="TERMINATING", state_reason="Terminated by its owner."
        )
        cluster.refresh_from_db()
        status = LocalBackend().describe(cluster)
        assert (status.state, status.workers, status.cores) == ("TERMINATING", None, None)
    finally:
        left.kill()
        left.wait()
    assert LocalBackend().describe(cluster).state == "TERMINATED"
    cluster = services.sync_cluster(cluster)
    assert (cluster.state, cluster.state_reason) == ("TERMINATED", "Terminated by its owner.")
    assert (cluster.workers_registered, cluster.cores) == (1, 1)


def test_a_local_cluster_stopped_before_it_started_ends_terminated(alice, on_commit_tasks):
    """Terminated while PENDING: the start task finds it TERMINATING and starts nothing;
    the stop task ends it TERMINATED (nothing ran)."""
    cluster = services.launch_cluster(alice, ClusterSpec(name="x"))
    cluster = on_commit_tasks(services.request_termination, cluster)
    assert on_commit_tasks.enqueued == 1  # stop_cluster_task, run eagerly
    cluster.refresh_from_db()
    assert cluster.state == Cluster.State.TERMINATED and cluster.terminated_at
    assert services.start_cluster(cluster.pk).backend_info == {}


def test_terminate_now_terminates_here_and_enqueues_nothing(
    alice, django_capture_on_commit_callbacks
):
    cluster = services.launch_cluster(alice, ClusterSpec(name="x"))
    with django_capture_on_commit_callbacks() as enqueued:
        cluster = services.terminate_now(cluster, "The run it was started for ended.")
    assert enqueued == []
    assert (cluster.state, cluster.state_reason) == (
        Cluster.State.TERMINATED,
        "The run it was started for ended.",
    )
    with django_capture_on_commit_callbacks() as enqueued:
        services.request_termination(cluster)  # ended: nothing to do, nothing enqueued
    assert enqueued == []


def test_a_stale_answer_of_the_backend_is_not_recorded(alice):
    """The row changed state while the backend was asked (here: terminated while a sync
    described it READY): the answer is dropped, not written over the new state."""
    from clusters.backends import ClusterStatus

    cluster = services.launch_cluster(alice, ClusterSpec(name="x"))
    Cluster.objects.filter(pk=cluster.pk).update(state="READY")
    cluster.refresh_from_db()
    Cluster.objects.filter(pk=cluster.pk).update(state="TERMINATING")
    recorded = services._record_status(cluster, ClusterStatus("FAILED", reason="exited"))
    assert (recorded.state, recorded.state_reason) == ("TERMINATING", "")


def test_cluster_page_shows_connection_details_only_while_they_answer(alice_client, alice):
    cluster = services.launch_cluster(alice, ClusterSpec(name="snippets"))
    url = reverse("clusters-detail", args=[cluster.pk])
    pending = alice_client.get(url).content.decode()
    assert 'remote("")' not in pending and "appear here as soon as the master is up" in pending
    Cluster.objects.filter(pk=cluster.pk).update(
        state="READY",
        connect_url="sc://127.0.0.1:15002",
        master_url="spark://127.0.0.1:7077",
        cores=1,
    )
    ready = alice_client.get(url).content.decode()
    assert 'remote("sc://127.0.0.1:15002")' in ready and "1 core ·" in ready
    Cluster.objects.filter(pk=cluster.pk).update(state="TERMINATED", terminated_at=timezone.now())
    ended = alice_client.get(url).content.decode()
    assert "has ended" in ended and 'remote("sc://' not in ended


def test_launch_form_shows_emr_fields_only_when_emr_is_enabled(alice_client, settings):
    settings.CLUSTER_BACKENDS = ["local"]
    assert "EMR release" not in alice_client.get(reverse("clusters-new")).content.decode()
    settings.CLUSTER_BACKENDS = ["local", "emr"]
    assert "EMR release" in alice_client.get(reverse("clusters-new")).content.decode()


def test_a_local_cluster_of_another_host_is_never_signalled_here():
    import os

    from clusters.backends import BackendError
    from clusters.backends.local import LocalBackend

    info = {"host": "another-host", "pids": {"master": os.getpid(), "workers": [], "connect": None}}
    with pytest.raises(BackendError, match="another-host"):
        LocalBackend().terminate_info(info, grace=0)
