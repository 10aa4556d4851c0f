"""Runs on a transient EMR cluster, the database-free part: the S3 files of an attempt,
the papermill step, and the outcome read back from the step's output notebook.

``jobs.services.executors.EmrExecutor`` uploads the notebook version and its parameters
to S3, launches an EMR cluster for the run (``KeepJobFlowAliveWhenNoSteps=False``, so it
terminates itself when the step ends) whose single step is ``papermill s3://.../input.ipynb
s3://.../output.ipynb -f s3://.../parameters.yaml``, polls the step while keeping the run's
heartbeat, and hands the outcome to ``finish_run`` like a local execution's.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import nbformat
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from jobs.executor import Outcome, OutcomeStatus, Progress

#: EMR step states and what they mean for the run.
STEP_DONE = {"COMPLETED"}
STEP_FAILED = {"FAILED", "CANCELLED", "INTERRUPTED"}


def s3_client() -> Any:
    """An S3 client for EMR_JOB_BUCKET (EMR_S3_ENDPOINT_URL, when set, for tests)."""
    return boto3.client(
        "s3", region_name=settings.EMR_REGION, endpoint_url=settings.EMR_S3_ENDPOINT_URL or None
    )


def notebook_step(
    name: str,
    source_uri: str,
    output_uri: str,
    parameters_uri: str,
    env: dict[str, str] | None = None,
) -> dict:
    """The EMR step that executes a notebook with papermill, S3 to S3 (command-runner).

    The parameters are read from ``parameters_uri`` (a YAML file beside the input; JSON is
    YAML), never written into the step's arguments, which anyone who may describe the
    cluster can read. ``env`` (names and values that are no secret: they are in the
    arguments) is set for papermill and its kernel through ``env NAME=VALUE ...``."""
    command = ["papermill", source_uri, output_uri, "-f", parameters_uri, "--log-output"]
    if env:
        command = ["env", *(f"{key}={value}" for key, value in env.items()), *command]
    return {
        "Name": name,
        "ActionOnFailure": "TERMINATE_CLUSTER",
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": command},
    }


def error_of(nb: nbformat.NotebookNode) -> dict:
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


@dataclass(frozen=True)
class StepFiles:
    """Where an attempt's notebook, parameters and output notebook live in S3:
    ``s3://<bucket>/runs/<run uuid>/attempt-<n>/{input.ipynb,parameters.yaml,output.ipynb}``,
    and a continuous run's stop flag ``stop``.
    """

    bucket: str
    prefix: str

    @classmethod
    def for_attempt(cls, run_uuid: object, attempt: int) -> "StepFiles":
        return cls(settings.EMR_JOB_BUCKET, f"runs/{run_uuid}/attempt-{attempt}")

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def upload(self, s3: Any, source: bytes, parameters: dict) -> None:
        """Store the notebook and its parameters (JSON, which is YAML) beside it; raises
        botocore's ClientError or BotoCoreError."""
        s3.put_object(Bucket=self.bucket, Key=self.key("input.ipynb"), Body=source)
        body = json.dumps(parameters).encode()
        s3.put_object(Bucket=self.bucket, Key=self.key("parameters.yaml"), Body=body)

    def step(self, name: str, env: dict[str, str] | None = None) -> dict:
        """The papermill step over these files (``notebook_step``), with ``env``."""
        return notebook_step(
            name,
            self.uri("input.ipynb"),
            self.uri("output.ipynb"),
            self.uri("parameters.yaml"),
            env=env,
        )

    def request_stop(self, s3: Any) -> None:
        """Create the attempt's stop flag, ``stop`` beside its files: a continuous run's
        kernel polls it (``telemetry.streaming``, ``PORTAL_STOP_FILE`` = ``uri("stop")``)
        and stops its queries. Raises botocore's ClientError or BotoCoreError."""
        s3.put_object(Bucket=self.bucket, Key=self.key("stop"), Body=b"stop\n")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``(bucket, key)`` of ``s3://bucket/key``; raises ValueError for anything else."""
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an S3 URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def remove_s3_prefix(s3: Any, prefix_uri: str, keep: tuple[str, ...] = ()) -> int:
    """Delete every object under ``prefix_uri`` (``s3://bucket/key/``) but those under the
    URIs ``keep``; returns how many were deleted. Listing and deleting go page by page
    (1,000 keys each). Raises ValueError for a URI that is not under a non-empty key
    ending in "/" (never a whole bucket), OSError when S3 refuses some of the keys (its
    answer lists them rather than raising), botocore's ClientError or BotoCoreError."""
    bucket, prefix = split_s3_uri(prefix_uri)
    if not prefix.endswith("/") or prefix == "/":
        raise ValueError(f"refusing to delete under {prefix_uri!r}: not a folder-like prefix")
    kept = tuple(split_s3_uri(uri.rstrip("/") + "/")[1] for uri in keep)
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [o["Key"] for o in page.get("Contents", []) if not o["Key"].startswith(kept)]
        if keys:
            answer = s3.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]}
            )
            failed = answer.get("Errors") or []
            if failed:  # reported per key, not raised: the prefix stays for a later call
                first = failed[0]
                raise OSError(
                    f"S3 refused to delete {len(failed)} of {len(keys)} objects under "
                    f"{prefix_uri}, e.g. {first.get('Key')}: {first.get('Code')}"
                )
            deleted += len(keys)
    return deleted


def outcome_of_step(s3: Any, files: StepFiles, state: str, output: Path) -> Outcome:
    """The outcome of a step that ended in ``state`` (one of STEP_DONE | STEP_FAILED): its
    output notebook is read from S3 into ``output``. SUCCEEDED for a completed step;
    FAILED with the first error output for a step whose notebook raised; INFRA_ERROR when
    the output cannot be read or holds no error (the step failed for another reason)."""
    try:
        body = s3.get_object(Bucket=files.bucket, Key=files.key("output.ipynb"))["Body"].read()
        output.write_bytes(body)
        nb = nbformat.reads(body.decode("utf-8"), as_version=4)
    except (ClientError, BotoCoreError, ValueError) as exc:
        if state in STEP_DONE:
            message = f"The step finished but its output could not be read: {exc}"
            return Outcome(OutcomeStatus.INFRA_ERROR, message=message[:500])
        message = f"The EMR step ended {state} without an output notebook."
        return Outcome(OutcomeStatus.INFRA_ERROR, message=message)
    progress = Progress(cells_total=1, cells_done=1)
    if state in STEP_DONE:
        return Outcome(OutcomeStatus.SUCCEEDED, output, progress=progress)
    error = error_of(nb)
    if error:
        message = f"{error['ename']}: {error['evalue']}"[:500]
        return Outcome(OutcomeStatus.FAILED, output, error, message, progress)
    message = f"The EMR step ended {state}."
    return Outcome(OutcomeStatus.INFRA_ERROR, output, message=message, progress=progress)
