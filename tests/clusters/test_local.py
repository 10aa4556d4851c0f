"""The local backend for real: a Spark standalone cluster with Spark Connect on loopback."""

import datetime as dt
import json
import urllib.request

import pytest

from clusters import services
from clusters.backends.local import LocalBackend, listening
from clusters.models import Cluster
from jobs import services as job_services
from jobs.models import Job, Run
from portal.sandbox import Cgroup

pytestmark = [pytest.mark.slow, pytest.mark.sandbox, pytest.mark.django_db(transaction=True)]


def assert_gone(info):
    assert LocalBackend().processes_left(info) == []
    ports = info["ports"]
    assert not [p for p in (ports["master"], ports["ui"], ports["connect"]) if listening(p)]


def test_a_job_runs_on_a_running_cluster_through_spark_connect(alice, make_job):
    cluster = services.launch_cluster(alice, services.ClusterSpec(name="team", size=1))
    services.start_cluster(cluster.pk)
    try:
        cluster = services.wait_until_ready(cluster, timeout=240)
        assert (cluster.workers_registered, cluster.ready_at is not None) == (1, True)
        assert cluster.connect_url.startswith("sc://127.0.0.1:") and cluster.master_url.startswith(
            "spark://127.0.0.1:"
        )
        status = json.loads(urllib.request.urlopen(cluster.ui_url + "/json/", timeout=5).read())
        assert status["aliveworkers"] == 1
        # The REST submission server, which takes unauthenticated submissions, is off.
        assert (
            "6066" not in open(LocalBackend().cluster_dir(cluster) / "logs" / "master.log").read()
        )

        job = make_job("spark_small.ipynb", spark_target="cluster", cluster=cluster)
        run = job_services.execute_run(job_services.run_now(job, alice, enqueue=False).pk)
        assert run.state == Run.State.SUCCEEDED, run.state_reason
        assert run.cluster_id == cluster.pk
        apps = LocalBackend().applications(cluster)
        assert any(a["name"].startswith("Spark Connect") for a in apps)
    finally:
        info = Cluster.objects.get(pk=cluster.pk).backend_info
        cluster = services.terminate_now(cluster, "Test over.")
    assert cluster.state == Cluster.State.TERMINATED and cluster.terminated_at
    assert_gone(info)


def test_a_fresh_cluster_is_started_for_a_run_and_terminated_after_it(alice, make_job):
    job = make_job("spark_small.ipynb", spark_target="new_cluster", cluster_size=1)
    run = job_services.execute_run(job_services.run_now(job, alice, enqueue=False).pk)
    assert run.state == Run.State.SUCCEEDED, run.state_reason
    cluster = Cluster.objects.get(pk=run.cluster_id)
    assert cluster.for_run_id == run.pk and cluster.state == Cluster.State.TERMINATED
    assert_gone(cluster.backend_info)
    # What the run used: its own cluster's final node-hours, its time, its kernel's CPU.
    assert run.node_hours == pytest.approx(cluster.node_hours) and run.node_hours > 0
    assert run.wall_seconds > cluster.node_hours * 3600  # it waited for the cluster too
    if Cgroup.locate("probe") is not None:  # a host that accounts CPU time
        assert run.cpu_seconds > 0


def test_exited_cluster_processes_are_reaped_not_left_as_zombies(tmp_path):
    import os
    import time

    import psutil

    from clusters.backends import local
    from portal.sandbox import Sandbox, SandboxSpec, uid_for

    box = Sandbox(
        SandboxSpec(
            name=f"zombie-{os.getpid()}", uid=uid_for(4343), network=True, die_with_parent=False
        )
    ).prepare()
    try:
        pid = local.LocalBackend()._spawn(
            box, ["true"], {"PATH": os.defpath}, tmp_path / "true.log"
        )
    finally:
        box.destroy()
    deadline = time.monotonic() + 10
    while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited, not yet waited for
    assert local.reap_children() >= 1
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def test_the_streaming_examples_run_on_a_local_cluster_in_its_sandbox(alice, make_job):
    """The streaming examples as continuous jobs on a local cluster (Spark Connect): the
    cluster's sandbox reads the landing files and writes each job's checkpoint and sink
    (its owner's streams directory); with ``available_now`` each run ends by itself. The
    windowed counts equal a batch recomputation; the counters of ``observe()`` arrive
    through Spark Connect."""
    import nbformat
    from django.core.files.storage import default_storage

    from jobs.services import streams
    from telemetry import landing
    from tests import sandboxes
    from tests.stream_windows import batch_windows, local_spark, sink_rows, sink_windows

    inbox = sandboxes.shared_dir("cluster-stream")
    for i in range(10):
        landing.write_batch(inbox, i, seed=3, pings=100)
    late = landing.batch_time(9) + dt.timedelta(minutes=31, seconds=7)
    landing.write_batch(inbox, 10, seed=3, pings=100, at=late)
    cluster = services.launch_cluster(alice, services.ClusterSpec(name="streams", size=1))
    services.start_cluster(cluster.pk)
    jobs, outputs = {}, {}
    try:
        cluster = services.wait_until_ready(cluster, timeout=240)
        for notebook in (
            "stream_windowed_counts.ipynb",
            "stream_hang_sessions.ipynb",
            "stream_addon_join.ipynb",
        ):
            job = make_job(
                notebook,
                continuous=True,
                spark_target="cluster",
                cluster=cluster,
                parameters={"landing_dir": str(inbox), "available_now": True},
            )
            assert streams.supervise_streams()["started"] == 1
            (run,) = job.runs.all()
            Job.objects.filter(pk=job.pk).update(enabled=False)  # no restart after its end
            run = job_services.execute_run(run.pk)
            assert run.state == Run.State.SUCCEEDED, (notebook, run.state_reason)
            assert run.cluster_id == cluster.pk
            with default_storage.open(run.output_key, "rb") as fh:
                outputs[notebook] = nbformat.read(fh, as_version=4)
            jobs[notebook] = job
    finally:
        services.terminate_now(Cluster.objects.get(pk=cluster.pk), "Test over.")
    spark = local_spark()
    windowed = jobs["stream_windowed_counts.ipynb"]
    expected = batch_windows(spark, inbox)
    assert expected and sink_windows(spark, windowed.output_dir) == expected
    assert sink_rows(spark, windowed.output_dir) == len(expected)
    assert (windowed.checkpoint_dir / "commits").is_dir()
    assert spark.read.parquet(str(jobs["stream_hang_sessions.ipynb"].output_dir)).count() > 0
    text = "".join(
        o.get("text", "")
        for c in outputs["stream_addon_join.ipynb"].cells
        for o in c.get("outputs", [])
    )
    (line,) = [x for x in text.splitlines() if x.startswith("counters: ")]
    assert json.loads(line.removeprefix("counters: "))["pings"] == 11 * 100
