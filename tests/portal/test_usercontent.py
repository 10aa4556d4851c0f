"""The user-content origin: signed, expiring URLs; sandbox CSP; never a cookie."""

import time

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from portal import usercontent

pytestmark = pytest.mark.django_db

CONTENT_HOST = "127.0.0.1:8000"


@pytest.fixture
def html_key():
    return default_storage.save("runs/test/output.html", ContentFile(b"<html><body>hello</body></html>"))


def fetch(client, url, **extra):
    path = url.split("8000", 1)[1]
    return client.get(path, HTTP_HOST=CONTENT_HOST, **extra)


def test_signed_url_serves_the_html_with_the_sandbox_csp(client, html_key):
    url = usercontent.content_url(html_key, 1, 1)
    assert url.startswith("http://127.0.0.1:8000/content/")
    response = fetch(client, url)
    assert response.status_code == 200
    assert b"hello" in b"".join(response.streaming_content)
    csp = response["Content-Security-Policy"]
    for part in ("sandbox allow-scripts", "connect-src 'none'", "frame-ancestors http://localhost:8000", "default-src 'none'"):
        assert part in csp
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "no-referrer"
    assert "Set-Cookie" not in response and not response.cookies


def test_no_cookie_even_for_a_signed_in_browser(client, alice, html_key):
    client.force_login(alice)
    response = fetch(client, usercontent.content_url(html_key, 1, 1))
    assert response.status_code == 200 and not response.cookies
    # The session cookie sent along is ignored: the portal is not reachable on this host.
    assert fetch(client, "http://127.0.0.1:8000/").status_code == 302


@pytest.mark.parametrize("token", ["", "garbage", "eyJrIjoicnVucy90ZXN0L291dHB1dC5odG1sIn0:1x:bad"])
def test_bad_tokens_are_not_found(client, token):
    response = client.get(f"/content/{token}/", HTTP_HOST=CONTENT_HOST)
    assert response.status_code == 404
    assert "sandbox" in response["Content-Security-Policy"]


def test_tampered_token_is_refused(client, html_key):
    url = usercontent.content_url(html_key, 1, 1)
    tampered = url[:-3] + ("A" if url[-3] != "A" else "B") + url[-2:]
    assert fetch(client, tampered).status_code == 404


def test_expired_token_is_refused(client, html_key, settings):
    settings.USERCONTENT_URL_MAX_AGE = 1
    url = usercontent.content_url(html_key, 1, 1)
    time.sleep(2.1)
    assert fetch(client, url).status_code == 404


def test_only_html_files_are_served(client):
    key = default_storage.save("notebooks/1/1.ipynb", ContentFile(b"{}"))
    assert fetch(client, usercontent.content_url(key, 1, 1)).status_code == 404


def test_post_is_refused(client, html_key):
    url = usercontent.content_url(html_key, 1, 1)
    assert client.post(url.split("8000", 1)[1], HTTP_HOST=CONTENT_HOST).status_code == 405


def test_portal_pages_are_not_served_on_the_content_host(client, alice):
    client.force_login(alice)
    response = client.get(reverse("dashboard"), HTTP_HOST=CONTENT_HOST)
    assert response.status_code == 302 and response["Location"] == "http://localhost:8000/"


def test_plotly_is_served_locally(client):
    response = client.get("/static/plotly/plotly.min.js", HTTP_HOST=CONTENT_HOST)
    assert response.status_code == 200
    assert not response.cookies
