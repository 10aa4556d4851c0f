"""The local backend: a real Spark standalone cluster started from the pyspark package.

``start`` launches, as detached processes (own session, so they outlive the Celery worker
that started them), with the pyspark package's ``bin/spark-class`` and ``bin/spark-submit``:

- a standalone master on a free loopback port, its REST submission server disabled
  (``spark.master.rest.enabled=false``: it takes unauthenticated submissions, see
  research/stack.md §3), its web UI on another free port;
- ``size`` workers, each with ``LOCAL_CLUSTER_WORKER_CORES`` cores,
  ``LOCAL_CLUSTER_WORKER_MEMORY`` memory and its own ``--work-dir``;
- a Spark Connect server attached to the master (an application on the cluster), on a
  free port, so notebooks connect with ``SPARK_REMOTE=sc://...`` and no JVM of their own.

Process ids and ports are returned and stored on the cluster row. ``describe`` reads the
master's JSON status (``/json/``): READY once every worker is registered and the Connect
server answers. ``terminate`` stops every recorded process group (SIGTERM, then SIGKILL)
and checks the ports are free. Everything binds to 127.0.0.1 unless
``LOCAL_CLUSTER_BIND_HOST`` says otherwise (then set ``spark.authenticate``: see README).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pyspark
from django.conf import settings

from clusters.backends import BackendError, ClusterStatus
from portal.spark import log4j2_properties

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
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in psutil.net_connections("tcp"))


def alive(pid: int | None) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class LocalBackend:
    """Spark standalone clusters on this host (see module docstring)."""

    name = "local"

    def cluster_dir(self, cluster) -> Path:
        return Path(settings.DATA_DIR) / "clusters" / str(cluster.uuid)

    def _env(self, root: Path) -> dict:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "JAVA_HOME", "TMPDIR")}
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

    def _spawn(self, argv, env, log: Path) -> int:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                start_new_session=True, close_fds=True, cwd=str(log.parent.parent),
            )
        _CHILDREN.append(proc)
        return proc.pid

    def start(self, cluster) -> dict:
        """Start master, workers and the Connect server; return what to record.

        Returns ``{"dir", "host", "pids": {"master", "workers": [...], "connect"}, "ports":
        {...}, "master_url", "ui_url", "connect_url", "app_ui_url"}``. Raises BackendError if a
        process cannot be started; anything already started is stopped again.
        """
        host = settings.LOCAL_CLUSTER_BIND_HOST
        root = self.cluster_dir(cluster)
        shutil.rmtree(root, ignore_errors=True)
        (root / "conf").mkdir(parents=True)
        (root / "logs").mkdir()
        (root / "conf" / "log4j2.properties").write_text(log4j2_properties("warn"))
        env = self._env(root)
        ports = {
            "master": free_port(host), "ui": free_port(host), "connect": free_port(host), "app_ui": free_port(host),
            "workers_ui": [free_port(host) for _ in range(cluster.size)],
        }
        master_url = f"spark://{host}:{ports['master']}"
        info = {
            "dir": str(root), "host": socket.gethostname(), "ports": ports, "pids": {"workers": []},
            "master_url": master_url, "ui_url": f"http://{host}:{ports['ui']}",
            "connect_url": f"sc://{host}:{ports['connect']}", "app_ui_url": f"http://{host}:{ports['app_ui']}",
        }
        spark_class = str(SPARK_HOME / "bin" / "spark-class")
        try:
            master_env = dict(env, SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false")
            info["pids"]["master"] = self._spawn(
                [spark_class, "org.apache.spark.deploy.master.Master", "--host", host, "--port", str(ports["master"]),
                 "--webui-port", str(ports["ui"])],
                master_env, root / "logs" / "master.log",
            )
            # Workers and the Connect application register with the master once, then
            # retry only after a randomised 5-15 s back-off: start them when it listens.
            self._wait_listening(ports["master"], info["pids"]["master"], timeout=60)
            for i in range(cluster.size):
                work = root / f"work-{i}"
                work.mkdir()
                info["pids"]["workers"].append(self._spawn(
                    [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", host,
                     "--cores", str(settings.LOCAL_CLUSTER_WORKER_CORES), "--memory", settings.LOCAL_CLUSTER_WORKER_MEMORY,
                     "--webui-port", str(ports["workers_ui"][i]), "--work-dir", str(work), master_url],
                    env, root / "logs" / f"worker-{i}.log",
                ))
            info["pids"]["connect"] = self._spawn(
                [str(SPARK_HOME / "bin" / "spark-submit"), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
                 "--name", f"Spark Connect ({cluster.name})", "--master", master_url,
                 "--conf", f"spark.connect.grpc.binding.port={ports['connect']}",
                 "--conf", f"spark.connect.grpc.binding.address={host}",
                 "--conf", f"spark.ui.port={ports['app_ui']}",
                 "--conf", f"spark.driver.host={host}", "--conf", f"spark.driver.bindAddress={host}",
                 "--conf", f"spark.executor.memory={settings.LOCAL_CLUSTER_EXECUTOR_MEMORY}",
                 "--conf", f"spark.executor.cores={settings.LOCAL_CLUSTER_WORKER_CORES}",
                 "--conf", "spark.sql.shuffle.partitions=8",
                 "--conf", f"spark.pyspark.python={sys.executable}",
                 "spark-internal"],
                env, root / "logs" / "connect.log",
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
            if not alive(pid):
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

    def describe(self, cluster) -> ClusterStatus:
        """The cluster's state from its processes and the master's JSON status."""
        info = cluster.backend_info or {}
        pids = info.get("pids") or {}
        if not info:
            return ClusterStatus("STARTING")
        if info.get("host") and info["host"] != socket.gethostname():
            raise BackendError(f"This cluster runs on {info['host']}; ask a worker there.")
        if not alive(pids.get("master")):
            return ClusterStatus("FAILED", reason="The Spark master process exited; see its log.", info={"log_tail": self.log_tail(cluster, "master")})
        if not alive(pids.get("connect")):
            return ClusterStatus("FAILED", reason="The Spark Connect server exited; see its log.", info={"log_tail": self.log_tail(cluster, "connect")})
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

    def applications(self, cluster) -> list[dict]:
        """Active and completed applications from the master (id, name, state)."""
        status = self.master_json(cluster.backend_info or {}) or {}
        return [
            {"id": a.get("id"), "name": a.get("name"), "state": a.get("state")}
            for a in status.get("activeapps", []) + status.get("completedapps", [])
        ]

    def log_tail(self, cluster, name: str, lines: int = 20) -> str:
        path = self.cluster_dir(cluster) / "logs" / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self, cluster) -> None:
        """Stop every recorded process of the cluster; the work dirs are removed."""
        self.terminate_info(cluster.backend_info or {})
        shutil.rmtree(self.cluster_dir(cluster), ignore_errors=True)

    def terminate_info(self, info: dict, grace: float = 10.0) -> None:
        """Stop the recorded process groups (SIGTERM, then SIGKILL after ``grace`` s).
        Raises BackendError on another host: its pids mean other processes here."""
        if info.get("host") and info["host"] != socket.gethostname():
            raise BackendError(f"This cluster runs on {info['host']}; only a worker there can stop it.")
        pids = info.get("pids") or {}
        groups = [p for p in [pids.get("connect"), *pids.get("workers", []), pids.get("master")] if p]
        for pid in groups:
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in groups):
            time.sleep(0.1)
        for pid in groups:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 2
        while any(alive(p) for p in groups) and time.monotonic() < deadline:
            time.sleep(0.05)
        reap_children()  # ours, if this process started them; others reap theirs after a task

    def processes_left(self, info: dict) -> list[int]:
        """Recorded pids still alive (for checks and tests)."""
        pids = info.get("pids") or {}
        return [p for p in [pids.get("master"), pids.get("connect"), *pids.get("workers", [])] if alive(p)]
