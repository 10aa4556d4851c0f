"""The portal's notebook kernel: its kernelspec, launcher, environment and sandbox.

Every notebook runs in the kernel named ``settings.PORTAL_KERNEL_NAME`` whatever kernel its
metadata names. The kernelspec is written by the project itself (``ensure_kernelspec``,
called before every run and by ``manage.py installkernel``) into the virtual environment's
``share/jupyter/kernels``, where jupyter_client finds it. It names the portal's kernel
provisioner (``jobs.provisioner``), which starts the kernel only inside the run's sandbox
(``portal.sandbox``), speaking ZMQ over IPC sockets in the sandbox's ``ipc`` directory;
interrupts are messages, because signals do not cross bwrap.

The kernel starts through a small launcher that asks Linux to kill it when its parent
dies (``PR_SET_PDEATHSIG``); bwrap's ``--die-with-parent`` does the same for the sandbox,
so a ``kill -9`` of a worker leaves no kernel behind.

The kernel's environment is built from an allow-list (``kernel_env``): the portal's
secrets, database URL and AWS keys never reach user code.
"""

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from jobs.logs import logs_dir
from portal.sandbox import Limits, Sandbox, SandboxSpec, uid_for, views_root

_LAUNCHER = '''\
"""Start ipykernel, dying with the process that launched it (written by the portal)."""
import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1
expected_parent = int(os.environ.get("JPY_PARENT_PID", "0") or 0)
try:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
except (OSError, AttributeError):
    pass  # not Linux: fall back to ipykernel's own parent polling
if expected_parent and os.getppid() != expected_parent:
    sys.exit(1)  # the parent died before the death signal was armed
runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
'''


_SPARK_DEFAULTS = """\
# Spark defaults for notebook kernels (written by the portal).
spark.driver.host 127.0.0.1
spark.driver.bindAddress 127.0.0.1
spark.ui.showConsoleProgress false
spark.ui.port 4040
spark.ui.killEnabled false
spark.sql.session.timeZone UTC
"""

#: The port of the Spark UI of a run's embedded local Spark inside its sandbox (Spark's
#: default ``spark.ui.port``, always free in the sandbox's own network namespace), which
#: the sandbox publishes on a unix socket (``Sandbox.publish_socket``) for the portal's
#: proxy (``jobs.spark_ui``).
RUN_SPARK_UI_PORT = 4040

#: The Spark driver's log4j configuration in notebook kernels: WARN and above into the file
#: the kernel's environment names (``PORTAL_DRIVER_LOG``, in the sandbox's ``logs``
#: directory; ``jobs.logs`` collects it), never into the notebook's outputs.
_DRIVER_LOG4J2 = """\
# The Spark driver's log at warn and above, to the run's driver log (written by the portal).
rootLogger.level = warn
rootLogger.appenderRef.file.ref = driverlog
appender.driverlog.type = File
appender.driverlog.name = driverlog
appender.driverlog.fileName = ${env:PORTAL_DRIVER_LOG:-/dev/null}
appender.driverlog.layout.type = PatternLayout
appender.driverlog.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n
"""


@dataclass(frozen=True)
class OutputLimits:
    """The output limits of one execution, in bytes: ``stream`` per cell, ``notebook``
    for the whole output notebook, ``render`` above which no partial is written."""

    stream: int
    notebook: int
    render: int

    @classmethod
    def from_settings(cls) -> "OutputLimits":
        """OUTPUT_STREAM_MAX_BYTES, OUTPUT_NOTEBOOK_MAX_BYTES and OUTPUT_RENDER_MAX_BYTES."""
        return cls(
            settings.OUTPUT_STREAM_MAX_BYTES,
            settings.OUTPUT_NOTEBOOK_MAX_BYTES,
            settings.OUTPUT_RENDER_MAX_BYTES,
        )


#: The name of a continuous run's stop flag in its sandbox's home; its path reaches the
#: kernel as ``PORTAL_STOP_FILE`` (``telemetry.streaming`` watches it).
STOP_FLAG_NAME = ".portal-stop"

#: Entry point name of jobs.provisioner.SandboxProvisioner (pyproject.toml).
PROVISIONER_NAME = "portal-sandbox"


def kernel_name() -> str:
    """The name of the kernel every run uses (``settings.PORTAL_KERNEL_NAME``)."""
    return settings.PORTAL_KERNEL_NAME


def kernelspec_dir() -> Path:
    """Directory of the portal kernelspec inside the running Python's prefix."""
    return Path(sys.prefix) / "share" / "jupyter" / "kernels" / settings.PORTAL_KERNEL_NAME


def spark_conf_dir() -> Path:
    return kernelspec_dir() / "spark-conf"


def ensure_kernelspec() -> Path:
    """Write (or refresh) the portal kernelspec; idempotent and cheap. Returns its directory.

    Files are only rewritten when their content changed, so concurrent workers do not
    fight over them.
    """
    root = kernelspec_dir()
    spec = {
        "argv": [
            sys.executable,
            "-Xfrozen_modules=off",
            str(root / "launcher.py"),
            "-f",
            "{connection_file}",
            # The Spark JVM writes to the kernel's stderr file descriptor; keep that noise
            # out of notebook outputs (Python-level prints are still captured).
            "--IPKernelApp.capture_fd_output=False",
        ],
        "display_name": "PySpark (portal)",
        "language": "python",
        # Signals do not cross into the sandbox (SIGINT to bwrap would end it): interrupt
        # by a message on the control channel.
        "interrupt_mode": "message",
        "metadata": {
            "debugger": False,
            "kernel_provisioner": {"provisioner_name": PROVISIONER_NAME},
        },
    }
    files = {
        root / "kernel.json": json.dumps(spec, indent=1),
        root / "launcher.py": _LAUNCHER,
        spark_conf_dir() / "log4j2.properties": _DRIVER_LOG4J2,
        spark_conf_dir() / "spark-defaults.conf": _SPARK_DEFAULTS,
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
            tmp.write_text(text)
            tmp.replace(path)
    return root


def kernel_env(
    spark_master: str,
    extra: dict[str, str] | None = None,
    *,
    memory_bytes: int | None = None,
    spark_conf: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a notebook kernel (the sandbox adds HOME and TMPDIR).

    Only variables named in ``settings.KERNEL_ENV_ALLOWLIST`` are copied from the worker;
    the rest is set here: quiet Spark on loopback, Plotly's mimetype renderer (so figures
    are stored as JSON and drawn by the portal's own plotly.js), the data root, the
    streaming pings' landing directory, and the Spark target that a plain
    ``SparkSession.builder.getOrCreate()`` reaches: a Spark Connect URL (``sc://``) or a
    master for a local driver, whose memory is half of
    ``memory_bytes`` (the sandbox's limit; the Python side needs the rest), with
    ``spark_conf`` as ``--conf`` defaults a notebook may still override. ``extra`` is added
    last.
    """
    env = {name: os.environ[name] for name in settings.KERNEL_ENV_ALLOWLIST if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "MPLBACKEND": "Agg",
            "PLOTLY_RENDERER": "plotly_mimetype",
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_CONF_DIR": str(spark_conf_dir()),
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "TELEMETRY_DATA_ROOT": settings.TELEMETRY_DATA_ROOT,
            "TELEMETRY_STREAM_ROOT": settings.TELEMETRY_STREAM_ROOT,
        }
    )
    # Notebooks import the dataset API (``telemetry``) from the project; the sandbox binds
    # only that package of it.
    env["PYTHONPATH"] = str(settings.BASE_DIR)
    if spark_master.startswith("sc://"):
        env["SPARK_REMOTE"] = spark_master
    else:
        memory = f" --driver-memory {max(512, memory_bytes // 2 // 2**20)}m" if memory_bytes else ""
        confs = "".join(f" --conf {k}={v}" for k, v in (spark_conf or {}).items())
        env["PYSPARK_SUBMIT_ARGS"] = f"--master {spark_master}{memory}{confs} pyspark-shell"
    env.update(extra or {})
    return env


def event_log_dir(name: str) -> Path:
    """Where the embedded local Spark of sandbox ``name`` writes its event logs
    (``spark.eventLog.dir``), inside its logs directory; ``jobs.spark_ui`` collects them."""
    return logs_dir(settings.SANDBOX_ROOT, name) / "spark-events"


def run_sandbox(
    name: str,
    owner_id: int,
    forward_port: int | None = None,
    *,
    spark_ui: bool = False,
    durable: tuple[str, ...] = (),
) -> Sandbox:
    """The sandbox of one attempt of a notebook run owned by user ``owner_id``, not yet
    prepared: it reads the data root, the streaming pings' landing directory (both only
    when they exist when it starts) and SANDBOX_READ_ONLY_PATHS, writes its own
    scratch directory and the owner's views root, has no network (but ``forward_port``
    on its loopback when given: see ``Sandbox.relay``; and with ``spark_ui`` its Spark
    UI's port published on ``Sandbox.publish_socket``), and has the run limits of the
    settings. Its processes also write their logs directory (``jobs.logs.logs_dir``: the
    Spark driver's log, its event logs) and the ``durable`` directories (a continuous
    job's checkpoint and sink: created owned by the owner's uid, kept after the sandbox).
    Raises ValueError when the owner's uid is out of range."""
    data_root = settings.TELEMETRY_DATA_ROOT
    logs = logs_dir(settings.SANDBOX_ROOT, name)
    spec = SandboxSpec(
        name=name,
        uid=uid_for(owner_id),
        read_only=(data_root, settings.TELEMETRY_STREAM_ROOT, *settings.SANDBOX_READ_ONLY_PATHS),
        writable=(views_root(owner_id), str(logs), str(event_log_dir(name)), *durable),
        forward_port=forward_port,
        publish_port=RUN_SPARK_UI_PORT if spark_ui else None,
        limits=Limits.for_runs(),
    )
    return Sandbox(spec)
