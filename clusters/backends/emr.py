"""The EMR backend: clusters on AWS EMR through boto3.

Launch is idempotent (ATMO, the portal's predecessor, created duplicate clusters when a
throttled call was retried): the Cluster row exists before any AWS call, the EMR cluster
is named and tagged with the row's UUID, and ``start`` first looks for a live cluster so
tagged before calling ``run_job_flow``. Throttling and transient errors are retried by
botocore's "standard" retry mode (exponential backoff with jitter, bounded attempts).
States are synced in batches with one paginated ``list_clusters`` call. Clusters started
for runs execute the notebook as a step (``add_step``, ``step_state``; see jobs.emr_runner).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from clusters.backends import BackendError, ClusterStatus
from clusters.models import EMRRelease
from portal.backoff import backoff

if TYPE_CHECKING:
    from clusters.models import Cluster

log = logging.getLogger(__name__)

#: EMR cluster states (the API's) mapped to the portal's.
STATE_MAP = {
    "STARTING": "STARTING",
    "BOOTSTRAPPING": "STARTING",
    "RUNNING": "READY",
    "WAITING": "READY",
    "TERMINATING": "TERMINATING",
    "TERMINATED": "TERMINATED",
    "TERMINATED_WITH_ERRORS": "FAILED",
}
LIVE_EMR_STATES = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING", "TERMINATING"]
TAG_UUID = "portal-cluster-uuid"
#: Error codes after which a launch is tried again (after looking for the first cluster).
RETRYABLE_CODES = {
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
}


def emr_client(retries: bool = True) -> Any:
    """A boto3 EMR client for the configured region (and endpoint, for moto).

    With ``retries`` botocore's "standard" mode retries throttling, 5xx and timeouts with
    jittered exponential backoff, up to EMR_MAX_ATTEMPTS requests in all. ``run_job_flow``
    must not be re-sent blindly (it takes no client token: a retried 500 can launch a
    second cluster), so launches use a client without retries and ``EmrBackend.start``
    looks for the first cluster before each new attempt.
    """
    attempts = settings.EMR_MAX_ATTEMPTS if retries else 1
    return boto3.client(
        "emr",
        region_name=settings.EMR_REGION,
        endpoint_url=settings.EMR_ENDPOINT_URL or None,
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}),
    )


def cluster_name(cluster: Cluster) -> str:
    """EMR name: environment, owner and the row's UUID (readable, and unique)."""
    owner = (cluster.owner.email or cluster.owner.username).split("@")[0]
    return f"{settings.PORTAL_ENVIRONMENT}-{owner}-{cluster.name}-{cluster.uuid}"[:256]


def bootstrap_script_uri() -> str:
    return f"s3://{settings.EMR_BOOTSTRAP_BUCKET}/{settings.EMR_BOOTSTRAP_KEY}"


class EmrBackend:
    """Clusters on AWS EMR (see module docstring); a ClusterBackend."""

    name = "emr"
    label = "EMR"
    requires_ssh_key = True
    max_per_user = None  # AWS quotas and the cost report bound them, not the portal
    max_per_host = None

    def __init__(self, client: Any = None, launch_client: Any = None):
        self._client = client
        self._launch_client = launch_client or client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = emr_client()
        return self._client

    @property
    def launch_client(self) -> Any:
        """The client for ``run_job_flow``: no automatic retries (see ``emr_client``)."""
        if self._launch_client is None:
            self._launch_client = emr_client(retries=False)
        return self._launch_client

    def default_release(self) -> str:
        """The newest stable release staff offer, else EMR_DEFAULT_RELEASE."""
        stable = (
            EMRRelease.objects.offered()
            .filter(status=EMRRelease.Status.STABLE)
            .values_list("label", flat=True)
            .first()
        )
        return stable or settings.EMR_DEFAULT_RELEASE

    def job_flow_params(
        self, cluster: Cluster, steps: list | None = None, keep_alive: bool = True
    ) -> dict[str, Any]:
        """The exact ``run_job_flow`` arguments for ``cluster`` (contract-tested)."""
        core_market = "SPOT" if settings.EMR_CORE_SPOT else "ON_DEMAND"
        bootstrap = []
        if cluster.ssh_key is not None:
            bootstrap.append(
                {
                    "Name": "Install the owner's SSH key",
                    "ScriptBootstrapAction": {
                        "Path": bootstrap_script_uri(),
                        "Args": [cluster.ssh_key.key],
                    },
                }
            )
        if steps:
            # Job clusters run notebooks with papermill on the master.
            bootstrap.append(
                {
                    "Name": "Install papermill",
                    "ScriptBootstrapAction": {
                        "Path": f"s3://{settings.EMR_BOOTSTRAP_BUCKET}/{settings.EMR_PAPERMILL_BOOTSTRAP_KEY}",
                        # The portal's telemetry package, put on the Python path.
                        "Args": [
                            f"s3://{settings.EMR_BOOTSTRAP_BUCKET}/{settings.EMR_TELEMETRY_KEY}"
                        ],
                    },
                }
            )
        params: dict[str, Any] = {
            "Name": cluster_name(cluster),
            "LogUri": settings.EMR_LOG_URI,
            "ReleaseLabel": cluster.release,
            "Applications": [{"Name": name} for name in settings.EMR_APPLICATIONS],
            "Instances": {
                "InstanceGroups": [
                    {
                        "Name": "Master",
                        "Market": "ON_DEMAND",
                        "InstanceRole": "MASTER",
                        "InstanceType": settings.EMR_INSTANCE_TYPE,
                        "InstanceCount": 1,
                    },
                    {
                        "Name": "Core",
                        "Market": core_market,
                        "InstanceRole": "CORE",
                        "InstanceType": settings.EMR_INSTANCE_TYPE,
                        "InstanceCount": cluster.size,
                    },
                ],
                "KeepJobFlowAliveWhenNoSteps": keep_alive,
                "TerminationProtected": False,
            },
            "BootstrapActions": bootstrap,
            "Steps": steps or [],
            # Only the portal's own principal (and whom IAM lets manage EMR) sees it.
            "VisibleToAllUsers": False,
            "JobFlowRole": settings.EMR_JOB_FLOW_ROLE,
            "ServiceRole": settings.EMR_SERVICE_ROLE,
            "AutoTerminationPolicy": {"IdleTimeout": settings.EMR_IDLE_TIMEOUT_SECONDS},
            "Tags": [
                {"Key": "portal-owner", "Value": cluster.owner.email or cluster.owner.username},
                {"Key": TAG_UUID, "Value": str(cluster.uuid)},
                {"Key": "portal-environment", "Value": settings.PORTAL_ENVIRONMENT},
                {"Key": "portal-cluster-name", "Value": cluster.name},
            ],
        }
        if cluster.for_run_id:
            params["Tags"].append({"Key": "portal-run", "Value": str(cluster.for_run_id)})
        if settings.EMR_SECURITY_CONFIGURATION:
            params["SecurityConfiguration"] = settings.EMR_SECURITY_CONFIGURATION
        return params

    def find_existing(self, cluster: Cluster) -> str | None:
        """The id of a live EMR cluster already launched for this row, if any."""
        name = cluster_name(cluster)
        try:
            for page in self.client.get_paginator("list_clusters").paginate(
                ClusterStates=LIVE_EMR_STATES
            ):
                for summary in page["Clusters"]:
                    if summary["Name"] != name:
                        continue
                    tags = self.client.describe_cluster(ClusterId=summary["Id"])["Cluster"].get(
                        "Tags", []
                    )
                    if {"Key": TAG_UUID, "Value": str(cluster.uuid)} in tags:
                        return summary["Id"]
        except (ClientError, BotoCoreError) as exc:
            raise BackendError(f"EMR did not answer: {exc}") from exc
        return None

    def start(
        self, cluster: Cluster, steps: list | None = None, keep_alive: bool = True
    ) -> dict[str, Any]:
        """Launch (or find) the EMR cluster; returns the field to store,
        ``{"jobflow_id": ...}``. ``steps`` (with ``keep_alive=False``: a cluster that ends
        with its steps) is how a run's notebook is executed."""
        params = self.job_flow_params(cluster, steps, keep_alive)
        last_error = None
        for attempt in range(max(1, settings.EMR_MAX_ATTEMPTS)):
            existing = self.find_existing(cluster)
            if existing:
                log.info("adopting launched EMR cluster %s for cluster=%s", existing, cluster.pk)
                return {"jobflow_id": existing}
            try:
                response = self.launch_client.run_job_flow(**params)
                return {"jobflow_id": response["JobFlowId"]}
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if code not in RETRYABLE_CODES and status < 500:
                    raise BackendError(f"EMR refused to launch the cluster: {exc}") from exc
                last_error = exc
            except BotoCoreError as exc:  # connection errors and timeouts: it may have launched
                last_error = exc
            time.sleep(backoff(attempt + 1, base=0.5, cap=20.0))
        raise BackendError(
            f"EMR did not launch the cluster after {settings.EMR_MAX_ATTEMPTS} attempts: "
            f"{last_error}"
        )

    def describe(self, cluster: Cluster) -> ClusterStatus:
        """The cluster's state from ``describe_cluster``. A cluster asked to stop that
        was never launched (no job flow id) is TERMINATED."""
        if not cluster.jobflow_id:
            state = "TERMINATED" if cluster.state == "TERMINATING" else "STARTING"
            return ClusterStatus(state, workers=None, cores=None, memory_mb=None)
        try:
            info = self.client.describe_cluster(ClusterId=cluster.jobflow_id)["Cluster"]
        except (ClientError, BotoCoreError) as exc:
            raise BackendError(f"EMR did not answer: {exc}") from exc
        return self._status(info, cluster.size)

    def describe_many(self, clusters: Sequence[Cluster]) -> dict[int, ClusterStatus]:
        """The states of all ``clusters`` from one paginated ``list_clusters``; those whose
        state changed (or READY ones without a master address yet) are then described
        one by one for the details (address, reason). Unchanged clusters, and clusters
        EMR does not list or not yet launched, are left out."""
        launched = [c for c in clusters if c.jobflow_id]
        if not launched:
            return {}
        oldest = min(c.created_at for c in launched) - timedelta(hours=1)
        states = self.states([c.jobflow_id for c in launched], created_after=oldest)
        found = {}
        for cluster in launched:
            emr_state = states.get(cluster.jobflow_id)
            if emr_state is None:
                continue
            new = STATE_MAP.get(emr_state, "STARTING")
            if new == cluster.state and (new != "READY" or cluster.master_address):
                continue
            try:
                found[cluster.pk] = self.describe(cluster)
            except BackendError as exc:
                log.warning("sync failed cluster=%s: %s", cluster.pk, exc)
        return found

    def _status(self, info: dict, size: int) -> ClusterStatus:
        status = info.get("Status", {})
        emr_state = status.get("State", "STARTING")
        state = STATE_MAP.get(emr_state, "STARTING")
        reason = status.get("StateChangeReason", {}).get("Message", "")
        return ClusterStatus(
            state,
            workers=size if state == "READY" else 0,
            reason=reason,
            info={"master_address": info.get("MasterPublicDnsName", ""), "emr_state": emr_state},
        )

    def states(
        self, jobflow_ids: list[str], created_after: datetime | None = None
    ) -> dict[str, str]:
        """EMR state of each id, from one paginated ``list_clusters`` (all states), limited to
        clusters created after ``created_after`` (an aware datetime) when given, so a busy
        account is not listed in full every minute."""
        wanted = set(jobflow_ids)
        found = {}
        kwargs: dict[str, Any] = {"CreatedAfter": created_after} if created_after else {}
        try:
            for page in self.client.get_paginator("list_clusters").paginate(**kwargs):
                for summary in page["Clusters"]:
                    if summary["Id"] in wanted:
                        found[summary["Id"]] = summary["Status"]["State"]
        except (ClientError, BotoCoreError) as exc:
            raise BackendError(f"EMR did not answer: {exc}") from exc
        return found

    def terminate(self, cluster: Cluster) -> None:
        """Ask EMR to terminate the cluster (a later ``describe`` sees it end). A cluster
        without a job flow id is looked for first (a launch whose save was lost): found,
        its id is set on ``cluster``; not found, there is nothing to terminate."""
        if not cluster.jobflow_id:
            existing = self.find_existing(cluster)
            if not existing:
                return
            cluster.jobflow_id = existing
        try:
            self.client.terminate_job_flows(JobFlowIds=[cluster.jobflow_id])
        except (ClientError, BotoCoreError) as exc:
            raise BackendError(f"EMR refused to terminate the cluster: {exc}") from exc

    def clean_up(self, cluster: Cluster) -> None:
        """Nothing: EMR ended a FAILED (TERMINATED_WITH_ERRORS) cluster itself."""

    def add_step(self, cluster: Cluster, step: dict) -> str:
        """Add ``step`` to the running cluster; returns its step id."""
        try:
            response = self.client.add_job_flow_steps(JobFlowId=cluster.jobflow_id, Steps=[step])
        except (ClientError, BotoCoreError) as exc:
            raise BackendError(f"EMR refused the step: {exc}") from exc
        return response["StepIds"][0]

    def step_state(
        self, cluster_or_jobflow_id: Cluster | str, step_id: str | None = None
    ) -> tuple[str | None, str]:
        """``(step_id, state)`` of a step of the cluster: of ``step_id``, or without one
        of the cluster's step (a run's cluster has one, given at launch); ``(None,
        "PENDING")`` while EMR lists none. States are EMR's (PENDING, RUNNING, COMPLETED,
        FAILED, CANCELLED, INTERRUPTED...). Raises BackendError when EMR does not answer."""
        jobflow_id = (
            cluster_or_jobflow_id
            if isinstance(cluster_or_jobflow_id, str)
            else cluster_or_jobflow_id.jobflow_id
        )
        try:
            if step_id is None:
                steps = self.client.list_steps(ClusterId=jobflow_id)["Steps"]
                if not steps:
                    return None, "PENDING"
                step_id = steps[0]["Id"]
            step = self.client.describe_step(ClusterId=jobflow_id, StepId=step_id)["Step"]
        except (ClientError, BotoCoreError) as exc:
            raise BackendError(f"EMR did not answer: {exc}") from exc
        return step_id, step["Status"]["State"]
