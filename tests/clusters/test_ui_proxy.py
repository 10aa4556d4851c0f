"""The Spark UI reverse proxy (clusters.ui_proxy) against a small fake Spark master on
loopback: who may open it, what it forwards each way, and what it refuses."""

import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from django.urls import reverse
from django.utils import timezone

from clusters.backends.local import LocalBackend
from clusters.models import Cluster
from clusters.ui_proxy import UI_POLICY, check_path, location_for, reverse_proxy_url

pytestmark = pytest.mark.django_db

SPARK_CSP = "default-src 'self'; script-src 'self' 'nonce-abc'"


class FakeMaster(BaseHTTPRequestHandler):
    """Answers like a Spark master in reverse-proxy mode; records what it was sent."""

    seen: list[tuple[str, str, dict[str, str]]]  # (method, path, headers), set per server

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.seen.append(("GET", self.path, dict(self.headers)))
        if self.path.startswith("/proxy/app-1/jobs"):
            self.send_response(302)  # Spark redirects to the address it was asked at
            self.send_header(
                "Location", f"http://127.0.0.1:{self.server.server_port}/proxy/app-1/jobs/"
            )
        elif self.path == "/away":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        else:
            body = (
                f"<title>Spark Master</title><a href='/clusters/1/ui/proxy/app-1'>{self.path}</a>"
            )
            self.send_response(200)
            self.send_header("Content-Type", "text/html;charset=utf-8")
            self.send_header("Content-Length", str(len(body.encode())))
            self.send_header("Set-Cookie", "JSESSIONID=spark; Path=/")
            self.send_header("Content-Security-Policy", SPARK_CSP)
            self.send_header("X-Frame-Options", "SAMEORIGIN")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            self.wfile.write(body.encode())
            return
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self.server.seen.append(("HEAD", self.path, dict(self.headers)))
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()

    def do_POST(self):
        self.server.seen.append(("POST", self.path, dict(self.headers)))
        self.send_response(200)
        self.end_headers()


@pytest.fixture
def master():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeMaster)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def cluster(alice, master):
    return Cluster.objects.create(
        owner=alice,
        name="mine",
        state=Cluster.State.READY,
        expires_at=timezone.now() + timedelta(hours=1),
        ui_url=f"http://127.0.0.1:{master.server_port}",
    )


def ui(cluster, path=""):
    return reverse("clusters-ui", args=[cluster.pk]) + path


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_the_owner_gets_the_masters_page_streamed(client, alice, cluster, master):
    client.force_login(alice)
    response = client.get(ui(cluster, "?showIncomplete=true"))
    assert response.status_code == 200 and response.streaming
    assert b"<title>Spark Master</title>" in body(response)
    assert response["Content-Type"] == "text/html;charset=utf-8"
    assert [(m, p) for m, p, _ in master.seen] == [("GET", "/?showIncomplete=true")]


def test_every_answer_is_sandboxed_and_sets_no_cookie(client, alice, cluster):
    client.force_login(alice)
    response = client.get(ui(cluster))
    # Ours first, then Spark's own: a browser enforces both.
    assert response["Content-Security-Policy"] == f"{UI_POLICY}, {SPARK_CSP}"
    assert UI_POLICY.startswith("sandbox allow-scripts allow-forms allow-popups;")
    assert "allow-same-origin" not in UI_POLICY and "frame-ancestors 'none'" in UI_POLICY
    assert "Set-Cookie" not in response and not response.cookies
    assert response["X-Frame-Options"] == "DENY"  # the portal's, not Spark's SAMEORIGIN
    assert "Access-Control-Allow-Origin" not in response
    assert response["Referrer-Policy"] == "no-referrer"


def test_the_portals_cookies_and_authorization_stay_in_the_portal(client, alice, cluster, master):
    client.force_login(alice)
    client.cookies["csrftoken"] = "portal-csrf"
    client.get(
        ui(cluster, "environment/"),
        HTTP_AUTHORIZATION="Bearer portal-token",
        HTTP_X_FORWARDED_FOR="10.0.0.1",
        HTTP_ACCEPT="text/html",
    )
    (_method, path, headers), *_ = master.seen
    names = {name.lower() for name in headers}
    assert path == "/environment/"
    assert not names & {"cookie", "authorization", "x-forwarded-for"}, headers
    assert headers["Accept"] == "text/html"
    assert headers["Host"] == f"127.0.0.1:{master.server_port}"


@pytest.mark.parametrize("persona", ["bob", "staff"])
def test_others_and_staff_get_404_and_nothing_reaches_the_cluster(
    client, cluster, master, persona, request
):
    client.force_login(request.getfixturevalue(persona))
    for path in ("", "proxy/app-1/jobs/", "environment/"):
        assert client.get(ui(cluster, path)).status_code == 404
    assert master.seen == []


def test_anonymous_is_sent_to_sign_in(client, cluster, master):
    response = client.get(ui(cluster, "proxy/app-1/jobs/"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))
    assert master.seen == []


def test_a_cluster_that_is_not_live_or_not_local_has_no_ui(client, alice, cluster, master):
    client.force_login(alice)
    Cluster.objects.filter(pk=cluster.pk).update(state=Cluster.State.TERMINATED)
    assert client.get(ui(cluster)).status_code == 404
    Cluster.objects.filter(pk=cluster.pk).update(state=Cluster.State.READY, backend="emr")
    assert client.get(ui(cluster)).status_code == 404
    assert master.seen == []


@pytest.mark.parametrize(
    "path",
    [
        "http://169.254.169.254/latest/",
        "http:/evil.example/",
        "//evil.example/",
        "proxy//evil.example/",
        "../../admin/",
        "proxy/app-1/../../x",
        "%2e%2e/x",
        "proxy/app-1/%2E%2E/",
        "a\\b",
        "proxy/%01/",
        ".",
    ],
)
def test_paths_that_could_leave_the_cluster_are_refused(client, alice, cluster, master, path):
    client.force_login(alice)
    response = client.get(ui(cluster) + path)
    assert response.status_code == 400, response
    assert master.seen == []


def test_check_path_keeps_sparks_own_paths():
    for path in ("", "proxy/app-20260101000000-0000/jobs/", "static/sql/x.js", "logPage/"):
        assert check_path(path) == "/" + path
    for path in ("x//y", "..", "x/./y", "x:y/"):
        with pytest.raises(ValueError):
            check_path(path)


def test_sparks_redirects_stay_under_the_clusters_prefix(client, alice, cluster, master):
    client.force_login(alice)
    response = client.get(ui(cluster, "proxy/app-1/jobs"))
    assert response.status_code == 302
    assert response["Location"] == ui(cluster, "proxy/app-1/jobs/")
    # A redirect elsewhere is passed on without its Location, and not followed.
    away = client.get(ui(cluster, "away"))
    assert away.status_code == 302 and "Location" not in away
    assert [p for _, p, _ in master.seen] == ["/proxy/app-1/jobs", "/away"]


def test_only_get_and_head_are_forwarded(client, alice, cluster, master):
    client.force_login(alice)
    assert client.post(ui(cluster, "app/kill/"), {"id": "app-1"}).status_code in (403, 405)
    assert client.head(ui(cluster)).status_code == 200
    assert [m for m, _, _ in master.seen] == ["HEAD"]


def test_a_ui_that_does_not_answer_is_a_502(client, alice, cluster, master):
    client.force_login(alice)
    master.shutdown()
    master.server_close()
    response = client.get(ui(cluster))
    assert response.status_code == 502
    assert response["Content-Security-Policy"] == UI_POLICY


def test_sparks_static_files_come_from_pyspark_without_sign_in(client, cluster, master):
    response = client.get(reverse("clusters-ui-static", args=[cluster.pk, "webui.js"]))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/javascript"
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response["Content-Security-Policy"] == UI_POLICY
    assert b"uiRoot" in response.content
    proxied = reverse(
        "clusters-ui-proxied-static", args=[cluster.pk, "app-1", "sql/spark-sql-viz.css"]
    )
    assert client.get(proxied).status_code == 200
    assert client.get(reverse("clusters-ui-static", args=[999999, "webui.js"])).status_code == 200
    assert (
        client.get(reverse("clusters-ui-static", args=[cluster.pk, "nope.js"])).status_code == 404
    )
    assert master.seen == []  # never the cluster's answer


def test_local_clusters_run_sparks_reverse_proxy_under_their_portal_path(tmp_path):
    (tmp_path / "logs").mkdir()
    LocalBackend._write_conf(tmp_path, None, reverse_proxy_url(42))
    conf = (tmp_path / "conf" / "spark-defaults.conf").read_text().splitlines()
    assert "spark.ui.reverseProxy true" in conf
    assert "spark.ui.reverseProxyUrl /clusters/42/ui" in conf
    # Spark refuses a reverseProxyUrl with a "proxy" or "history" segment.
    assert not {"proxy", "history"} & set(reverse_proxy_url(42).split("/"))


@pytest.mark.parametrize(
    "location, expected",
    [
        ("http://127.0.0.1:4040/jobs/?id=1", "/runs/1/history/jobs/?id=1"),
        ("/history/app/jobs/", "/runs/1/history/history/app/jobs/"),  # the History Server's
        ("/runs/1/history/stages/", "/runs/1/history/stages/"),
        ("/history/../admin/", None),
        ("//evil.example/x", None),
        ("http://127.0.0.1:9/jobs/", None),
        ("https://127.0.0.1:4040/jobs/", None),
        ("jobs/", None),
    ],
)
def test_where_a_redirect_may_lead(location, expected):
    upstream = httpx.URL("http://127.0.0.1:4040/")
    assert location_for(location, upstream, "/runs/1/history") == expected
