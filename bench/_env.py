"""Shared set-up of the benchmarks: a private database, data directory and Redis prefix.

Call ``setup()`` first thing, before anything imports Django or the portal. It

- creates the PostgreSQL database ``bench_portal_<pid>`` (owner: the ``portal`` role) and
  runs ``manage.py migrate`` into it;
- points ``PORTAL_DATA_DIR`` at ``var/bench/<pid>`` and ``REDIS_KEY_PREFIX`` at
  ``bench-<pid>:``, so a benchmark never shares state with a test session, the quick
  start or another benchmark;
- sets ``DJANGO_SETTINGS_MODULE=portal.settings`` and calls ``django.setup()``;
- registers a teardown (at exit, on SIGINT/SIGTERM) that kills every process started
  through ``start()`` / ``celery_worker()`` / ``celery_beat()`` together with their
  descendants (kernels, Spark JVMs), by pid; drops the database; deletes the Redis keys of
  the prefix; removes the data directory (kept with ``BENCH_KEEP=1``).

Connection settings: ``BENCH_DATABASE_URL`` (an existing database of the role, used to
create and drop ours; default postgres://portal:portal@127.0.0.1:5432/portal) and
``BENCH_REDIS_URL`` (default: the benchmark's own Redis, started with ``bin/redis`` on a
unix socket in its data directory, as the quick start runs it).
"""

import argparse
import atexit
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
PID = os.getpid()
PYTHON = (
    str(ROOT / ".venv" / "bin" / "python")
    if (ROOT / ".venv" / "bin" / "python").exists()
    else sys.executable
)
ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://portal:portal@127.0.0.1:5432/portal")
DATA_DIR = ROOT / "var" / "bench" / str(PID)
REDIS_URL = os.environ.get("BENCH_REDIS_URL") or f"unix://{DATA_DIR / 'redis' / 'redis.sock'}"
DB_NAME = f"bench_portal_{PID}"
REDIS_PREFIX = f"bench-{PID}:"

_procs: list["Proc"] = []
_state = {"db_created": False, "torn_down": False}


def _db_url(name: str) -> str:
    parts = urlparse(ADMIN_URL)
    return urlunparse(parts._replace(path="/" + name))


def _admin_connect():
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True)


def setup(log_level: str = "WARNING", **env) -> None:
    """Create this benchmark's database and data directory, set the environment, start
    Django. ``env`` adds settings (e.g. ``LOCAL_SPARK_MASTER="local[2]"``) for this
    process and every process started afterwards."""
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    atexit.register(teardown)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    if not os.environ.get("BENCH_REDIS_URL"):
        redis = Proc([str(ROOT / "bin" / "redis")], "redis", env={"PORTAL_DATA_DIR": str(DATA_DIR)})
        deadline = time.monotonic() + 10
        while not (DATA_DIR / "redis" / "redis.sock").exists():
            if redis.proc.poll() is not None or time.monotonic() > deadline:
                log = (DATA_DIR / "redis" / "redis.log").read_text()
                raise RuntimeError(f"bin/redis did not start: {log[-2000:]}")
            time.sleep(0.05)
    with _admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    _state["db_created"] = True
    os.environ.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        DATABASE_URL=_db_url(DB_NAME),
        REDIS_URL=REDIS_URL,
        REDIS_KEY_PREFIX=REDIS_PREFIX,
        PORTAL_DATA_DIR=str(DATA_DIR),
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
        LOG_LEVEL=log_level,
    )
    os.environ.update({k: str(v) for k, v in env.items()})
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True)
    import django

    django.setup()
    from django.conf import settings

    Path(settings.STORAGES["default"]["OPTIONS"]["location"]).mkdir(parents=True, exist_ok=True)


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


# --- Processes ----------------------------------------------------------------------------


class Proc:
    """A subprocess in its own session, logging to a file under the data directory."""

    def __init__(self, args, name, env=None, ready=None, timeout=90):
        self.name = name
        self.log_path = DATA_DIR / f"{name}.log"
        self.log = open(self.log_path, "w")
        full_env = dict(os.environ)
        full_env.update({k: str(v) for k, v in (env or {}).items()})
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.seen: dict = {}
        _procs.append(self)
        if ready:
            self.wait_for_log(ready, timeout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for_log(self, text, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-3000:]}")
            if text in self.log_path.read_text():
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.name} not ready after {timeout}s: {self.log_path.read_text()[-3000:]}"
        )

    def descendants(self) -> list[int]:
        """Pids now below the process; every one seen is remembered for ``stop()``."""
        from portal.procs import descendants

        found = descendants(self.proc.pid)
        for p in found:
            self.seen.setdefault(p.pid, p)
        return [p.pid for p in found]

    def stop(self, grace=20.0):
        """SIGTERM to the process (a warm shutdown: a Celery worker stops its pool itself),
        up to ``grace`` seconds to exit, then SIGKILL of the process and of everything ever
        seen below it. Signals only go to pids this benchmark started or saw below one
        (psutil refuses a pid that was reused by another process since)."""
        from portal.procs import kill_tree

        self.descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.descendants()
        main = [self.proc.pid] if self.proc.poll() is None else []  # not reaped: still ours
        kill_tree([*main, *self.seen.values()], grace=0)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if not self.log.closed:
            self.log.close()
        if self in _procs:
            _procs.remove(self)


def celery_worker(queues="runs", concurrency=1, name="runs", app="portal", **env) -> Proc:
    """A ``celery worker`` of the portal (or of another app module), ready to consume."""
    args = [
        PYTHON,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-n",
        f"{name}-{PID}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--prefetch-multiplier",
        "1",
        "-l",
        "info",
    ]
    env.setdefault("LOG_LEVEL", "INFO")
    return Proc(args, f"worker-{name}", env=env, ready=" ready.")


def celery_beat(**env) -> Proc:
    args = [
        PYTHON,
        "-m",
        "celery",
        "-A",
        "portal",
        "beat",
        "-l",
        "info",
        "-s",
        str(DATA_DIR / "celerybeat-schedule"),
    ]
    env.setdefault("LOG_LEVEL", "INFO")
    return Proc(args, "beat", env=env, ready="beat: Starting")


# --- Teardown -----------------------------------------------------------------------------


def purge_redis() -> int:
    """Delete every Redis key of this benchmark's prefix; returns how many."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{REDIS_PREFIX}*"))
    if keys:
        client.delete(*keys)
    return len(keys)


def teardown() -> None:
    if _state["torn_down"]:
        return
    _state["torn_down"] = True
    for proc in list(reversed(_procs)):  # the workers before the Redis they talk to
        try:
            proc.stop()
        except Exception as exc:  # keep tearing down
            print(f"[bench] could not stop {proc.name}: {exc}", file=sys.stderr)
    try:
        from django.db import connections

        connections.close_all()
    except Exception:
        pass
    if _state["db_created"]:
        try:
            with _admin_connect() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        except Exception as exc:
            print(f"[bench] could not drop {DB_NAME}: {exc}", file=sys.stderr)
    try:
        if os.environ.get("BENCH_REDIS_URL"):  # a shared Redis; our own one is gone already
            purge_redis()
    except Exception as exc:
        print(f"[bench] could not purge Redis prefix {REDIS_PREFIX}: {exc}", file=sys.stderr)
    if os.environ.get("BENCH_KEEP") == "1":
        print(f"[bench] kept {DATA_DIR}", file=sys.stderr)
    else:
        shutil.rmtree(DATA_DIR, ignore_errors=True)


@contextlib.contextmanager
def stderr_to(path):
    """Send file descriptor 2 (and so the stderr of kernels started meanwhile) to ``path``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


# --- Figures ------------------------------------------------------------------------------


def parser(description: str, runs: int = 3) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--runs", type=int, default=runs, help=f"measured repetitions (default {runs})")
    return p


def median(values):
    return statistics.median(values) if values else float("nan")


def percentile(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def fmt_runs(values, unit="s", digits=2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values) + f" {unit}"


def user(username="bench", staff=True):
    """The benchmark's user. Staff by default: staff have no per-user limit unless an
    override sets one, and one user standing for the owners of 10,000 jobs must not meet
    the limits of one person (bench/fairness.py measures those with ordinary users)."""
    from django.contrib.auth import get_user_model

    model = get_user_model()
    return model.objects.filter(username=username).first() or model.objects.create_user(
        username=username, email=f"{username}@example.com", password=None, is_staff=staff
    )


def machine() -> str:
    import platform

    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{os.cpu_count()} CPUs, {python}, load {os.getloadavg()[0]:.2f}"
