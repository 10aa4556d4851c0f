"""A local cluster runs in its owner's sandbox: its Spark Connect endpoint wants the
cluster's token, its UDFs see nothing of the portal, a cancelled run's queries end on
the cluster, and termination leaves nothing of it behind."""

import json
import stat
import subprocess
import sys
import urllib.error
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
]


#: Run as a separate Spark Connect client process (pyspark's Connect mode is process-wide
#: state that would turn every later local Spark session of this test process into Connect).
CLIENT = r"""
import json, sys
from pyspark.sql import SparkSession
from pyspark.sql.functions import udf

url, actions = sys.argv[1], json.loads(sys.argv[2])
try:
    spark = SparkSession.builder.remote(url).getOrCreate()
    spark.range(1).count()
except Exception as exc:
    print(json.dumps({"error": str(exc)}))
    raise SystemExit(0)


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


rows = []
if actions:
    frame = spark.createDataFrame([(a,) for a in actions], ["a"])
    rows = frame.select(attempt("a").alias("r")).collect()
print(json.dumps({"error": "", "results": dict(zip(actions, [r["r"] for r in rows]))}))
spark.stop()
"""


def client(cluster, token=None, actions=(), session_id=None, user_id=None) -> dict:
    """Run CLIENT against ``cluster`` as a Spark Connect client on the host network, with
    ``token`` (None sends none); it runs ``actions`` in a UDF on the cluster's executors.
    Returns ``{"error": ...}`` or ``{"error": "", "results": {action: outcome}}``."""
    url = f"sc://localhost:{cluster.connect_address[1]}/"
    url += f";token={token}" if token is not None else ""
    url += f";session_id={session_id};user_id={user_id}" if session_id else ""
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, url, json.dumps(list(actions))],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def running_jobs(cluster) -> list:
    """Spark jobs running now in the cluster's Spark Connect application (its UI's REST API);
    empty while the UI is too busy to answer within 5 s (a loaded 2-core machine): the
    caller polls."""
    try:
        with urllib.request.urlopen(
            f"{cluster.app_ui_url}/api/v1/applications", timeout=5
        ) as response:
            app = json.loads(response.read())[0]["id"]
        with urllib.request.urlopen(
            f"{cluster.app_ui_url}/api/v1/applications/{app}/jobs?status=running", timeout=5
        ) as response:
            return json.loads(response.read())
    except (TimeoutError, urllib.error.URLError):
        return []


def uid_processes(uid: int) -> list[psutil.Process]:
    return [
        p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid
    ]


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
        assert len(java) >= 3 and all(p.uids().real == uid for p in java), [
            (p.pid, p.uids()) for p in inside
        ]
        conf = Path(info["dir"]) / "conf" / "spark-defaults.conf"
        assert (conf.stat().st_uid, stat.S_IMODE(conf.stat().st_mode)) == (uid, 0o600)
        text = conf.read_text()
        assert "spark.authenticate true" in text and "spark.ui.killEnabled false" in text
        secret = text.split("spark.authenticate.secret ")[1].split()[0]
        commands = [_cmdline(p) for p in inside]
        assert all(secret not in c for c in commands), "the RPC secret is on a command line"
        assert all(cluster.connect_token not in c for c in commands), (
            "the token is on a command line"
        )

        # Spark Connect wants the cluster's token.
        assert "UNAUTHENTICATED" in client(cluster, None)["error"]
        assert "UNAUTHENTICATED" in client(cluster, "not-the-token")["error"]
        # With it, a UDF runs on the cluster's executors, in the cluster's sandbox.
        storage = settings.STORAGES["default"]["OPTIONS"]["location"]
        actions = [
            f"read:{settings.DATA_DIR / 'secret_key'}",
            f"list:{storage}",
            f"read:{Path(storage) / 'notebooks'}",
            f"write:{settings.BASE_DIR / 'portal' / 'pwned.py'}",
            f"list:{settings.DATA_DIR}",
            "read:/etc/shadow",
        ]
        answer = client(cluster, cluster.connect_token, [*actions, "uid:", "daemon:"])
        results = answer.get("results", answer)
        assert all(results[a].startswith("denied") for a in actions), results
        assert results["uid:"] == str(uid) and results["daemon:"] == "started", results

        # A run on the cluster that is cancelled ends its queries there, not only its kernel.
        procs.worker()
        job = make_job("spark_long.ipynb", spark_target="cluster", cluster=cluster)
        run = job_services.run_now(job, alice)
        wait_until(
            lambda: running_jobs(cluster),
            timeout=120,
            what="the run's Spark job on the cluster",
            procs=procs,
        )
        job_services.cancel_run(Run.objects.get(pk=run.pk))
        run = wait_run(run.pk, Run.FINAL_STATES, timeout=60, procs=procs)
        assert run.state == Run.State.CANCELLED, describe_run(run.pk, procs)
        wait_until(
            lambda: not running_jobs(cluster),
            timeout=30,
            what="the cancelled run's Spark job to end",
            procs=procs,
        )
        # ... and its Spark Connect session was released on the server: it cannot be used again.
        session_id = uuid.uuid5(run.uuid, f"attempt-{run.attempt}")
        assert (
            "SESSION_CLOSED"
            in client(
                cluster, cluster.connect_token, session_id=session_id, user_id=f"u{alice.pk}"
            )["error"]
        )
    finally:
        cluster = services.terminate_now(Cluster.objects.get(pk=cluster.pk), "Test over.")
    assert cluster.state == Cluster.State.TERMINATED
    # Termination ends everything in the sandbox, the daemonized sleep included.
    wait_until(
        lambda: not uid_processes(uid),
        timeout=20,
        what="no process of the cluster's uid",
        procs=procs,
    )
    assert not [p for p in (info["ports"]["master"], info["ports"]["connect"]) if listening(p)]
    assert not Path(info["dir"]).exists()
    assert LocalBackend().processes_left(info) == []
