"""Ad-hoc Spark clusters end to end: a user adds an SSH key, launches a local standalone
cluster in the browser, watches it become READY, runs a notebook on it through Spark
Connect, and terminates it; every Spark process and port is gone afterwards. A second
test lets a short-lived cluster expire: its owner is warned once, then it is terminated.

The clusters are real (a Spark master, workers and a Spark Connect server started by the
worker's start_cluster_task); their state comes from the beat's sync_local_clusters. One
Celery worker (queues runs, control and clusters) and one beat serve the whole module.

A sync that lands while a stop is killing the processes sees them gone; it used to record
FAILED for the cluster its owner had just terminated (fixed in d42954b). The browser test
lands such a sync in the middle of its stop every time (see _SyncMidStop); the expiry test
leaves the interleaving to the beat, so the plain path is covered too.
"""

import base64
import email.header
import hashlib
import json
import re
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from playwright.sync_api import expect

from clusters.backends.local import listening
from portal.procs import alive, kill_tree, tree
from tests.conftest import notebook_bytes
from tests.e2e.conftest import E2EWorker, login, wait_run_state
from tests.processes import Beat, flush_broker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

READY_TIMEOUT = 150  # s from Launch to READY: four JVMs on two cores
RUN_TIMEOUT = 150  # s from Run now to the end of the run (kernel + Spark Connect session)
TERMINATE_TIMEOUT = 60  # s from the confirmation to TERMINATED


#: Short periods of the beat, so that states and lifetimes move within a test's patience.
PROCESS_ENV = {
    "CLUSTER_SYNC_INTERVAL": "1",
    "CLUSTER_LIFETIME_INTERVAL": "2",
    "CLUSTER_EXPIRY_WARNING_SECONDS": "3600",
    "DJANGO_ALLOW_ASYNC_UNSAFE": "",  # see playwright_instance: the processes keep the check
}


# --- Fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_processes(e2e_server):
    """One Celery worker (runs + control + clusters, concurrency 2) and one beat for the module.

    Their origins are those the ``portal`` fixture gives the test process (the live server
    on localhost / 127.0.0.1); e-mails go to the worker's stdout (console backend).
    """
    origins = {
        "PORTAL_ORIGIN": f"http://localhost:{e2e_server.port}",
        "USERCONTENT_ORIGIN": f"http://127.0.0.1:{e2e_server.port}",
    }
    flush_broker()
    worker = E2EWorker(
        queues="runs,control,clusters", concurrency=2, name="e2e-clusters", **origins, **PROCESS_ENV
    )
    try:
        beat = Beat(**origins, **PROCESS_ENV)
    except Exception:
        worker.kill()
        raise
    try:
        yield worker, beat
    finally:
        try:
            beat.stop()
        finally:
            try:
                worker.stop()
            finally:
                if worker.proc.poll() is None:
                    worker.kill()
                flush_broker()


@pytest.fixture
def worker(request, cluster_processes):
    """The module's worker, attached to the test for the failure report (its log tail)."""
    proc, _beat = cluster_processes
    request.node._e2e_worker = proc
    return proc


@pytest.fixture
def beat(cluster_processes):
    return cluster_processes[1]


@pytest.fixture
def spark_leftovers(transactional_db):
    """Register clusters here; at teardown any Spark process of theirs still running is
    killed (a failed test must not leave JVMs behind).

    Only processes recorded for these clusters (and their descendants, snapshotted with
    ``snapshot``) are touched, and only if they are still the same processes (psutil
    compares creation times). Runs before the database is flushed.
    """
    from clusters.models import Cluster

    registered: list[int] = []
    seen: dict[tuple[int, float], psutil.Process] = {}

    def snapshot(cluster_id: int) -> list[psutil.Process]:
        """Remember the recorded processes of the cluster and everything below them."""
        cluster = Cluster.objects.filter(pk=cluster_id).first()
        found = tree(_recorded_pids(cluster.backend_info if cluster else {}))
        for proc in found:
            try:
                seen.setdefault((proc.pid, proc.create_time()), proc)
            except psutil.NoSuchProcess:
                pass
        return found

    def register(cluster_id: int) -> None:
        registered.append(cluster_id)
        snapshot(cluster_id)

    register.snapshot = snapshot
    try:
        yield register
    finally:
        for cluster_id in registered:
            snapshot(cluster_id)
        left = alive(seen.values())
        kill_tree(left, grace=0)
        if left:
            print(f"killed {len(left)} Spark processes left by the test: {[p.pid for p in left]}")


class _SyncMidStop(threading.Thread):
    """Lands a sync pass (what the beat runs) in the middle of a cluster's stop.

    Waits for the cluster row to turn TERMINATING, locks it at once (SELECT ... FOR
    UPDATE, in its own connection), waits until stop_cluster_task has stopped every
    recorded process (it needs no lock for that; it then waits for this lock to record
    TERMINATED), runs services.sync_cluster, and commits. That is the interleaving the
    beat's sync hits whenever it runs in the second or so a stop takes; arranging it makes
    the outcome independent of the beat's phase. ``hit`` tells whether it was arranged.
    """

    def __init__(self, cluster_id: int, timeout: float):
        super().__init__(name=f"sync-mid-stop-{cluster_id}", daemon=True)
        self.cluster_id, self.timeout = cluster_id, timeout
        self.stopping = threading.Event()
        self.hit = False
        self.error = None
        self.started = time.monotonic()
        self.trail = []  # (seconds since start, what happened), for the messages

    def note(self, what: str) -> None:
        self.trail.append((round(time.monotonic() - self.started, 3), what))

    def run(self):
        from django.db import connection, transaction

        from clusters import services
        from clusters.models import Cluster

        try:
            deadline = time.monotonic() + self.timeout
            while not self.stopping.is_set() and time.monotonic() < deadline:
                state = (
                    Cluster.objects.filter(pk=self.cluster_id)
                    .values_list("state", flat=True)
                    .first()
                )
                if state == Cluster.State.TERMINATING or state in Cluster.FINAL_STATES:
                    break
                time.sleep(0.005)
            else:
                return
            with transaction.atomic():
                cluster = Cluster.objects.select_for_update().get(pk=self.cluster_id)
                self.note(f"locked the row: {cluster.state}")
                if cluster.state != Cluster.State.TERMINATING:
                    return  # too late: the stop was already recorded
                pids = _recorded_pids(cluster.backend_info)
                wait_for(
                    lambda: not alive(pids),
                    timeout=30,
                    interval=0.05,
                    message="stop_cluster_task to stop the processes",
                )
                self.note("the processes are stopped")
                synced = services.sync_cluster(cluster)
                self.note(f"synced: {synced.state} {synced.state_reason!r}")
                self.hit = True
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.note("committed")
            connection.close()


@pytest.fixture
def sync_mid_stop(transactional_db):
    """Arm a _SyncMidStop for a cluster; joined before the database is flushed."""
    threads = []

    def arm(cluster_id: int, timeout: float) -> _SyncMidStop:
        thread = _SyncMidStop(cluster_id, timeout)
        thread.start()
        threads.append(thread)
        return thread

    try:
        yield arm
    finally:
        for thread in threads:
            thread.stopping.set()
            thread.join(timeout=60)


def _check_sync_mid_stop(thread: _SyncMidStop) -> None:
    """The interleaving was arranged (else the test would prove nothing about the race)."""
    thread.join(timeout=60)
    if thread.error is not None:
        raise AssertionError(
            f"the sync in the middle of the stop failed: {thread.error!r}"
        ) from thread.error
    assert thread.hit, f"the sync could not be landed in the middle of the stop: {thread.trail}"
    print("sync in the middle of the stop:", thread.trail)


# --- Helpers --------------------------------------------------------------------------------------


def _recorded_pids(info: dict) -> list[int]:
    pids = (info or {}).get("pids") or {}
    return [p for p in [pids.get("master"), pids.get("connect"), *pids.get("workers", [])] if p]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _fingerprint(openssh_line: str) -> str:
    """OpenSSH's SHA256 fingerprint, computed here independently of clusters.keys."""
    blob = base64.b64decode(openssh_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _ed25519_public_key(comment: str) -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    )
    return public.decode() + " " + comment


def _story(cluster_id: int, worker=None, beat=None) -> str:
    """What to show when a cluster did not do what was expected."""
    from clusters.backends.local import LocalBackend
    from clusters.models import Cluster

    cluster = Cluster.objects.filter(pk=cluster_id).first()
    if cluster is None:
        return f"cluster {cluster_id} is gone"
    parts = [
        f"cluster {cluster.pk} state={cluster.state} reason={cluster.state_reason!r} "
        f"workers={cluster.workers_registered}/{cluster.size} info={cluster.backend_info}"
    ]
    for name in ["master", "connect", *[f"worker-{i}" for i in range(cluster.size)]]:
        tail = LocalBackend().log_tail(cluster, name, lines=15)
        if tail:
            parts.append(f"--- {name}.log\n{tail}")
    if worker is not None:
        parts.append(f"--- worker log\n{worker.tail(3000)}")
    if beat is not None:
        try:
            parts.append(f"--- beat log\n{Path(beat.log_path).read_text(errors='replace')[-1500:]}")
        except OSError:
            pass
    return "\n".join(parts)


def _wait_cluster(cluster_id: int, states, timeout: float, worker=None, beat=None):
    from clusters.models import Cluster

    def check():
        cluster = Cluster.objects.filter(pk=cluster_id).first()
        return cluster if cluster is not None and cluster.state in states else None

    try:
        return wait_for(
            check, timeout=timeout, interval=0.25, message=f"cluster {cluster_id} in {states}"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_story(cluster_id, worker, beat)}") from None


def _assert_gone(info: dict, procs: list[psutil.Process], timeout: float = 15):
    """No recorded pid (nor any process seen below one) runs, no recorded port listens and
    the cluster's directory (conf, logs, work dirs) is removed."""
    ports = info["ports"]
    checked = {
        "master": ports["master"],
        "ui": ports["ui"],
        "connect": ports["connect"],
        "app_ui": ports["app_ui"],
    }

    def gone():
        return (
            not alive(_recorded_pids(info))
            and not alive(procs)
            and not [n for n, port in checked.items() if listening(port)]
            and not Path(info["dir"]).exists()
        )

    try:
        wait_for(
            gone,
            timeout=timeout,
            interval=0.5,
            message="the cluster's processes and ports to be gone",
        )
    except AssertionError:
        raise AssertionError(
            f"still alive: recorded {[p.pid for p in alive(_recorded_pids(info))]}, "
            f"descendants {[(p.pid, ' '.join(p.cmdline())[:120]) for p in alive(procs)]}; "
            f"ports still open: {[n for n, port in checked.items() if listening(port)]}; "
            f"directory kept: {Path(info['dir']).exists()}"
        ) from None


def _mail_subjects(log_text: str) -> list[str]:
    """Decoded Subject headers of the e-mails the console backend printed in a log."""
    subjects = []
    for match in re.finditer(r"^(?:.*?\] )?Subject: (.*(?:\n[ \t]+.*)*)", log_text, re.M):
        raw = re.sub(r"\n[ \t]+", " ", match.group(1))
        subjects.append(str(email.header.make_header(email.header.decode_header(raw))))
    return subjects


# --- Tests ---------------------------------------------------------------------------------------


def test_key_launch_run_terminate(
    page, portal, worker, beat, alice, spark_leftovers, sync_mid_stop
):
    from clusters.models import Cluster
    from jobs import services as job_services
    from jobs.models import Job, Run

    console = []
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.on(
        "console",
        lambda m: (
            console.append(f"{m.type}: {m.text}") if "Content Security Policy" in m.text else None
        ),
    )
    login(page, portal, "alice")

    # --- An SSH key pasted in the form is listed with its SHA256 fingerprint.
    public_key = _ed25519_public_key("alice@laptop")
    fingerprint = _fingerprint(public_key)
    page.goto(f"{portal.url}/keys/new/")
    page.fill("#id_key", public_key)
    with page.expect_navigation():
        page.click("#add-key")
    assert urlsplit(page.url).path == "/keys/", f"{page.url}\n{page.inner_text('main')[:1500]}"
    row = page.locator("tr", has_text=fingerprint)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("alice@laptop")  # the title defaults to the comment
    expect(row).to_contain_text("ssh-ed25519 (256 bits)")

    # --- Launch a local cluster of two workers.
    page.goto(f"{portal.url}/clusters/new/")
    name = page.input_value("#id_name")
    assert name, "the form suggests a name"
    page.select_option("#id_backend", "local")
    page.fill("#id_size", "2")
    with page.expect_navigation():
        page.click("#launch")
    match = re.fullmatch(r"/clusters/(\d+)/", urlsplit(page.url).path)
    assert match, f"not on the cluster page: {page.url}\n{page.inner_text('main')[:1500]}"
    cluster_id = int(match.group(1))
    spark_leftovers(cluster_id)
    launched = time.monotonic()

    # --- The page shows STARTING, then reloads itself into READY with both workers.
    state = page.locator("#cluster-state")
    expect(state).to_have_text("Starting", timeout=60_000)
    try:
        expect(state).to_have_text("Ready", timeout=READY_TIMEOUT * 1000)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_story(cluster_id, worker, beat)}") from None
    print(f"cluster READY {time.monotonic() - launched:.1f} s after Launch")
    expect(page.locator("#cluster-workers")).to_contain_text("2 of 2 workers registered")
    cluster = Cluster.objects.get(pk=cluster_id)
    assert (cluster.state, cluster.backend, cluster.size, cluster.owner_id) == (
        "READY",
        "local",
        2,
        alice.pk,
    )
    assert cluster.connect_url.startswith("sc://127.0.0.1:"), cluster.connect_url
    expect(page.locator("#connect-url")).to_have_text(cluster.connect_url)
    expect(page.locator("#spark-ui")).to_have_attribute("href", f"/clusters/{cluster_id}/ui/")
    spark_leftovers.snapshot(cluster_id)

    # --- A job with this cluster as its Spark target; Run now in the browser.
    job = job_services.create_job(
        alice,
        Job(name="Counts on my cluster", spark_target="cluster", cluster=cluster, max_retries=0),
        notebook_bytes("spark_small.ipynb"),
        "spark_small.ipynb",
    )
    page.goto(f"{portal.url}/jobs/{job.pk}/")
    with page.expect_navigation():
        page.click("#run-now")
    match = re.fullmatch(r"/runs/(\d+)/", urlsplit(page.url).path)
    assert match, page.url
    run_id = int(match.group(1))
    spark_leftovers.snapshot(cluster_id)  # executors started for the Connect application
    run = wait_run_state(
        run_id,
        {"SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "LOST", "SKIPPED"},
        RUN_TIMEOUT,
        worker,
    )
    assert run.state == Run.State.SUCCEEDED, (
        f"run ended {run.state}: {run.state_reason} {run.error_ename}: {run.error_evalue}\n"
        f"{_story(cluster_id, worker, beat)}"
    )
    assert run.cluster_id == cluster_id

    # --- The run page (it reloads itself when the run ends: no reload of ours, which would
    # race with it) names the cluster, and its output shows what Spark computed.
    expect(page.locator("#notebook-frame")).to_be_attached()
    expect(page.locator("#run-state")).to_have_text("Succeeded")
    run_cluster = page.locator("#run-cluster")
    expect(run_cluster).to_contain_text(name)
    expect(run_cluster.locator("a", has_text=name)).to_have_attribute(
        "href", f"/clusters/{cluster_id}/"
    )
    expect(page.frame_locator("#notebook-frame").locator("body")).to_contain_text(
        "[10, 10, 10]", timeout=60_000
    )

    # --- The master lists the Spark Connect application, and that application ran jobs.
    master = _get_json(cluster.ui_url + "/json/")
    assert master["status"] == "ALIVE", master
    assert int(master["aliveworkers"]) == 2, master
    apps = master.get("activeapps", []) + master.get("completedapps", [])
    connect_apps = [a for a in apps if a.get("name") == f"Spark Connect ({name})"]
    assert len(connect_apps) == 1, [(a.get("id"), a.get("name"), a.get("state")) for a in apps]
    assert connect_apps[0]["state"] == "RUNNING", connect_apps[0]
    app_list = _get_json(cluster.app_ui_url + "/api/v1/applications")
    assert [a["id"] for a in app_list] == [connect_apps[0]["id"]], app_list
    jobs = _get_json(f"{cluster.app_ui_url}/api/v1/applications/{app_list[0]['id']}/jobs")
    succeeded = [j for j in jobs if j.get("status") == "SUCCEEDED"]
    assert succeeded, f"no Spark job completed in the Connect application: {jobs}"
    executors = _get_json(f"{cluster.app_ui_url}/api/v1/applications/{app_list[0]['id']}/executors")
    assert len([e for e in executors if e["id"] != "driver"]) == 2, executors  # one per worker
    procs = spark_leftovers.snapshot(cluster_id)

    # --- The cluster page lists the run; terminate it through the confirmation page.
    page.goto(f"{portal.url}/clusters/{cluster_id}/")
    expect(page.locator(f'a[href="/runs/{run_id}/"]')).to_have_count(1)
    with page.expect_navigation():
        page.click("#terminate")
    assert urlsplit(page.url).path == f"/clusters/{cluster_id}/terminate/", page.url
    mid_stop = sync_mid_stop(cluster_id, timeout=60)  # a sync will land in the middle of the stop
    with page.expect_navigation():
        page.click("#confirm-terminate")
    assert urlsplit(page.url).path == f"/clusters/{cluster_id}/", page.url
    ended = _wait_cluster(cluster_id, Cluster.FINAL_STATES, TERMINATE_TIMEOUT, worker, beat)
    expect(state).to_have_text(re.compile(r"^(Terminated|Failed)$"))  # the page reloaded itself
    expect(page.locator("#terminate")).to_have_count(0)
    expect(page.locator("#spark-ui")).to_have_count(0)
    assert ended.terminated_at, ended.state

    # --- Every process of the cluster is gone, no recorded port accepts connections.
    _assert_gone(ended.backend_info, procs)

    broken = [c for c in console if c.startswith("pageerror") or "Content Security Policy" in c]
    assert broken == [], broken

    # --- ...and it ended TERMINATED, as its owner asked, although a sync saw its processes
    # exit while the stop was under way.
    _check_sync_mid_stop(mid_stop)
    assert ended.state == Cluster.State.TERMINATED, (
        f"asked to stop, it ended {ended.state}: {ended.state_reason!r}"
    )
    expect(state).to_have_text("Terminated")
    assert ended.state_reason == "Terminated by its owner.", ended.state_reason


def test_short_lifetime_warns_once_then_terminates(worker, beat, alice, spark_leftovers):
    from django.db import transaction
    from django.utils import timezone

    from clusters import services
    from clusters.models import Cluster

    log_start = len(worker.log_path.read_text(errors="replace"))

    # --- Launch for an hour, then bring the expiry 20 s ahead (before the start is enqueued).
    with transaction.atomic():
        cluster = services.launch_cluster(
            alice, services.ClusterSpec(name="short-lived", size=1, lifetime_hours=1)
        )
        expires_at = timezone.now() + timedelta(seconds=20)
        Cluster.objects.filter(pk=cluster.pk).update(expires_at=expires_at)
    spark_leftovers(cluster.pk)

    # --- The warning goes out once the cluster has started (well within the hour).
    def warned():
        c = Cluster.objects.get(pk=cluster.pk)
        return c if c.expiry_warning_sent_at else None

    try:
        first = wait_for(warned, timeout=15, interval=0.25, message="the expiry warning")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_story(cluster.pk, worker, beat)}") from None
    sent_at = first.expiry_warning_sent_at
    assert sent_at < expires_at
    procs = spark_leftovers.snapshot(cluster.pk)
    assert len(procs) >= 3, "master, worker and Connect server were started"

    # --- At expiry the cluster is stopped (the beat checks lifetimes every 2 s).
    ended = _wait_cluster(cluster.pk, Cluster.FINAL_STATES, 20 + 45, worker, beat)
    assert ended.terminated_at >= expires_at, (ended.terminated_at, expires_at)
    late = (ended.terminated_at - expires_at).total_seconds()
    assert late < 20, f"stopped {late:.1f} s after its expiry"
    _assert_gone(ended.backend_info, procs)

    # --- A few more lifetime passes: the warning was sent once, and only once.
    time.sleep(6)
    ended.refresh_from_db()
    assert ended.expiry_warning_sent_at == sent_at
    log = worker.log_path.read_text(errors="replace")[log_start:]
    subjects = [s for s in _mail_subjects(log) if "short-lived" in s]
    assert subjects == ["[Analysis Portal] Your cluster “short-lived” expires in 0 minutes"], (
        f"expected exactly one warning e-mail, found {subjects}\n{log[-3000:]}"
    )
    assert log.count("To: alice@example.com") == 1, log[-3000:]

    # --- ...and it ended TERMINATED because it expired.
    assert ended.state == Cluster.State.TERMINATED, (
        f"it ended {ended.state}: {ended.state_reason!r}"
    )
    assert ended.state_reason.startswith("Expired at "), ended.state_reason
