"""A local cluster runs in its owner's sandbox: its Spark Connect endpoint wants the
cluster's token, its UDFs see nothing of the portal, a cancelled run's queries end on
the cluster, and termination leaves nothing of it behind."""

import json
import stat
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
from django.conf import settings

from clusters import services
from clusters.backends.local import LocalBackend, listening
from clusters.models import Cluster
from jobs import services as job_services
from jobs.models import Run
from portal import sandbox
from tests.integration.conftest import _cmdline, describe_run, wait_run, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(sandbox.unavailable_reason() is not None, reason=f"no sandbox here: {sandbox.unavailable_reason()}"),
]


def connect(cluster, token=None):
    """A Spark Connect session on ``cluster`` from this (host) process, as a client on the
    host network would open one; ``token`` None sends none. It becomes the active session
    (pyspark's ``udf`` uses that one)."""
    from pyspark.sql import SparkSession

    port = cluster.connect_address[1]
    url = f"sc://localhost:{port}/" + (f";token={token}" if token is not None else "")
    return SparkSession.builder.remote(url).getOrCreate()


def refused(cluster, token) -> str:
    """The error a session with ``token`` meets on its first query ("" if it worked)."""
    session = None
    try:
        session = connect(cluster, token)
        session.range(1).count()
    except Exception as exc:
        return str(exc)
    finally:
        if session is not None:
            session.stop()
    return ""


def running_jobs(cluster) -> list:
    """Spark jobs running now in the cluster's Spark Connect application (its UI's REST API)."""
    with urllib.request.urlopen(f"{cluster.app_ui_url}/api/v1/applications", timeout=5) as response:
        app = json.loads(response.read())[0]["id"]
    with urllib.request.urlopen(f"{cluster.app_ui_url}/api/v1/applications/{app}/jobs?status=running", timeout=5) as response:
        return json.loads(response.read())


def uid_processes(uid: int) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid]


def test_a_local_cluster_is_its_owners_sandbox(alice, make_job, procs):
    cluster = services.launch_cluster(alice, services.ClusterSpec(name="walled", size=1))
    services.start_cluster(cluster.pk)
    uid = sandbox.uid_for(alice.pk)
    try:
        cluster = services.wait_until_ready(cluster, timeout=240)
        info = cluster.backend_info
        # Every process of the cluster runs as its owner's uid, the secret in a private file.
        inside = LocalBackend()._inside(info)
        java = [p for p in inside if p.name() == "java"]
        assert len(java) >= 3 and all(p.uids().real == uid for p in java), [(p.pid, p.uids()) for p in inside]
        conf = Path(info["dir"]) / "conf" / "spark-defaults.conf"
        assert (conf.stat().st_uid, stat.S_IMODE(conf.stat().st_mode)) == (uid, 0o600)
        text = conf.read_text()
        assert "spark.authenticate true" in text and "spark.ui.killEnabled false" in text
        secret = text.split("spark.authenticate.secret ")[1].split()[0]
        commands = [_cmdline(p) for p in inside]
        assert all(secret not in c for c in commands), "the RPC secret is on a command line"
        assert all(cluster.connect_token not in c for c in commands), "the token is on a command line"

        # Spark Connect wants the cluster's token.
        assert "UNAUTHENTICATED" in refused(cluster, None)
        assert "UNAUTHENTICATED" in refused(cluster, "not-the-token")
        session = connect(cluster, cluster.connect_token)
        try:
            # A UDF runs on the cluster's executors, in its sandbox.
            from pyspark.sql.functions import udf

            @udf("string")
            def attempt(action):
                import os
                import subprocess

                kind, _, path = action.partition(":")
                try:
                    if kind == "read":
                        open(path, "rb").read(8)
                    elif kind == "list":
                        os.listdir(path)
                    elif kind == "write":
                        open(path, "w").write("pwned")
                    elif kind == "uid":
                        return str(os.getuid())
                    elif kind == "daemon":  # outlive the query: termination must still end it
                        subprocess.Popen(["setsid", "sleep", "600"], start_new_session=True)
                        return "started"
                    return "allowed"
                except Exception as exc:
                    return f"denied: {type(exc).__name__}"

            storage = settings.STORAGES["default"]["OPTIONS"]["location"]
            actions = [
                f"read:{settings.DATA_DIR / 'secret_key'}", f"list:{storage}", f"read:{Path(storage) / 'notebooks'}",
                f"write:{settings.BASE_DIR / 'portal' / 'pwned.py'}", f"list:{settings.DATA_DIR}", "read:/etc/shadow",
            ]
            rows = session.createDataFrame([(a,) for a in [*actions, "uid:", "daemon:"]], ["a"]).select(attempt("a").alias("r")).collect()
            results = dict(zip([*actions, "uid:", "daemon:"], [r["r"] for r in rows], strict=True))
        finally:
            session.stop()
        assert all(results[a].startswith("denied") for a in actions), results
        assert results["uid:"] == str(uid) and results["daemon:"] == "started", results

        # A run on the cluster that is cancelled ends its queries there, not only its kernel.
        procs.worker()
        job = make_job("spark_long.ipynb", spark_target="cluster", cluster=cluster)
        run = job_services.run_now(job, alice)
        wait_until(lambda: running_jobs(cluster), timeout=120, what="the run's Spark job on the cluster", procs=procs)
        job_services.cancel_run(Run.objects.get(pk=run.pk))
        run = wait_run(run.pk, Run.FINAL_STATES, timeout=60, procs=procs)
        assert run.state == Run.State.CANCELLED, describe_run(run.pk, procs)
        wait_until(lambda: not running_jobs(cluster), timeout=30, what="the cancelled run's Spark job to end", procs=procs)
        # ... and its Spark Connect session was released on the server: it cannot be used again.
        session_id = uuid.uuid5(run.uuid, f"attempt-{run.attempt}")
        assert "SESSION_CLOSED" in refused(cluster, f"{cluster.connect_token};session_id={session_id}")
    finally:
        services.terminate_cluster(Cluster.objects.get(pk=cluster.pk))
        cluster = services.stop_cluster(cluster.pk)
    assert cluster.state == Cluster.State.TERMINATED
    # Termination ends everything in the sandbox, the daemonized sleep included.
    wait_until(lambda: not uid_processes(uid), timeout=20, what="no process of the cluster's uid", procs=procs)
    assert not [p for p in (info["ports"]["master"], info["ports"]["connect"]) if listening(p)]
    assert not Path(info["dir"]).exists()
    assert LocalBackend().processes_left(info) == []
