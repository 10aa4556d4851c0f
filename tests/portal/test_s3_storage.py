"""Notebooks and outputs in S3 through django-storages, against moto's server mode."""

import gzip

import nbformat
import pytest
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils.functional import empty

from jobs import services
from jobs.executor import Outcome
from portal import usercontent

pytestmark = pytest.mark.django_db


@pytest.fixture
def s3(settings, monkeypatch):
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="portal-outputs"
    )
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": "portal-outputs",
                "endpoint_url": endpoint,
                "region_name": "us-east-1",
                "addressing_style": "path",
                "signature_version": "s3v4",
                "default_acl": None,
                "querystring_auth": True,
                "file_overwrite": False,
            },
        },
    }
    default_storage._wrapped = empty
    yield boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    default_storage._wrapped = empty
    server.stop()


def test_jobs_and_outputs_round_trip_through_s3(
    s3, make_job, alice, alice_client, tmp_path, client
):
    job = make_job("trivial.ipynb")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="portal-outputs")["Contents"]}
    assert keys == {f"notebooks/{job.pk}/1.ipynb"}

    run = services.claim_run(services.run_now(job, alice).pk, "w")
    out = tmp_path / "out.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(out))
    run = services.finish_run(run, Outcome("succeeded", out))
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="portal-outputs")["Contents"]}
    assert {run.output_key, run.html_key} <= keys

    download = alice_client.get(reverse("runs-download", args=[run.pk, "ipynb"]))
    assert download.status_code == 200 and b"nbformat" in b"".join(download.streaming_content)
    url = usercontent.content_url(run.html_key, run.pk, run.attempt)
    shown = client.get(url.split("8000", 1)[1], HTTP_HOST="127.0.0.1:8000")
    assert shown.status_code == 200 and b"<html" in b"".join(shown.streaming_content)


def test_gzip_copies_are_served_as_stored_from_s3(s3, make_job, alice, tmp_path, client):
    """django-storages marks a ``.gz`` object ``ContentEncoding: gzip``; reading it back
    must still give the compressed bytes, which the frame sends as they are."""
    run = services.claim_run(services.run_now(make_job("trivial.ipynb"), alice).pk, "w")
    out = tmp_path / "out.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(out))
    run = services.finish_run(run, Outcome("succeeded", out))
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="portal-outputs")["Contents"]}
    assert run.html_gzip_key == run.html_key + ".gz" and run.html_gzip_key in keys
    with default_storage.open(run.html_key, "rb") as fh:
        page = fh.read()

    url = usercontent.content_url(run.html_key, run.pk, run.attempt)
    shown = client.get(
        url.split("8000", 1)[1], HTTP_HOST="127.0.0.1:8000", HTTP_ACCEPT_ENCODING="gzip"
    )
    assert shown.status_code == 200 and shown["Content-Encoding"] == "gzip"
    sent = b"".join(shown.streaming_content)
    assert int(shown["Content-Length"]) == len(sent)
    assert gzip.decompress(sent) == page
