"""The Spark UI of a run: live through its sandbox's socket while it runs, and its history
from the stored, rewritten event log; both for the job's owner only."""

import http.server
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
from datetime import timedelta
from types import SimpleNamespace

import nbformat
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from jobs import logs, services, spark_ui
from jobs.executor import Outcome
from jobs.models import Job, Run
from jobs.services.retention import expire_run_outputs
from tests.processes import ROOT, process_env, wait_for

pytestmark = pytest.mark.django_db

SECRET = "planted-S3cret-value-4242"


def event(name: str, **fields) -> str:
    return json.dumps({"Event": name, **fields})


def app_start(app_id: str = "local-1") -> str:
    return event(
        "SparkListenerApplicationStart",
        **{"App Name": "pings", "App ID": app_id, "App Attempt ID": "1", "Timestamp": 1},
    )


# --- Rewriting and storing event logs ------------------------------------------------------------


def test_a_stored_event_log_keeps_only_sparks_events_under_the_runs_own_app_id():
    masker = logs.Masker([SECRET])
    rewrite = spark_ui.rewrite_event_log
    start = json.loads(rewrite(app_start("run-of-someone-else"), "run-mine", masker) or "")
    assert start["App ID"] == "run-mine" and "App Attempt ID" not in start
    sql = event("org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionEnd", time=1)
    assert rewrite(sql, "run-mine", masker) is not None
    job = event("SparkListenerJobStart", Properties={"spark.job.description": SECRET})
    assert SECRET not in (rewrite(job, "run-mine", masker) or "")
    # The History Server would instantiate any class an "Event" names: only Spark's own.
    for line in [
        event("com.example.Gadget", x=1),
        event("java.lang.ProcessBuilder"),
        event("SparkListenerJobStart.evil"),
        "[1, 2]",
        "not json",
        json.dumps({"no": "event"}),
    ]:
        assert rewrite(line, "run-mine", masker) is None, line


@pytest.fixture
def attempt_sandbox(settings, tmp_path):
    """A claimed run and a stand-in for its attempt's (unsandboxed) sandbox, whose event
    log directory the test fills."""
    settings.SANDBOX_ROOT = tmp_path / "sandbox"

    def make(run: Run):
        name = f"r{run.pk}-a{run.attempt}"
        box = SimpleNamespace(spec=SimpleNamespace(name=name, uid=0), enabled=False)
        spark_ui.event_log_conf(box)  # makes the directory
        return box, spark_ui.kernel.event_log_dir(name)

    return make


def claimed(make_job, alice) -> Run:
    return services.claim_run(services.run_now(make_job(), alice, enqueue=False).pk, "w")


def test_the_newest_event_log_is_stored_and_counts_in_the_runs_output(
    make_job, alice, attempt_sandbox, tmp_path
):
    run = claimed(make_job, alice)
    box, directory = attempt_sandbox(run)
    (directory / "local-100").write_text(app_start() + "\n")
    newest = directory / "local-200.inprogress"
    newest.write_text("\n".join([app_start("local-200"), event("SparkListenerJobStart")]) + "\n")
    os.utime(directory / "local-100", (1, 1))
    (directory / "local-300").symlink_to("/etc/passwd")  # never followed
    (directory / "ignored.txt").write_text(app_start())
    size = spark_ui.store_event_log(run, box, logs.Masker([]))
    assert size == spark_ui.event_log_bytes(run) > 0
    with default_storage.open(spark_ui.event_log_key(run)) as fh:
        stored = [json.loads(line) for line in fh.read().decode().splitlines()]
    assert [e["Event"] for e in stored] == [
        "SparkListenerApplicationStart",
        "SparkListenerJobStart",
    ]
    assert stored[0]["App ID"] == spark_ui.history_app_id(run)
    out = tmp_path / "o.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(out))
    run = services.finish_run(run, Outcome("succeeded", out))
    assert run.output_bytes >= size
    Run.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(days=400))
    assert expire_run_outputs() == 1
    assert not spark_ui.has_event_log(run)


def test_an_event_log_over_the_limit_or_of_an_attempt_that_lost_the_run_is_not_stored(
    make_job, alice, attempt_sandbox, settings
):
    run = claimed(make_job, alice)
    box, directory = attempt_sandbox(run)
    (directory / "local-1").write_text(
        "\n".join([app_start(), *[event("SparkListenerJobStart", n="x" * 100)] * 50]) + "\n"
    )
    settings.SPARK_EVENT_LOG_MAX_BYTES = 1000
    assert spark_ui.store_event_log(run, box, logs.Masker([])) == 0
    assert not spark_ui.has_event_log(run)
    settings.SPARK_EVENT_LOG_MAX_BYTES = 10**6
    Run.objects.filter(pk=run.pk).update(attempt=run.attempt + 1)  # taken over
    assert spark_ui.store_event_log(run, box, logs.Masker([])) == 0


# --- The history view --------------------------------------------------------------------------


def finished_with_event_log(make_job, alice, tmp_path) -> Run:
    run = claimed(make_job, alice)
    default_storage.save(spark_ui.event_log_key(run), ContentFile(app_start().encode()))
    out = tmp_path / "o.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(out))
    return services.finish_run(run, Outcome("succeeded", out))


def test_the_history_is_the_owners_alone_and_only_of_the_runs_application(
    make_job, alice, bob, staff, client, tmp_path
):
    run = finished_with_event_log(make_job, alice, tmp_path)
    url = reverse("runs-history", args=[run.pk])
    for other in (bob, staff):
        client.force_login(other)
        assert client.get(url).status_code == 404
        page = client.get(run.get_absolute_url())
        assert page.status_code in (200, 404) and b'id="run-spark-history"' not in page.content
    client.force_login(alice)
    app_id = spark_ui.history_app_id(run)
    answer = client.get(url)
    assert answer.status_code == 302
    assert answer["Location"] == f"{url}history/{app_id}/jobs/"
    # The server's listing, its REST API and other applications are not reachable.
    for path in ["", "history/", "api/v1/applications", "history/local-1/jobs/"]:
        assert client.get(url + path).status_code in (302, 404), path
    assert client.get(f"{url}history/{app_id}/../x").status_code == 400
    assert b'id="run-spark-history"' in client.get(run.get_absolute_url()).content


def test_a_running_run_has_no_history_and_a_finished_one_no_live_ui(
    make_job, alice, client, tmp_path
):
    running = claimed(make_job, alice)
    client.force_login(alice)
    assert client.get(reverse("runs-history", args=[running.pk])).status_code == 404
    assert client.get(reverse("runs-ui", args=[running.pk])).status_code == 404  # no socket
    finished = finished_with_event_log(make_job, alice, tmp_path)
    assert client.get(reverse("runs-ui", args=[finished.pk])).status_code == 404


# --- The live view, against a stand-in UI on the run's socket --------------------------------


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _FakeSparkUI(http.server.BaseHTTPRequestHandler):
    """Answers like Spark's UI: ``/`` redirects to ``/jobs/`` by absolute URL on the
    address it was asked at; pages link under ``X-Forwarded-Context``."""

    def do_GET(self):
        if self.path == "/":
            self.send_response(302)
            self.send_header("Location", f"http://{self.headers['Host']}/jobs/")
            self.send_header("Set-Cookie", "spark=1")
            self.end_headers()
            return
        root = self.headers.get("X-Forwarded-Context", "")
        body = (
            f'<a href="{root}/stages/">Stages</a> cookie={self.headers.get("Cookie")} '
            f"path={self.path}"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self):
        return "unix"

    def log_message(self, *args):
        pass


@pytest.fixture
def live_run(make_job, alice, settings, tmp_path):
    """A RUNNING run whose attempt publishes a stand-in Spark UI on its socket."""
    settings.SANDBOX_ROOT = tmp_path / "sb"
    run = claimed(make_job, alice)
    sock = spark_ui.live_socket(run)
    sock.parent.mkdir(parents=True)
    server = _UnixHTTPServer(str(sock), _FakeSparkUI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield run
    server.shutdown()
    server.server_close()


def test_the_owner_reaches_the_live_ui_through_the_runs_socket(live_run, client, alice):
    client.force_login(alice)
    url = reverse("runs-ui", args=[live_run.pk])
    root = url.rstrip("/")
    answer = client.get(url)
    assert answer.status_code == 302 and answer["Location"] == f"{root}/jobs/"
    assert "Set-Cookie" not in answer
    page = client.get(f"{root}/jobs/?id=3")
    text = b"".join(page.streaming_content).decode()
    assert f'href="{root}/stages/"' in text and "cookie=None" in text and "path=/jobs/?id=3" in text
    assert "sandbox allow-scripts" in page["Content-Security-Policy"]
    assert b'id="run-spark-ui"' in client.get(live_run.get_absolute_url()).content


def test_others_get_404_from_a_live_ui(live_run, client, bob, staff):
    for other in (bob, staff):
        client.force_login(other)
        assert client.get(reverse("runs-ui", args=[live_run.pk])).status_code == 404
        assert client.get(reverse("runs-ui-path", args=[live_run.pk, "jobs/"])).status_code == 404


def test_spark_static_files_are_served_under_the_runs_paths(client):
    for name in ("runs-ui-static", "runs-history-static"):
        answer = client.get(reverse(name, args=[1, "webui.js"]))
        assert answer.status_code == 200 and answer["Content-Type"] == "text/javascript"


# --- For real: a notebook on the embedded local Spark ---------------------------------------------

SPARK_NOTEBOOK = [
    "from pyspark.sql import SparkSession\n"
    "spark = SparkSession.builder.appName('pings by os').getOrCreate()\n"
    "spark.range(100).selectExpr('id % 3 as os').groupBy('os').count().collect()",
    # The test looks at the live UI meanwhile.
    "import time\ntime.sleep(20)",
    "spark.stop()",
]


def spark_notebook() -> bytes:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in SPARK_NOTEBOOK])
    return nbformat.writes(nb).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def history_server(settings, tmp_path):
    """A real Spark History Server (``manage.py sparkhistory``) on a free loopback port."""
    settings.SPARK_HISTORY_DIR = tmp_path / "history"
    settings.SPARK_HISTORY_PORT = free_port()
    env = process_env(
        SPARK_HISTORY_DIR=settings.SPARK_HISTORY_DIR,
        SPARK_HISTORY_PORT=settings.SPARK_HISTORY_PORT,
        SANDBOX_ROOT=settings.SANDBOX_ROOT,
    )
    out = open(tmp_path / "history.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "sparkhistory"], cwd=ROOT, env=env, stdout=out, stderr=out
    )
    yield proc
    proc.terminate()
    proc.wait(timeout=30)
    out.close()


def _text(answer) -> str:
    if answer.streaming:
        return b"".join(answer.streaming_content).decode()
    return answer.content.decode()


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.postgres  # the run's thread and the test's requests write at once
@pytest.mark.django_db(transaction=True)  # the run executes in another thread
def test_a_runs_spark_ui_is_live_while_it_runs_and_its_history_after(
    alice, bob, client, history_server
):
    job = services.create_job(alice, Job(name="spark ui"), spark_notebook(), "ui.ipynb")
    run = services.run_now(job, alice, enqueue=False)
    finished: list[Run] = []

    def execute() -> None:
        try:
            finished.append(services.execute_run(run.pk))
        finally:
            connection.close()  # this thread's own

    worker = threading.Thread(target=execute)
    worker.start()
    try:
        client.force_login(alice)
        jobs_page = reverse("runs-ui-path", args=[run.pk, "jobs/"])

        def jobs_listed() -> str | None:
            answer = client.get(jobs_page)
            text = _text(answer) if answer.status_code == 200 else ""
            return text if "Completed Jobs" in text else None

        page = wait_for(jobs_listed, timeout=90, interval=0.5, message="the live Spark UI")
        assert "pings by os" in page
        assert f'href="/runs/{run.pk}/ui/stages/"' in page
        client.force_login(bob)
        assert client.get(jobs_page).status_code == 404
        client.force_login(alice)
    finally:
        worker.join(timeout=180)
    run = finished[0]
    assert run.state == Run.State.SUCCEEDED, run.state_reason
    assert client.get(jobs_page).status_code == 404  # over
    assert spark_ui.has_event_log(run)
    history = reverse("runs-history", args=[run.pk])
    entry = client.get(history)["Location"]
    # The History Server loads the application, then redirects to the same page.
    answer = client.get(entry)
    if answer.status_code == 302:
        assert answer["Location"] == entry
        answer = client.get(entry)
    page = _text(answer)
    assert "pings by os" in page and "Completed Jobs" in page, page[:2000]
    assert f'href="{history}history/{spark_ui.history_app_id(run)}/stages/"' in page
    assert history_server.poll() is None  # it served the whole test
    client.force_login(bob)
    assert client.get(entry).status_code == 404
