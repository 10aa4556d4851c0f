"""Runs on a transient EMR cluster, through the portal's real code path, against moto.

moto runs no EMR step, so each test plays EMR's part from the test thread (the step's
state and the output notebook papermill would write) while ``execute_run`` runs in a
thread exactly as in a worker: upload, launch with the papermill step, poll, read back.
"""

import gzip
import json
import threading

import nbformat
import pytest
from django.urls import reverse

from clusters.models import Cluster
from jobs import logs, services
from jobs.models import Run
from tests.clusters.test_emr import IN_BUCKET, LOG_BUCKET, set_emr_state, set_emr_step_state
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def emr_job(aws, emr_settings, make_job):
    emr_settings.EMR_JOB_BUCKET = IN_BUCKET
    emr_settings.EMR_S3_ENDPOINT_URL = aws.endpoint
    emr_settings.EMR_STEP_POLL_INTERVAL = 0.1
    return make_job(
        "trivial.ipynb", spark_target="emr_cluster", cluster_size=2, parameters={"x": 7}
    )


def start_in_thread(run):
    result = {}

    def target():
        from django.db import connection

        try:
            result["run"] = services.execute_run(run.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread, result


def launched_step(aws, run):
    cluster = wait_for(
        lambda: Cluster.objects.filter(for_run=run).exclude(jobflow_id="").first(),
        timeout=20,
        message="launch",
    )
    [step] = aws.emr.list_steps(ClusterId=cluster.jobflow_id)["Steps"]
    return cluster, step


def write_output(aws, run, nb):
    aws.s3.put_object(
        Bucket=IN_BUCKET,
        Key=f"runs/{run.uuid}/attempt-1/output.ipynb",
        Body=nbformat.writes(nb).encode(),
    )


def test_a_run_executes_as_a_papermill_step_and_its_output_is_read_back(aws, emr_job, alice):
    run = services.run_now(emr_job, alice, enqueue=False)
    thread, result = start_in_thread(run)
    cluster, step = launched_step(aws, run)
    args = step["Config"]["Args"]
    prefix = f"s3://{IN_BUCKET}/runs/{run.uuid}/attempt-1"
    assert args == [
        "papermill",
        f"{prefix}/input.ipynb",
        f"{prefix}/output.ipynb",
        "-f",
        f"{prefix}/parameters.yaml",
        "--log-output",
    ]
    # The parameters travel through S3 beside the input, not on the step's command line.
    stored = aws.s3.get_object(Bucket=IN_BUCKET, Key=f"runs/{run.uuid}/attempt-1/parameters.yaml")[
        "Body"
    ].read()
    assert json.loads(stored)["x"] == 7 and json.loads(stored)["spark_master"] == "yarn"
    uploaded = aws.s3.get_object(Bucket=IN_BUCKET, Key=f"runs/{run.uuid}/attempt-1/input.ipynb")[
        "Body"
    ].read()
    assert nbformat.reads(uploaded.decode(), as_version=4).cells[0].metadata["tags"] == [
        "parameters"
    ]
    described = aws.emr.describe_cluster(ClusterId=cluster.jobflow_id)["Cluster"]
    assert described["AutoTerminate"] is True and cluster.size == 2
    assert described["VisibleToAllUsers"] is False

    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("x = 7", metadata={"tags": ["injected-parameters"]})]
    )
    write_output(aws, run, nb)
    set_emr_step_state(cluster.jobflow_id, step["Id"], "COMPLETED")
    set_emr_state(cluster.jobflow_id, "TERMINATED", "Steps completed")
    thread.join(timeout=30)
    done = result["run"]
    assert done.state == Run.State.SUCCEEDED, done.state_reason
    assert done.output_key and done.html_key and done.cluster_id == cluster.pk
    assert Cluster.objects.get(pk=cluster.pk).state == Cluster.State.TERMINATED


def test_a_failing_step_reports_the_failing_cell(aws, emr_job, alice):
    run = services.run_now(emr_job, alice, enqueue=False)
    thread, result = start_in_thread(run)
    cluster, step = launched_step(aws, run)
    failing = nbformat.v4.new_code_cell("1 / 0")
    failing.outputs = [
        nbformat.v4.new_output(
            "error",
            ename="ZeroDivisionError",
            evalue="division by zero",
            traceback=["Traceback", "ZeroDivisionError"],
        )
    ]
    write_output(
        aws, run, nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 7"), failing])
    )
    set_emr_step_state(cluster.jobflow_id, step["Id"], "FAILED")
    thread.join(timeout=30)
    done = result["run"]
    assert done.state == Run.State.FAILED
    assert (done.error_cell_index, done.error_ename) == (1, "ZeroDivisionError")


def test_a_timed_out_step_terminates_its_cluster(aws, emr_job, alice):
    emr_job.timeout_seconds = 1
    emr_job.save()
    run = services.run_now(emr_job, alice, enqueue=False)
    thread, result = start_in_thread(run)
    thread.join(timeout=30)
    done = result["run"]
    assert done.state == Run.State.TIMED_OUT
    cluster = Cluster.objects.get(for_run=run)
    assert (
        aws.emr.describe_cluster(ClusterId=cluster.jobflow_id)["Cluster"]["Status"]["State"]
        == "TERMINATED"
    )
    assert cluster.state == Cluster.State.TERMINATED


def test_a_cancelled_step_ends_cancelled_and_terminates_its_cluster(aws, emr_job, alice):
    """Cancel while the step runs: the executor stops polling at the next heartbeat, and
    releasing its target terminates the run's own cluster at once."""
    run = services.run_now(emr_job, alice, enqueue=False)
    thread, result = start_in_thread(run)
    cluster, _ = launched_step(aws, run)
    services.cancel_run(Run.objects.get(pk=run.pk), alice)
    thread.join(timeout=30)
    done = result["run"]
    assert (done.state, done.state_reason) == (Run.State.CANCELLED, "Cancelled on request.")
    cluster.refresh_from_db()
    assert cluster.state == Cluster.State.TERMINATED
    assert cluster.state_reason == "Run cancelled."
    emr_state = aws.emr.describe_cluster(ClusterId=cluster.jobflow_id)["Cluster"]["Status"]
    assert emr_state["State"] == "TERMINATED"


def test_a_run_keeps_its_steps_logs_masked(aws, emr_settings, emr_job, alice, client):
    """The step's stderr and stdout, gzip'ed where EMR copies them
    (``<EMR_LOG_URI><job flow id>/steps/<step id>/``), are stored with the run's logs
    when the attempt ends: masked, counted in output_bytes, shown in the Logs tab."""
    secret = "metrics-secret-4711"
    emr_settings.METRICS_TOKEN = secret  # a secret the portal knows
    run = services.run_now(emr_job, alice, enqueue=False)
    thread, result = start_in_thread(run)
    cluster, step = launched_step(aws, run)
    steps = f"emr/{cluster.jobflow_id}/steps/{step['Id']}"
    stderr = f"papermill: executing\nSPARK_TOKEN={secret}\nERROR: the step's own error\n"
    aws.s3.put_object(
        Bucket=LOG_BUCKET, Key=f"{steps}/stderr.gz", Body=gzip.compress(stderr.encode())
    )
    aws.s3.put_object(Bucket=LOG_BUCKET, Key=f"{steps}/stdout.gz", Body=gzip.compress(b"out\n"))
    write_output(aws, run, nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 7")]))
    set_emr_step_state(cluster.jobflow_id, step["Id"], "COMPLETED")
    set_emr_state(cluster.jobflow_id, "TERMINATED", "Steps completed")
    thread.join(timeout=30)
    done = result["run"]
    assert done.state == Run.State.SUCCEEDED, done.state_reason

    stored = {entry.name: entry.bytes for entry in logs.stored_logs(done)}
    assert list(stored) == ["step-stderr.log", "step-stdout.log"]  # no controller yet
    text = logs.read_stored(done, "step-stderr.log")
    assert text == f"papermill: executing\nSPARK_TOKEN={logs.MASK}\nERROR: the step's own error\n"
    assert done.output_bytes >= sum(stored.values())
    client.force_login(alice)
    tab = client.get(reverse("runs-logs", args=[done.pk])).content.decode()
    assert "step-stderr.log" in tab and "the step&#x27;s own error" in tab and secret not in tab
