"""The local backend: a real Spark standalone cluster started from the pyspark package.

``start`` launches, as detached processes (own session, so they outlive the Celery worker
that started them), with the pyspark package's ``bin/spark-class`` and ``bin/spark-submit``,
each in the cluster's sandbox (``portal.sandbox``: the owner's unprivileged uid, its own
pid namespace, the host's network, a cgroup of the cluster's own):

- a standalone master on a free loopback port, its REST submission server disabled
  (``spark.master.rest.enabled=false``: it takes unauthenticated submissions), its web UI
  on another free port, with kill links disabled (``spark.ui.killEnabled=false``);
- ``size`` workers, each with ``LOCAL_CLUSTER_WORKER_CORES`` cores,
  ``LOCAL_CLUSTER_WORKER_MEMORY`` memory and its own ``--work-dir``;
- a Spark Connect server attached to the master (an application on the cluster), on a
  free port, requiring the cluster's ``connect_token``, so notebooks connect with
  ``SPARK_REMOTE=sc://...`` and no JVM of their own.

Master, workers and the Connect application authenticate each other with a secret of
the cluster's own (``spark.authenticate``), written into its ``spark-defaults.conf``
(0600, owned by the cluster's uid) and never onto a command line.

Process ids and ports are returned and stored on the cluster row. ``describe`` reads the
master's JSON status (``/json/``): READY once every worker is registered and the Connect
server answers; for a cluster asked to stop, its processes exiting is the termination
(TERMINATED once none is left), not a failure. ``terminate`` asks every process to stop
(SIGTERM), then ends everything left in the sandbox (its cgroup and pid namespaces, not
only the recorded pids). Everything binds to 127.0.0.1 unless ``LOCAL_CLUSTER_BIND_HOST`` says
otherwise (see README).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pyspark
from django.conf import settings

from clusters.backends import BackendError, ClusterStatus
from clusters.ui_proxy import reverse_proxy_url
from portal import procs
from portal.env import parse_bytes
from portal.sandbox import (
    Limits,
    Sandbox,
    SandboxSpec,
    SandboxUnavailable,
    streams_root,
    uid_for,
    views_root,
)
from portal.spark import log4j2_properties

if TYPE_CHECKING:
    from clusters.models import Cluster

log = logging.getLogger(__name__)

SPARK_HOME = Path(pyspark.__file__).resolve().parent

#: Cluster processes this process started and has not yet waited for (see reap_children).
_CHILDREN: list[subprocess.Popen] = []


def reap_children() -> int:
    """Wait for the cluster processes this process started that have exited, so none
    stays a zombie (only the parent can reap a child, and the pool process that started
    a cluster is often not the one that stops it). Non-blocking; returns how many were
    reaped. Called after every Celery task (clusters.tasks) and after a termination."""
    done = [proc for proc in _CHILDREN if proc.poll() is not None]
    for proc in done:
        _CHILDREN.remove(proc)
    return len(done)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (another process may take it before we do)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    """True if some process listens on TCP ``port`` (from the socket table, not by
    connecting: a connect to a free port in the ephemeral range can succeed by connecting
    to itself)."""
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        for c in psutil.net_connections("tcp")
    )


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def end_connect_session(cluster: Cluster, session_id: str, user_id: str) -> None:
    """Interrupt every operation of the Spark Connect session ``(user_id, session_id)`` on
    ``cluster`` and release it, so that no query outlives the run that started it. Errors
    are logged, never raised (the cluster may be gone). Works for clusters bound to
    loopback: pyspark sends the token without TLS only to "localhost"."""
    host, port = cluster.connect_address
    if not session_id or host not in ("127.0.0.1", "localhost", "::1"):
        return
    # Not at the top: it loads grpc and pandas (0.7 s) into every process importing this.
    from pyspark.sql.connect.client import SparkConnectClient

    client = None
    try:
        client = SparkConnectClient(
            f"sc://localhost:{port}/;session_id={session_id};user_id={user_id};token={cluster.connect_token}"
        )
        client.interrupt_all()
        client.release_session()
    except Exception as exc:  # the server may be gone, or never saw the session
        log.info(
            "could not end session cluster=%s session=%s: %s",
            cluster.pk,
            session_id,
            str(exc).splitlines()[0][:200],
        )
    finally:
        if client is not None:
            client.close()


class LocalBackend:
    """Spark standalone clusters on this host (see module docstring); a ClusterBackend."""

    name = "local"
    label = "Local"
    requires_ssh_key = False

    @property
    def max_per_user(self) -> int | None:
        return settings.LOCAL_CLUSTER_MAX_PER_USER

    @property
    def max_per_host(self) -> int | None:
        return settings.LOCAL_CLUSTER_MAX_PER_HOST

    def default_release(self) -> str:
        """The pyspark version the clusters run (LOCAL_SPARK_VERSION)."""
        return settings.LOCAL_SPARK_VERSION

    @staticmethod
    def sandbox(cluster: Cluster) -> Sandbox:
        """The cluster's sandbox: its owner's uid, the host network, a lifetime of its own
        (not tied to the Celery process that starts it), the data root and the streaming
        pings' landing directory to read, the owner's views and continuous jobs' directory
        (``streams_root``) to write, and limits sized for its workers."""
        gib = 2**30
        executor_memory = parse_bytes(settings.LOCAL_CLUSTER_EXECUTOR_MEMORY)
        spec = SandboxSpec(
            name=f"c{cluster.uuid.hex}",
            uid=uid_for(cluster.owner_id),
            read_only=(
                settings.TELEMETRY_DATA_ROOT,
                settings.TELEMETRY_STREAM_ROOT,
                *settings.SANDBOX_READ_ONLY_PATHS,
            ),
            # The owner's continuous jobs' checkpoints and sinks: a job that runs here
            # writes them from the cluster's driver and executors.
            # (Root's, so that the cluster's code cannot plant symlinks above them: it
            # writes the checkpoint and sink directories the portal gave the owner's uid.)
            writable=(views_root(cluster.owner_id),),
            shared_writable=(str(streams_root(cluster.owner_id)),),
            network=True,
            die_with_parent=False,
            # Master, worker daemons and the Connect driver take about 2 GiB; each worker
            # adds its executor and the Python workers beside it.
            limits=Limits(
                memory_bytes=2 * gib + cluster.size * (executor_memory + gib),
                pids=1024 * (cluster.size + 2),
                cpus=float(cluster.size * settings.LOCAL_CLUSTER_WORKER_CORES + 1),
            ),
        )
        return Sandbox(spec)

    def cluster_dir(self, cluster: Cluster) -> Path:
        """Where the cluster's configuration, logs and work directories are (its sandbox's
        home)."""
        return self.sandbox(cluster).home

    def _env(self, root: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "JAVA_HOME")}
        env.update(
            SPARK_HOME=str(SPARK_HOME),
            SPARK_CONF_DIR=str(root / "conf"),
            SPARK_LOCAL_IP=settings.LOCAL_CLUSTER_BIND_HOST,
            SPARK_LOG_DIR=str(root / "logs"),
            PYSPARK_PYTHON=sys.executable,
            SPARK_NO_DAEMONIZE="1",
            # Master and worker daemons only coordinate: the C1 compiler and the serial
            # collector start them faster and smaller. Executors and the Connect server
            # (which run queries) keep the JVM's defaults.
            SPARK_DAEMON_JAVA_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        )
        return env

    @staticmethod
    def _write_conf(root: Path, uid: int | None, ui_proxy_url: str) -> None:
        """The cluster's Spark configuration: logging, and spark-defaults.conf with the
        cluster's RPC secret (readable only by the cluster's uid) and Spark's reverse-proxy
        mode: the master's UI proxies its workers' and applications' UIs, and every link
        starts with ``ui_proxy_url``, the portal path that proxies the master
        (``clusters.ui_proxy``). Master, workers and applications all read this file."""
        conf = root / "conf"
        conf.mkdir(exist_ok=True)
        (conf / "log4j2.properties").write_text(log4j2_properties("warn"))
        defaults = conf / "spark-defaults.conf"
        defaults.write_text(
            "# Written by the portal for this cluster.\n"
            "spark.authenticate true\n"
            f"spark.authenticate.secret {secrets.token_hex(32)}\n"
            "spark.master.rest.enabled false\n"
            "spark.ui.killEnabled false\n"
            "spark.ui.reverseProxy true\n"
            f"spark.ui.reverseProxyUrl {ui_proxy_url}\n"
        )
        os.chmod(defaults, 0o600)
        for path in (conf, conf / "log4j2.properties", defaults, root / "logs"):
            if uid is not None:
                os.chown(path, uid, uid)

    def _spawn(self, sandbox: Sandbox, argv: list[str], env: dict[str, str], log: Path) -> int:
        with open(log, "ab") as out:
            proc = sandbox.popen(
                argv, env, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
            )
        _CHILDREN.append(proc)
        return proc.pid

    def start(self, cluster: Cluster) -> dict[str, Any]:
        """Start master, workers and the Connect server in the cluster's sandbox; return
        the Cluster fields to store: ``backend_info`` (what ``launch`` returns) and the
        ``master_url``, ``ui_url``, ``connect_url`` and ``app_ui_url`` in it."""
        info = self.launch(cluster)
        urls = ("master_url", "ui_url", "connect_url", "app_ui_url")
        return {"backend_info": info, **{name: info[name] for name in urls}}

    def launch(self, cluster: Cluster) -> dict[str, Any]:
        """Start master, workers and the Connect server in the cluster's sandbox; return
        what to record.

        Returns ``{"dir", "host", "sandbox", "uid", "pids": {"master", "workers": [...],
        "connect"}, "ports": {...}, "master_url", "ui_url", "connect_url", "app_ui_url"}``.
        Raises BackendError if the sandbox or a process cannot be started; anything
        already started is stopped again.
        """
        host = settings.LOCAL_CLUSTER_BIND_HOST
        sandbox = self.sandbox(cluster)
        sandbox.destroy()  # what an earlier, interrupted start left
        try:
            sandbox.prepare()
        except (SandboxUnavailable, OSError, ValueError) as exc:
            raise BackendError(str(exc)) from exc
        root = sandbox.home
        (root / "logs").mkdir()
        self._write_conf(
            root, sandbox.spec.uid if sandbox.enabled else None, reverse_proxy_url(cluster.pk)
        )
        env = self._env(root)
        ports: dict[str, Any] = {
            "master": free_port(host),
            "ui": free_port(host),
            "connect": free_port(host),
            "app_ui": free_port(host),
            "workers_ui": [free_port(host) for _ in range(cluster.size)],
        }
        master_url = f"spark://{host}:{ports['master']}"
        info: dict[str, Any] = {
            "dir": str(root),
            "host": socket.gethostname(),
            "sandbox": sandbox.spec.name,
            "uid": sandbox.spec.uid,
            "ports": ports,
            "pids": {"workers": []},
            "master_url": master_url,
            "ui_url": f"http://{host}:{ports['ui']}",
            "connect_url": f"sc://{host}:{ports['connect']}",
            "app_ui_url": f"http://{host}:{ports['app_ui']}",
        }
        spark_class = str(SPARK_HOME / "bin" / "spark-class")
        try:
            info["pids"]["master"] = self._spawn(
                sandbox,
                [
                    spark_class,
                    "org.apache.spark.deploy.master.Master",
                    "--host",
                    host,
                    "--port",
                    str(ports["master"]),
                    "--webui-port",
                    str(ports["ui"]),
                ],
                env,
                root / "logs" / "master.log",
            )
            # Workers and the Connect application register with the master once, then
            # retry only after a randomised 5-15 s back-off: start them when it listens.
            self._wait_listening(ports["master"], info["pids"]["master"], timeout=60)
            for i in range(cluster.size):
                work = root / f"work-{i}"
                work.mkdir()
                if sandbox.enabled:
                    os.chown(work, sandbox.spec.uid, sandbox.spec.uid)
                info["pids"]["workers"].append(
                    self._spawn(
                        sandbox,
                        [
                            spark_class,
                            "org.apache.spark.deploy.worker.Worker",
                            "--host",
                            host,
                            "--cores",
                            str(settings.LOCAL_CLUSTER_WORKER_CORES),
                            "--memory",
                            settings.LOCAL_CLUSTER_WORKER_MEMORY,
                            "--webui-port",
                            str(ports["workers_ui"][i]),
                            "--work-dir",
                            str(work),
                            master_url,
                        ],
                        env,
                        root / "logs" / f"worker-{i}.log",
                    )
                )
            info["pids"]["connect"] = self._spawn(
                sandbox,
                [
                    str(SPARK_HOME / "bin" / "spark-submit"),
                    "--class",
                    "org.apache.spark.sql.connect.service.SparkConnectServer",
                    "--name",
                    f"Spark Connect ({cluster.name})",
                    "--master",
                    master_url,
                    "--conf",
                    f"spark.connect.grpc.binding.port={ports['connect']}",
                    "--conf",
                    f"spark.connect.grpc.binding.address={host}",
                    "--conf",
                    f"spark.ui.port={ports['app_ui']}",
                    "--conf",
                    f"spark.driver.host={host}",
                    "--conf",
                    f"spark.driver.bindAddress={host}",
                    "--conf",
                    f"spark.executor.memory={settings.LOCAL_CLUSTER_EXECUTOR_MEMORY}",
                    "--conf",
                    f"spark.executor.cores={settings.LOCAL_CLUSTER_WORKER_CORES}",
                    "--conf",
                    "spark.sql.shuffle.partitions=8",
                    "--conf",
                    f"spark.pyspark.python={sys.executable}",
                    "spark-internal",
                ],
                # The token reaches the Connect server through its environment only.
                dict(env, SPARK_CONNECT_AUTHENTICATE_TOKEN=cluster.connect_token),
                root / "logs" / "connect.log",
            )
        except OSError as exc:
            self.terminate_info(info)
            raise BackendError(f"Could not start Spark processes: {exc}") from exc
        return info

    def _wait_listening(self, port: int, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if listening(port):
                return
            if not procs.is_alive(pid):
                raise OSError("the Spark master exited while starting")
            time.sleep(0.05)
        raise OSError(f"the Spark master did not listen on port {port} within {timeout:.0f} s")

    def master_json(self, info: dict) -> dict | None:
        """The master's /json/ status, or None if it does not answer."""
        try:
            with urllib.request.urlopen(info["ui_url"] + "/json/", timeout=2) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def describe(self, cluster: Cluster) -> ClusterStatus:
        """The cluster's state from its processes and the master's JSON status.

        A cluster asked to stop (TERMINATING) whose processes exit is not FAILED: that is
        its termination, TERMINATED once none of its processes is left (TERMINATING until
        then); one that never started is TERMINATED. Neither changes the recorded worker
        counts (None). Raises BackendError for a cluster of another host."""
        status = self._observe(cluster)
        if cluster.state != "TERMINATING":
            return status
        if not cluster.backend_info:
            return ClusterStatus("TERMINATED", workers=None, cores=None, memory_mb=None)
        if status.state == "FAILED":
            done = not self.processes_left(cluster.backend_info)
            state = "TERMINATED" if done else "TERMINATING"
            return ClusterStatus(state, workers=None, cores=None, memory_mb=None)
        return status

    def describe_many(self, clusters: Sequence[Cluster]) -> dict[int, ClusterStatus]:
        """``describe`` of each cluster; one that cannot be described is logged and left
        out."""
        found = {}
        for cluster in clusters:
            try:
                found[cluster.pk] = self.describe(cluster)
            except BackendError as exc:
                log.warning("sync failed cluster=%s: %s", cluster.pk, exc)
        return found

    def _observe(self, cluster: Cluster) -> ClusterStatus:
        """What the processes and the master say, whatever the row's state."""
        info = cluster.backend_info or {}
        pids = info.get("pids") or {}
        if not info:
            return ClusterStatus("STARTING")
        if info.get("host") and info["host"] != socket.gethostname():
            raise BackendError(f"This cluster runs on {info['host']}; ask a worker there.")
        if not procs.is_alive(pids.get("master")):
            return ClusterStatus(
                "FAILED",
                reason="The Spark master process exited; see its log.",
                info={"log_tail": self.log_tail(cluster, "master")},
            )
        if not procs.is_alive(pids.get("connect")):
            return ClusterStatus(
                "FAILED",
                reason="The Spark Connect server exited; see its log.",
                info={"log_tail": self.log_tail(cluster, "connect")},
            )
        status = self.master_json(info)
        if not status or status.get("status") != "ALIVE":
            return ClusterStatus("STARTING")
        workers = int(status.get("aliveworkers", 0))
        ready = workers >= cluster.size and listening(info["ports"]["connect"])
        return ClusterStatus(
            "READY" if ready else "STARTING",
            workers=workers,
            cores=int(status.get("cores", 0)),
            memory_mb=int(status.get("memory", 0)),
            info={"applications": [app.get("name") for app in status.get("activeapps", [])]},
        )

    def applications(self, cluster: Cluster) -> list[dict]:
        """Active and completed applications from the master (id, name, state)."""
        status = self.master_json(cluster.backend_info or {}) or {}
        return [
            {"id": a.get("id"), "name": a.get("name"), "state": a.get("state")}
            for a in status.get("activeapps", []) + status.get("completedapps", [])
        ]

    def log_tail(self, cluster: Cluster, name: str, lines: int = 20) -> str:
        path = self.cluster_dir(cluster) / "logs" / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self, cluster: Cluster) -> None:
        """Stop every process of the cluster and remove its sandbox (directories, cgroup);
        they are gone when it returns. Raises BackendError for a cluster of another host."""
        self.terminate_info(cluster.backend_info or {})

    def clean_up(self, cluster: Cluster) -> None:
        """Stop what is left of a FAILED cluster (``terminate``)."""
        self.terminate(cluster)

    @staticmethod
    def _sandbox_of(info: dict) -> Sandbox | None:
        """The sandbox recorded in ``info`` (None for a cluster started without one)."""
        if not info.get("sandbox"):
            return None
        return Sandbox(
            SandboxSpec(
                name=info["sandbox"], uid=info.get("uid") or 1, network=True, die_with_parent=False
            )
        )

    @staticmethod
    def _recorded(info: dict) -> list[int]:
        pids = info.get("pids") or {}
        return [p for p in [pids.get("connect"), *pids.get("workers", []), pids.get("master")] if p]

    def terminate_info(self, info: dict, grace: float = 10.0) -> None:
        """Ask every Spark process of the cluster to stop (SIGTERM), and after ``grace``
        seconds end everything left in its sandbox: its cgroup and the pid namespaces of the
        recorded processes, whatever they started. Raises BackendError on another host: its
        pids mean other processes here."""
        if info.get("host") and info["host"] != socket.gethostname():
            raise BackendError(
                f"This cluster runs on {info['host']}; only a worker there can stop it."
            )
        recorded = self._recorded(info)
        sandbox = self._sandbox_of(info)
        # Not bwrap itself: a sandbox's first process ends its whole namespace at once,
        # which would not give Spark its orderly shutdown.
        spark = [p for p in self._inside(info) if _name(p) != "bwrap"]
        procs.kill_tree(spark, grace=grace)
        if sandbox is not None:
            sandbox.destroy(recorded)  # the cgroup, and the bwrap processes
        else:  # started before clusters ran in sandboxes
            procs.kill_tree(recorded, grace=0)
        procs.wait_gone(recorded, timeout=2)
        reap_children()  # ours, if this process started them; others reap theirs after a task

    def _inside(self, info: dict) -> list[psutil.Process]:
        """Every process of the cluster: the recorded ones, all they started, and the
        sandbox's cgroup."""
        sandbox = self._sandbox_of(info)
        return procs.tree(self._recorded(info) + (sandbox.processes() if sandbox else []))

    def processes_left(self, info: dict) -> list[int]:
        """Pids of the cluster still alive: recorded ones and any in its sandbox's cgroup
        (for checks and tests)."""
        sandbox = self._sandbox_of(info)
        pids = self._recorded(info) + (sandbox.processes() if sandbox else [])
        return [p.pid for p in procs.alive(pids)]
