"""Render an executed notebook to the HTML shown in the run viewer.

The HTML is built with nbconvert's HTMLExporter and the portal template in
``jobs/nbconvert_templates/portal`` (after research/stack.md §5):

- every ``text/html``/markdown output is sanitised with nh3 (``sanitize_html=True`` with
  nh3 as the ``clean_html`` filter: bleach takes seconds on large outputs, nh3 milliseconds);
  JavaScript outputs are dropped;
- Plotly figures (``application/vnd.plotly.v1+json``, what ``PLOTLY_RENDERER=plotly_mimetype``
  stores) are embedded as inert JSON and drawn by ``static/jobs/nb-plotly-loader.js`` with
  plotly.js served from the plotly package, so nothing is fetched from the internet;
- the stock template's CDN scripts (require.js, MathJax, mermaid) are removed.

The result is still treated as untrusted: it is only ever served from the user-content
origin, with a sandbox CSP, inside a sandboxed iframe (``portal.usercontent``).
"""

import json
from functools import lru_cache
from pathlib import Path

import nbformat
import nh3
from nbconvert import HTMLExporter
from traitlets.config import Config

TEMPLATE_DIR = Path(__file__).resolve().parent / "nbconvert_templates"
#: Paths of the scripts the rendered page loads, relative to the origin serving it.
PLOTLY_JS_URL = "/static/plotly/plotly.min.js"
PLOTLY_LOADER_URL = "/static/jobs/nb-plotly-loader.js"


def plotly_json_safe(figure) -> str:
    """JSON of a figure that cannot end its ``<script>`` element or open a comment."""
    text = json.dumps(figure, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def nh3_clean(html: str, **_ignored) -> str:
    """Sanitise untrusted HTML with nh3's default allow-list (no scripts, no handlers)."""
    return nh3.clean(html)


@lru_cache(maxsize=1)
def _exporter() -> HTMLExporter:
    config = Config()
    config.NbConvertBase.display_data_priority = [
        "application/vnd.plotly.v1+json",
        "text/html",
        "text/markdown",
        "image/svg+xml",
        "text/latex",
        "image/png",
        "image/jpeg",
        "text/plain",
    ]
    exporter = HTMLExporter(
        config=config,
        template_name="portal",
        extra_template_basedirs=[str(TEMPLATE_DIR)],
        sanitize_html=True,
        embed_images=False,  # CVE-2026-39378: never read local files into the page
    )
    exporter.register_filter("plotly_json_safe", plotly_json_safe)
    exporter.register_filter("clean_html", nh3_clean)
    return exporter


def render_html(nb: nbformat.NotebookNode, title: str = "") -> str:
    """Return the viewer HTML (a full document, UTF-8 text) of an executed notebook."""
    resources = {
        "plotly_js_url": PLOTLY_JS_URL,
        "plotly_loader_url": PLOTLY_LOADER_URL,
        "metadata": {"name": title or "Notebook"},
    }
    html, _ = _exporter().from_notebook_node(nb, resources=resources)
    return html


def standalone_html(html: bytes) -> bytes:
    """The viewer HTML with plotly.js and the figure loader inlined, for download: opened
    from disk (no portal to fetch ``/static/...`` from, no internet) its charts still draw.

    Only the two exact script elements ``render_html`` writes are replaced; the scripts'
    text holds no ``</script`` (checked), so it cannot end its element early. Adds about
    4.6 MB (plotly.min.js) to the file.
    """
    for url in (PLOTLY_JS_URL, PLOTLY_LOADER_URL):
        tag = f'<script src="{url}"></script>'.encode()
        code = _inline_script(url)
        if code is not None and tag in html:
            html = html.replace(tag, b"<script>" + code + b"</script>", 1)
    return html


@lru_cache(maxsize=4)
def _inline_script(url: str) -> bytes | None:
    """The text of a static script, read once per process; None if it is not found.
    Raises ValueError if it holds ``</script`` (it could not be inlined safely)."""
    from django.contrib.staticfiles import finders

    path = finders.find(url.removeprefix("/static/"))
    if path is None:
        return None
    code = Path(path).read_bytes()
    if b"</script" in code.lower():
        raise ValueError(f"{url} cannot be inlined: it contains </script")
    return code
