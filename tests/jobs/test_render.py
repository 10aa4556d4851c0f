"""Rendering untrusted notebooks: sizes cannot smuggle attributes, no event handler
survives, and the downloaded page carries its own CSP."""

import base64
import hashlib
import re

import nbformat
import pytest

from jobs import render

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
PAYLOAD = "1 onerror=document.title='pwned'"


def notebook_with_image(metadata: dict) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    output = nbformat.v4.new_output("display_data", data={"image/png": PNG}, metadata=metadata)
    nb.cells = [nbformat.v4.new_code_cell("show()", outputs=[output])]
    return nb


@pytest.mark.parametrize(
    "metadata",
    [
        {"image/png": {"width": PAYLOAD}},
        {"width": PAYLOAD},
        {"image/png": {"height": PAYLOAD, "width": True}},
    ],
)
def test_an_image_size_cannot_carry_an_event_handler(metadata):
    html = render.render_html(notebook_with_image(metadata))
    [img] = re.findall(r"<img[^>]*>", html)
    assert "onerror" not in html and "pwned" not in html, img
    assert "width" not in img and "height" not in img, img


def test_numeric_sizes_are_kept():
    html = render.render_html(notebook_with_image({"image/png": {"width": 320, "height": "240"}}))
    [img] = re.findall(r"<img[^>]*>", html)
    assert 'width="320"' in img and 'height="240"' in img, img


def test_the_last_pass_drops_every_handler_but_leaves_script_text_alone():
    page = (
        '<div onclick="x()" class="a"><img/src=x/onerror=alert(1)>'
        "<a href=\"a>b\" ONMOUSEOVER='y'>t</a>"
        '<svg><animate onbegin=alert(1)></svg><script>var s = "<img onerror=1>";</script>'
    )
    cleaned = render.drop_event_handlers(page)
    assert not re.search(r"[\s/]on[a-z]+\s*=", cleaned.split("<script>")[0], re.I), cleaned
    assert '<a href="a>b">' in cleaned and 'class="a"' in cleaned
    assert '<script>var s = "<img onerror=1>";</script>' in cleaned


def test_the_download_allows_exactly_its_own_scripts():
    html = render.render_html(notebook_with_image({})).encode()
    page = render.standalone_html(html)
    policy = (
        re.search(
            rb'<head[^>]*><meta http-equiv="Content-Security-Policy" content="([^"]+)">', page
        )
        .group(1)
        .decode()
    )
    scripts = re.findall(rb"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 2
    for code in scripts:
        digest = base64.b64encode(hashlib.sha256(code).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy.split("style-src")[0]
