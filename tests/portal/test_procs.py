"""Ending process trees (portal.procs), on real processes: a shell and what it started."""

import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from portal import procs

#: A shell that starts a child, a child ignoring SIGTERM, and a grandchild (in a subshell),
#: prints their pids and waits for them.
TREE = textwrap.dedent(
    """\
    sleep 300 &
    echo $!
    (trap '' TERM; exec sleep 300) &
    echo $!
    (sleep 300 & echo $!; wait) &
    wait
    """
)


@pytest.fixture
def tree():
    """A running tree: ``(shell, [pids below it])``; anything left is killed at teardown."""
    shell = subprocess.Popen(["sh", "-c", TREE], stdout=subprocess.PIPE, text=True)
    pids = [int(shell.stdout.readline()) for _ in range(3)]
    deadline = time.monotonic() + 10
    while len(procs.descendants(shell.pid)) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)  # the subshell of the grandchild, and the three sleeps
    try:
        yield shell, pids
    finally:
        for proc in procs.alive([shell.pid, *pids]):
            proc.kill()
        shell.wait(timeout=10)
        shell.stdout.close()


def test_kill_tree_ends_a_shell_and_all_below_it_even_what_ignores_sigterm(tree):
    shell, pids = tree
    below = procs.descendants(shell.pid)
    assert set(pids) <= {p.pid for p in below}
    ignoring = psutil.Process(pids[1])

    started = time.monotonic()
    left = procs.kill_tree([shell.pid], grace=0.5)
    took = time.monotonic() - started

    assert left == []
    assert procs.alive([shell.pid, *below]) == []
    assert not ignoring.is_running() or ignoring.status() == psutil.STATUS_ZOMBIE
    # The one ignoring SIGTERM had its grace before SIGKILL, and not much more.
    assert 0.5 <= took < 5, took
    assert shell.poll() is not None


def test_kill_tree_returns_as_soon_as_every_process_obeyed_sigterm():
    child = subprocess.Popen(["sleep", "300"])
    started = time.monotonic()
    assert procs.kill_tree([psutil.Process(child.pid)], grace=30) == []
    assert time.monotonic() - started < 5  # SIGTERM ended it: no wait for the grace
    assert child.poll() is not None


def test_sigterm_comes_first_so_a_process_may_clean_up(tmp_path):
    marker = tmp_path / "cleaned"
    script = textwrap.dedent(
        f"""\
        import signal, sys, time
        def bye(*_):
            open({str(marker)!r}, "w").write("bye")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        time.sleep(300)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    assert procs.kill_tree([child.pid], grace=10) == []
    assert marker.read_text() == "bye"
    child.wait(timeout=5)
    child.stdout.close()


def test_gone_pids_and_zombies_count_as_dead():
    child = subprocess.Popen(["true"])
    proc = psutil.Process(child.pid)
    deadline = time.monotonic() + 10
    while proc.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not procs.is_alive(proc)  # a zombie child of ours: dead, and reaped here
    assert child.poll() is not None
    assert procs.alive([child.pid]) == [] and procs.wait_gone([child.pid], timeout=0) == []
    assert procs.kill_tree([child.pid, proc], grace=0) == []
    assert not procs.is_alive(None) and procs.descendants(child.pid) == []
