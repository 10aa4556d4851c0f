"""The portal's own Redis (bin/redis), the quick start's default broker and cache: only a
unix socket in a 0700 directory, reached by the default REDIS_URL with no setting."""

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.redis  # starts a redis-server of its own (bin/redis)

ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_embedded_redis_listens_on_a_private_socket_only():
    data = Path(tempfile.mkdtemp(prefix="redis-"))  # short: unix socket paths are bounded
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDIS_KEY_PREFIX")}
    env["PORTAL_DATA_DIR"] = str(data)
    server = subprocess.Popen(
        ["bin/redis"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        sock = data / "redis" / "redis.sock"
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stat.S_IMODE((data / "redis").stat().st_mode) == 0o700
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        listening = [
            c
            for c in psutil.Process(server.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening == [], "the embedded Redis must not listen on TCP"
        # The settings' defaults reach it: Celery's broker URL and the cache.
        probe = (
            "import django; django.setup();"
            "from django.conf import settings; from django.core.cache import cache; "
            "from portal.celery import app;"
            "cache.set('k', 'v'); assert cache.get('k') == 'v';"
            "conn = app.connection_for_write(); conn.ensure_connection(max_retries=3); "
            "conn.release();"
            "print(settings.CELERY_BROKER_URL)"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=ROOT,
            env=dict(env, DJANGO_SETTINGS_MODULE="portal.settings"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == f"redis+socket://{sock}?virtual_host=0"
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(data, ignore_errors=True)
