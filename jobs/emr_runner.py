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
    ``s3://<bucket>/runs/<run uuid>/attempt-<n>/{input.ipynb,parameters.yaml,output.ipynb}``.
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

    def step(self, name: str) -> dict:
        """The papermill step over these files (``notebook_step``)."""
        return notebook_step(
            name, self.uri("input.ipynb"), self.uri("output.ipynb"), self.uri("parameters.yaml")
        )


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
