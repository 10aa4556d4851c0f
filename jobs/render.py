"""Render an executed notebook to the HTML shown in the run viewer.

The HTML is built with nbconvert's HTMLExporter and the portal template in
``jobs/nbconvert_templates/portal``:

- every ``text/html``/markdown output is sanitised with nh3 (``sanitize_html=True`` with
  nh3 as the ``clean_html`` filter: bleach takes seconds on large outputs, nh3 milliseconds);
  JavaScript outputs are dropped;
- Plotly figures (``application/vnd.plotly.v1+json``, what ``PLOTLY_RENDERER=plotly_mimetype``
  stores) are embedded as inert JSON, each followed by a placeholder of its height, and
  drawn as they come into view by ``static/jobs/nb-plotly-loader.js`` with plotly.js
  served by the portal (the plotly package's, or its basic bundle from ``static/vendor``
  when the figures allow: ``plotly_js_url``), so nothing is fetched from the internet;
  the loader also posts the page's height to the portal page that frames it;
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
#: plotly.js's "basic" bundle (static/vendor/README.md), of the same version as the
#: plotly package's full one: a quarter of its size and of its start-up time (0.2-0.3 s
#: against 1.0-1.3 s on the 2-core machine), for pages whose figures need no more.
PLOTLY_BASIC_JS_URL = "/static/vendor/plotly-basic-4.1.1.min.js"
#: The trace types of the basic bundle (plotly.js lib/index-basic.js).
PLOTLY_BASIC_TRACES = frozenset({"scatter", "bar", "pie"})
PLOTLY_LOADER_URL = "/static/jobs/nb-plotly-loader.js"
#: Every script a rendered page may load.
VIEWER_SCRIPT_URLS = (PLOTLY_JS_URL, PLOTLY_BASIC_JS_URL, PLOTLY_LOADER_URL)


def plotly_json_safe(figure) -> str:
    """JSON of a figure that cannot end its ``<script>`` element or open a comment."""
    text = json.dumps(figure, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


#: Plotly's own height of a figure whose layout gives none (pixels).
PLOTLY_DEFAULT_HEIGHT = 450


def plotly_height(figure) -> int:
    """The height in pixels that plotly.js will draw ``figure`` at: its layout's height
    when that is a whole number of pixels, Plotly's default otherwise. The figure's
    placeholder has this height until it is drawn (``nb-plotly-loader.js`` draws figures
    as they come into view), so the page does not jump when it is."""
    layout = figure.get("layout") if isinstance(figure, dict) else None
    height = _dimension(layout.get("height")) if isinstance(layout, dict) else None
    # plotly.js draws no figure shorter than 10 px.
    return max(height, 10) if height is not None else PLOTLY_DEFAULT_HEIGHT


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
    exporter.register_filter("plotly_height", plotly_height)
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
        "plotly_js_url": plotly_js_url(nb),
        "plotly_loader_url": PLOTLY_LOADER_URL,
        "metadata": {"name": title or "Notebook"},
    }
    sanitize_dimensions(nb)
    html, _ = _exporter(template).from_notebook_node(nb, resources=resources)
    return drop_event_handlers(html)


def plotly_js_url(nb: nbformat.NotebookNode) -> str:
    """The plotly.js bundle that draws every figure of ``nb``: the basic one when all their
    traces (animation frames included) are of ``PLOTLY_BASIC_TRACES``, the full one
    otherwise, or when a figure is not the shape plotly.js expects."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            figure = output.get("data", {}).get("application/vnd.plotly.v1+json")
            if figure is None:
                continue
            if not isinstance(figure, dict):
                return PLOTLY_JS_URL
            frames = figure.get("frames") or []
            traces = [figure.get("data") or []]
            traces += [f.get("data") or [] if isinstance(f, dict) else None for f in frames]
            for data in traces:
                if not isinstance(data, list):
                    return PLOTLY_JS_URL
                for trace in data:
                    kind = trace.get("type", "scatter") if isinstance(trace, dict) else None
                    if kind not in PLOTLY_BASIC_TRACES:
                        return PLOTLY_JS_URL
    return PLOTLY_BASIC_JS_URL


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


#: The script elements of ``render_html``'s pages, by script: the first is what it
#: writes now (first in ``<head>``, plotly.js ``async``), the second what it wrote before
#: issue 14 (at the end of the page), which stored pages still hold. A page loads one of
#: the two plotly.js bundles.
_SCRIPT_TAGS = {
    PLOTLY_JS_URL: (
        f'<script async="" src="{PLOTLY_JS_URL}"></script>'.encode(),
        f'<script src="{PLOTLY_JS_URL}"></script>'.encode(),
    ),
    PLOTLY_BASIC_JS_URL: (f'<script async="" src="{PLOTLY_BASIC_JS_URL}"></script>'.encode(),),
    PLOTLY_LOADER_URL: (
        f'<script async="" src="{PLOTLY_LOADER_URL}"></script>'.encode(),
        f'<script src="{PLOTLY_LOADER_URL}"></script>'.encode(),
    ),
}


def _inline_scripts(html: bytes, codes: dict[str, bytes | None], last: bool) -> bytes:
    """``html`` with the first (``last``: the last) script element of each of ``codes``'
    URLs replaced by an inline ``<script>`` holding its code (``async`` means nothing to
    an inline script: it runs where it stands)."""
    for url, code in codes.items():
        if code is None:
            continue
        for tag in _SCRIPT_TAGS[url]:
            at = html.rfind(tag) if last else html.find(tag)
            if at >= 0:
                html = html[:at] + b"<script>" + code + b"</script>" + html[at + len(tag) :]
                break
    return html


def _codes() -> dict[str, bytes | None]:
    return {url: _inline_script(url) for url in VIEWER_SCRIPT_URLS}


def standalone_html(html: bytes) -> bytes:
    """The viewer HTML with plotly.js and the figure loader inlined, for download: opened
    from disk (no portal to fetch ``/static/...`` from, no internet) its charts still draw.
    A ``<meta>`` Content-Security-Policy at the top of ``<head>`` allows exactly the
    viewer's scripts (``VIEWER_SCRIPT_URLS``, by hash) and nothing else.

    Only the exact script elements ``render_html`` writes (or wrote: ``_SCRIPT_TAGS``) are
    replaced; the scripts' text holds no ``</script`` (checked), so it cannot end its
    element early. Adds plotly.js to the file: 1.2 MB (basic bundle) or 4.8 MB.
    """
    codes = _codes()
    page = _inline_scripts(html, codes, last=False)
    return _with_policy(page, [_csp_hash(c) for c in codes.values() if c])


def _with_policy(html: bytes, hashes: list[str]) -> bytes:
    """``html`` with the download's ``<meta>`` Content-Security-Policy after its first
    ``<head>``, allowing the scripts of ``hashes`` and nothing else."""
    # Opened from disk the file has no server to send it a CSP: it carries its own, which
    # runs only the viewer's own scripts (no inline handler, nothing fetched from anywhere).
    policy = (
        "default-src 'none'; script-src " + " ".join(hashes) + "; style-src 'unsafe-inline'; "
        "img-src data:; font-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'"
    )
    meta = f'<meta http-equiv="Content-Security-Policy" content="{policy}">'.encode()
    return re.sub(rb"<head(?:\s[^>]*)?>", lambda m: m.group(0) + meta, html, count=1)


#: The parts of a page that ``standalone_chunks`` rewrites: ``<head>`` and its script
#: elements in its first bytes, or (pages rendered before issue 14) the footer's in its
#: last bytes (a rendered page is far longer).
_EDGE_BYTES = 64 * 2**10


def standalone_chunks(page: BinaryIO, chunk_bytes: int = 2**20) -> Iterator[bytes]:
    """``standalone_html`` of the page in the seekable binary file ``page``, as chunks of
    about ``chunk_bytes``, holding at most two chunks in memory whatever the page's size.

    The ``<meta>`` policy goes after ``<head>`` in the first ``_EDGE_BYTES``, and the
    script elements are inlined there (``render_html`` writes them first in ``<head>``);
    a script not found there is inlined where it is last found in the final
    ``_EDGE_BYTES`` (pages rendered before issue 14 have them at the end of the body). The
    policy names every viewer script whether or not it is found (it allows only their
    exact text). A page too short to have a middle is rewritten whole by ``standalone_html``."""
    size = page.seek(0, io.SEEK_END)
    page.seek(0)
    if size <= 2 * _EDGE_BYTES:
        yield standalone_html(page.read())
        return
    codes = _codes()
    head = page.read(_EDGE_BYTES)
    yield _with_policy(
        _inline_scripts(head, codes, last=False), [_csp_hash(c) for c in codes.values() if c]
    )
    # A script inlined in the head is not looked for again in the tail.
    in_tail = {
        url: code
        for url, code in codes.items()
        if not any(tag in head for tag in _SCRIPT_TAGS[url])
    }
    left = size - 2 * _EDGE_BYTES
    while left > 0:
        data = page.read(min(chunk_bytes, left))
        if not data:
            break
        left -= len(data)
        yield data
    yield _inline_scripts(page.read(), in_tail, last=True)


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
