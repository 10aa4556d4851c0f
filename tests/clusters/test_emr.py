"""The EMR backend: request shapes (botocore Stubber), lifecycle against moto's server,
idempotent launch, retries, and a transient job cluster whose output is read from S3.

moto's EMR never advances a cluster or a step by itself: states are
driven by poking moto's in-process backend through ``set_emr_state`` and
``set_emr_step_state``, the only two places that touch moto's internals.
"""

import io
import json
import subprocess
import threading
import urllib.request
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import boto3
import nbformat
import pytest
from botocore.stub import Stubber
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from clusters import services
from clusters.backends import BackendError
from clusters.backends.emr import LIVE_EMR_STATES, EmrBackend, bootstrap_script_uri, cluster_name
from clusters.models import Cluster
from clusters.services import ClusterError, ClusterSpec

pytestmark = pytest.mark.django_db

REGION = "us-west-2"
BOOTSTRAP_BUCKET = "portal-emr-code"
LOG_BUCKET = "portal-emr-logs"
IN_BUCKET = "portal-emr-notebooks-in"
OUT_BUCKET = "portal-emr-notebooks-out"


# --- moto helpers (the only code that knows moto's internal attributes) ---------------------


def _moto_cluster(cluster_id: str):
    # moto's EMR server takes the region from the host name only (*.region.amazonaws.com),
    # so behind 127.0.0.1 every cluster lands in moto's default region, whatever the
    # client's region: look the cluster up in every region of the default account.
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.emr.models import emr_backends

    for backend in list(emr_backends[DEFAULT_ACCOUNT_ID].values()):
        if cluster_id in backend.clusters:
            return backend.clusters[cluster_id]
    raise KeyError(f"moto has no EMR cluster {cluster_id}")


def set_emr_state(cluster_id: str, state: str, reason: str | None = None) -> None:
    """Make moto report ``state`` (and ``reason`` as StateChangeReason.Message) for a cluster."""
    cluster = _moto_cluster(cluster_id)
    cluster.state = state
    cluster.last_state_change_reason = reason


def set_emr_step_state(cluster_id: str, step_id: str, state: str) -> None:
    """Make moto report ``state`` for one step of a cluster."""
    [step] = [s for s in _moto_cluster(cluster_id).steps if s.id == step_id]
    step.state = state
    if state in ("COMPLETED", "FAILED", "CANCELLED"):
        step.end_date_time = timezone.now()


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_server():
    """One moto server (a thread in this process) for the module; state is reset per test."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch):
    """Fake credentials, so no profile or instance metadata is ever consulted."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def emr_settings(settings):
    """EMR enabled, with settings spelled out so the contract test can name every value."""
    settings.CLUSTER_BACKENDS = ["local", "emr"]
    settings.EMR_REGION = REGION
    settings.EMR_ENDPOINT_URL = ""
    settings.PORTAL_ENVIRONMENT = "test"
    settings.EMR_BOOTSTRAP_BUCKET = BOOTSTRAP_BUCKET
    settings.EMR_BOOTSTRAP_KEY = "bootstrap/install-ssh-key.sh"
    settings.EMR_LOG_URI = f"s3://{LOG_BUCKET}/emr/"
    settings.EMR_INSTANCE_TYPE = "m5.xlarge"
    settings.EMR_CORE_SPOT = False
    settings.EMR_APPLICATIONS = ["Spark", "Hadoop", "JupyterEnterpriseGateway"]
    settings.EMR_JOB_FLOW_ROLE = "analysis-portal-emr-instance"
    settings.EMR_SERVICE_ROLE = "analysis-portal-emr-service"
    settings.EMR_IDLE_TIMEOUT_SECONDS = 3600
    settings.EMR_MAX_ATTEMPTS = 8
    settings.EMR_SECURITY_CONFIGURATION = ""
    settings.CLUSTER_MAX_LIFETIME_HOURS = 24
    settings.CLUSTER_MAX_EXTENSION_HOURS = 8
    settings.CLUSTER_EXPIRY_WARNING_SECONDS = 3600
    return settings


@pytest.fixture
def aws(moto_server, aws_env, emr_settings):
    """A clean moto (EMR and S3) with the portal's buckets, and the portal pointed at it."""
    urllib.request.urlopen(
        urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=10
    ).close()
    emr_settings.EMR_ENDPOINT_URL = moto_server
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    for bucket in (BOOTSTRAP_BUCKET, LOG_BUCKET, IN_BUCKET, OUT_BUCKET):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    emr = boto3.client("emr", endpoint_url=moto_server, region_name=REGION)
    return SimpleNamespace(endpoint=moto_server, s3=s3, emr=emr)


@pytest.fixture(scope="module")
def public_key_text():
    """A real ed25519 public key, one OpenSSH line with a comment."""
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode() + " alice@laptop"


@pytest.fixture
def ssh_key(alice, public_key_text):
    return services.add_ssh_key(alice, "laptop", public_key_text)


@pytest.fixture
def launch(alice, ssh_key, emr_settings):
    """Factory: launch a PENDING EMR cluster for alice (nothing is started: on_commit does
    not run inside a test transaction)."""

    def make(name="emr-one", size=2, lifetime_hours=8, **extra):
        spec = ClusterSpec(
            name=name,
            backend="emr",
            size=size,
            lifetime_hours=lifetime_hours,
            release="emr-7.5.0",
            ssh_key=ssh_key,
        )
        return services.launch_cluster(alice, spec, **extra)

    return make


@pytest.fixture
def started(aws, launch):
    """An EMR cluster launched and started on moto, then synced while moto says STARTING."""
    cluster = services.start_cluster(launch().pk)
    set_emr_state(cluster.jobflow_id, "STARTING")
    return services.sync_cluster(cluster)


@pytest.fixture
def ready(started):
    set_emr_state(started.jobflow_id, "WAITING")
    services.sync_clusters("emr")
    return Cluster.objects.get(pk=started.pk)


# --- 1. the run_job_flow contract ----------------------------------------------------------


@pytest.mark.parametrize("spot", [True, False])
def test_run_job_flow_parameters_are_exactly_the_contract(
    launch, alice, ssh_key, public_key_text, aws_env, emr_settings, spot
):
    """``start`` first asks ``list_clusters`` (live states) for a cluster already launched
    for the row, then calls ``run_job_flow`` with exactly these arguments: release, an
    on-demand master plus a core group of the cluster's size (spot when EMR_CORE_SPOT),
    applications, the bootstrap action installing the owner's key, tags, visibility,
    idle auto-termination, log URI, roles, and a cluster that stays alive without steps."""
    emr_settings.EMR_CORE_SPOT = spot
    cluster = launch(name="contract", size=3)
    client = boto3.client("emr", region_name=REGION)
    expected = {
        "Name": f"test-alice-contract-{cluster.uuid}",
        "LogUri": f"s3://{LOG_BUCKET}/emr/",
        "ReleaseLabel": "emr-7.5.0",
        "Applications": [
            {"Name": "Spark"},
            {"Name": "Hadoop"},
            {"Name": "JupyterEnterpriseGateway"},
        ],
        "Instances": {
            "InstanceGroups": [
                {
                    "Name": "Master",
                    "Market": "ON_DEMAND",
                    "InstanceRole": "MASTER",
                    "InstanceType": "m5.xlarge",
                    "InstanceCount": 1,
                },
                {
                    "Name": "Core",
                    "Market": "SPOT" if spot else "ON_DEMAND",
                    "InstanceRole": "CORE",
                    "InstanceType": "m5.xlarge",
                    "InstanceCount": 3,
                },
            ],
            "KeepJobFlowAliveWhenNoSteps": True,
            "TerminationProtected": False,
        },
        "BootstrapActions": [
            {
                "Name": "Install the owner's SSH key",
                "ScriptBootstrapAction": {
                    "Path": f"s3://{BOOTSTRAP_BUCKET}/bootstrap/install-ssh-key.sh",
                    "Args": [public_key_text],
                },
            }
        ],
        "Steps": [],
        "VisibleToAllUsers": False,
        "JobFlowRole": "analysis-portal-emr-instance",
        "ServiceRole": "analysis-portal-emr-service",
        "AutoTerminationPolicy": {"IdleTimeout": 3600},
        "Tags": [
            {"Key": "portal-owner", "Value": "alice@example.com"},
            {"Key": "portal-cluster-uuid", "Value": str(cluster.uuid)},
            {"Key": "portal-environment", "Value": "test"},
            {"Key": "portal-cluster-name", "Value": "contract"},
        ],
    }
    with Stubber(client) as stub:
        stub.add_response("list_clusters", {"Clusters": []}, {"ClusterStates": LIVE_EMR_STATES})
        stub.add_response("run_job_flow", {"JobFlowId": "j-CONTRACT"}, expected)
        assert EmrBackend(client=client).start(cluster) == {"jobflow_id": "j-CONTRACT"}
        stub.assert_no_pending_responses()
    assert ssh_key.key == public_key_text  # the key text goes to EMR as stored, one line


# --- 2. lifecycle against moto ------------------------------------------------------------


def test_emr_cluster_starts_then_becomes_ready(aws, launch):
    """start_cluster records the job flow id and STARTING; a sync while EMR says STARTING
    keeps it STARTING; once EMR says WAITING the batched sync makes it READY with the
    master's address, ready_at and all workers."""
    cluster = launch(size=2)
    assert cluster.state == Cluster.State.PENDING and not cluster.jobflow_id

    cluster = services.start_cluster(cluster.pk)
    assert cluster.state == Cluster.State.STARTING and cluster.jobflow_id.startswith("j-")
    assert cluster.started_at is not None
    described = aws.emr.describe_cluster(ClusterId=cluster.jobflow_id)["Cluster"]
    assert described["Name"] == cluster_name(cluster)
    assert {"Key": "portal-cluster-uuid", "Value": str(cluster.uuid)} in described["Tags"]

    set_emr_state(cluster.jobflow_id, "STARTING")  # moto says WAITING at once; real EMR does not
    cluster = services.sync_cluster(cluster)
    assert cluster.state == Cluster.State.STARTING and cluster.ready_at is None

    set_emr_state(cluster.jobflow_id, "WAITING")
    assert services.sync_clusters("emr") == 1
    cluster.refresh_from_db()
    assert cluster.state == Cluster.State.READY
    assert cluster.ready_at is not None and cluster.master_address.endswith(".amazonaws.com")
    assert cluster.workers_registered == 2


def test_extension_moves_expiry_within_bounds_and_staff_may_exceed(ready, staff):
    """Extending by 2 h moves expires_at by 2 h and clears the warning mark; out-of-bounds
    hours and a total lifetime over the maximum are refused, unless by staff."""
    Cluster.objects.filter(pk=ready.pk).update(expiry_warning_sent_at=timezone.now())
    before = ready.expires_at

    cluster = services.extend_cluster(ready, 2, ready.owner)
    assert cluster.expires_at == before + timedelta(hours=2)
    assert cluster.expiry_warning_sent_at is None and cluster.extension_count == 1

    for hours in (0, -1, 9):
        with pytest.raises(ClusterError, match="Extend by 1 to 8 hours"):
            services.extend_cluster(cluster, hours, cluster.owner)
    services.extend_cluster(cluster, 8, cluster.owner)  # 8 + 2 + 8 = 18 h in all
    with pytest.raises(ClusterError, match="at most 24 hours in all"):
        services.extend_cluster(cluster, 8, cluster.owner)  # would be 26 h
    assert Cluster.objects.get(pk=cluster.pk).expires_at == before + timedelta(hours=10)

    cluster = services.extend_cluster(cluster, 12, staff)
    assert cluster.expires_at == before + timedelta(hours=22) and cluster.extension_count == 3


def test_expiry_warning_is_mailed_once_and_again_after_an_extension(ready, alice, on_commit_tasks):
    """A cluster 30 min from expiry gets exactly one e-mail to its owner naming it; a
    second pass sends none; after an extension, one new warning goes out when the new
    expiry comes close."""
    now = timezone.now()
    Cluster.objects.filter(pk=ready.pk).update(expires_at=now + timedelta(minutes=30))

    assert on_commit_tasks(services.warn_expiring_clusters, now) == 1
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == [alice.email]
    assert "emr-one" in message.subject and "emr-one" in message.body
    assert ready.get_absolute_url() in message.body
    assert on_commit_tasks(services.warn_expiring_clusters, now) == 0 and len(mail.outbox) == 1

    cluster = services.extend_cluster(
        Cluster.objects.get(pk=ready.pk), 2, alice
    )  # expires at now + 2.5 h
    assert on_commit_tasks(services.warn_expiring_clusters, now) == 0  # not close yet
    # Two hours later (the expiry moved instead of the clock): 30 min before the new expiry.
    Cluster.objects.filter(pk=ready.pk).update(expires_at=timezone.now() + timedelta(minutes=30))
    assert on_commit_tasks(services.warn_expiring_clusters) == 1
    assert (
        len(mail.outbox) == 2
        and mail.outbox[1].to == [alice.email]
        and "emr-one" in mail.outbox[1].subject
    )
    assert on_commit_tasks(services.warn_expiring_clusters) == 0
    assert Cluster.objects.get(pk=cluster.pk).expiry_warning_sent_at > now


def test_terminate_ends_the_emr_cluster(ready, aws):
    """request_termination marks TERMINATING (with the reason); terminate_on_backend calls
    EMR's terminate_job_flows and, once EMR reports TERMINATED, records TERMINATED with
    terminated_at. Terminating again does nothing."""
    cluster = services.request_termination(ready)
    assert (
        cluster.state == Cluster.State.TERMINATING
        and cluster.state_reason == "Terminated by its owner."
    )
    assert (
        aws.emr.describe_cluster(ClusterId=cluster.jobflow_id)["Cluster"]["Status"]["State"]
        == "WAITING"
    )

    cluster = services.terminate_on_backend(cluster.pk)
    assert (
        aws.emr.describe_cluster(ClusterId=cluster.jobflow_id)["Cluster"]["Status"]["State"]
        == "TERMINATED"
    )
    assert cluster.state == Cluster.State.TERMINATED and cluster.terminated_at is not None
    assert cluster.state_reason == "Terminated by its owner."

    again = services.request_termination(cluster)
    assert again.state == Cluster.State.TERMINATED and again.terminated_at == cluster.terminated_at


def test_expired_emr_cluster_is_terminated(ready, aws, launch):
    """terminate_expired_clusters terminates a cluster whose expiry passed (and only it);
    stopping it ends the EMR cluster."""
    other = services.start_cluster(launch(name="emr-two").pk)
    now = timezone.now()
    Cluster.objects.filter(pk=ready.pk).update(expires_at=now - timedelta(minutes=1))

    assert services.terminate_expired_clusters(now) == 1
    cluster = Cluster.objects.get(pk=ready.pk)
    assert cluster.state == Cluster.State.TERMINATING and cluster.state_reason.startswith(
        "Expired at "
    )
    assert Cluster.objects.get(pk=other.pk).state == Cluster.State.STARTING

    cluster = services.terminate_on_backend(cluster.pk)
    assert cluster.state == Cluster.State.TERMINATED
    states = {c["Id"]: c["Status"]["State"] for c in aws.emr.list_clusters()["Clusters"]}
    assert states == {cluster.jobflow_id: "TERMINATED", other.jobflow_id: "WAITING"}


def test_the_portal_reason_survives_emr_termination_message(ready, aws):
    """An expired cluster keeps "Expired at ..." as its reason when EMR then reports
    TERMINATED with its own message (real EMR says "Terminated by user request" after
    terminate_job_flows; moto says nothing, so the helper plays EMR's part)."""
    services.terminate_expired_clusters(timezone.now() + timedelta(days=1))
    set_emr_state(ready.jobflow_id, "TERMINATED", "Terminated by user request")
    services.sync_clusters("emr")
    cluster = Cluster.objects.get(pk=ready.pk)
    assert cluster.state == Cluster.State.TERMINATED
    assert cluster.state_reason.startswith("Expired at "), cluster.state_reason


def test_pending_emr_cluster_terminated_before_start_ends(aws, launch):
    """A cluster terminated (or expired) while PENDING was never launched on EMR: stopping
    it must end it TERMINATED, and a late start task must not launch it."""
    cluster = launch()
    services.request_termination(cluster)
    cluster = services.terminate_on_backend(cluster.pk)
    services.sync_clusters("emr")
    assert services.start_cluster(cluster.pk).jobflow_id == ""
    assert aws.emr.list_clusters()["Clusters"] == []
    assert Cluster.objects.get(pk=cluster.pk).state == Cluster.State.TERMINATED


# --- 3. idempotent launch and failures -------------------------------------------------------


def test_start_retry_adopts_the_cluster_launched_before_a_crash(aws, launch):
    """If the worker dies between run_job_flow and the save (simulated: the backend starts
    the cluster, the row is not updated), the retried start adopts the EMR cluster tagged
    with the row's UUID instead of launching a second one."""
    cluster = launch()
    launched = EmrBackend().start(cluster)["jobflow_id"]
    assert Cluster.objects.get(pk=cluster.pk).jobflow_id == ""

    cluster = services.start_cluster(cluster.pk)
    assert cluster.jobflow_id == launched and cluster.state == Cluster.State.STARTING
    same_name = [
        c for c in aws.emr.list_clusters()["Clusters"] if c["Name"] == cluster_name(cluster)
    ]
    assert [c["Id"] for c in same_name] == [launched]
    assert services.start_cluster(cluster.pk).jobflow_id == launched  # a duplicate delivery: no-op
    assert len(aws.emr.list_clusters()["Clusters"]) == 1


def test_start_does_not_adopt_a_same_named_cluster_of_another_row(aws, launch):
    """Adoption needs the UUID tag, not only the name: a live EMR cluster with our name but
    another UUID tag is left alone and a new one is launched."""
    cluster = launch()
    params = EmrBackend().job_flow_params(cluster)
    params["Tags"] = [
        t if t["Key"] != "portal-cluster-uuid" else {**t, "Value": "someone-else"}
        for t in params["Tags"]
    ]
    impostor = aws.emr.run_job_flow(**params)["JobFlowId"]

    cluster = services.start_cluster(cluster.pk)
    assert cluster.jobflow_id not in ("", impostor)
    assert len(aws.emr.list_clusters()["Clusters"]) == 2


def test_terminated_with_errors_syncs_to_failed_with_the_reason(started, aws):
    """EMR's TERMINATED_WITH_ERRORS becomes FAILED, with EMR's message as the reason and
    terminated_at set; later syncs leave it alone."""
    set_emr_state(
        started.jobflow_id,
        "TERMINATED_WITH_ERRORS",
        "Bootstrap failure: install-ssh-key.sh returned 1",
    )
    assert services.sync_clusters("emr") == 1
    cluster = Cluster.objects.get(pk=started.pk)
    assert cluster.state == Cluster.State.FAILED
    assert cluster.state_reason == "Bootstrap failure: install-ssh-key.sh returned 1"
    assert cluster.terminated_at is not None
    assert services.sync_clusters("emr") == 0


def test_emr_refusal_ends_the_start_failed(aws, launch, emr_settings):
    """A launch EMR refuses (here: the endpoint is gone) ends the cluster FAILED with a
    message for people, instead of leaving it PENDING."""
    emr_settings.EMR_ENDPOINT_URL = "http://127.0.0.1:9"  # discard port: connection refused
    emr_settings.EMR_MAX_ATTEMPTS = 0
    cluster = services.start_cluster(launch().pk)
    assert cluster.state == Cluster.State.FAILED and cluster.state_reason.startswith(
        "EMR did not answer"
    )
    assert cluster.terminated_at is not None


# --- 4. throttling and retries ------------------------------------------------------------


def test_emr_client_retries_in_botocore_standard_mode(emr_settings, aws_env):
    """Retries of throttled and transient errors of every call but the launch are
    botocore's: the client uses the "standard" retry mode (exponential backoff with
    jitter) with EMR_MAX_ATTEMPTS requests in all. The launch client retries nothing by
    itself (a re-sent run_job_flow can launch a second cluster). A Stubber cannot show
    retries: it answers ahead of botocore's retry handler; the FakeEmr tests below show
    them on the wire."""
    emr_settings.EMR_MAX_ATTEMPTS = 5
    assert EmrBackend().client.meta.config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert EmrBackend().launch_client.meta.config.retries == {
        "mode": "standard",
        "total_max_attempts": 1,
    }


class FakeEmr:
    """A loopback HTTP endpoint speaking EMR's JSON protocol from a script of answers per
    operation (status, body); it records the operations it was asked for, in order."""

    def __init__(self, script: dict[str, list[tuple[int, dict]]]):
        self.script, self.calls = script, []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                operation = self.headers["X-Amz-Target"].split(".")[-1]
                fake.calls.append(operation)
                answers = fake.script[operation]
                status, body = answers.pop(0) if len(answers) > 1 else answers[0]
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


THROTTLED = (400, {"__type": "ThrottlingException", "message": "Rate exceeded"})
INTERNAL = (500, {"__type": "InternalServerError", "message": "We encountered an internal error."})
NO_CLUSTERS = (200, {"Clusters": []})
LAUNCHED = (
    200,
    {
        "JobFlowId": "j-FAKE",
        "ClusterArn": "arn:aws:elasticmapreduce:us-west-2:123456789012:cluster/j-FAKE",
    },
)


@pytest.fixture
def fake_emr(emr_settings, aws_env, monkeypatch):
    """Factory for a FakeEmr the portal talks to; botocore's backoff delay is zeroed."""
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)
    made = []

    def make(script):
        made.append(FakeEmr(script))
        emr_settings.EMR_ENDPOINT_URL = made[-1].url
        return made[-1]

    yield make
    for fake in made:
        fake.close()


def test_a_throttled_launch_is_retried_by_botocore(fake_emr, launch):
    """run_job_flow answered ThrottlingException once, then success: the launch is tried
    again, after looking for a cluster launched by the first try, and succeeds once."""
    fake = fake_emr({"ListClusters": [NO_CLUSTERS], "RunJobFlow": [THROTTLED, LAUNCHED]})
    cluster = services.start_cluster(launch().pk)
    assert cluster.state == Cluster.State.STARTING and cluster.jobflow_id == "j-FAKE"
    assert fake.calls == ["ListClusters", "RunJobFlow", "ListClusters", "RunJobFlow"]


def test_throttling_retries_are_bounded(fake_emr, launch, emr_settings):
    """Always throttled: the launch stops after EMR_MAX_ATTEMPTS tries and the start ends
    FAILED with EMR's message."""
    emr_settings.EMR_MAX_ATTEMPTS = 2
    fake = fake_emr({"ListClusters": [NO_CLUSTERS], "RunJobFlow": [THROTTLED]})
    cluster = services.start_cluster(launch().pk)
    assert cluster.state == Cluster.State.FAILED and "Rate exceeded" in cluster.state_reason
    assert fake.calls.count("RunJobFlow") == emr_settings.EMR_MAX_ATTEMPTS


def test_a_launch_is_never_resent_without_looking_for_the_first(fake_emr, launch):
    """RunJobFlow takes no client token. A 500 (or a read timeout) may come after EMR
    created the cluster, so run_job_flow must not be sent again before ``list_clusters``
    has looked for a cluster tagged with the row's UUID."""
    fake = fake_emr({"ListClusters": [NO_CLUSTERS], "RunJobFlow": [INTERNAL, LAUNCHED]})
    try:
        services.start_cluster(launch().pk)
    except BackendError:
        pass
    assert "RunJobFlow,RunJobFlow" not in ",".join(fake.calls), fake.calls


# --- 5. a transient job cluster and its output in S3 -----------------------------------------


def test_transient_job_cluster_step_output_is_read_back_from_s3(aws, launch, make_job, alice):
    """A job cluster: launched with a command-runner step running papermill from S3 to
    S3 and KeepJobFlowAliveWhenNoSteps False, tagged with its run. moto executes no step,
    so the test covers our request shapes and the read-back path: it registers the step,
    then plays EMR's part (step COMPLETED, output notebook written to the output key,
    cluster TERMINATED) and reads the output back with boto3."""
    from jobs import services as job_services

    run = job_services.run_now(make_job("trivial.ipynb"), alice, enqueue=False)
    cluster = launch(name=f"run-{run.pk}", for_run=run)
    source, output = (
        f"s3://{IN_BUCKET}/runs/{run.pk}/input.ipynb",
        f"s3://{OUT_BUCKET}/runs/{run.pk}/output.ipynb",
    )
    step = {
        "Name": f"Run notebook for run {run.pk}",
        "ActionOnFailure": "TERMINATE_CLUSTER",
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": ["papermill", source, output, "-p", "run_date", "2024-05-01"],
        },
    }
    backend = EmrBackend()
    params = backend.job_flow_params(cluster, steps=[step], keep_alive=False)
    assert params["Steps"] == [step] and params["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False
    assert {"Key": "portal-run", "Value": str(run.pk)} in params["Tags"]

    jobflow_id = backend.start(cluster, steps=[step], keep_alive=False)["jobflow_id"]
    described = aws.emr.describe_cluster(ClusterId=jobflow_id)["Cluster"]
    assert described["AutoTerminate"] is True
    assert {"Key": "portal-run", "Value": str(run.pk)} in described["Tags"]
    [listed] = aws.emr.list_steps(ClusterId=jobflow_id)["Steps"]
    assert listed["Name"] == step["Name"] and listed["ActionOnFailure"] == "TERMINATE_CLUSTER"
    assert (
        listed["Config"]["Jar"] == "command-runner.jar"
        and listed["Config"]["Args"] == step["HadoopJarStep"]["Args"]
    )

    # What the step would do: papermill writes the executed notebook, parameters injected.
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("run_date = None", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(
                'run_date = "2024-05-01"\n', metadata={"tags": ["injected-parameters"]}
            ),
            nbformat.v4.new_code_cell(
                "print(run_date)",
                outputs=[nbformat.v4.new_output("stream", name="stdout", text="2024-05-01\n")],
            ),
        ]
    )
    bucket, key = output.removeprefix("s3://").split("/", 1)
    aws.s3.put_object(Bucket=bucket, Key=key, Body=nbformat.writes(notebook).encode())
    set_emr_step_state(jobflow_id, listed["Id"], "COMPLETED")
    set_emr_state(jobflow_id, "TERMINATED", "Steps completed")

    assert (
        aws.emr.describe_step(ClusterId=jobflow_id, StepId=listed["Id"])["Step"]["Status"]["State"]
        == "COMPLETED"
    )
    assert (
        aws.emr.describe_cluster(ClusterId=jobflow_id)["Cluster"]["Status"]["State"] == "TERMINATED"
    )
    body = aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    read = nbformat.reads(body.decode(), as_version=4)
    nbformat.validate(read)
    [injected] = [c for c in read.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert 'run_date = "2024-05-01"' in injected.source
    assert read.cells[-1].outputs[0]["text"] == "2024-05-01\n"


# --- the bootstrap action ------------------------------------------------------------------


def test_bootstrap_script_is_uploaded_and_installs_the_key_once(aws, public_key_text, tmp_path):
    """``manage.py upload_emr_bootstrap`` puts the script where run_job_flow points; run as
    EMR would (key as argument 1) it installs the key once, and it refuses non-keys."""
    out = io.StringIO()
    call_command("upload_emr_bootstrap", stdout=out)
    assert "Uploaded to s3://portal-emr-code/" in out.getvalue()
    assert bootstrap_script_uri() == f"s3://{BOOTSTRAP_BUCKET}/bootstrap/install-ssh-key.sh"
    script = tmp_path / "install-ssh-key.sh"
    script.write_bytes(
        aws.s3.get_object(Bucket=BOOTSTRAP_BUCKET, Key="bootstrap/install-ssh-key.sh")[
            "Body"
        ].read()
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}

    for _ in range(2):
        subprocess.run(["bash", str(script), public_key_text], env=env, check=True, timeout=10)
    assert (home / ".ssh/authorized_keys").read_text() == public_key_text + "\n"
    assert oct((home / ".ssh").stat().st_mode & 0o777) == "0o700"
    assert oct((home / ".ssh/authorized_keys").stat().st_mode & 0o777) == "0o600"

    refused = subprocess.run(
        ["bash", str(script), "echo pwned"], env=env, capture_output=True, text=True, timeout=10
    )
    assert refused.returncode == 1 and "not an SSH public key" in refused.stderr


def test_a_security_configuration_is_passed_when_set(emr_settings, launch):
    """EMR_SECURITY_CONFIGURATION (e.g. one that enforces IMDSv2 with hop limit 1) goes into
    run_job_flow; without it there is none."""
    cluster = launch(name="imds")
    assert "SecurityConfiguration" not in EmrBackend().job_flow_params(cluster)
    emr_settings.EMR_SECURITY_CONFIGURATION = "portal-imdsv2"
    assert EmrBackend().job_flow_params(cluster)["SecurityConfiguration"] == "portal-imdsv2"


@pytest.mark.parametrize(
    "bucket_env", [{"EMR_JOB_BUCKET": "same"}, {"EMR_LOG_URI": "s3://same/emr/"}]
)
def test_bootstrap_scripts_must_live_where_clusters_cannot_write(bucket_env):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "EMR_BOOTSTRAP_BUCKET": "same",
        **bucket_env,
    }
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "is also a bucket clusters write to" in done.stderr
