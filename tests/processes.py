"""Real portal processes for integration and end-to-end tests: Celery workers and beat.

They run with the test database (the one pytest-django created), Redis db 15 and the
test data directory, exactly as in production but on loopback.
"""

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
from django.conf import settings

from portal.procs import descendants

ROOT = Path(__file__).resolve().parent.parent
_serial = itertools.count(1)


def process_env(**overrides) -> dict:
    """Environment for a portal process that shares this test session's database."""
    db = settings.DATABASES["default"]
    host, port = db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    url = f"postgres://{db['USER']}:{db['PASSWORD']}@{host}:{port}/{db['NAME']}"
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        REDIS_URL=settings.REDIS_URL,
        PORTAL_DATA_DIR=str(settings.DATA_DIR),
        PORTAL_ORIGIN=settings.PORTAL_ORIGIN,
        USERCONTENT_ORIGIN=settings.USERCONTENT_ORIGIN,
        PYTHONUNBUFFERED="1",
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def flush_broker():
    """Drop every queued message of this test session (its Redis key prefix)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = os.environ.get("REDIS_KEY_PREFIX", "")
    keys = list(client.scan_iter(match=f"{prefix}*")) if prefix else []
    if keys:
        client.delete(*keys)
    elif not prefix:
        client.flushdb()


class Worker:
    """A ``celery worker`` subprocess; ``stop()`` is a warm shutdown, ``kill()`` is -9."""

    def __init__(
        self, queues="runs,control,clusters", concurrency=1, name="test", log_path=None, **env
    ):
        # One log per worker of the session (each test's first worker is "w0"), kept when a
        # test fails.
        self.log_path = Path(
            log_path or settings.DATA_DIR / f"worker-{name}-{os.getpid()}-{next(_serial)}.log"
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "-Q",
                queues,
                "-c",
                str(concurrency),
                "-n",
                f"{name}-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "info",
            ],
            cwd=ROOT,
            env=process_env(**env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready()

    def wait_ready(self, timeout=60):
        """Wait for the worker's "ready" line; kill it and raise if it does not come."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.kill()
                raise RuntimeError(f"worker exited: {self.tail(3000)}")
            if " ready." in self.log_path.read_text():
                return
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"worker not ready: {self.tail(3000)}")

    def tail(self, chars=4000) -> str:
        """The end of the worker's log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"({exc})"

    def children(self) -> list[int]:
        """Pids below the worker now: its pool processes and whatever they started."""
        return [p.pid for p in descendants(self.proc.pid)]

    def kill(self):
        """SIGKILL the worker's whole process group (main process and pool children), as a
        crash would: not the kernels it started, which must die by themselves (they have
        sessions of their own); see tests/integration/test_worker_killed.py."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.log.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self.log.close()


class Beat:
    """A ``celery beat`` subprocess with its own schedule file."""

    def __init__(self, **env):
        schedule = settings.DATA_DIR / f"beat-{os.getpid()}"
        self.log_path = settings.DATA_DIR / f"beat-{os.getpid()}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "beat",
                "-l",
                "info",
                "-s",
                str(schedule),
            ],
            cwd=ROOT,
            env=process_env(**env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.log.close()


def wait_for(predicate, timeout=60.0, interval=0.2, message="condition"):
    """Poll ``predicate()`` until it returns a truthy value; return it or fail the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
