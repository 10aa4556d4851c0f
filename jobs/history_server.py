"""The Spark History Server behind the runs' history views (``jobs.spark_ui``).

``bin/spark-history`` runs one History Server (Spark's own
``org.apache.spark.deploy.history.HistoryServer``, from the installed pyspark) until it
is stopped. It reads the event logs the portal copies into SPARK_HISTORY_DIR and serves
them on SPARK_HISTORY_HOST:SPARK_HISTORY_PORT (loopback), where only the portal's proxy
asks for them.

The logs are written by user code (rewritten on the way in: ``jobs.spark_ui``), so the
server runs in a sandbox of its own (``portal.sandbox``): an unprivileged uid that is no
user's (``uid_for(0)``), the host's network (the proxy must reach its port), the history
directory read-only, no secret in its environment, and the memory limit of
SPARK_HISTORY_MEMORY plus room for the JVM itself.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from django.conf import settings

from clusters.backends.local import SPARK_HOME
from portal.sandbox import Limits, Sandbox, SandboxSpec, uid_for
from portal.spark import log4j2_properties

log = logging.getLogger(__name__)

#: The History Server's JVM heap (SPARK_DAEMON_MEMORY); its sandbox gets twice as much.
HEAP = "512m"


def sandbox() -> Sandbox:
    """The History Server's sandbox (not yet prepared)."""
    spec = SandboxSpec(
        name="spark-history",
        uid=uid_for(0),
        read_only=(str(settings.SPARK_HISTORY_DIR),),
        network=True,
        limits=Limits(memory_bytes=2 * 512 * 2**20, pids=512),
    )
    return Sandbox(spec)


def command() -> list[str]:
    """The History Server's command line (spark-class of the installed pyspark)."""
    return [
        str(SPARK_HOME / "bin" / "spark-class"),
        "org.apache.spark.deploy.history.HistoryServer",
    ]


def environment(conf_dir: Path) -> dict[str, str]:
    """The History Server's environment: Spark's paths, its settings in
    SPARK_HISTORY_OPTS, and nothing of the portal's."""
    options = {
        "spark.history.fs.logDirectory": f"file:{settings.SPARK_HISTORY_DIR}",
        "spark.history.ui.port": str(settings.SPARK_HISTORY_PORT),
        # A run's log is listed about a second after the portal copied it.
        "spark.history.fs.update.interval": "1s",
        "spark.history.retainedApplications": "20",
        "spark.ui.killEnabled": "false",
    }
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "JAVA_HOME")}
    env.update(
        SPARK_HOME=str(SPARK_HOME),
        SPARK_CONF_DIR=str(conf_dir),
        SPARK_LOCAL_IP=settings.SPARK_HISTORY_HOST,
        SPARK_NO_DAEMONIZE="1",
        SPARK_DAEMON_MEMORY=HEAP,
        SPARK_HISTORY_OPTS=" ".join(f"-D{k}={v}" for k, v in options.items()),
    )
    return env


def run_forever() -> int:
    """Start the History Server in its sandbox and wait for it; SIGTERM or SIGINT stops
    it (the sandbox is destroyed). Returns its exit status (0 after a signal). Raises
    SandboxUnavailable or OSError when it cannot start."""
    history_dir = Path(settings.SPARK_HISTORY_DIR)
    history_dir.mkdir(parents=True, exist_ok=True)
    box = sandbox()
    box.destroy()  # what a killed predecessor left
    box.prepare()
    conf = box.home / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "log4j2.properties").write_text(log4j2_properties("warn"))
    os.chmod(conf, 0o755)
    proc = box.popen(command(), environment(conf), stdin=subprocess.DEVNULL)
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _: stopping.append(number))
    log.info(
        "spark history server: %s:%s reading %s",
        settings.SPARK_HISTORY_HOST,
        settings.SPARK_HISTORY_PORT,
        history_dir,
    )
    try:
        while proc.poll() is None and not stopping:
            time.sleep(0.2)
    finally:
        box.destroy([proc.pid])
        proc.wait()
    return 0 if stopping else proc.returncode
