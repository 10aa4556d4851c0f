"""The Spark Connect gateway without traffic: its tokens, routes and nginx configuration
(checked by nginx itself), its certificate, the rotate view, and who sees the connection
string (page, API, portalctl). Traffic through it: tests/integration/test_gateway_netns.py."""

import datetime as dt
import ipaddress
import os
import shutil
import stat
import subprocess
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from django.urls import reverse
from django.utils import timezone

from api.models import ApiToken
from clusters import gateway, services
from clusters.models import Cluster
from tests.portalctl.conftest import fake, portalctl  # noqa: F401

pytestmark = pytest.mark.django_db


def make_cluster(owner, name="c1", state=Cluster.State.READY, port=41001, **fields) -> Cluster:
    return Cluster.objects.create(
        owner=owner,
        name=name,
        state=state,
        connect_url=f"sc://127.0.0.1:{port}",
        expires_at=timezone.now() + timedelta(hours=1),
        **fields,
    )


# --- Tokens and routes ----------------------------------------------------------------------


def test_the_gateway_token_is_not_the_servers_and_changes_with_each_rotation(alice):
    cluster = make_cluster(alice)
    first = gateway.gateway_token(cluster)
    assert gateway.TOKEN_RE.match(first) and len(first) == 43
    assert first != cluster.connect_token
    services.rotate_connect_token(cluster, alice)
    cluster.refresh_from_db()
    second = gateway.gateway_token(cluster)
    assert second != first and gateway.generation(cluster) == 1
    # The server's token, which runs on the cluster use, stays.
    assert Cluster.objects.get(pk=cluster.pk).connect_token == cluster.connect_token


def test_the_connection_string_names_the_gateway_tls_and_the_token(alice, settings):
    settings.SPARK_CONNECT_GATEWAY_HOST = "portal.example.org"
    settings.SPARK_CONNECT_GATEWAY_PORT = 15002
    cluster = make_cluster(alice)
    token = gateway.gateway_token(cluster)
    assert gateway.connection_string(cluster) == (
        f"sc://portal.example.org:15002/;use_ssl=true;token={token}"
    )
    settings.SPARK_CONNECT_GATEWAY_HOST = "2001:db8::1"
    assert gateway.connection_string(cluster).startswith("sc://[2001:db8::1]:15002/")


def test_only_ready_local_clusters_are_routed_each_to_its_own_server(alice, bob):
    mine = make_cluster(alice, "mine", port=41001)
    theirs = make_cluster(bob, "theirs", port=41002)
    make_cluster(alice, "starting", state=Cluster.State.STARTING, port=41003)
    make_cluster(alice, "going", state=Cluster.State.TERMINATING, port=41004)
    make_cluster(alice, "gone", state=Cluster.State.TERMINATED, port=41005)
    make_cluster(alice, "emr", backend=Cluster.Backend.EMR, port=41006)
    routes = gateway.current_routes()
    assert [(r.cluster_id, r.upstream, r.server_token) for r in routes] == [
        (mine.pk, "127.0.0.1:41001", mine.connect_token),
        (theirs.pk, "127.0.0.1:41002", theirs.connect_token),
    ]
    assert [r.token for r in routes] == [gateway.gateway_token(c) for c in (mine, theirs)]


def test_the_map_sends_each_token_to_its_cluster_and_nothing_else(alice, bob):
    mine, theirs = make_cluster(alice, "mine", port=41001), make_cluster(bob, "b", port=41002)
    text = gateway.render_routes(gateway.current_routes())
    upstreams = text.split("$spark_connect_server_auth")[0]
    auths = text.split("$spark_connect_server_auth")[1]
    assert f'"Bearer {gateway.gateway_token(mine)}" "127.0.0.1:41001";' in upstreams
    assert f'"Bearer {gateway.gateway_token(theirs)}" "127.0.0.1:41002";' in upstreams
    assert upstreams.count('default "";') == 1
    assert f'"Bearer {gateway.gateway_token(mine)}" "Bearer {mine.connect_token}";' in auths
    # A server token is never a key: it does not open anything through the gateway.
    assert f'"Bearer {mine.connect_token}" "127' not in text


@pytest.mark.parametrize(
    "route",
    [
        gateway.Route(1, 'x" "127.0.0.1:1"; evil', "127.0.0.1:41001", "a" * 43),
        gateway.Route(1, "a" * 43, "127.0.0.1:41001", "b;" * 20),
        gateway.Route(1, "a" * 43, "example.org:41001", "b" * 43),
    ],
)
def test_a_route_that_nginx_could_misread_is_refused(route):
    with pytest.raises(ValueError):
        gateway.render_routes([route])


def test_a_cluster_that_cannot_be_routed_is_left_out_and_the_others_stay(alice):
    good = make_cluster(alice, "good", port=41001)
    bad = make_cluster(alice, "bad", port=41002)
    Cluster.objects.filter(pk=bad.pk).update(connect_token="not a token!")
    assert [r.cluster_id for r in gateway.current_routes()] == [good.pk]


def test_a_rotation_changes_the_routes_file_and_a_second_write_does_not(alice, tmp_path):
    cluster = make_cluster(alice)
    gw = gateway.Gateway(root=tmp_path / "gw", bind="127.0.0.1", port=15002)
    gw.paths.root.mkdir()
    assert gw.write_routes(gateway.current_routes()) is True
    assert gw.write_routes(gateway.current_routes()) is False
    assert stat.S_IMODE(gw.paths.routes.stat().st_mode) == 0o600
    old = gateway.gateway_token(cluster)
    services.rotate_connect_token(cluster, alice)
    assert gw.write_routes(gateway.current_routes()) is True
    assert old not in gw.paths.routes.read_text()


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed (bin/setup)")
def test_nginx_accepts_the_generated_configuration(alice, tmp_path, settings):
    settings.SPARK_CONNECT_GATEWAY_DIR = tmp_path / "gw"
    make_cluster(alice)
    gw = gateway.Gateway(bind="127.0.0.1", port=15002)
    gw.prepare()
    assert stat.S_IMODE(gw.paths.root.stat().st_mode) == 0o700
    conf = gw.paths.config.read_text()
    assert "listen 127.0.0.1:15002 ssl http2;" in conf and "grpc-status 16" in conf
    checked = subprocess.run(
        ["nginx", "-p", str(gw.paths.root), "-c", str(gw.paths.config), "-e", "stderr", "-t"],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr


# --- Certificates ---------------------------------------------------------------------------


def test_a_self_signed_certificate_names_the_hosts_and_is_kept_until_they_change(tmp_path):
    cert_path, key_path = gateway.ensure_self_signed(tmp_path, ["portal.test", "10.199.0.1"])
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["portal.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.199.0.1")]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    fingerprint = gateway.certificate_fingerprint(cert_path)
    assert fingerprint == cert.fingerprint(hashes.SHA256()).hex(":").upper()
    assert len(fingerprint) == 95
    # Kept while the hosts are the same and it is far from its end...
    gateway.ensure_self_signed(tmp_path, ["10.199.0.1", "portal.test"])
    assert gateway.certificate_fingerprint(cert_path) == fingerprint
    # ... renewed near its end, and for other hosts.
    later = dt.datetime.now(dt.UTC) + timedelta(days=gateway.SELF_SIGNED_DAYS - 10)
    gateway.ensure_self_signed(tmp_path, ["portal.test", "10.199.0.1"], now=later)
    renewed = gateway.certificate_fingerprint(cert_path)
    assert renewed != fingerprint
    gateway.ensure_self_signed(tmp_path, ["other.test"])
    assert gateway.certificate_fingerprint(cert_path) not in ("", renewed)


def test_a_configured_certificate_is_used_as_it_is(settings, tmp_path):
    cert, key = gateway.ensure_self_signed(tmp_path / "own", ["portal.test"])
    settings.GATEWAY_TLS_CERT, settings.GATEWAY_TLS_KEY = str(cert), str(key)
    settings.SPARK_CONNECT_GATEWAY_DIR = tmp_path / "gw"
    assert gateway.tls_files() == (cert, key)
    assert not gateway.self_signed() and gateway.self_signed_pem() is None
    settings.GATEWAY_TLS_KEY = str(tmp_path / "missing.pem")
    with pytest.raises(gateway.GatewayError):
        gateway.tls_files()


# --- Rotation, the page, the API ------------------------------------------------------------


def test_only_a_ready_local_clusters_owner_may_rotate(alice, bob, staff):
    cluster = make_cluster(alice)
    for user in (bob, staff):
        with pytest.raises(services.ClusterError):
            services.rotate_connect_token(cluster, user)
    starting = make_cluster(alice, "s", state=Cluster.State.STARTING)
    with pytest.raises(services.ClusterError):
        services.rotate_connect_token(starting, alice)
    assert gateway.generation(Cluster.objects.get(pk=cluster.pk)) == 0


def test_the_rotate_view_changes_the_string_for_its_owner_only(client, alice, bob, staff):
    cluster = make_cluster(alice)
    url = reverse("clusters-rotate-token", args=[cluster.pk])
    before = gateway.gateway_token(cluster)
    for user in (bob, staff):
        client.force_login(user)
        assert client.post(url).status_code == 404
    assert gateway.gateway_token(Cluster.objects.get(pk=cluster.pk)) == before
    client.force_login(alice)
    assert client.get(url).status_code == 405
    response = client.post(url)
    assert response.status_code == 302 and response["Location"].endswith("#connect")
    after = gateway.gateway_token(Cluster.objects.get(pk=cluster.pk))
    assert after != before
    page = client.get(reverse("clusters-detail", args=[cluster.pk])).content.decode()
    assert after in page and before not in page


def test_the_page_shows_the_string_and_fingerprint_to_the_owner_only(
    client, alice, staff, settings, tmp_path
):
    settings.SPARK_CONNECT_GATEWAY_DIR = tmp_path / "gw"
    cert, _ = gateway.tls_files()
    cluster = make_cluster(alice)
    token = gateway.gateway_token(cluster)
    url = reverse("clusters-detail", args=[cluster.pk])
    client.force_login(alice)
    page = client.get(url).content.decode()
    assert gateway.connection_string(cluster) in page
    assert 'id="copy-gateway-url"' in page and "portal/copy.js" in page
    assert gateway.certificate_fingerprint(cert) in page
    client.force_login(staff)
    page = client.get(url).content.decode()
    assert token not in page and 'id="gateway-url"' not in page
    # Not while it starts, nor once it ended.
    client.force_login(alice)
    for state in (Cluster.State.STARTING, Cluster.State.TERMINATING):
        Cluster.objects.filter(pk=cluster.pk).update(state=state)
        assert token not in client.get(url).content.decode()


def test_the_api_gives_the_string_to_the_owner_with_the_clusters_scope_only(
    client, alice, staff, settings, tmp_path
):
    settings.SPARK_CONNECT_GATEWAY_DIR = tmp_path / "gw"
    gateway.tls_files()
    cluster = make_cluster(alice)
    path = f"/api/clusters/{cluster.pk}/"

    def access(user, scopes):
        _, secret = ApiToken.issue(user, "t", scopes)
        response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {secret}")
        return response.json()["access"]

    mine = access(alice, ["read", "clusters"])
    assert mine["gateway_url"] == gateway.connection_string(cluster)
    assert mine["gateway_ca_pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert access(alice, ["read"])["gateway_url"] is None
    assert access(staff, ["read", "clusters"])["gateway_url"] is None


# --- portalctl ------------------------------------------------------------------------------

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_portalctl_connect_prints_the_environment_and_saves_the_certificate(
    fake,  # noqa: F811
    portalctl,  # noqa: F811
    tmp_path,
):
    remote = "sc://portal.test:15002/;use_ssl=true;token=abc"
    fake.json(
        "GET",
        "/api/clusters/",
        {
            "results": [
                {"id": 1, "name": "curie", "state": "TERMINATED", "access": None},
                {
                    "id": 2,
                    "name": "curie",
                    "state": "READY",
                    "access": {"gateway_url": remote, "gateway_ca_pem": CA_PEM},
                },
            ],
            "next": None,
        },
    )
    result = portalctl("clusters", "connect", "curie")
    assert result.exit_code == 0, result.stderr
    ca = tmp_path / "gateway-ca" / "portal.test.pem"
    assert result.stdout == (
        f"export SPARK_REMOTE='{remote}'\nexport GRPC_DEFAULT_SSL_ROOTS_FILE_PATH={ca}\n"
    )
    assert ca.read_text() == CA_PEM
    out = tmp_path / "spark.env"
    result = portalctl("clusters", "connect", "curie", "--file", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600 and remote in out.read_text()


def test_portalctl_connect_explains_a_cluster_it_cannot_reach(fake, portalctl):  # noqa: F811
    starting = {"id": 3, "name": "noether", "state": "STARTING", "access": None}
    fake.json("GET", "/api/clusters/", {"results": [starting], "next": None})
    result = portalctl("clusters", "connect", "noether")
    assert result.exit_code == 1 and "not READY" in result.stderr
    result = portalctl("clusters", "connect", "nobody")
    assert result.exit_code == 2 and "no cluster named" in result.stderr
