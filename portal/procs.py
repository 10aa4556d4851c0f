"""Ending process trees: the one place that signals a process and everything it started.

Local clusters (``clusters.backends.local``), the tests' clean-ups and the benchmarks'
teardown end the processes they started, and all they started in turn, the same way::

    left = kill_tree([pid, ...], grace=10.0)   # SIGTERM, 10 s to exit, then SIGKILL
    assert not left

Every function takes pids or ``psutil.Process`` objects. Prefer the objects when the
processes were looked up earlier: psutil then recognises a pid reused by another process
since, and never signals that one. A pid that is gone when looked up is skipped.

A zombie counts as dead: it has exited and holds nothing but its process-table entry
until its parent reaps it (one of ours is reaped here). Times are in seconds.
"""

import time
from collections.abc import Iterable

import psutil

__all__ = ["alive", "descendants", "is_alive", "kill_tree", "processes", "tree", "wait_gone"]

#: How often the waits below look again, in seconds.
POLL_INTERVAL = 0.05


def processes(pids_or_processes: Iterable[int | psutil.Process]) -> list[psutil.Process]:
    """``psutil.Process`` objects for the pids (and the objects as given), in order,
    without duplicates; pids of processes already gone are left out."""
    found: dict[int, psutil.Process] = {}
    for item in pids_or_processes:
        if isinstance(item, psutil.Process):
            found.setdefault(item.pid, item)
            continue
        try:
            found.setdefault(item, psutil.Process(item))
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def descendants(pid_or_process: int | psutil.Process) -> list[psutil.Process]:
    """Every process below one (its children, theirs, ...), as now; [] if it is gone.

    A process that was reparented (its parent exited first, or it daemonized) is no longer
    below it: look the tree up before signalling anything in it."""
    try:
        proc = (
            pid_or_process
            if isinstance(pid_or_process, psutil.Process)
            else psutil.Process(pid_or_process)
        )
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def tree(pids_or_processes: Iterable[int | psutil.Process]) -> list[psutil.Process]:
    """The processes (as ``processes``) followed by everything below each, as now."""
    roots = processes(pids_or_processes)
    return processes([*roots, *(d for root in roots for d in descendants(root))])


def is_alive(pid_or_process: int | psutil.Process | None) -> bool:
    """True while the process runs: the same process (for a ``psutil.Process``, not a
    reused pid) and not a zombie. A child of this process that exited is reaped here."""
    if not pid_or_process:
        return False
    try:
        proc = (
            pid_or_process
            if isinstance(pid_or_process, psutil.Process)
            else psutil.Process(pid_or_process)
        )
        if not proc.is_running():
            return False
        proc.wait(timeout=0)  # returns once it exited (and reaps it if it is our child)
        return False
    except psutil.TimeoutExpired:
        try:
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    except psutil.NoSuchProcess:
        return False


def alive(pids_or_processes: Iterable[int | psutil.Process]) -> list[psutil.Process]:
    """Those of the processes that still run (see ``is_alive``)."""
    return [p for p in processes(pids_or_processes) if is_alive(p)]


def wait_gone(
    pids_or_processes: Iterable[int | psutil.Process], timeout: float
) -> list[psutil.Process]:
    """Wait up to ``timeout`` seconds for all the processes to end; return those still
    alive then (none: all ended). Zombies count as ended, unlike ``psutil.wait_procs``,
    which waits for a zombie that is not our child until its parent reaps it."""
    procs = processes(pids_or_processes)
    deadline = time.monotonic() + timeout
    left = alive(procs)
    while left and time.monotonic() < deadline:
        time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
        left = alive(left)
    return left


def _signal(procs: Iterable[psutil.Process], how: str) -> None:
    for proc in procs:
        try:
            getattr(proc, how)()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def kill_tree(
    pids_or_processes: Iterable[int | psutil.Process], grace: float, kill_timeout: float = 5.0
) -> list[psutil.Process]:
    """End the processes and everything below them; return those still alive after.

    The trees are looked up first; then every process in them gets SIGTERM, and up to
    ``grace`` seconds to exit (0: SIGKILL at once). Then the survivors, and whatever they
    started meanwhile, get SIGKILL, and up to ``kill_timeout`` seconds to go. The returned
    list is empty unless a process outlived SIGKILL that long (uninterruptible sleep) or
    could not be signalled (another user's). Never raises for processes that are gone.
    """
    everything = tree(pids_or_processes)
    _signal(everything, "terminate")
    left = wait_gone(everything, grace)
    if not left:
        return []
    left = tree(left)
    _signal(left, "kill")
    return wait_gone(left, kill_timeout)
