"""Execute one notebook with papermill in the portal kernel, watched by a monitor thread.

This module knows nothing of the database: ``jobs.services`` gives it a ``tick`` callback
that records the heartbeat and progress and says whether to stop (a ``TickAnswer``), and
an ``on_monitor_exit`` callback for the monitor thread's own clean-up. The contract:

- papermill runs the notebook in the calling thread, in the kernel of ``jobs.kernel``
  started inside ``sandbox`` (``jobs.provisioner``), with ``parameters`` injected after
  the ``parameters`` cell, and an environment built only from ``kernel_env`` (nothing else
  of the worker's environment leaks in);
- nbclient hooks (called inside nbclient's event loop, so they must not touch the
  Django ORM) update a ``Progress`` object and save the partial output notebook at most
  every ``partial_interval`` seconds;
- a monitor thread calls ``tick(progress)`` every ``tick_interval`` seconds, and kills the
  whole sandbox (kernel, Spark driver JVM, Python workers, anything they started) when the run
  passes ``timeout_seconds``, when ``tick`` answers CANCEL or LOST, or when ``tick``
  has failed for longer than ``lease_seconds`` (the database is unreachable, so another
  worker may already have taken the run over);
- a kernel that the sandbox's cgroup killed for passing its memory limit ends FAILED
  with "memory limit exceeded (N GiB)": the notebook's doing, so not retried;
- the result is an ``Outcome``; this function never raises for notebook or kernel
  failures.
"""

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import nbformat
import papermill
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError
from papermill.utils import merge_kwargs, remove_args

from jobs import kernel
from jobs.provisioner import SandboxKernelManager
from portal.sandbox import Sandbox

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class OutcomeStatus(StrEnum):
    """How an attempt's execution ended."""

    SUCCEEDED = "succeeded"
    #: The notebook raised (or passed its memory limit): the notebook's doing, not retried.
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    #: The run was taken away from this worker (reaped, deleted, database unreachable).
    LOST = "lost"
    #: The kernel died or could not start, or the cluster failed: worth a retry.
    INFRA_ERROR = "infra_error"


class TickAnswer(StrEnum):
    """What the run's owner (the database) answers to each heartbeat."""

    CONTINUE = "continue"
    CANCEL = "cancel"
    LOST = "lost"


#: The outcome a stopping answer leads to.
STOPPED_BY = {TickAnswer.CANCEL: OutcomeStatus.CANCELLED, TickAnswer.LOST: OutcomeStatus.LOST}


def stop_message(status: OutcomeStatus, timeout_seconds: float) -> str:
    """The run's message when it was stopped (TIMED_OUT, CANCELLED or LOST), the same for
    every executor."""
    return {
        OutcomeStatus.TIMED_OUT: f"Stopped after the timeout of {timeout_seconds:g} s.",
        OutcomeStatus.CANCELLED: "Cancelled on request.",
        OutcomeStatus.LOST: (
            "This worker lost the run (it was reaped or the database was unreachable)."
        ),
    }[status]


@dataclass
class Progress:
    """What the run is doing, shared between the executing thread and the monitor.

    Plain attribute writes are atomic under the GIL; readers may see a value one cell old.
    """

    cells_total: int = 0
    cells_done: int = 0
    current_index: int | None = None
    current_head: str = ""
    started: float = field(default_factory=time.monotonic)
    partial_saved_at: float = 0.0
    partial_version: int = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Outcome:
    """How an execution ended.

    ``status`` is an ``OutcomeStatus``. ``output_path`` is the executed notebook when one
    was written. For FAILED, ``error`` holds ``cell_index`` (in the output notebook),
    ``ename``, ``evalue`` and ``traceback`` (plain text). ``message`` is for people.
    """

    status: OutcomeStatus
    output_path: Path | None = None
    error: dict = field(default_factory=dict)
    message: str = ""
    progress: Progress | None = None


class _Session:
    """State of one execution, handed to the papermill engine below."""

    def __init__(
        self,
        kernel_env: dict[str, str],
        sandbox: Sandbox,
        partial_path: Path | None,
        partial_interval: float,
        progress: Progress,
    ):
        self.kernel_env = kernel_env
        self.sandbox = sandbox
        self.partial_path = partial_path
        self.partial_interval = partial_interval
        self.progress = progress
        self.nb_man = None
        self.client = None
        self.pid = None

    def kernel_pid(self) -> int | None:
        """Pid of this execution's kernel once it has started (remembered after it exits)."""
        if self.pid is None:
            provisioner = getattr(getattr(self.client, "km", None), "provisioner", None)
            self.pid = getattr(provisioner, "pid", None)
        return self.pid

    def begin(self, nb_man: Any) -> None:
        self.nb_man = nb_man
        self.progress.cells_total = sum(1 for c in nb_man.nb.cells if c.cell_type == "code")

    def on_cell_start(self, cell: Any, cell_index: int, **_: Any) -> None:
        self.kernel_pid()  # remember it while the kernel manager still knows it
        self.progress.current_index = cell_index
        lines = [line for line in cell.source.splitlines() if line.strip()]
        self.progress.current_head = (lines[0] if lines else "")[:200]

    def on_cell_executed(self, cell: Any, cell_index: int, execute_reply: Any, **_: Any) -> None:
        self.progress.cells_done += 1
        now = time.monotonic()
        if self.partial_path and now - self.progress.partial_saved_at >= self.partial_interval:
            self.save_partial()
            self.progress.partial_saved_at = now

    def save_partial(self) -> None:
        """Write the notebook as executed so far (atomically) for the live view."""
        if not (self.partial_path and self.nb_man):
            return
        tmp = self.partial_path.with_suffix(".tmp")
        nbformat.write(self.nb_man.nb, str(tmp))
        tmp.replace(self.partial_path)
        self.progress.partial_version += 1


class PortalEngine(NBClientEngine):
    """papermill's nbclient engine with our hooks, kernel environment and working dir.

    Registered as papermill engine "portal". Only ``portal_session`` is new; everything
    else is papermill's own argument handling (papermill/engines.py NBClientEngine).
    """

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: int = 60,
        execution_timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        session: _Session = kwargs.pop("portal_session")
        kwargs = remove_args(["input_path"], **kwargs)
        safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
        final_kwargs = merge_kwargs(
            safe_kwargs,
            timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=logging.getLogger("papermill"),
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
            on_cell_start=session.on_cell_start,
            on_cell_executed=session.on_cell_executed,
        )
        session.begin(nb_man)
        km = SandboxKernelManager(kernel_name=kernel_name, sandbox=session.sandbox)
        client = session.client = PapermillNotebookClient(nb_man, km=km, **final_kwargs)
        # The kernel is not shut down gracefully (nbclient leaves a kernel manager it did not
        # create alone): ``execute`` kills the whole sandbox right after, in milliseconds.
        # env replaces the worker's environment for the kernel; the provisioner starts it
        # in the sandbox's home directory.
        try:
            return client.execute(env=session.kernel_env)
        finally:
            if client.kc is not None:
                client.kc.stop_channels()


papermill_engines.register("portal", PortalEngine)


def execute(
    input_path: Path,
    output_path: Path,
    parameters: dict,
    *,
    spark_master: str,
    sandbox: Sandbox,
    timeout_seconds: float,
    tick: Callable[[Progress], TickAnswer] | None = None,
    on_monitor_exit: Callable[[], None] | None = None,
    tick_interval: float = 1.0,
    lease_seconds: float = 45.0,
    partial_path: Path | None = None,
    partial_interval: float = 5.0,
    kernel_extra_env: dict | None = None,
) -> Outcome:
    """Execute ``input_path`` into ``output_path`` and report how it ended (see module doc).

    ``sandbox`` is the run's prepared ``portal.sandbox.Sandbox``; the caller destroys it
    afterwards. ``tick(progress)`` returns a ``TickAnswer``; it runs in the monitor thread,
    every ``tick_interval`` seconds, and an exception from it counts as CONTINUE until
    ``lease_seconds`` pass without a good answer. ``on_monitor_exit()`` runs last in the
    monitor thread (the services close that thread's database connections there).
    ``timeout_seconds`` bounds the whole execution, kernel start included.
    """
    kernel.ensure_kernelspec()
    progress = Progress()
    env = kernel.kernel_env(
        spark_master, kernel_extra_env, memory_bytes=sandbox.spec.limits.memory_bytes
    )
    session = _Session(env, sandbox, partial_path, partial_interval, progress)
    stop = threading.Event()
    verdict: dict[str, OutcomeStatus] = {}

    def monitor() -> None:
        try:
            watch()
        finally:
            if on_monitor_exit is not None:
                on_monitor_exit()

    def watch() -> None:
        last_ok = time.monotonic()
        while not stop.wait(tick_interval):
            reason = None
            if progress.elapsed > timeout_seconds:
                reason = OutcomeStatus.TIMED_OUT
            elif tick is not None:
                try:
                    answer = tick(progress)
                    last_ok = time.monotonic()
                except Exception:
                    log.exception("progress tick failed")
                    expired = time.monotonic() - last_ok > lease_seconds
                    answer = TickAnswer.LOST if expired else TickAnswer.CONTINUE
                reason = STOPPED_BY.get(answer)
            if reason:
                verdict["reason"] = reason
                pid = session.kernel_pid()
                killed = sandbox.kill([pid] if pid else [])
                log.info("stopped the sandbox: reason=%s pids=%s", reason, killed)
                return

    watcher = threading.Thread(target=monitor, name="run-monitor", daemon=True)
    watcher.start()
    try:
        papermill.execute_notebook(
            str(input_path),
            str(output_path),
            parameters=parameters,
            engine_name="portal",
            kernel_name=kernel.kernel_name(),
            language="python",
            progress_bar=False,
            request_save_on_cell_execute=False,
            start_timeout=120,
            portal_session=session,
        )
        outcome = Outcome(OutcomeStatus.SUCCEEDED, output_path)
    except PapermillExecutionError as exc:
        outcome = Outcome(
            OutcomeStatus.FAILED,
            output_path if output_path.exists() else None,
            error={
                "cell_index": exc.cell_index,
                "ename": exc.ename,
                "evalue": str(exc.evalue),
                "traceback": _ANSI.sub("", "\n".join(exc.traceback)),
            },
            message=f"{exc.ename}: {exc.evalue}",
        )
    except Exception as exc:  # the kernel died, was killed, or never started
        message = f"{type(exc).__name__}: {exc}"[:500]
        outcome = Outcome(OutcomeStatus.INFRA_ERROR, None, message=message)
        if session.nb_man is not None:
            try:
                nbformat.write(session.nb_man.nb, str(output_path))
                outcome.output_path = output_path
            except Exception:
                log.exception("could not save the partial notebook")
    finally:
        stop.set()
        watcher.join(timeout=30)
        # Whatever happened, nothing of this run outlives it.
        pid = session.kernel_pid()
        sandbox.kill([pid] if pid else [])
    reason = verdict.get("reason")
    if reason and outcome.status != OutcomeStatus.SUCCEEDED:
        message = stop_message(reason, timeout_seconds)
        outcome = Outcome(reason, outcome.output_path, outcome.error, message)
    elif (
        outcome.status in (OutcomeStatus.FAILED, OutcomeStatus.INFRA_ERROR) and sandbox.oom_killed()
    ):
        limit = sandbox.spec.limits.memory_bytes or 0
        message = f"memory limit exceeded ({limit / 2**30:g} GiB)"
        error = {**outcome.error, "ename": "MemoryLimitExceeded", "evalue": message}
        error.setdefault("traceback", "")
        error.setdefault("cell_index", progress.current_index)
        message = f"MemoryLimitExceeded: {message}"
        outcome = Outcome(OutcomeStatus.FAILED, outcome.output_path, error, message)
    outcome.progress = progress
    return outcome
