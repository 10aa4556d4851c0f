"""Helpers of the integration tests: portal processes that are always cleaned up, waiting
on a run with a useful failure message, and the process trees of notebook kernels.

Every worker or beat started through the ``procs`` fixture is killed at teardown, with
every process ever seen below it (kernels, Spark JVMs): those are ours, started by this
test. Nothing else on the machine is touched.
"""

import os
import signal

import psutil
import pytest

from jobs.models import Run
from portal.procs import alive, descendants, kill_tree
from portal.procs import wait_gone as wait_gone  # the tests import it from here
from tests.processes import Beat, Worker, flush_broker, wait_for


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def run_processes(worker: Worker) -> list[psutil.Process]:
    """The processes a worker started for runs: kernels and their children (Spark JVM,
    PySpark workers), i.e. every descendant that is not a Celery pool process."""
    return [p for p in descendants(worker.proc.pid) if "-m celery" not in _cmdline(p)]


def kernels(worker: Worker) -> list[psutil.Process]:
    """The notebook kernels (started through the portal's launcher) below ``worker``."""
    return [p for p in run_processes(worker) if "launcher.py" in _cmdline(p)]


def describe_procs(procs: list[psutil.Process]) -> str:
    return ", ".join(f"{p.pid} {_cmdline(p)[:80]!r}" for p in procs) or "none"


class Procs:
    """Workers and beats of one test, killed at teardown with everything below them."""

    def __init__(self):
        self.workers: list[Worker] = []
        self.beats: list[Beat] = []
        self.seen: dict[int, psutil.Process] = {}

    def worker(self, name="w", **kwargs) -> Worker:
        """Start a worker (kwargs as for tests.processes.Worker) and wait until ready."""
        worker = Worker(name=f"{name}{len(self.workers)}", **kwargs)
        self.workers.append(worker)
        return worker

    def beat(self, **env) -> Beat:
        beat = Beat(**env)
        self.beats.append(beat)
        return beat

    def remember(self, worker: Worker) -> list[psutil.Process]:
        """Note (for the final clean-up) and return the run processes below ``worker``."""
        procs = run_processes(worker)
        for proc in procs:
            self.seen.setdefault(proc.pid, proc)
        return procs

    def logs(self, chars=3000) -> str:
        parts = []
        for item in [*self.workers, *self.beats]:
            try:
                text = item.log_path.read_text()[-chars:]
            except OSError as exc:
                text = f"({exc})"
            parts.append(f"--- {item.log_path.name} (tail) ---\n{text}")
        return "\n".join(parts)

    def cleanup(self):
        for worker in self.workers:
            if worker.proc.poll() is None:
                self.remember(worker)
                worker.kill()
            elif not worker.log.closed:
                worker.log.close()
        for beat in self.beats:
            try:
                beat.stop()
            except Exception:
                os.killpg(beat.proc.pid, signal.SIGKILL)
                beat.proc.wait(timeout=10)
        # Kernels die with their worker (PR_SET_PDEATHSIG) and Spark JVMs with their
        # kernel; whatever did not (a failure the test has reported) is ours to end.
        kill_tree(alive(self.seen.values()), grace=0)


@pytest.fixture
def procs():
    """Portal processes for one test, on an empty broker; all killed at teardown."""
    flush_broker()
    procs = Procs()
    try:
        yield procs
    finally:
        procs.cleanup()
        flush_broker()


def describe_run(run_id: int, procs: Procs | None = None) -> str:
    """Everything useful about a run when a test fails: state, reason, events, logs."""
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        return f"run {run_id} does not exist"
    events = "\n".join(
        f"  attempt {e.attempt} {e.state} {e.worker} {e.message}" for e in run.events.all()
    )
    text = (
        f"run {run.pk}: state={run.state} attempt={run.attempt}/{run.max_attempts} "
        f"reason={run.state_reason!r} cells={run.cells_done}/{run.cells_total} "
        f"worker={run.worker!r}\n"
        f"events:\n{events}"
    )
    if procs is not None:
        text += "\n" + procs.logs()
    return text


def wait_run(
    run_id: int, condition, timeout: float, procs: Procs | None = None, what: str = ""
) -> Run:
    """Poll the run until ``condition(run)`` holds (or, given a tuple of states, its state
    is one of them); return it, or fail with the run's story and the worker logs."""
    if isinstance(condition, (tuple, list, set, frozenset)):
        states = tuple(condition)
        condition = lambda r: r.state in states  # noqa: E731
        what = what or f"state in {states}"

    def check():
        run = Run.objects.filter(pk=run_id).first()
        return run if run is not None and condition(run) else None

    try:
        return wait_for(check, timeout=timeout, interval=0.2, message=what or "the run")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{describe_run(run_id, procs)}") from None


def wait_until(predicate, timeout: float, what: str, procs: Procs | None = None):
    """``wait_for`` that adds the processes' log tails to its failure message."""
    try:
        return wait_for(predicate, timeout=timeout, interval=0.2, message=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{procs.logs() if procs else ''}") from None


def wait_log(path, text: str, timeout: float, procs: Procs | None = None) -> None:
    """Wait until ``text`` appears in the log file at ``path``."""
    wait_until(lambda: text in path.read_text(), timeout, f"{text!r} in {path.name}", procs)


def database_backends(pids: list[int]) -> list[tuple[int, object]]:
    """``(backend pid, backend start)`` of every PostgreSQL connection that the processes
    ``pids`` hold to the test database, matched by their client ports."""
    from django.db import connection

    port = int(connection.settings_dict["PORT"] or 5432)
    ports = [
        c.laddr.port
        for pid in pids
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port
    ]
    if not ports:
        return []
    with connection.cursor() as cur:
        cur.execute(
            "SELECT pid, backend_start FROM pg_stat_activity "
            "WHERE datname = current_database() AND client_port = ANY(%s)",
            [ports],
        )
        return cur.fetchall()
