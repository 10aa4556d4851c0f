"""Every run is sandboxed. A hostile notebook, run by a real worker and by ``runnotebook
--inline``, tries each escape a new user once could (the secret key, the database, the
storage, other processes, other kernels, Redis, PostgreSQL, the code tree, root-only
files) and every attempt is denied; memory and process limits hold and the worker lives on.

Network attempts go only to loopback services that this machine or the test runs.
"""

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from django.conf import settings
from django.core.files.storage import default_storage

from jobs import services
from jobs.kernel import views_root
from jobs.models import Run
from portal import sandbox
from tests.integration.conftest import describe_run, wait_run, wait_until
from tests.processes import ROOT, process_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def host_service():
    """A TCP service on the host's loopback, standing in for anything a notebook must not reach."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    yield listener.getsockname()[1]
    listener.close()


def escape_targets(bob, service_port: int) -> dict:
    """What the hostile notebook tries: paths and addresses of this test session."""
    data = Path(settings.DATA_DIR)
    planted = data / "shared" / "planted-root-only"  # in a directory sandboxes may read
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.parent.chmod(0o755)
    planted.write_text("root's secret")
    planted.chmod(0o600)
    assert (data / "secret_key").exists(), (
        "the settings generate it when SECRET_KEY is unset, as in the quick start"
    )
    bob_views = Path(views_root(bob.pk))
    bob_views.mkdir(parents=True, exist_ok=True)
    redis_socket = settings.REDIS_URL.removeprefix("unix://").split("?")[0]
    return {
        "read": {
            "secret key": str(data / "secret_key"),
            "a root-only file": str(planted),
            "/etc/shadow": "/etc/shadow",
            "root's home": "/root/.bashrc",
            "the settings module": str(settings.BASE_DIR / "portal" / "settings.py"),
        },
        "list": {
            "storage": str(Path(settings.STORAGES["default"]["OPTIONS"]["location"])),
            "data dir": str(data),
            "sandboxes": str(settings.SANDBOX_ROOT),
        },
        "write": {
            "the code tree": str(settings.BASE_DIR / "portal" / "pwned.py"),
            "the telemetry package": str(settings.BASE_DIR / "telemetry" / "pwned.py"),
            "storage": str(Path(settings.STORAGES["default"]["OPTIONS"]["location"]) / "pwned"),
            "another user's views": str(bob_views / "pwned"),
            "the interpreter": os.path.join(sys.prefix, "pwned"),
        },
        "connect": {
            "redis tcp": ["127.0.0.1", 6379],
            "redis socket": redis_socket,
            "postgres tcp": ["127.0.0.1", int(settings.DATABASES["default"]["PORT"] or 5432)],
            "postgres socket": "/var/run/postgresql/.s.PGSQL.5432",
            "a host service": ["127.0.0.1", service_port],
        },
        "glob": {
            "other kernels' connection files": f"{settings.SANDBOX_ROOT}/*/ipc/*.json",
            "the worker's jupyter runtime": "/root/.local/share/jupyter/runtime/*.json",
        },
    }


def report_of(nb) -> dict:
    """The JSON the hostile notebook prints last."""
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    return json.loads("".join(o.get("text", "") for o in last.outputs if o.output_type == "stream"))


def assert_all_denied(report: dict, owner):
    allowed = {name: result for name, result in report["results"].items() if result[0] != "denied"}
    assert not allowed, f"escapes that worked: {json.dumps(allowed, indent=1)}"
    assert report["uid"] == sandbox.uid_for(owner.pk)
    assert len(report["results"]) >= 20


def test_a_hostile_notebook_is_denied_every_escape_through_a_worker(
    make_job, alice, bob, procs, host_service
):
    worker = procs.worker(concurrency=2)
    # Another user's kernel runs meanwhile: its connection file must stay out of reach.
    neighbour = services.run_now(
        make_job("sleepy.ipynb", owner=bob, parameters={"seconds": 60.0}), bob
    )
    wait_run(
        neighbour.pk,
        lambda r: r.cells_done >= 1,
        timeout=60,
        procs=procs,
        what="the neighbour's kernel",
    )
    targets = escape_targets(bob, host_service)
    job = make_job("hostile.ipynb", parameters={"targets": json.dumps(targets)})
    run = wait_run(services.run_now(job, alice).pk, Run.FINAL_STATES, timeout=120, procs=procs)
    assert run.state == Run.State.SUCCEEDED, describe_run(run.pk, procs)
    with default_storage.open(run.output_key, "rb") as fh:
        assert_all_denied(report_of(nbformat.reads(fh.read().decode(), as_version=4)), alice)
    assert not (settings.BASE_DIR / "portal" / "pwned.py").exists()
    services.cancel_run(neighbour)
    wait_run(neighbour.pk, Run.FINAL_STATES, timeout=30, procs=procs)
    assert worker.proc.poll() is None


def test_a_hostile_notebook_is_denied_every_escape_through_runnotebook_inline(
    alice, bob, host_service, tmp_path
):
    targets = escape_targets(bob, host_service)
    done = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "runnotebook",
            "tests/notebooks/hostile.ipynb",
            "-p",
            "targets",
            json.dumps(targets),
            "--owner",
            alice.username,
            "--json",
        ],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "SUCCEEDED", done.stdout + done.stderr[-3000:]
    assert_all_denied(report_of(nbformat.read(outcome["output_ipynb"], as_version=4)), alice)


def test_past_the_memory_limit_a_run_fails_and_the_worker_lives_on(make_job, alice, procs):
    worker = procs.worker(KERNEL_MEMORY_LIMIT="512m")
    run = services.run_now(make_job("hog.ipynb", parameters={"mode": "memory", "gib": 2.0}), alice)
    run = wait_run(run.pk, Run.FINAL_STATES, timeout=120, procs=procs)
    story = describe_run(run.pk, procs)
    assert run.state == Run.State.FAILED, story
    assert run.attempt == 1, f"a notebook's own memory use is not retried\n{story}"
    assert "memory limit exceeded (0.5 GiB)" in run.state_reason, story
    assert run.error_ename == "MemoryLimitExceeded", story
    # The worker is alive and runs the next notebook.
    assert worker.proc.poll() is None
    after = wait_run(
        services.run_now(make_job("trivial.ipynb"), alice).pk,
        Run.FINAL_STATES,
        timeout=120,
        procs=procs,
    )
    assert after.state == Run.State.SUCCEEDED, describe_run(after.pk, procs)


def test_a_fork_bomb_stays_contained_and_ends_with_its_run(make_job, alice, procs):
    procs.worker(KERNEL_PIDS_LIMIT="200")
    job = make_job(
        "hog.ipynb", parameters={"mode": "forkbomb", "seconds": 600.0}, timeout_seconds=25
    )
    run = services.run_now(job, alice)
    uid = sandbox.uid_for(alice.pk)

    def mine():
        return [
            p
            for p in psutil.process_iter(["uids"])
            if p.info["uids"] and p.info["uids"].real == uid
        ]

    try:
        wait_until(lambda: len(mine()) > 50, timeout=90, what="the fork bomb", procs=procs)
    except AssertionError as exc:  # say what the notebook saw of its own forks
        run = Run.objects.get(pk=run.pk)
        printed = ""
        if run.output_key:
            with default_storage.open(run.output_key, "rb") as fh:
                nb = nbformat.reads(fh.read().decode(), as_version=4)
            printed = "".join(
                o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
            )
        raise AssertionError(
            f"{exc}\nthe notebook printed: {printed}\n{describe_run(run.pk)}"
        ) from None
    most = 0
    while not Run.objects.get(pk=run.pk).is_final:
        most = max(most, len(mine()))
        heartbeat = Run.objects.get(pk=run.pk).heartbeat_at
        assert heartbeat and (time.time() - heartbeat.timestamp()) < settings.RUN_STALE_AFTER, (
            "the worker stopped beating"
        )
        time.sleep(0.5)
    run = Run.objects.get(pk=run.pk)
    assert run.state == Run.State.TIMED_OUT, describe_run(run.pk, procs)
    assert 150 < most <= 200 + 5, (
        f"{most} processes of the sandbox's uid: "
        "the bomb did not run into its limit, or the limit did not hold"
    )
    wait_until(lambda: not mine(), timeout=20, what="nothing of the sandbox left", procs=procs)


def test_scratch_directories_are_private_and_gone_after_the_run(make_job, alice, procs):
    procs.worker()
    run = services.run_now(make_job("sleepy.ipynb", parameters={"seconds": 8.0}), alice)
    run = wait_run(
        run.pk, lambda r: r.cells_done >= 1, timeout=60, procs=procs, what="the kernel to start"
    )
    box = Path(settings.SANDBOX_ROOT) / f"r{run.pk}-a1"
    for sub in ("home", "tmp", "ipc"):
        info = (box / sub).stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode) & 0o777) == (
            sandbox.uid_for(alice.pk),
            0o700,
        ), sub
    assert stat.S_IMODE((box / "ipc" / "connection.json").stat().st_mode) == 0o600
    wait_run(run.pk, Run.FINAL_STATES, timeout=60, procs=procs)
    wait_until(lambda: not box.exists(), timeout=10, what="the sandbox removed", procs=procs)
