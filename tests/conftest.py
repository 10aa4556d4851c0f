"""Shared fixtures: personas, clients, notebooks, and a clean storage per test.

Two ways to run the tests:

- ``bin/test`` (CI, the full suite) prepares the services and the environment first:
  PostgreSQL, a Redis of the session's own, a data directory under var/test, short
  intervals. Its marker is TEST_DATABASE_NAME; nothing below overrides what it set.
- A plain ``pytest`` (e.g. ``pytest -m "not slow"`` right after ``pip install -r
  requirements-dev.txt``) needs no service: SQLite, an in-process cache and Celery
  broker, and a temporary data directory. Tests that need a real service are marked
  (``postgres``, ``redis``) or live in tests/integration and tests/e2e, and skip, saying why.
"""

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

# bin/test exports TEST_DATABASE_NAME with the rest of its environment.
SERVICES = "TEST_DATABASE_NAME" in os.environ


def _no_services_environment() -> dict[str, str]:
    """What bin/test would have exported, for a run without any service. Set whatever the
    shell says: an exported DATABASE_URL or REDIS_URL must not lead a plain pytest to a
    real database or Redis (PostgreSQL's test database would be created there)."""
    # Under /tmp, short: sandboxes put unix sockets under it (at most 107 bytes).
    data = tempfile.mkdtemp(prefix="portal-test-", dir="/tmp" if os.path.isdir("/tmp") else None)
    return {
        "PORTAL_DATA_DIR": data,
        # Django creates the test database in memory (no TEST_DATABASE_NAME).
        "DATABASE_URL": f"sqlite:///{data}/portal.sqlite3",
        # Nothing listens there; the cache and broker are swapped for in-process ones below.
        "REDIS_URL": f"unix://{data}/redis/redis.sock",
        # The same short intervals as bin/test, so that reaping and retries happen within a
        # test's patience.
        "RUN_HEARTBEAT_INTERVAL": "0.5",
        "RUN_STALE_AFTER": "6",
        "RUN_QUEUED_TIMEOUT": "10",
        "RUN_RETRY_BACKOFF": "1",
        "RUN_PARTIAL_SAVE_INTERVAL": "0.5",
        "LOCAL_SPARK_MASTER": "local[2]",
        "SANDBOX_READ_ONLY_PATHS": f"{data}/shared",
    }


# The settings are read once, from the environment, so it must be complete before Django
# starts. That is why pyproject.toml names no DJANGO_SETTINGS_MODULE: pytest-django would
# read the settings before importing any conftest. This file, always the first conftest
# imported, sets the environment, then the settings module, then sets Django up.
if not SERVICES:
    from django.conf import settings as _settings

    if _settings.configured:
        raise pytest.UsageError(
            "The settings were read before tests/conftest.py could give the tests their "
            "environment: unset DJANGO_SETTINGS_MODULE (and --ds), or run bin/test."
        )
    os.environ.update(_no_services_environment())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not SERVICES:
    # No Redis: a local-memory cache (sign-in rate limits) and Celery's in-memory broker,
    # which only this process sees; tests that need the real ones are marked ``redis``.
    # Set before anything opens the cache or Celery reads its configuration.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "KEY_PREFIX": settings.CACHES["default"]["KEY_PREFIX"],
        }
    }
    settings.CELERY_BROKER_URL = "memory://"
# Set up here rather than in pytest-django's pytest_configure: the conftests of
# tests/integration and tests/clusters import models as they are imported.
django.setup()


def _scan_static_files_once() -> None:
    """Every test's Django test client builds the middleware again, and WhiteNoise then
    lists every static file through the finders (plotly's package data included): 40 ms
    per test, a third of the fast suite. The files do not change during a session, so the
    first scan's table is reused; what WhiteNoise serves is the same."""
    from whitenoise.middleware import WhiteNoiseMiddleware

    scan = WhiteNoiseMiddleware.add_files_from_finders
    found: dict = {}

    def add_files_from_finders(self) -> None:
        if not found:
            before = dict(self.files)
            scan(self)
            found.update({url: f for url, f in self.files.items() if url not in before})
        else:
            self.files.update(found)

    WhiteNoiseMiddleware.add_files_from_finders = add_files_from_finders  # type: ignore[method-assign]


_scan_static_files_once()

NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def notebook_bytes(name: str) -> bytes:
    """Bytes of a test notebook in tests/notebooks (or examples/ for the example)."""
    path = NOTEBOOKS / name
    if not path.exists():
        path = EXAMPLES / name
    return path.read_bytes()


def pytest_report_header(config):
    if not SERVICES:
        return [
            f"no services (not bin/test): SQLite, in-process cache and broker, "
            f"data in {settings.DATA_DIR}"
        ]


def pytest_collection_modifyitems(config, items):
    """Tests that need what this run lacks skip with the reason instead of failing.

    Where no sandbox can be made (a laptop without bubblewrap, a worker that is not root),
    tests that run user code: those marked ``sandbox`` and everything under
    tests/integration and tests/e2e. CI can always make one, and never switches it off.

    Without bin/test's services (a plain pytest): tests marked ``postgres`` or ``redis``,
    and tests/integration and tests/e2e (Celery workers in other processes, which an
    in-memory database and broker cannot reach, and a browser). bin/test skips none.
    """
    from django.db import connection

    from portal import sandbox

    def skip_where(reason, applies):
        marker = pytest.mark.skip(reason=reason)
        for item in items:
            if applies(item):
                item.add_marker(marker)

    def in_processes(item):
        return bool({"integration", "e2e"} & set(item.path.parts))

    reason = sandbox.unavailable_reason()
    if reason is not None:
        skip_where(
            f"no sandbox can be made here: {reason}",
            lambda item: item.get_closest_marker("sandbox") or in_processes(item),
        )
    if connection.vendor != "postgresql":
        skip_where(
            f"needs PostgreSQL (bin/test), this run has {connection.vendor}",
            lambda item: item.get_closest_marker("postgres"),
        )
    if not SERVICES:
        skip_where(
            "needs a Redis server (bin/test starts one)",
            lambda item: item.get_closest_marker("redis"),
        )
        skip_where(
            "runs portal processes (Celery workers, a browser): needs bin/test's services",
            in_processes,
        )


def pytest_sessionfinish(session):
    """Remove a plain pytest's temporary data directory, unless something failed (worker
    logs, screenshots): bin/test does the same with its own."""
    if not SERVICES and session.testsfailed == 0:
        shutil.rmtree(settings.DATA_DIR, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _clean_storage():
    """Start every session with empty storage (shared with worker processes)."""
    location = Path(settings.STORAGES["default"]["OPTIONS"]["location"])
    shutil.rmtree(location, ignore_errors=True)
    location.mkdir(parents=True, exist_ok=True)
    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
    yield location


@pytest.fixture(autouse=True)
def _empty_storage_per_test_on_sqlite(_clean_storage):
    """SQLite takes primary keys back with a test's rollback (PostgreSQL's sequences never
    do), and storage keys are made of them: on SQLite every test starts with empty storage,
    or it would find the files of an earlier test's job of the same id."""
    from django.db import connection

    yield
    if connection.vendor == "sqlite":
        shutil.rmtree(_clean_storage, ignore_errors=True)
        _clean_storage.mkdir(parents=True)


@pytest.fixture
def new_stored_files(_clean_storage):
    """A function listing the files stored since the test began: with PostgreSQL, storage
    keeps the files of the session's earlier tests (their ids are never reused)."""
    before = {p for p in _clean_storage.rglob("*") if p.is_file()}

    def new() -> list[Path]:
        return sorted(p for p in _clean_storage.rglob("*") if p.is_file() and p not in before)

    return new


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Tests create many users; a deliberately slow hasher only costs time here."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts with an empty cache (sign-in rate-limit counters)."""
    yield
    from django.core.cache import cache

    if not SERVICES:
        cache.clear()  # this process's own local memory
        return
    # Redis, shared with other sessions: only this session's keys.
    client = cache._cache.get_client(write=True)
    keys = list(client.scan_iter(match=f"{settings.CACHES['default']['KEY_PREFIX']}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(autouse=True)
def _no_outbound_network(monkeypatch):
    """Block connections to anything but loopback (no AWS, no CDN, no internet)."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (
            host.startswith("127.") or host in ("localhost", "::1") or host.startswith("/")
        ):
            raise OSError(f"tests may not connect to {host!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def _user(django_user_model, name, **extra):
    """A user with a verified address (sign-in requires one while sign-up is open)."""
    from allauth.account.models import EmailAddress

    user = django_user_model.objects.create_user(
        username=name, email=f"{name}@example.com", password=f"{name}-password-1", **extra
    )
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    return user


@pytest.fixture
def alice(django_user_model):
    return _user(django_user_model, "alice")


@pytest.fixture
def bob(django_user_model):
    return _user(django_user_model, "bob")


@pytest.fixture
def staff(django_user_model):
    return _user(django_user_model, "staff", is_staff=True, is_superuser=True)


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def make_job(alice):
    """Factory: a job from a test notebook, owned by alice unless told otherwise."""
    from jobs import services
    from jobs.models import Job

    def make(notebook="trivial.ipynb", owner=None, **fields):
        if fields.get("cron") and "schedule_kind" not in fields:
            fields["schedule_kind"] = "cron"
        spec = Job(name=fields.pop("name", notebook), **fields)
        return services.create_job(owner or alice, spec, notebook_bytes(notebook), notebook)

    return make


def succeeded_quickly(run):
    """``run`` (claimed) ended SUCCEEDED with a small stored output notebook and HTML page,
    written directly instead of rendered (~40 ms less per test): for tests of who may see
    a finished run, not of how its output is made (tests/jobs/test_runs.py does that)."""
    import nbformat
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from django.utils import timezone

    from jobs.models import Run

    notebook = nbformat.writes(nbformat.v4.new_notebook()).encode()
    page = b"<!doctype html><html><head><title>out</title></head><body><p>out</p></body></html>"
    keys = {
        "output_key": default_storage.save(f"runs/{run.uuid}/output.ipynb", ContentFile(notebook)),
        "html_key": default_storage.save(f"runs/{run.uuid}/output.html", ContentFile(page)),
    }
    Run.objects.filter(pk=run.pk).update(
        state=Run.State.SUCCEEDED,
        finished_at=timezone.now(),
        output_bytes=len(notebook) + len(page),
        **keys,
    )
    return Run.objects.get(pk=run.pk)
