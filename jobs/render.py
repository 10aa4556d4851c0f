"""Render an executed notebook to the HTML shown in the run viewer.

The HTML is built with nbconvert's HTMLExporter and the portal template in
``jobs/nbconvert_templates/portal``:

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

import base64
import hashlib
import io
import json
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import nbformat
import nh3
from django.contrib.staticfiles import finders
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


@lru_cache(maxsize=2)
def _exporter(template_name: str = "portal") -> HTMLExporter:
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
        template_name=template_name,
        extra_template_basedirs=[str(TEMPLATE_DIR)],
        # So that portal_compare can extend "portal/index.html.j2" by name.
        extra_template_paths=[str(TEMPLATE_DIR)],
        sanitize_html=True,
        embed_images=False,  # CVE-2026-39378: never read local files into the page
    )
    exporter.register_filter("plotly_json_safe", plotly_json_safe)
    exporter.register_filter("clean_html", nh3_clean)
    return exporter


def render_html(nb: nbformat.NotebookNode, title: str = "", template: str = "portal") -> str:
    """Return the viewer HTML (a full document, UTF-8 text) of an executed notebook.

    ``template`` names a template of ``nbconvert_templates``: "portal", or
    "portal_compare" (which extends it) for two runs side by side (``jobs.compare``).

    ``nb`` is sanitised in place first (``sanitize_dimensions``), and the finished page
    goes through ``drop_event_handlers``.
    """
    resources = {
        "plotly_js_url": PLOTLY_JS_URL,
        "plotly_loader_url": PLOTLY_LOADER_URL,
        "metadata": {"name": title or "Notebook"},
    }
    sanitize_dimensions(nb)
    html, _ = _exporter(template).from_notebook_node(nb, resources=resources)
    return drop_event_handlers(html)


def _dimension(value) -> int | None:
    """A width or height as a whole number of pixels, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and 0 <= value < 1e6:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 7:
        return int(value.strip())
    return None


def sanitize_dimensions(nb: nbformat.NotebookNode) -> None:
    """Force every output's ``width`` and ``height`` metadata (top level or per MIME type)
    to a whole number, dropping anything else, in place.

    nbconvert writes them unquoted into ``<img width=...>``: a notebook could store
    ``"1 onerror=..."`` there and get a live event handler (escaping does not help an
    unquoted attribute)."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            metadata = output.get("metadata")
            if not isinstance(metadata, dict):
                continue
            for holder in [metadata, *(v for v in metadata.values() if isinstance(v, dict))]:
                for key in ("width", "height"):
                    if key in holder:
                        number = _dimension(holder[key])
                        if number is None:
                            del holder[key]
                        else:
                            holder[key] = number


# A start tag with its attributes (quoted values may hold ">"), and the raw-text elements
# whose content is not markup. Outputs are sanitised by nh3 already; this last pass over
# the whole page catches what any other path (the template, a future filter) lets through.
_RAW_TEXT = re.compile(r"(<(script|style)\b[^>]*>)(.*?)(</\2\s*>)", re.S | re.I)
# Browsers also take "/" between attributes as a separator (<img/src=x/onerror=...>).
_START_TAG = re.compile(
    r"<[A-Za-z][^\s/>]*(?:[\s/]+[^\s/>\"'=]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'=<>`]+))?)*[\s/]*>"
)
_HANDLER = re.compile(r"[\s/]+on[A-Za-z]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'=<>`]+))?", re.I)


def drop_event_handlers(html: str) -> str:
    """Remove every ``on*`` attribute from every start tag of ``html`` (the text of
    ``<script>`` and ``<style>`` elements is left as it is)."""

    def tags(text: str) -> str:
        return _START_TAG.sub(lambda m: _HANDLER.sub("", m.group(0)), text)

    out, last = [], 0
    for match in _RAW_TEXT.finditer(html):
        out.append(tags(html[last : match.start()]))
        out.append(tags(match.group(1)) + match.group(3) + match.group(4))
        last = match.end()
    out.append(tags(html[last:]))
    return "".join(out)


def standalone_html(html: bytes) -> bytes:
    """The viewer HTML with plotly.js and the figure loader inlined, for download: opened
    from disk (no portal to fetch ``/static/...`` from, no internet) its charts still draw.
    A ``<meta>`` Content-Security-Policy at the top of ``<head>`` allows exactly those two
    scripts (by hash) and nothing else.

    Only the two exact script elements ``render_html`` writes are replaced; the scripts'
    text holds no ``</script`` (checked), so it cannot end its element early. Adds about
    4.6 MB (plotly.min.js) to the file.
    """
    hashes = []
    for url in (PLOTLY_JS_URL, PLOTLY_LOADER_URL):
        tag = f'<script src="{url}"></script>'.encode()
        code = _inline_script(url)
        if code is not None and tag in html:
            html = html.replace(tag, b"<script>" + code + b"</script>", 1)
            hashes.append(_csp_hash(code))
    return _with_policy(html, hashes)


def _with_policy(html: bytes, hashes: list[str]) -> bytes:
    """``html`` with the download's ``<meta>`` Content-Security-Policy after its first
    ``<head>``, allowing the scripts of ``hashes`` and nothing else."""
    # Opened from disk the file has no server to send it a CSP: it carries its own, which
    # runs only these two scripts (no inline handler, nothing fetched from anywhere).
    policy = (
        "default-src 'none'; script-src " + " ".join(hashes) + "; style-src 'unsafe-inline'; "
        "img-src data:; font-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'"
    )
    meta = f'<meta http-equiv="Content-Security-Policy" content="{policy}">'.encode()
    return re.sub(rb"<head(?:\s[^>]*)?>", lambda m: m.group(0) + meta, html, count=1)


#: The parts of a page that ``standalone_chunks`` rewrites: ``<head>`` in its first bytes,
#: the footer's two script elements in its last bytes (a rendered page is far longer).
_EDGE_BYTES = 64 * 2**10


def standalone_chunks(page: BinaryIO, chunk_bytes: int = 2**20) -> Iterator[bytes]:
    """``standalone_html`` of the page in the seekable binary file ``page``, as chunks of
    about ``chunk_bytes``, holding at most two chunks in memory whatever the page's size.

    The ``<meta>`` policy goes after ``<head>`` in the first ``_EDGE_BYTES`` and the two
    script elements are inlined where they are last found in the final ``_EDGE_BYTES``
    (``render_html`` writes them at the end of the body); the policy names both scripts
    whether or not they are found (it allows only their exact text). A page too short to
    have a middle is rewritten whole by ``standalone_html``."""
    size = page.seek(0, io.SEEK_END)
    page.seek(0)
    if size <= 2 * _EDGE_BYTES:
        yield standalone_html(page.read())
        return
    codes = {url: _inline_script(url) for url in (PLOTLY_JS_URL, PLOTLY_LOADER_URL)}
    yield _with_policy(page.read(_EDGE_BYTES), [_csp_hash(c) for c in codes.values() if c])
    left = size - 2 * _EDGE_BYTES
    while left > 0:
        data = page.read(min(chunk_bytes, left))
        if not data:
            break
        left -= len(data)
        yield data
    tail = page.read()
    for url, code in codes.items():
        tag = f'<script src="{url}"></script>'.encode()
        at = tail.rfind(tag)
        if code is not None and at >= 0:
            tail = tail[:at] + b"<script>" + code + b"</script>" + tail[at + len(tag) :]
    yield tail


def _csp_hash(code: bytes) -> str:
    """The CSP source expression ('sha256-...') of an inline script's exact text."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(code).digest()).decode() + "'"


@lru_cache(maxsize=4)
def _inline_script(url: str) -> bytes | None:
    """The text of a static script, read once per process; None if it is not found.
    Raises ValueError if it holds ``</script`` (it could not be inlined safely)."""
    path = finders.find(url.removeprefix("/static/"))
    if path is None:
        return None
    code = Path(path).read_bytes()
    if b"</script" in code.lower():
        raise ValueError(f"{url} cannot be inlined: it contains </script")
    return code
