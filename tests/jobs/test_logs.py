"""The logs of a run: collected safely, masked, capped, stored with the run, counted,
expired, and shown only to the job's owner and staff, as escaped text."""

import os
import uuid
from datetime import timedelta
from pathlib import Path

import nbformat
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone

from api.models import ApiToken
from clusters import services as cluster_services
from jobs import logs, services
from jobs.executor import Outcome
from jobs.models import Job, Run
from jobs.services.retention import expire_run_outputs
from portal import sandbox as sb

pytestmark = pytest.mark.django_db

SECRET = "planted-S3cret-value-4242"


def masker(**kwargs):
    return logs.Masker(logs.known_secrets(**kwargs))


# --- Masking --------------------------------------------------------------------------------


def test_every_secret_the_portal_knows_is_masked(settings, monkeypatch):
    settings.SECRET_KEY = "django-secret-key-value"
    settings.METRICS_TOKEN = "metrics-token-value"
    settings.REDIS_URL = "redis://portal:redis-pass%2Fword@127.0.0.1:6379/0"
    monkeypatch.setitem(settings.DATABASES["default"], "PASSWORD", "db-password")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY")
    monkeypatch.setenv("KERNEL_ENV_EXTRA", "TEAM_DB_DSN, OTHER")
    monkeypatch.setenv("TEAM_DB_DSN", "postgres://team:pw@db/x")
    cluster = type("C", (), {"connect_token": "connect-token-value"})()
    api_token = "pap_" + "A" * 43
    text = (
        "django-secret-key-value metrics-token-value redis-pass/word redis-pass%2Fword "
        f"db-password aws-secret-value AKIAEXAMPLEKEY postgres://team:pw@db/x "
        f"connect-token-value {api_token} harmless"
    )
    masked = masker(cluster=cluster).mask(text)
    assert masked == " ".join([logs.MASK] * 10 + ["harmless"])


def test_a_secret_too_short_to_mean_anything_is_not_masked(settings):
    settings.METRICS_TOKEN = "ab"
    assert masker().mask("a tab") == "a tab"


# --- Reading files user code can write -----------------------------------------------------


def test_the_tail_of_a_long_log_is_kept_from_a_whole_line_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "MAX_BYTES", 2**20)
    path = tmp_path / "big.log"
    line = f"a line with {SECRET} in it\n"
    path.write_text(line * (2 * 2**20 // len(line)) + "the last line\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        data, cut = logs.read_tail(fd)
    finally:
        os.close(fd)
    assert len(data) == 2**20 and cut == path.stat().st_size - 2**20
    text = logs.as_text(data, cut, logs.Masker([SECRET]))
    first, second, *_ = text.splitlines()
    assert first == "[log cut: only the last 1 MiB are kept]"
    assert second == f"a line with {logs.MASK} in it"  # never the tail of a cut secret
    assert text.endswith("the last line\n") and SECRET[-8:] not in text


def test_a_log_is_read_from_where_the_attempt_began(tmp_path):
    path = tmp_path / "connect.log"
    path.write_text("before the run\n")
    start = path.stat().st_size
    with path.open("a") as fh:
        fh.write("during the run\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert logs.read_tail(fd, start) == (b"during the run\n", 0)
    finally:
        os.close(fd)


def test_symlinks_fifos_and_others_files_are_never_read(tmp_path):
    root = tmp_path / "box"
    (root / "work-0").mkdir(parents=True)
    secret = tmp_path / "root-only"
    secret.write_text("root's secret")
    me = {os.geteuid()}
    (root / "plain").write_text("mine")
    (root / "link").symlink_to(secret)
    (root / "linked-dir").symlink_to(tmp_path)
    os.mkfifo(root / "fifo")
    assert logs.open_beneath(root, ["plain"], me) is not None
    assert logs.open_beneath(root, ["link"], me) is None
    assert logs.open_beneath(root, ["linked-dir", "root-only"], me) is None
    assert logs.open_beneath(root, ["fifo"], me) is None  # and it did not block
    assert logs.open_beneath(root, ["plain"], {os.geteuid() + 1}) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_file_of_another_uid_is_not_read(tmp_path):
    root = tmp_path / "box"
    root.mkdir()
    (root / "theirs").write_text("another user's")
    os.chown(root / "theirs", 54321, 54321)
    assert logs.open_beneath(root, ["theirs"], {os.geteuid(), 54320}) is None


def fake_cluster_dir(root: Path, app: str, other: str) -> None:
    for work in ("work-0", "work-1"):
        for application in (app, other):
            executor = root / work / application / "0"
            executor.mkdir(parents=True)
            (executor / "stderr").write_text(f"{work} {application} {SECRET}\n")
    (root / "logs").mkdir()
    (root / "logs" / "connect.log").write_text("connect server started\n")


def test_on_a_running_cluster_only_its_applications_executors_since_the_start_are_collected(
    tmp_path, alice, make_job, monkeypatch
):
    app, other = "app-20250101120000-0001", "app-20250101120000-0000"
    fake_cluster_dir(tmp_path / "cluster", app, other)
    monkeypatch.setattr(logs, "connect_app_id", lambda cluster: app)
    run = services.claim_run(services.run_now(make_job(), alice, enqueue=False).pk, "w")
    cluster = type(
        "C",
        (),
        {
            "backend_info": {"dir": str(tmp_path / "cluster"), "uid": os.geteuid()},
            "connect_token": SECRET,
        },
    )()
    box = sb.Sandbox(sb.SandboxSpec(name=f"t-logs-{os.getpid()}", uid=sb.uid_for(alice.pk)))
    box.dir.mkdir(parents=True, exist_ok=True)
    try:
        collector = logs.Collector.for_attempt(run, box, cluster)  # a running cluster
        with (tmp_path / "cluster" / "work-1" / app / "0" / "stderr").open("a") as fh:
            fh.write("Traceback: ValueError in the udf\n")
        (tmp_path / "cluster" / "work-0" / app / "1").mkdir()
        (tmp_path / "cluster" / "work-0" / app / "1" / "stderr").write_text("a new executor\n")
        with (tmp_path / "cluster" / "logs" / "connect.log").open("a") as fh:
            fh.write(f"the run's query {SECRET}\n")
        texts = collector.collect()
    finally:
        box.destroy()
    assert texts == {
        "driver.log": f"the run's query {logs.MASK}\n",
        "executor-0-1.log": "a new executor\n",
        "executor-1-0.log": "Traceback: ValueError in the udf\n",
    }


# --- Storage, bytes, retention ----------------------------------------------------------------


def store_logs(run: Run, **texts: str) -> None:
    for name, text in texts.items():
        default_storage.save(logs.storage_key(run, name), ContentFile(text.encode()))


def finished_run(make_job, alice, tmp_path, **texts: str) -> Run:
    run = services.claim_run(services.run_now(make_job(), alice, enqueue=False).pk, "w")
    store_logs(run, **texts)
    out = tmp_path / "o.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(out))
    return services.finish_run(run, Outcome("failed", out, message="boom"))


def test_a_finished_runs_logs_count_in_its_output_bytes_and_expire_with_its_output(
    make_job, alice, tmp_path
):
    run = finished_run(make_job, alice, tmp_path, **{"kernel.log": "k" * 100, "driver.log": "d"})
    files = (run.output_key, run.html_key, run.output_gzip_key, run.html_gzip_key)
    outputs = sum(default_storage.size(key) for key in files if key)
    assert run.output_bytes == outputs + 101
    assert [e.name for e in logs.stored_logs(run)] == ["kernel.log", "driver.log"]
    Run.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(days=400))
    assert expire_run_outputs() == 1
    assert logs.stored_logs(run) == [] and Run.objects.get(pk=run.pk).output_bytes == 0


def test_a_run_with_logs_but_no_output_still_expires(make_job, alice):
    run = services.claim_run(services.run_now(make_job(), alice, enqueue=False).pk, "w")
    store_logs(run, **{"kernel.log": "the kernel died"})
    run = services.finish_run(run, Outcome("failed", None, message="kernel died"))
    assert (run.output_key, run.output_bytes) == ("", len("the kernel died"))
    Run.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(days=400))
    assert expire_run_outputs() == 1 and logs.stored_logs(run) == []


def test_an_upload_stores_masked_logs_only_while_the_attempt_owns_the_run(
    make_job, alice, settings
):
    settings.METRICS_TOKEN = SECRET
    run = services.claim_run(services.run_now(make_job(), alice, enqueue=False).pk, "w")
    store_logs(run, **{"executor-0-0.log": "an earlier attempt's"})
    box = sb.Sandbox(sb.SandboxSpec(name=f"t-up-{os.getpid()}", uid=sb.uid_for(alice.pk)))
    box.dir.mkdir(parents=True, exist_ok=True)
    try:
        collector = logs.Collector.for_attempt(run, box)
        logs.kernel_log_path(box).write_text(f"printed {SECRET}\n")
        assert collector.upload(final=True) == len(f"printed {logs.MASK}\n")
        assert [e.name for e in logs.stored_logs(run)] == ["kernel.log"]
        assert logs.read_stored(run, "kernel.log") == f"printed {logs.MASK}\n"
        assert Run.objects.get(pk=run.pk).output_bytes == len(f"printed {logs.MASK}\n")
        Run.objects.filter(pk=run.pk).update(attempt=run.attempt + 1)  # taken over
        logs.kernel_log_path(box).write_text("a stale attempt's\n")
        assert collector.upload(final=True) == 0
    finally:
        box.destroy()
    assert logs.read_stored(run, "kernel.log") == f"printed {logs.MASK}\n"


# --- Pages and API ------------------------------------------------------------------------------


def test_the_logs_tab_shows_escaped_text_to_the_owner_and_404s_everyone_else(
    make_job, alice, bob, staff, client, tmp_path
):
    job = make_job(visibility=Job.Visibility.SIGNED_IN)
    run = services.claim_run(services.run_now(job, alice, enqueue=False).pk, "w")
    store_logs(run, **{"driver.log": "<script>alert(1)</script> ERROR Executor"})
    out = tmp_path / "o.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(out))
    run = services.finish_run(run, Outcome("failed", out, message="boom"))
    client.force_login(alice)
    page = client.get(run.get_absolute_url()).content.decode()
    assert 'id="run-logs-tab"' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; ERROR Executor" in page
    assert "<script>alert(1)" not in page
    download = client.get(reverse("runs-log-download", args=[run.pk, "driver.log"]))
    assert download["Content-Type"] == "text/plain; charset=utf-8"
    assert download["X-Content-Type-Options"] == "nosniff"
    assert download["Content-Disposition"].startswith("attachment")
    assert b"".join(download.streaming_content).startswith(b"<script>")
    for name in ("x.log", "..x.log", "KERNEL.LOG"):
        assert client.get(reverse("runs-log-download", args=[run.pk, name])).status_code == 404
    client.force_login(staff)
    assert client.get(reverse("runs-logs", args=[run.pk])).status_code == 200
    # bob sees the shared job's run and its output, but not its logs.
    client.force_login(bob)
    assert client.get(run.get_absolute_url()).status_code == 200
    assert 'id="run-logs-tab"' not in client.get(run.get_absolute_url()).content.decode()
    assert client.get(reverse("runs-logs", args=[run.pk])).status_code == 404
    url = reverse("runs-log-download", args=[run.pk, "driver.log"])
    assert client.get(url).status_code == 404


def test_the_logs_tab_of_a_running_run_polls(make_job, alice, client):
    run = services.claim_run(services.run_now(make_job(), alice, enqueue=False).pk, "w")
    store_logs(run, **{"kernel.log": "so far"})
    client.force_login(alice)
    fragment = client.get(reverse("runs-logs", args=[run.pk])).content.decode()
    assert 'hx-trigger="every 5s"' in fragment and "so far" in fragment


def test_the_api_lists_a_runs_logs_and_serves_each_as_plain_text(make_job, alice, bob, client):
    run = services.claim_run(services.run_now(make_job(), alice, enqueue=False).pk, "w")
    store_logs(run, **{"kernel.log": "kernel says", "executor-0-0.log": "executor says"})
    _, token = ApiToken.issue(alice, "t", ["read"])
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    listing = client.get(f"/api/runs/{run.pk}/logs/", **auth).json()
    assert [(e["name"], e["bytes"]) for e in listing] == [
        ("kernel.log", 11),
        ("executor-0-0.log", 13),
    ]
    text = client.get(listing[0]["url"], **auth)
    assert text["Content-Type"] == "text/plain; charset=utf-8"
    assert text["X-Content-Type-Options"] == "nosniff"
    assert b"".join(text.streaming_content) == b"kernel says"
    missing = client.get(f"/api/runs/{run.pk}/logs/driver.log", **auth)
    assert (missing.status_code, missing.json()["code"]) == (404, "no_output")
    _, theirs = ApiToken.issue(bob, "t", ["read"])
    other = client.get(f"/api/runs/{run.pk}/logs/", HTTP_AUTHORIZATION=f"Bearer {theirs}")
    assert other.status_code == 404


def test_a_log_name_never_leaves_the_runs_logs():
    run = Run(uuid=uuid.uuid4())
    for bad in ("../output.ipynb", "kernel", "a/b.log", ".log", "KERNEL.LOG"):
        with pytest.raises(ValueError):
            logs.storage_key(run, bad)
    assert logs.read_stored(run, "../output.ipynb") is None


# --- A real run ---------------------------------------------------------------------------------


def udf_notebook(secret_variable: str) -> bytes:
    """A notebook that prints the value of ``secret_variable`` to the kernel's stderr and
    fails in a UDF whose error carries it."""
    first = f"import os, sys\nsecret = os.environ[{secret_variable!r}]\n" + UDF_NOTEBOOK[0]
    cells = [nbformat.v4.new_code_cell(c) for c in [first, *UDF_NOTEBOOK[1:]]]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nbformat.writes(nb).encode()


UDF_NOTEBOOK = [
    "print('the kernel printed', secret, file=sys.__stderr__, flush=True)",
    "from pyspark.sql import SparkSession\nfrom pyspark.sql.functions import udf\n"
    "spark = SparkSession.builder.getOrCreate()\n\n"
    "@udf('int')\ndef explode(x):\n    raise ValueError('udf exploded near ' + secret)\n\n"
    "spark.range(1).select(explode('id')).collect()",
]


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.django_db(transaction=True)  # the run's monitor thread writes its heartbeat
def test_a_run_failing_in_a_udf_shows_the_python_traceback_in_its_logs_masked(
    alice, client, settings, monkeypatch
):
    """On the embedded local Spark (local[N]) the executor is the driver's JVM: the Python
    worker's traceback reaches the driver's log4j log (Executor: "Exception in task"), so
    driver.log has it. The kernel's stderr has what the notebook printed there. The
    planted secret (a KERNEL_ENV_EXTRA variable) is masked in both, in storage too."""
    monkeypatch.setenv("PLANTED_SECRET", SECRET)
    monkeypatch.setenv("KERNEL_ENV_EXTRA", "PLANTED_SECRET")
    settings.KERNEL_ENV_ALLOWLIST = [*settings.KERNEL_ENV_ALLOWLIST, "PLANTED_SECRET"]
    job = services.create_job(alice, Job(name="udf"), udf_notebook("PLANTED_SECRET"), "udf.ipynb")
    run = services.execute_run(services.run_now(job, alice, enqueue=False).pk)
    assert run.state == Run.State.FAILED, run.state_reason
    stored = {e.name: logs.read_stored(run, e.name) for e in logs.stored_logs(run)}
    assert {"kernel.log", "driver.log"} <= stored.keys()
    driver = stored["driver.log"]
    assert "ERROR Executor: Exception in task" in driver
    assert "Traceback (most recent call last)" in driver
    assert f"ValueError: udf exploded near {logs.MASK}" in driver
    assert f"the kernel printed {logs.MASK}" in stored["kernel.log"]
    assert all(SECRET not in text for text in stored.values())
    assert run.output_bytes >= sum(e.bytes for e in logs.stored_logs(run))
    client.force_login(alice)
    page = client.get(run.get_absolute_url()).content.decode()
    # The Logs tab (the error summary and the history are the notebook's own error).
    tab = page[page.index('id="run-logs-tab"') : page.index("<summary>History")]
    assert f"ValueError: udf exploded near {logs.MASK}" in tab and SECRET not in tab


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.django_db(transaction=True)
def test_on_a_local_cluster_the_executors_traceback_is_in_its_log_with_the_token_masked(alice):
    """On a local cluster the UDF runs in an executor of the cluster's Spark Connect
    application: its Python traceback is in that executor's stderr, which the worker keeps
    under its work directory, collected as executor-<worker>-<id>.log. The notebook's error
    carries the cluster's connect token (its kernel has it, to reach the cluster): masked."""
    cluster = cluster_services.launch_cluster(
        alice, cluster_services.ClusterSpec(name="logs", size=1)
    )
    cluster_services.start_cluster(cluster.pk)
    try:
        cluster = cluster_services.wait_until_ready(cluster, timeout=240)
        job = services.create_job(
            alice,
            Job(name="udf on a cluster", spark_target="cluster", cluster=cluster),
            udf_notebook("SPARK_CONNECT_AUTHENTICATE_TOKEN"),
            "udf.ipynb",
        )
        run = services.execute_run(services.run_now(job, alice, enqueue=False).pk)
    finally:
        cluster_services.terminate_now(cluster, "Test over.")
    assert run.state == Run.State.FAILED, run.state_reason
    stored = {e.name: logs.read_stored(run, e.name) or "" for e in logs.stored_logs(run)}
    executors = {name: text for name, text in stored.items() if name.startswith("executor-")}
    assert executors, stored.keys()
    assert any(
        "Traceback (most recent call last)" in text
        and f"ValueError: udf exploded near {logs.MASK}" in text
        for text in executors.values()
    ), executors
    assert f"the kernel printed {logs.MASK}" in stored["kernel.log"]
    assert all(cluster.connect_token not in text for text in stored.values())
