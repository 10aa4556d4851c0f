"""The user-content origin: signed, expiring URLs; sandbox CSP; never a cookie."""

import gzip
import time

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from portal import usercontent

pytestmark = pytest.mark.django_db

CONTENT_HOST = "127.0.0.1:8000"


@pytest.fixture
def run(make_job, alice):
    """A run whose first attempt produced runs/test/output.html."""
    from jobs import services
    from jobs.models import Run

    run = services.run_now(make_job("trivial.ipynb"), alice, enqueue=False)
    key = default_storage.save(
        "runs/test/output.html", ContentFile(b"<html><body>hello</body></html>")
    )
    Run.objects.filter(pk=run.pk).update(attempt=1, html_key=key)
    run.refresh_from_db()
    return run


@pytest.fixture
def html_key(run):
    return run.html_key


def fetch(client, url, **extra):
    path = url.split("8000", 1)[1]
    return client.get(path, HTTP_HOST=CONTENT_HOST, **extra)


def test_signed_url_serves_the_html_with_the_sandbox_csp(client, run, html_key):
    url = usercontent.content_url(html_key, run.pk, 1)
    assert url.startswith("http://127.0.0.1:8000/content/")
    response = fetch(client, url)
    assert response.status_code == 200
    assert b"hello" in b"".join(response.streaming_content)
    csp = response["Content-Security-Policy"]
    for part in (
        "sandbox allow-scripts",
        "connect-src 'none'",
        "frame-ancestors http://localhost:8000",
        "default-src 'none'",
    ):
        assert part in csp
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "no-referrer"
    assert "Set-Cookie" not in response and not response.cookies


def test_no_cookie_even_for_a_signed_in_browser(client, alice, run, html_key):
    client.force_login(alice)
    response = fetch(client, usercontent.content_url(html_key, run.pk, 1))
    assert response.status_code == 200 and not response.cookies
    # The session cookie sent along is ignored: the portal is not reachable on this host.
    assert fetch(client, "http://127.0.0.1:8000/").status_code == 302


@pytest.mark.parametrize("token", ["", "garbage", "eyJrIjoicnVucy90ZXN0L291dHB1dC5odG1sIn0:1x:bad"])
def test_bad_tokens_are_not_found(client, token):
    response = client.get(f"/content/{token}/", HTTP_HOST=CONTENT_HOST)
    assert response.status_code == 404
    assert "sandbox" in response["Content-Security-Policy"]


def test_tampered_token_is_refused(client, run, html_key):
    url = usercontent.content_url(html_key, run.pk, 1)
    tampered = url[:-3] + ("A" if url[-3] != "A" else "B") + url[-2:]
    assert fetch(client, tampered).status_code == 404


def test_expired_token_is_refused(client, run, html_key, settings):
    settings.USERCONTENT_URL_MAX_AGE = 1
    url = usercontent.content_url(html_key, run.pk, 1)
    time.sleep(2.1)
    assert fetch(client, url).status_code == 404


def test_only_html_files_are_served(client, run):
    key = default_storage.save("notebooks/1/1.ipynb", ContentFile(b"{}"))
    assert fetch(client, usercontent.content_url(key, run.pk, 1)).status_code == 404


def test_a_token_holds_only_for_the_runs_current_attempt_and_output(client, run, html_key):
    from jobs.models import Run

    assert fetch(client, usercontent.content_url(html_key, run.pk, 1)).status_code == 200
    other = default_storage.save("runs/other/output.html", ContentFile(b"<html>another run</html>"))
    assert (
        fetch(client, usercontent.content_url(other, run.pk, 1)).status_code == 404
    )  # not this run's
    assert fetch(client, usercontent.content_url(html_key, run.pk + 1, 1)).status_code == 404
    Run.objects.filter(pk=run.pk).update(attempt=2)
    assert (
        fetch(client, usercontent.content_url(html_key, run.pk, 1)).status_code == 404
    )  # an older attempt


def test_a_content_url_lives_two_minutes_at_most():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent.parent
    probe = "import django; django.setup()"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "USERCONTENT_URL_MAX_AGE": "600",
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "between 1 and 120 seconds" in done.stderr


def test_post_is_refused(client, run, html_key):
    url = usercontent.content_url(html_key, run.pk, 1)
    assert client.post(url.split("8000", 1)[1], HTTP_HOST=CONTENT_HOST).status_code == 405


def test_portal_pages_are_not_served_on_the_content_host(client, alice):
    client.force_login(alice)
    response = client.get(reverse("dashboard"), HTTP_HOST=CONTENT_HOST)
    assert response.status_code == 302 and response["Location"] == "http://localhost:8000/"


@pytest.mark.parametrize(
    "path", ["/static/plotly/plotly.min.js", "/static/vendor/plotly-basic-4.1.1.min.js"]
)
def test_plotly_is_served_locally(client, path):
    response = client.get(path, HTTP_HOST=CONTENT_HOST)
    assert response.status_code == 200
    assert not response.cookies
    assert "sandbox allow-scripts" in response["Content-Security-Policy"]


def test_a_collected_gzip_copy_of_a_viewer_script_is_sent_when_accepted(client, settings, tmp_path):
    settings.STATIC_ROOT = tmp_path
    script = tmp_path / "plotly" / "plotly.min.js"
    script.parent.mkdir()
    script.write_bytes(b"var plotly = 1;" * 1000)
    (tmp_path / "plotly" / "plotly.min.js.gz").write_bytes(gzip.compress(script.read_bytes()))
    packed = client.get(
        "/static/plotly/plotly.min.js", HTTP_HOST=CONTENT_HOST, HTTP_ACCEPT_ENCODING="gzip"
    )
    assert packed.status_code == 200 and packed["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed["Vary"]
    assert gzip.decompress(b"".join(packed.streaming_content)) == script.read_bytes()
    plain = client.get("/static/plotly/plotly.min.js", HTTP_HOST=CONTENT_HOST)
    assert "Content-Encoding" not in plain
    assert b"".join(plain.streaming_content) == script.read_bytes()


@pytest.mark.parametrize(
    "path",
    ["/static/portal/portal.css", "/static/vendor/htmx-2.0.11.min.js", "/static/admin/js/core.js"],
)
def test_only_the_viewers_own_static_files_are_served_on_the_content_host(client, path):
    assert client.get(path).status_code == 200  # on the portal's host
    response = client.get(path, HTTP_HOST=CONTENT_HOST)
    assert response.status_code == 302 and response["Location"] == "http://localhost:8000/"
