"""Continuous jobs on a transient EMR cluster (issue 15, "on clusters, S3 serves when
configured"), through the portal's real code path against moto.

The checkpoint and sink live under STREAMS_S3_URI; the stop flag is an S3 object the
kernel's helper polls; the run's cluster lives STREAM_EMR_LIFETIME_HOURS and is rotated
before it expires. moto runs no step, so each test plays EMR's (and the kernel's) part
from the test thread, as tests/clusters/test_emr_runs.py does.
"""

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from datetime import timedelta

import nbformat
import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone

from clusters.models import Cluster
from jobs.models import Run
from jobs.services import streams
from tests.clusters.test_emr import BOOTSTRAP_BUCKET, IN_BUCKET, REGION, set_emr_step_state
from tests.clusters.test_emr_runs import launched_step, start_in_thread, write_output
from tests.processes import wait_for

# Moto, a worker thread per run and a kernel subprocess: seconds each (about 15 s all).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

STREAMS_BUCKET = "portal-streams"


@pytest.fixture
def s3_streams(aws, emr_settings):
    emr_settings.EMR_JOB_BUCKET = IN_BUCKET
    emr_settings.EMR_S3_ENDPOINT_URL = aws.endpoint
    emr_settings.EMR_STEP_POLL_INTERVAL = 0.1
    emr_settings.STREAM_STOP_TIMEOUT = 2.0
    emr_settings.STREAMS_S3_URI = f"s3://{STREAMS_BUCKET}/streams/"
    aws.s3.create_bucket(
        Bucket=STREAMS_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return aws


@pytest.fixture
def emr_stream_job(s3_streams, make_job):
    return make_job(
        "trivial.ipynb",
        name="emr stream",
        spark_target="emr_cluster",
        cluster_size=2,
        continuous=True,
    )


def started_run(job) -> Run:
    assert streams.supervise_streams()["started"] == 1
    return job.runs.get(trigger=Run.Trigger.CONTINUOUS)


def stop_key(run) -> str:
    return f"runs/{run.uuid}/attempt-1/stop"


def has_stop_flag(aws, run) -> bool:
    listed = aws.s3.list_objects_v2(Bucket=IN_BUCKET, Prefix=stop_key(run))
    return bool(listed.get("Contents"))


def test_a_continuous_job_on_emr_needs_an_s3_location(aws, emr_settings, make_job):
    emr_settings.STREAMS_S3_URI = ""
    with pytest.raises(ValidationError) as refused:
        make_job("trivial.ipynb", spark_target="emr_cluster", continuous=True)
    assert "embedded local Spark" in str(refused.value)
    emr_settings.STREAMS_S3_URI = f"s3://{STREAMS_BUCKET}/streams/"
    job = make_job("trivial.ipynb", spark_target="emr_cluster", continuous=True)
    assert job.streams_in_s3
    prefix = f"s3://{STREAMS_BUCKET}/streams/{job.stream_key.hex}/"
    assert job.checkpoint_generation == 1
    assert job.stream_locations() == (f"{prefix}checkpoint-1", f"{prefix}output-1")
    other = make_job("trivial.ipynb", spark_target="emr_cluster", continuous=True)
    assert other.stream_key != job.stream_key  # each job its own, unguessable prefix


def test_stop_writes_the_flag_in_s3_and_the_run_ends_stopped_on_request(s3_streams, emr_stream_job):
    aws = s3_streams
    # What an earlier checkpoint generation left is deleted when the next run starts.
    old = f"streams/{emr_stream_job.stream_key.hex}/checkpoint-1/offsets/0"
    aws.s3.put_object(Bucket=STREAMS_BUCKET, Key=old, Body=b"v1")
    streams.reset_checkpoint(emr_stream_job)
    run = started_run(emr_stream_job)
    thread, result = start_in_thread(run)
    cluster, step = launched_step(aws, run)

    # The kernel learns where the stop flag is; the notebook where its checkpoint is.
    args = step["Config"]["Args"]
    flag_uri = f"s3://{IN_BUCKET}/{stop_key(run)}"
    assert args[:4] == [
        "env",
        f"PORTAL_STOP_FILE={flag_uri}",
        f"AWS_DEFAULT_REGION={REGION}",
        "papermill",
    ]
    parameters = json.loads(
        aws.s3.get_object(Bucket=IN_BUCKET, Key=f"runs/{run.uuid}/attempt-1/parameters.yaml")[
            "Body"
        ].read()
    )
    prefix = f"s3://{STREAMS_BUCKET}/streams/{emr_stream_job.stream_key.hex}/"
    assert parameters["checkpoint_dir"] == f"{prefix}checkpoint-2"
    assert parameters["output_dir"] == f"{prefix}output-2"
    assert "Contents" not in aws.s3.list_objects_v2(Bucket=STREAMS_BUCKET, Prefix=old)
    # A continuous run's cluster lives STREAM_EMR_LIFETIME_HOURS, not its endless timeout.
    cluster.refresh_from_db()
    lifetime = (cluster.expires_at - cluster.created_at).total_seconds() / 3600
    assert round(lifetime) == 24
    # Its nodes get the portal's telemetry package (the stop flag's reader).
    actions = aws.emr.list_bootstrap_actions(ClusterId=cluster.jobflow_id)["BootstrapActions"]
    telemetry = f"s3://{BOOTSTRAP_BUCKET}/bootstrap/telemetry.zip"
    assert any(telemetry in action.get("Args", []) for action in actions)

    assert not has_stop_flag(aws, run)
    streams.stop_run(Run.objects.get(pk=run.pk))
    wait_for(lambda: has_stop_flag(aws, run), timeout=10, message="the stop flag")
    # The kernel's helper sees it through S3 and stops its queries; the notebook ends.
    assert kernel_sees_stop(aws, flag_uri)
    write_output(aws, run, nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]))
    set_emr_step_state(cluster.jobflow_id, step["Id"], "COMPLETED")
    thread.join(timeout=30)
    done = result["run"]
    assert (done.state, done.state_reason) == (Run.State.SUCCEEDED, Run.STOPPED_ON_REQUEST)


def test_a_stop_not_done_in_time_cancels_the_run_and_its_cluster(
    s3_streams, emr_stream_job, emr_settings
):
    aws = s3_streams
    emr_settings.STREAM_STOP_TIMEOUT = 0.5
    run = started_run(emr_stream_job)
    thread, result = start_in_thread(run)
    cluster, _ = launched_step(aws, run)
    streams.stop_run(Run.objects.get(pk=run.pk))
    thread.join(timeout=30)  # the step never ends
    done = result["run"]
    assert done.state == Run.State.CANCELLED
    assert (
        done.state_reason == "Not stopped within 0.5 s after it was asked: killed with its cluster."
    )
    assert has_stop_flag(aws, run)
    cluster.refresh_from_db()
    assert cluster.state == Cluster.State.TERMINATED


def test_a_cluster_near_its_expiry_is_rotated_and_the_stream_restarts_at_once(
    s3_streams, emr_stream_job
):
    aws = s3_streams
    run = started_run(emr_stream_job)
    thread, result = start_in_thread(run)
    cluster, step = launched_step(aws, run)
    assert not has_stop_flag(aws, run)
    # Its expiry comes within the stop timeout plus the rotation margin.
    Cluster.objects.filter(pk=cluster.pk).update(expires_at=timezone.now() + timedelta(minutes=5))
    wait_for(lambda: has_stop_flag(aws, run), timeout=10, message="the rotation's stop flag")
    write_output(aws, run, nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]))
    set_emr_step_state(cluster.jobflow_id, step["Id"], "COMPLETED")
    thread.join(timeout=30)
    done = result["run"]
    assert done.state == Run.State.SUCCEEDED
    assert "lifetime was reached" in done.state_reason
    emr_stream_job.refresh_from_db()
    assert emr_stream_job.enabled  # not paused: the supervisor starts the next run now
    assert streams.supervise_streams()["started"] == 1


def kernel_sees_stop(aws, flag_uri: str) -> bool:
    """``telemetry.streaming.stop_requested`` in a fresh interpreter, as the step's kernel
    runs it, with the flag in S3 (moto's endpoint standing for the cluster's S3)."""
    env = {
        **os.environ,
        "PORTAL_STOP_FILE": flag_uri,
        "AWS_ENDPOINT_URL_S3": aws.endpoint,
        "AWS_DEFAULT_REGION": REGION,
    }
    code = "from telemetry.streaming import stop_requested; print(stop_requested())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() == "True"


def test_the_kernel_helper_reads_an_s3_stop_flag(s3_streams):
    aws = s3_streams
    flag_uri = f"s3://{IN_BUCKET}/runs/x/attempt-1/stop"
    assert kernel_sees_stop(aws, flag_uri) is False
    aws.s3.put_object(Bucket=IN_BUCKET, Key="runs/x/attempt-1/stop", Body=b"stop\n")
    assert kernel_sees_stop(aws, flag_uri) is True


def test_the_telemetry_package_is_uploaded_for_the_clusters(aws, tmp_path):
    """``upload_emr_bootstrap`` uploads the telemetry package as a zip, which the papermill
    bootstrap action receives as its argument; ``telemetry.streaming`` imports from it."""
    call_command("upload_emr_bootstrap", stdout=io.StringIO())
    body = aws.s3.get_object(Bucket=BOOTSTRAP_BUCKET, Key="bootstrap/telemetry.zip")["Body"]
    archive = tmp_path / "telemetry.zip"
    archive.write_bytes(body.read())
    names = zipfile.ZipFile(archive).namelist()
    assert "telemetry/streaming.py" in names and "telemetry/__init__.py" in names
    out = subprocess.run(
        [sys.executable, "-c", "import telemetry.streaming as s; print(s.__file__)"],
        env={**os.environ, "PYTHONPATH": str(archive)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(archive))


def test_the_migration_gives_every_existing_job_its_own_stream_key(make_job):
    """AddField fills existing rows with one evaluation of the default (the column is
    nullable until then): the migration's data step gives each job a key of its own,
    before the column becomes unique."""
    import importlib

    from django.apps import apps

    from jobs.models import Job

    migration = importlib.import_module("jobs.migrations.0013_job_stream_key")
    for name in ("a", "b", "c"):
        make_job("trivial.ipynb", name=name)
    before = set(Job.objects.values_list("stream_key", flat=True))
    migration.give_each_job_its_key(apps, None)
    after = set(Job.objects.values_list("stream_key", flat=True))
    assert len(after) == 3 and not after & before


def test_a_lost_runs_cluster_is_terminated_before_the_next_run_starts(
    s3_streams, emr_stream_job, settings
):
    """A worker that died leaves its run LOST (the reaper) and its cluster running the old
    step, still writing the checkpoint: the job's next run terminates it first."""
    from clusters import services as cluster_services
    from clusters.backends.emr import EmrBackend
    from jobs.services.recovery import cancel_run

    aws = s3_streams
    settings.STREAM_RESTART_BACKOFF = 0  # restart at once after the lost run
    lost = started_run(emr_stream_job)
    Run.objects.filter(pk=lost.pk).update(attempt=1)
    orphan = cluster_services.launch_cluster_for_run(Run.objects.get(pk=lost.pk), "emr", 600)
    cluster_services.record_launch(orphan, EmrBackend().start(orphan))
    Run.objects.filter(pk=lost.pk).update(state=Run.State.LOST, finished_at=timezone.now())
    assert streams.supervise_streams()["started"] == 1
    run = emr_stream_job.runs.get(state=Run.State.QUEUED)
    thread, result = start_in_thread(run)
    launched_step(aws, run)
    orphan.refresh_from_db()
    assert orphan.state in (Cluster.State.TERMINATING, Cluster.State.TERMINATED)
    assert orphan.state_reason == "The job's next run replaced it."
    described = aws.emr.describe_cluster(ClusterId=orphan.jobflow_id)["Cluster"]["Status"]
    assert described["State"] in ("TERMINATING", "TERMINATED")
    cancel_run(Run.objects.get(pk=run.pk))
    thread.join(timeout=30)
    assert result["run"].state == Run.State.CANCELLED


def stream_objects(aws) -> set[str]:
    listed = aws.s3.list_objects_v2(Bucket=STREAMS_BUCKET, Prefix="streams/")
    return {o["Key"] for o in listed.get("Contents", [])}


def test_deleting_a_job_removes_its_s3_prefix_and_the_sweep_removes_orphans(
    s3_streams, emr_stream_job, make_job, on_commit_tasks
):
    from jobs import services, tasks

    aws = s3_streams
    kept = make_job("trivial.ipynb", name="kept", spark_target="emr_cluster", continuous=True)
    for job in (emr_stream_job, kept):
        for name in ("checkpoint-1/offsets/0", "output-1/part-0.parquet"):
            key = f"streams/{job.stream_key.hex}/{name}"
            aws.s3.put_object(Bucket=STREAMS_BUCKET, Key=key, Body=b"x")
    orphan = "streams/0123456789abcdef0123456789abcdef/checkpoint-1/commits/0"
    foreign = "streams/not-a-stream-key/readme.txt"
    for key in (orphan, foreign):
        aws.s3.put_object(Bucket=STREAMS_BUCKET, Key=key, Body=b"x")

    gone = emr_stream_job.stream_key.hex
    on_commit_tasks(services.delete_job, emr_stream_job)  # the removal task runs eagerly
    assert not any(key.startswith(f"streams/{gone}/") for key in stream_objects(aws))
    assert any(key.startswith(f"streams/{kept.stream_key.hex}/") for key in stream_objects(aws))

    assert tasks.prune_stream_dirs() >= 1
    left = stream_objects(aws)
    assert orphan not in left and foreign in left
    assert {f"streams/{kept.stream_key.hex}/checkpoint-1/offsets/0"} <= left
    with pytest.raises(ValueError):
        streams.remove_stream_prefix(f"s3://{STREAMS_BUCKET}/streams/")  # never the root


def test_the_operations_page_does_not_flag_an_emr_stream_without_metrics(
    s3_streams, emr_stream_job, client, staff
):
    from django.urls import reverse

    run = started_run(emr_stream_job)
    long_ago = timezone.now() - timedelta(hours=1)
    Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING, attempt=1, started_at=long_ago)
    client.force_login(staff)
    page = client.get(reverse("operations")).content.decode()
    row = page.split(f'id="stream-job-{emr_stream_job.pk}"')[1].split("</tr>")[0]
    assert "no live metrics on EMR" in row and "stalled" not in row


def test_a_stop_during_a_rotation_ends_stopped_on_request(s3_streams, emr_stream_job):
    """Stop pressed while the run was already being rotated: the run ends "Stopped on
    request." (its job is paused), not "restarted on a fresh cluster"."""
    aws = s3_streams
    run = started_run(emr_stream_job)
    thread, result = start_in_thread(run)
    cluster, step = launched_step(aws, run)
    Cluster.objects.filter(pk=cluster.pk).update(expires_at=timezone.now() + timedelta(minutes=5))
    wait_for(lambda: has_stop_flag(aws, run), timeout=10, message="the rotation's stop flag")
    streams.stop_run(Run.objects.get(pk=run.pk))
    time.sleep(0.5)  # a few polls: the worker sees the request
    write_output(aws, run, nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]))
    set_emr_step_state(cluster.jobflow_id, step["Id"], "COMPLETED")
    thread.join(timeout=30)
    done = result["run"]
    assert (done.state, done.state_reason) == (Run.State.SUCCEEDED, Run.STOPPED_ON_REQUEST)
    emr_stream_job.refresh_from_db()
    assert not emr_stream_job.enabled


def test_the_stop_timeout_runs_even_when_the_flag_cannot_be_written(
    s3_streams, emr_stream_job, emr_settings
):
    """S3 refuses the flag (its bucket is gone): the stop timeout still ends the run."""
    aws = s3_streams
    emr_settings.STREAM_STOP_TIMEOUT = 0.5
    run = started_run(emr_stream_job)
    thread, result = start_in_thread(run)
    launched_step(aws, run)
    for obj in aws.s3.list_objects_v2(Bucket=IN_BUCKET).get("Contents", []):
        aws.s3.delete_object(Bucket=IN_BUCKET, Key=obj["Key"])
    aws.s3.delete_bucket(Bucket=IN_BUCKET)
    streams.stop_run(Run.objects.get(pk=run.pk))
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert result["run"].state == Run.State.CANCELLED


def test_a_continuous_job_on_emr_stays_private(s3_streams, make_job):
    """Its runs show its stream key (in the injected parameters), which any EMR cluster
    could then use: sharing the job with everyone signed in is refused."""
    with pytest.raises(ValidationError) as refused:
        make_job(
            "trivial.ipynb", spark_target="emr_cluster", continuous=True, visibility="signed_in"
        )
    assert "visibility" in refused.value.message_dict
    shared = make_job("trivial.ipynb", name="shared", visibility="signed_in", continuous=True)
    assert shared.visibility == "signed_in"  # on the worker's disk it may be shared


def test_objects_s3_refuses_to_delete_are_reported_not_counted(s3_streams):
    """``delete_objects`` answers per key; a refusal is an OSError, not a success."""
    from jobs import emr_runner

    aws = s3_streams
    key = "streams/0123456789abcdef0123456789abcdef/checkpoint-1/offsets/0"
    aws.s3.put_object(Bucket=STREAMS_BUCKET, Key=key, Body=b"x")

    class Refusing:
        def get_paginator(self, name):
            return aws.s3.get_paginator(name)

        def delete_objects(self, Bucket, Delete):
            return {
                "Errors": [{"Key": o["Key"], "Code": "AccessDenied"} for o in Delete["Objects"]]
            }

    prefix = f"s3://{STREAMS_BUCKET}/streams/0123456789abcdef0123456789abcdef/"
    with pytest.raises(OSError, match="refused to delete 1 of 1 objects"):
        emr_runner.remove_s3_prefix(Refusing(), prefix)
    assert emr_runner.remove_s3_prefix(aws.s3, prefix) == 1
