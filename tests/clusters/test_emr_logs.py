"""EMR's logs of a cluster through the portal: listed and shown to its owner only, read
from moto's S3 where EMR would have written them (gzip'ed, under EMR_LOG_URI + job flow id),
with keys confined to the cluster's own prefix."""

import gzip

import pytest
from django.urls import reverse

from clusters import emr_logs
from clusters.models import Cluster
from jobs import logs
from tests.clusters.test_emr import (  # noqa: F401 (fixtures)
    LOG_BUCKET,
    launch,
    public_key_text,
    ssh_key,
    started,
)

pytestmark = pytest.mark.django_db

SECRET = "metrics-secret-4711"


@pytest.fixture
def emr_logs_settings(aws, emr_settings):
    emr_settings.EMR_S3_ENDPOINT_URL = aws.endpoint
    emr_settings.METRICS_TOKEN = SECRET  # a secret the portal knows: masked in logs
    return emr_settings


@pytest.fixture
def cluster(started, emr_logs_settings):  # noqa: F811 (the imported fixture)
    """alice's EMR cluster, launched on moto (it has a job flow id)."""
    assert started.jobflow_id.startswith("j-")
    return started


def put_log(aws, jobflow_id: str, path: str, text: str, zipped: bool = True) -> str:
    """Write a log object where EMR would: ``emr/<job flow id>/<path>``, gzip'ed."""
    key = f"emr/{jobflow_id}/{path}"
    body = gzip.compress(text.encode()) if zipped else text.encode()
    aws.s3.put_object(Bucket=LOG_BUCKET, Key=key, Body=body)
    return key


def logs_url(cluster: Cluster) -> str:
    return reverse("clusters-logs", args=[cluster.pk])


def log_url(cluster: Cluster, path: str) -> str:
    return reverse("clusters-logs", args=[cluster.pk]) + path


def test_the_owner_sees_the_logs_grouped(aws, cluster, client, alice):
    step = "steps/s-1ABC/stderr.gz"
    container = (
        "containers/application_1700000000000_0001/container_1700000000000_0001_01_000002/stderr.gz"
    )
    node = "node/i-0abc123/daemons/hadoop-yarn/yarn-yarn-nodemanager.log.gz"
    for path in (step, container, node):
        put_log(aws, cluster.jobflow_id, path, "hello")
    put_log(aws, "j-OTHER", "steps/s-2/stderr.gz", "not alice's")
    client.force_login(alice)

    page = client.get(logs_url(cluster)).content.decode()
    fragment = client.get(logs_url(cluster), HTTP_HX_REQUEST="true").content.decode()

    assert "<html" in page and "<html" not in fragment
    for html in (page, fragment):
        assert html.index("Steps") < html.index("Containers") < html.index("Nodes")
        for path in (step, container, node):
            assert f'href="{log_url(cluster, path)}"' in html
        assert "j-OTHER" not in html and "s-2" not in html


def test_the_owner_reads_a_log_gunzipped_and_masked(aws, cluster, client, alice):
    text = f"INFO starting\nspark.token={SECRET}\nERROR boom\n"
    put_log(aws, cluster.jobflow_id, "steps/s-1ABC/stderr.gz", text)
    client.force_login(alice)

    response = client.get(log_url(cluster, "steps/s-1ABC/stderr.gz"))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"].startswith("sandbox")
    body = response.content.decode()
    assert body == f"INFO starting\nspark.token={logs.MASK}\nERROR boom\n"
    assert SECRET not in body


def test_a_plain_log_is_shown_as_it_is(aws, cluster, client, alice):
    put_log(aws, cluster.jobflow_id, "node/i-0abc/setup.log", "plain text\n", zipped=False)
    client.force_login(alice)
    assert client.get(log_url(cluster, "node/i-0abc/setup.log")).content == b"plain text\n"


def test_a_missing_log_is_404(cluster, client, alice):
    client.force_login(alice)
    assert client.get(log_url(cluster, "steps/s-NONE/stderr.gz")).status_code == 404


@pytest.mark.parametrize("persona", ["bob", "staff"])
def test_others_and_staff_get_404(aws, cluster, client, persona, request):
    put_log(aws, cluster.jobflow_id, "steps/s-1ABC/stderr.gz", "alice's")
    client.force_login(request.getfixturevalue(persona))
    assert client.get(logs_url(cluster)).status_code == 404
    assert client.get(log_url(cluster, "steps/s-1ABC/stderr.gz")).status_code == 404
    page = client.get(cluster.get_absolute_url())
    assert page.status_code == (200 if persona == "staff" else 404)
    assert logs_url(cluster) not in page.content.decode()


@pytest.mark.parametrize(
    "path",
    [
        "../j-OTHER/steps/s-2/stderr.gz",
        "steps/../../j-OTHER/steps/s-2/stderr.gz",
        "..%2Fj-OTHER%2Fsteps%2Fs-2%2Fstderr.gz",  # decoded to ../j-OTHER/... by the server
        "..%252Fj-OTHER%252Fsteps%252Fs-2%252Fstderr.gz",  # a literal %2F
        "/emr/j-OTHER/steps/s-2/stderr.gz",  # absolute
        "steps//s-2/stderr.gz",
        "./steps/s-1ABC/stderr.gz",
        "steps\\s-1ABC\\stderr.gz",
    ],
)
def test_a_path_outside_the_clusters_prefix_is_refused(aws, cluster, client, alice, path):
    put_log(aws, cluster.jobflow_id, "steps/s-1ABC/stderr.gz", "alice's")
    put_log(aws, "j-OTHER", "steps/s-2/stderr.gz", "not alice's")
    client.force_login(alice)
    response = client.get(log_url(cluster, path))
    assert response.status_code == 400
    assert b"not alice's" not in response.content


def test_keys_are_strictly_under_the_prefix(emr_settings):
    emr_settings.EMR_LOG_URI = "s3://logs/emr"  # without its final slash
    location = emr_logs.log_location("j-ABC")
    assert (location.bucket, location.prefix) == ("logs", "emr/j-ABC/")
    assert emr_logs.key_for(location, "steps/s-1/stderr.gz") == "emr/j-ABC/steps/s-1/stderr.gz"
    for bad in ["", "..", "a/../b", "a//b", "/a", ".hidden", "a/%2e%2e", "a\x00b", "a b"]:
        with pytest.raises(emr_logs.PathRefused):
            emr_logs.key_for(location, bad)
    with pytest.raises(ValueError):
        emr_logs.log_location("")


def test_an_empty_prefix_says_when_logs_come(cluster, client, alice):
    client.force_login(alice)
    html = client.get(logs_url(cluster)).content.decode()
    assert "a few minutes after the fact; none yet" in html
    assert f"s3://{LOG_BUCKET}/emr/{cluster.jobflow_id}/" in html


def test_the_listing_is_bounded_and_says_so(aws, cluster, client, alice, monkeypatch):
    for i in range(5):
        put_log(aws, cluster.jobflow_id, f"steps/s-{i}/stderr.gz", "x")
    location = emr_logs.log_location(cluster.jobflow_id)
    from jobs.emr_runner import s3_client

    listing = emr_logs.list_logs(s3_client(), location, limit=3)
    assert listing.cut and listing.count == 3
    assert not emr_logs.list_logs(s3_client(), location, limit=5).cut

    monkeypatch.setattr(emr_logs, "MAX_LISTED", 2)
    client.force_login(alice)
    html = client.get(logs_url(cluster)).content.decode()
    assert 'id="emr-logs-cut"' in html and "Only the first 2 logs" in html


def test_a_long_log_keeps_its_tail_from_a_line_start(aws, cluster):
    lines = "".join(f"line {i:07d}\n" for i in range(300_000))  # 3.6 MB
    key = put_log(aws, cluster.jobflow_id, "steps/s-1/stdout.gz", lines)
    from jobs.emr_runner import s3_client

    text = emr_logs.log_text(s3_client(), LOG_BUCKET, key, logs.Masker([]))
    first, second = text.split("\n", 2)[:2]
    assert first.startswith("[log cut: only the last 2 MiB")
    assert second.startswith("line ") and len(second) == len("line 0000000")
    assert text.endswith("line 0299999\n")
    assert len(text.encode()) <= logs.MAX_BYTES + 100


def test_the_cluster_page_offers_logs_to_its_owner_and_keeps_the_ssh_command(
    aws, cluster, client, alice
):
    cluster.master_address = "ec2-1-2-3-4.us-west-2.compute.amazonaws.com"
    cluster.state = Cluster.State.READY
    cluster.save()
    client.force_login(alice)
    html = client.get(cluster.get_absolute_url()).content.decode()
    assert f'hx-get="{logs_url(cluster)}"' in html
    assert f"hadoop@{cluster.master_address}" in html and "ssh -i" in html


def test_a_local_cluster_has_no_emr_logs(client, alice):
    from datetime import timedelta

    from django.utils import timezone

    local = Cluster.objects.create(
        owner=alice, name="l1", expires_at=timezone.now() + timedelta(hours=1)
    )
    client.force_login(alice)
    assert client.get(logs_url(local)).status_code == 404


def test_the_api_lists_the_logs_to_the_owner_only(aws, cluster, client, alice, bob, staff):
    from api.models import ApiToken

    put_log(aws, cluster.jobflow_id, "steps/s-1ABC/stderr.gz", "hello")
    put_log(aws, cluster.jobflow_id, "node/i-0abc/daemons/x.log.gz", "node")
    put_log(aws, "j-OTHER", "steps/s-2/stderr.gz", "not alice's")
    url = reverse("api-clusters-logs", args=[cluster.pk])

    def get(user):
        _, token = ApiToken.issue(user, "t", ["read"])
        return client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}")

    body = get(alice).json()
    assert body["location"] == f"s3://{LOG_BUCKET}/emr/{cluster.jobflow_id}/"
    assert [log["path"] for log in body["logs"]] == [
        "steps/s-1ABC/stderr.gz",
        "node/i-0abc/daemons/x.log.gz",
    ]
    assert body["logs"][0]["bytes"] > 0 and body["logs"][0]["modified"]
    assert body["cut"] is False
    assert get(bob).status_code == 404
    assert get(staff).status_code == 404
