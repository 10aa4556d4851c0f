"""Runs on a transient EMR cluster: the notebook runs as an EMR step with papermill.

The run's worker uploads the notebook version to S3, launches an EMR cluster for the run
(``KeepJobFlowAliveWhenNoSteps=False``, so it terminates itself when the step ends) whose
single step is ``papermill s3://.../input.ipynb s3://.../output.ipynb -y <parameters>``,
then polls the step while keeping the run's heartbeat, enforcing the timeout and honouring
cancel (both terminate the cluster). The output notebook is read back from S3 and handed
to ``finish_run`` like a local execution's.
"""

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import nbformat
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from clusters.backends import BackendError
from jobs.executor import Outcome, Progress

log = logging.getLogger(__name__)

#: EMR step states and what they mean for the run.
STEP_DONE = {"COMPLETED"}
STEP_FAILED = {"FAILED", "CANCELLED", "INTERRUPTED"}


def s3_client():
    return boto3.client(
        "s3", region_name=settings.EMR_REGION, endpoint_url=settings.EMR_S3_ENDPOINT_URL or None
    )


def notebook_step(name: str, source_uri: str, output_uri: str, parameters_uri: str) -> dict:
    """The EMR step that executes a notebook with papermill, S3 to S3 (command-runner).

    The parameters are read from ``parameters_uri`` (a YAML file beside the input; JSON is
    YAML), never written into the step's arguments, which anyone who may describe the
    cluster can read."""
    return {
        "Name": name,
        "ActionOnFailure": "TERMINATE_CLUSTER",
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": ["papermill", source_uri, output_uri, "-f", parameters_uri, "--log-output"],
        },
    }


def error_of(nb) -> dict:
    """``{cell_index, ename, evalue, traceback}`` of the first error output, or {}."""
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return {
                    "cell_index": index,
                    "ename": output.get("ename", ""),
                    "evalue": output.get("evalue", ""),
                    "traceback": "\n".join(output.get("traceback", [])),
                }
    return {}


def execute_on_emr(
    run,
    cluster,
    backend,
    source: bytes,
    parameters: dict,
    tick: Callable[[Progress], str],
    workdir: Path,
) -> Outcome:
    """Run ``source`` as the step of ``cluster`` (a Cluster row for this run, not yet
    launched) and return the Outcome. ``tick(progress)`` records the heartbeat and answers
    "continue", "cancel" or "lost". Never raises for notebook or EMR failures: they become
    "failed" or "infra_error" outcomes."""
    from clusters import services as cluster_services

    bucket = settings.EMR_JOB_BUCKET
    prefix = f"runs/{run.uuid}/attempt-{run.attempt}"
    source_uri, output_uri = (
        f"s3://{bucket}/{prefix}/input.ipynb",
        f"s3://{bucket}/{prefix}/output.ipynb",
    )
    parameters_uri = f"s3://{bucket}/{prefix}/parameters.yaml"
    s3 = s3_client()
    try:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/input.ipynb", Body=source)
        s3.put_object(
            Bucket=bucket, Key=f"{prefix}/parameters.yaml", Body=json.dumps(parameters).encode()
        )
        step = notebook_step(
            f"Run {run.pk} of job {run.job_id}", source_uri, output_uri, parameters_uri
        )
        info = backend.start(cluster, steps=[step], keep_alive=False)
    except (ClientError, BotoCoreError, BackendError) as exc:
        return Outcome("infra_error", message=f"Could not launch the EMR job cluster: {exc}"[:500])
    cluster_services.record_launch(cluster, info)
    progress = Progress(cells_total=1)
    deadline = time.monotonic() + run.timeout_seconds
    step_id = None
    reason = None
    while True:
        answer = tick(progress)
        if answer in ("cancel", "lost"):
            reason = "cancelled" if answer == "cancel" else "lost"
        elif time.monotonic() > deadline:
            reason = "timed_out"
        if reason:
            cluster_services.terminate_now(
                cluster,
                {"cancelled": "Run cancelled.", "timed_out": "Run timed out.", "lost": "Run lost."}[
                    reason
                ],
            )
            messages = {
                "timed_out": f"Stopped after the timeout of {run.timeout_seconds} s.",
                "cancelled": "Cancelled on request.",
                "lost": "This worker lost the run.",
            }
            return Outcome(reason, message=messages[reason])
        try:
            step_id, state = backend.step_state(info["jobflow_id"], step_id)
        except BackendError as exc:
            log.warning("EMR step poll failed run=%s: %s", run.pk, exc)
            state = "UNKNOWN"
        if state == "RUNNING":
            progress.current_head = "EMR step running papermill"
        if state in STEP_DONE | STEP_FAILED:
            break
        time.sleep(settings.EMR_STEP_POLL_INTERVAL)
    cluster_services.sync_cluster(cluster)
    output = workdir / "output.ipynb"
    try:
        body = s3.get_object(Bucket=bucket, Key=f"{prefix}/output.ipynb")["Body"].read()
        output.write_bytes(body)
        nb = nbformat.reads(body.decode("utf-8"), as_version=4)
    except (ClientError, BotoCoreError, ValueError) as exc:
        if state in STEP_DONE:
            return Outcome(
                "infra_error",
                message=f"The step finished but its output could not be read: {exc}"[:500],
            )
        return Outcome(
            "infra_error", message=f"The EMR step ended {state} without an output notebook."
        )
    progress.cells_done = 1
    if state in STEP_DONE:
        return Outcome("succeeded", output, progress=progress)
    error = error_of(nb)
    if error:
        return Outcome(
            "failed",
            output,
            error=error,
            message=f"{error['ename']}: {error['evalue']}"[:500],
            progress=progress,
        )
    return Outcome("infra_error", output, message=f"The EMR step ended {state}.", progress=progress)
