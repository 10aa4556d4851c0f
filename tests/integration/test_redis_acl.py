"""Production's Redis (docker/redis-entrypoint.sh): the portal's Celery works through its
ACL user, and that user can neither reconfigure nor wipe the server."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from jobs import services
from jobs.models import Run
from jobs.tasks import execute_run
from portal.settings import _broker_url
from tests.integration.conftest import wait_run

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def acl_redis():
    """Redis started by the production entrypoint, on a unix socket; yields its URL."""
    base = Path(tempfile.mkdtemp(prefix="acl-"))
    password = "0f9c2b7e4d1a6c3b8e5f2a9d7c4b1e6a"
    env = {
        "PATH": os.defpath,
        "REDIS_PASSWORD": password,
        "REDIS_ACL_FILE": str(base / "users.acl"),
    }
    server = subprocess.Popen(
        [
            str(ROOT / "docker" / "redis-entrypoint.sh"),
            "--port",
            "0",
            "--unixsocket",
            str(base / "redis.sock"),
            "--dir",
            str(base),
            "--save",
            "",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (base / "redis.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"unix://portal:{password}@{base / 'redis.sock'}?db=0", base
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)


def test_the_acl_user_cannot_administer_or_flush(acl_redis):
    url, base = acl_redis
    client = redis.Redis.from_url(url)
    assert client.ping()
    for command in (
        ("CONFIG", "GET", "dir"),
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("SHUTDOWN",),
        ("ACL", "LIST"),
        ("MODULE", "LIST"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    with pytest.raises(redis.exceptions.ResponseError):  # refused by the server itself first
        client.execute_command("DEBUG", "SLEEP", "0")
    anonymous = redis.Redis(unix_socket_path=str(base / "redis.sock"))
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()


def test_a_worker_runs_a_notebook_through_the_acl_user(acl_redis, make_job, alice, procs):
    url, _ = acl_redis
    worker = procs.worker(queues="runs", REDIS_URL=url)
    run = services.run_now(make_job("trivial.ipynb"), alice, enqueue=False)
    # The app's own connection settings (key prefix and all), on the ACL Redis.
    with execute_run.app.connection_for_write(_broker_url(url)) as conn:
        execute_run.apply_async((run.pk,), connection=conn)
    done = wait_run(run.pk, Run.FINAL_STATES, timeout=120, procs=procs)
    assert done.state == Run.State.SUCCEEDED, worker.tail()
