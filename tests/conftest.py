"""Shared fixtures: personas, clients, notebooks, and a clean storage per test.

Settings come from the environment (bin/test sets PostgreSQL, Redis db 15 and a data dir
under var/test); the defaults below only apply when pytest is run by hand.
"""

import os
import shutil
import socket
from pathlib import Path

# Settings are read before this file is imported: bin/test sets the environment (a test
# database, Redis key prefix and data directory of the session's own, short intervals).
if "TEST_DATABASE_NAME" not in os.environ:
    raise RuntimeError("Run the tests with bin/test: it prepares the services and the environment.")

import pytest  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def notebook_bytes(name: str) -> bytes:
    """Bytes of a test notebook in tests/notebooks (or examples/ for the example)."""
    path = NOTEBOOKS / name
    if not path.exists():
        path = EXAMPLES / name
    return path.read_bytes()


def pytest_collection_modifyitems(config, items):
    """Where no sandbox can be made (a laptop without bubblewrap, a worker that is not
    root), tests that run user code skip with the reason instead of failing: those marked
    ``sandbox`` and everything under tests/integration and tests/e2e. CI can always make
    one, and never switches it off."""
    from portal import sandbox

    reason = sandbox.unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"no sandbox can be made here: {reason}")
    for item in items:
        if item.get_closest_marker("sandbox") or {"integration", "e2e"} & set(item.path.parts):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _clean_storage():
    """Start every session with empty storage (shared with worker processes)."""
    from django.conf import settings

    location = Path(settings.STORAGES["default"]["OPTIONS"]["location"])
    shutil.rmtree(location, ignore_errors=True)
    location.mkdir(parents=True, exist_ok=True)
    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
    yield location


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Tests create many users; a deliberately slow hasher only costs time here."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts with an empty cache (sign-in rate-limit counters, in Redis)."""
    yield
    from django.conf import settings
    from django.core.cache import cache

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
