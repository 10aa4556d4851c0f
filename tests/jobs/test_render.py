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


def notebook_with_figures(*layouts: dict) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for layout in layouts:
        figure = {"data": [{"type": "scatter", "y": [1, 2]}], "layout": layout}
        data = {"application/vnd.plotly.v1+json": figure}
        output = nbformat.v4.new_output("display_data", data=data)
        nb.cells.append(nbformat.v4.new_code_cell("fig.show()", outputs=[output]))
    return nb


def test_each_figure_waits_in_a_placeholder_of_its_height():
    html = render.render_html(
        notebook_with_figures(
            {"height": 300}, {}, {"height": "300px;position:fixed"}, {"height": 2}, []
        )
    )
    placeholders = re.findall(
        r'</script><div class="nb-plotly-figure nb-plotly-pending" style="([^"]*)"></div>', html
    )
    assert placeholders == [
        "height: 300px",
        "height: 450px",  # Plotly's default
        "height: 450px",  # not a number of pixels
        "height: 10px",  # Plotly's least
        "height: 450px",
    ]


def test_the_downloaded_figures_run_under_its_policy():
    """The loader that draws figures lazily and reports the height is the script the
    download's policy names (its hash follows the file), whole or streamed."""
    import io

    html = render.render_html(notebook_with_figures({"height": 300})).encode()
    loader = render._inline_script(render.PLOTLY_LOADER_URL)
    assert b"IntersectionObserver" in loader and b"postMessage" in loader
    whole = render.standalone_html(html)
    padded = html.replace(b"</main>", b"<p>" + b"x" * 200_000 + b"</p></main>")
    streamed = b"".join(render.standalone_chunks(io.BytesIO(padded), chunk_bytes=4096))
    for page in (whole, streamed):
        policy = re.search(rb'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
        assert b"<script>" + loader + b"</script>" in page
        assert render._csp_hash(loader).encode() in policy.group(1)


@pytest.mark.parametrize(
    ("traces", "bundle"),
    [
        ([{"y": [1]}, {"type": "bar"}, {"type": "pie"}], render.PLOTLY_BASIC_JS_URL),
        ([{"type": "scatter"}, {"type": "heatmap"}], render.PLOTLY_JS_URL),
        ([{"type": "scattergl"}], render.PLOTLY_JS_URL),
        (["not a trace"], render.PLOTLY_JS_URL),
    ],
)
def test_a_page_loads_the_basic_plotly_bundle_when_its_traces_allow(traces, bundle):
    nb = notebook_with_figures({})
    nb.cells[0].outputs[0].data["application/vnd.plotly.v1+json"]["data"] = traces
    assert render.plotly_js_url(nb) == bundle
    assert f'<script async="" src="{bundle}"></script>' in render.render_html(nb)


def test_an_animation_frame_counts_for_the_bundle():
    nb = notebook_with_figures({})
    figure = nb.cells[0].outputs[0].data["application/vnd.plotly.v1+json"]
    figure["frames"] = [{"data": [{"type": "scatter"}]}]
    assert render.plotly_js_url(nb) == render.PLOTLY_BASIC_JS_URL
    figure["frames"].append({"data": [{"type": "choropleth"}]})
    assert render.plotly_js_url(nb) == render.PLOTLY_JS_URL


def test_the_basic_bundle_is_the_plotly_packages_version():
    """Figures come from the plotly package: the basic bundle must be its plotly.js (a
    plotly upgrade fails here until static/vendor has the new basic bundle)."""
    from plotly.offline import get_plotlyjs_version

    code = render._inline_script(render.PLOTLY_BASIC_JS_URL)
    assert code is not None
    version = get_plotlyjs_version()
    assert f"plotly.js (basic - minified) v{version}\n".encode() in code[:200]
    assert render.PLOTLY_BASIC_JS_URL.endswith(f"-{version}.min.js")


def test_a_page_rendered_before_issue_14_still_downloads_with_its_scripts():
    """Stored pages had both script elements at the end of the body."""
    import io

    old = (
        b"<!DOCTYPE html><html><head><title>t</title></head><body><main>"
        + b"<p>cell</p>" * 20_000
        + f'</main></body><script src="{render.PLOTLY_JS_URL}"></script>'.encode()
        + f'<script src="{render.PLOTLY_LOADER_URL}"></script></html>'.encode()
    )
    plotly = render._inline_script(render.PLOTLY_JS_URL)
    loader = render._inline_script(render.PLOTLY_LOADER_URL)
    for page in (
        render.standalone_html(old),
        b"".join(render.standalone_chunks(io.BytesIO(old), chunk_bytes=4096)),
    ):
        assert b"<script src=" not in page
        assert page.endswith(
            b"<script>" + plotly + b"</script><script>" + loader + b"</script></html>"
        )
