"""Large outputs are compressed: a run's HTML and .ipynb are stored with a gzip copy, sent
with ``Content-Encoding: gzip`` to browsers that accept it, and plain to the others."""

import gzip
import random
from datetime import timedelta

import nbformat
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone

from api.models import ApiToken
from jobs import compression, services
from jobs.executor import Outcome
from jobs.models import Run
from portal import usercontent

pytestmark = pytest.mark.django_db

CONTENT_HOST = "127.0.0.1:8000"
BROWSER = "gzip, deflate, br, zstd"


def chart_notebook(points: int = 5_000) -> nbformat.NotebookNode:
    """An executed notebook with one Plotly figure of ``points`` points (about 100 KB)."""
    rnd = random.Random(3)
    figure = {
        "data": [
            {
                "type": "scatter",
                "x": list(range(points)),
                "y": [round(rnd.gauss(0, 1), 6) for _ in range(points)],
            }
        ],
        "layout": {"title": {"text": "pings"}},
    }
    cell = nbformat.v4.new_code_cell("fig.show()", execution_count=1)
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={"application/vnd.plotly.v1+json": figure, "text/plain": "Figure()"},
        )
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [cell]
    return nb


def finished(job, user, tmp_path, nb: nbformat.NotebookNode) -> Run:
    run = services.claim_run(services.run_now(job, user, enqueue=False).pk, "w1")
    path = tmp_path / f"out-{run.pk}.ipynb"
    nbformat.write(nb, str(path))
    return services.finish_run(run, Outcome("succeeded", path))


@pytest.fixture
def run(make_job, alice, tmp_path) -> Run:
    """A SUCCEEDED run of a chart notebook, its outputs stored by the real finish_run."""
    return finished(make_job(name="Charts"), alice, tmp_path, chart_notebook())


def stored(key: str) -> bytes:
    with default_storage.open(key, "rb") as fh:
        return fh.read()


def frame(client, run: Run, **headers):
    url = usercontent.content_url(run.html_key, run.pk, run.attempt)
    return client.get(url.split("8000", 1)[1], HTTP_HOST=CONTENT_HOST, **headers)


def body(response) -> bytes:
    return b"".join(response.streaming_content)


def test_the_outputs_are_stored_with_gzip_copies_counted_in_output_bytes(run):
    assert run.html_gzip_key == run.html_key + ".gz"
    assert run.output_gzip_key == run.output_key + ".gz"
    assert gzip.decompress(stored(run.html_gzip_key)) == stored(run.html_key)
    assert gzip.decompress(stored(run.output_gzip_key)) == stored(run.output_key)
    keys = (run.output_key, run.html_key, run.output_gzip_key, run.html_gzip_key)
    assert run.output_bytes == sum(default_storage.size(k) for k in keys)
    # Plotly's numbers: the copies are well under half of the files.
    assert default_storage.size(run.html_gzip_key) < default_storage.size(run.html_key) / 2


def test_a_small_output_gets_no_copy(make_job, alice, alice_client, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1 + 1")]
    small = finished(make_job(), alice, tmp_path, nb)
    assert default_storage.size(small.output_key) < compression.MIN_BYTES
    assert small.output_key and not small.output_gzip_key
    # Even a one-cell page has nbconvert's stylesheet: hundreds of KB, worth a copy.
    assert small.html_gzip_key
    url = reverse("runs-download", args=[small.pk, "ipynb"])
    download = alice_client.get(url, HTTP_ACCEPT_ENCODING=BROWSER)
    assert body(download) == stored(small.output_key)
    assert "Content-Encoding" not in download and "Accept-Encoding" in download["Vary"]


def test_the_frame_is_gzip_when_the_browser_accepts_it(client, run):
    response = frame(client, run, HTTP_ACCEPT_ENCODING=BROWSER)
    assert response.status_code == 200
    assert response["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in response["Vary"]
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert int(response["Content-Length"]) == default_storage.size(run.html_gzip_key)
    sent = body(response)
    assert len(sent) == int(response["Content-Length"])
    assert gzip.decompress(sent) == stored(run.html_key)
    # Still the user-content origin's response: sandboxed, no cookie.
    assert "sandbox allow-scripts" in response["Content-Security-Policy"]
    assert not response.cookies


@pytest.mark.parametrize("accept", [None, "", "identity", "gzip;q=0", "br, gzip; q=0.0, *"])
def test_the_frame_is_plain_when_gzip_is_not_accepted(client, run, accept):
    headers = {} if accept is None else {"HTTP_ACCEPT_ENCODING": accept}
    response = frame(client, run, **headers)
    assert response.status_code == 200
    assert "Content-Encoding" not in response
    assert "Accept-Encoding" in response["Vary"]
    assert int(response["Content-Length"]) == default_storage.size(run.html_key)
    assert body(response) == stored(run.html_key)


def test_a_range_request_gets_the_plain_file_and_no_ranges(client, run):
    response = frame(client, run, HTTP_ACCEPT_ENCODING=BROWSER, HTTP_RANGE="bytes=0-99")
    assert response.status_code == 200
    assert "Content-Encoding" not in response
    assert response["Accept-Ranges"] == "none"
    assert body(response) == stored(run.html_key)


def test_the_live_partial_html_is_served_plain(client, run):
    page = ContentFile(stored(run.html_key))
    partial = default_storage.save(f"runs/{run.uuid}/partial.html", page)
    Run.objects.filter(pk=run.pk).update(partial_key=partial)
    url = usercontent.content_url(partial, run.pk, run.attempt)
    response = client.get(
        url.split("8000", 1)[1], HTTP_HOST=CONTENT_HOST, HTTP_ACCEPT_ENCODING=BROWSER
    )
    assert response.status_code == 200 and "Content-Encoding" not in response
    assert body(response) == stored(run.html_key)


def test_the_ipynb_download_is_gzip_when_accepted_and_plain_otherwise(alice_client, run):
    url = reverse("runs-download", args=[run.pk, "ipynb"])
    packed = alice_client.get(url, HTTP_ACCEPT_ENCODING=BROWSER)
    assert packed.status_code == 200 and packed["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed["Vary"]
    assert packed["Content-Type"] == "application/x-ipynb+json"
    assert f"Charts-run-{run.pk}.ipynb" in packed["Content-Disposition"]
    assert int(packed["Content-Length"]) == default_storage.size(run.output_gzip_key)
    assert gzip.decompress(body(packed)) == stored(run.output_key)

    plain = alice_client.get(url, HTTP_ACCEPT_ENCODING="gzip;q=0, identity")
    assert plain.status_code == 200 and "Content-Encoding" not in plain
    assert "Accept-Encoding" in plain["Vary"]
    assert int(plain["Content-Length"]) == default_storage.size(run.output_key)
    assert body(plain) == stored(run.output_key)


def test_the_html_download_is_gzip_when_accepted_and_plain_otherwise(alice_client, run):
    url = reverse("runs-download", args=[run.pk, "html"])
    plain = alice_client.get(url)
    assert plain.status_code == 200 and "Content-Encoding" not in plain
    standalone = body(plain)
    assert b'src="/static/plotly' not in standalone  # plotly.js inlined, as before

    packed = alice_client.get(url, HTTP_ACCEPT_ENCODING=BROWSER)
    assert packed.status_code == 200 and packed["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed["Vary"] and "Content-Length" not in packed
    assert gzip.decompress(body(packed)) == standalone


def test_the_api_downloads_are_gzip_when_accepted(client, alice, run):
    _, token = ApiToken.issue(alice, "test", ["read"])
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_ACCEPT_ENCODING": "gzip"}
    notebook = client.get(f"/api/runs/{run.pk}/output.ipynb", **auth)
    assert notebook.status_code == 200 and notebook["Content-Encoding"] == "gzip"
    assert gzip.decompress(body(notebook)) == stored(run.output_key)
    page = client.get(f"/api/runs/{run.pk}/output.html", **auth)
    assert page.status_code == 200 and page["Content-Encoding"] == "gzip"
    assert b"<html" in gzip.decompress(body(page))


def test_retention_deletes_the_gzip_copies(run, settings):
    settings.RUN_OUTPUT_RETENTION_DAYS = 90
    copies = (run.output_gzip_key, run.html_gzip_key)
    assert all(default_storage.exists(k) for k in copies)
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(finished_at=now - timedelta(days=91))

    assert services.expire_run_outputs(now) == 1

    assert not any(default_storage.exists(k) for k in copies)
    after = Run.objects.get(pk=run.pk)
    assert (after.output_gzip_key, after.html_gzip_key, after.output_bytes) == ("", "", 0)


def test_deleting_the_job_deletes_the_gzip_copies(run, django_capture_on_commit_callbacks):
    copies = (run.output_gzip_key, run.html_gzip_key)
    with django_capture_on_commit_callbacks(execute=True):
        services.delete_job(run.job)
    assert not any(default_storage.exists(k) for k in copies)


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("deflate, gzip;q=1.0, *;q=0.5", True),
        ("gzip;q=0.001", True),
        ("*", True),
        ("br;q=1, *;q=0.1", True),
        ("", False),
        ("identity", False),
        ("br, deflate", False),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("*, gzip;q=0", False),
        ("gzip;q=abc", False),
    ],
)
def test_accept_encoding_is_parsed_with_its_q_values(header, accepted):
    assert compression.accepts_gzip(header) is accepted


def test_runs_from_before_the_copies_get_them_from_the_command(run, make_job, alice, tmp_path):
    """``manage.py compressoutputs``: an old run (no copies, its bytes without them) gets
    its two copies, counted and then served; a second pass finds nothing to do, and a
    small output is counted as such."""
    import io

    from django.core.management import call_command

    plain_bytes = run.output_bytes - compression_bytes(run)
    for key in (run.html_gzip_key, run.output_gzip_key):
        default_storage.delete(key)
    Run.objects.filter(pk=run.pk).update(
        output_gzip_key="", html_gzip_key="", output_bytes=plain_bytes
    )
    small = finished(make_job(name="Small"), alice, tmp_path, nbformat.v4.new_notebook())
    out = io.StringIO()
    call_command("compressoutputs", stdout=out)
    assert "2 runs looked at: 2 gzip copies stored" in out.getvalue()
    assert "too small or incompressible: 1;" in out.getvalue()  # the small .ipynb
    run.refresh_from_db()
    assert run.html_gzip_key and run.output_gzip_key
    assert run.output_bytes == plain_bytes + compression_bytes(run)
    assert gzip.decompress(stored(run.html_gzip_key)) == stored(run.html_key)
    assert gzip.decompress(stored(run.output_gzip_key)) == stored(run.output_key)
    assert small.output_gzip_key == ""
    out = io.StringIO()
    call_command("compressoutputs", stdout=out)
    assert "0 gzip copies stored" in out.getvalue()


def compression_bytes(run: Run) -> int:
    return sum(default_storage.size(k) for k in (run.html_gzip_key, run.output_gzip_key) if k)
