"""Spark Connect from another host, through the gateway: a pyspark client in a network
namespace of this test's own (a second "host" joined to this one by a veth pair) reaches
a real local cluster only over TLS, only with that cluster's gateway token.

Needs root (network namespaces, veth; CI runs as root), iproute2 and nginx. The namespace
and the veth pair are this test's own, named after its process, and always removed.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from clusters import gateway, services
from clusters.backends.local import free_port
from clusters.models import Cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root (CI runs as root)"),
    pytest.mark.skipif(not shutil.which("ip"), reason="iproute2 (ip) is not installed"),
    pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed (bin/setup)"),
]

#: A Spark Connect client: connects to argv[1], counts 10 rows; prints {"count"} or {"error"}.
CLIENT = r"""
import json, sys
from pyspark.sql import SparkSession
try:
    spark = SparkSession.builder.remote(sys.argv[1]).getOrCreate()
    print(json.dumps({"count": spark.range(10).count()}))
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:2000]}))
"""

#: One Spark Connect call (Config, get all) with gRPC itself, with a deadline (pyspark
#: retries an unreachable server for minutes): argv = target, tls|plain, token or "".
#: Prints {"code": the gRPC status name}.
PROBE = r"""
import json, sys, uuid
import grpc
from pyspark.sql.connect.proto import base_pb2, base_pb2_grpc
target, mode, token = sys.argv[1:4]
if mode == "tls":
    channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
else:
    channel = grpc.insecure_channel(target)
stub = base_pb2_grpc.SparkConnectServiceStub(channel)
request = base_pb2.ConfigRequest(
    session_id=str(uuid.uuid4()),
    user_context=base_pb2.UserContext(user_id="probe"),
    operation=base_pb2.ConfigRequest.Operation(get_all=base_pb2.ConfigRequest.GetAll()),
)
metadata = [("authorization", f"Bearer {token}")] if token else []
try:
    stub.Config(request, metadata=metadata, timeout=20)
    print(json.dumps({"code": "OK"}))
except grpc.RpcError as exc:
    print(json.dumps({"code": exc.code().name}))
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def other_host():
    """``(namespace, host_address, its_address)``: a network namespace joined to this
    host by a veth pair on a /30 of 10.199.0.0/16; removed at teardown, whatever
    happened."""
    tag = os.getpid() % 10000
    ns, here, there = f"pgw{tag}", f"vgw{tag}a", f"vgw{tag}b"
    subnet = os.getpid() % 250
    host_ip, ns_ip = f"10.199.{subnet}.1", f"10.199.{subnet}.2"
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", here, "type", "veth", "peer", "name", there)
        sh("ip", "link", "set", there, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", here)
        sh("ip", "link", "set", here, "up")
        sh("ip", "-n", ns, "addr", "add", f"{ns_ip}/30", "dev", there)
        sh("ip", "-n", ns, "link", "set", there, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield ns, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def remote(ns: str, url: str, ca: str | None, script: str = CLIENT, *args: str) -> dict:
    """Run ``script`` (CLIENT) in namespace ``ns`` against ``url`` (and ``args``),
    trusting the certificate ``ca``."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "JAVA_HOME", "HOME")}
    if ca:
        env["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = ca
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", script, url, *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_client_on_another_host_reaches_its_cluster_only_with_tls_and_its_token(
    other_host, alice, bob, settings, tmp_path
):
    ns, host_ip, _ = other_host
    port = free_port(host_ip)
    settings.SPARK_CONNECT_GATEWAY_HOST = host_ip
    settings.SPARK_CONNECT_GATEWAY_PORT = port
    settings.SPARK_CONNECT_GATEWAY_DIR = tmp_path / "gateway"
    settings.GATEWAY_TLS_CERT = settings.GATEWAY_TLS_KEY = ""

    cluster = services.launch_cluster(alice, services.ClusterSpec(name="far", size=1))
    services.start_cluster(cluster.pk)
    # Bob's READY cluster, whose server is nowhere: his token must lead there, not to alice's.
    bobs = Cluster.objects.create(
        owner=bob,
        name="bobs",
        state=Cluster.State.READY,
        connect_url=f"sc://127.0.0.1:{free_port()}",
        expires_at=cluster.expires_at,
    )
    gw = gateway.Gateway(bind=host_ip, port=port)
    try:
        cluster = services.wait_until_ready(cluster, timeout=240)
        gw.start()
        gw.refresh()
        ca = str(gw.paths.tls / "cert.pem")
        url = gateway.connection_string(cluster)
        assert url.startswith(f"sc://{host_ip}:{port}/;use_ssl=true;token=")

        # With TLS and the token, a query runs on the cluster.
        assert remote(ns, url, ca) == {"count": 10}

        base = f"sc://{host_ip}:{port}/"
        refused = {
            "a wrong token": remote(ns, f"{base};use_ssl=true;token={'x' * 43}", ca),
            "no token": remote(ns, f"{base};use_ssl=true", ca),
            # The server's own token is not a gateway token.
            "the server's token": remote(
                ns, f"{base};use_ssl=true;token={cluster.connect_token}", ca
            ),
        }
        for what, answer in refused.items():
            assert "UNAUTHENTICATED" in answer.get("error", ""), (what, answer)
        # The same call that pyspark makes first: OK with the token over TLS...
        target, token = f"{host_ip}:{port}", gateway.gateway_token(cluster)
        assert remote(ns, target, ca, PROBE, "tls", token) == {"code": "OK"}
        # ... but plain TCP (no TLS) is no way in, even with the token.
        assert remote(ns, target, ca, PROBE, "plain", token)["code"] == "UNAVAILABLE"
        # A client that does not trust the certificate refuses it.
        assert remote(ns, target, None, PROBE, "tls", token)["code"] == "UNAVAILABLE"
        # Another user's token leads to that user's cluster only (here: no server at all).
        bobs_token = gateway.gateway_token(bobs)
        assert remote(ns, target, ca, PROBE, "tls", bobs_token)["code"] == "UNAVAILABLE"

        # A rotated token: the old string is refused, the new one works.
        services.rotate_connect_token(cluster, alice)
        cluster.refresh_from_db()
        assert gw.refresh() is True
        assert "UNAUTHENTICATED" in remote(ns, url, ca).get("error", "")
        url = gateway.connection_string(cluster)
        assert remote(ns, url, ca) == {"count": 10}
    finally:
        cluster = services.terminate_now(Cluster.objects.get(pk=cluster.pk), "Test over.")
        try:
            # Terminated: the gateway routes its token no more.
            assert cluster.state == Cluster.State.TERMINATED
            if gw.proc is not None:
                assert gw.refresh() is True
                answer = remote(ns, gateway.connection_string(cluster), ca)
                assert "UNAUTHENTICATED" in answer.get("error", ""), answer
        finally:
            gw.stop()
