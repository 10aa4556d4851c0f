"""The Spark UI of a local cluster in the browser, through the portal: a reverse proxy.

A local cluster runs Spark's own reverse-proxy mode (``spark.ui.reverseProxy``, set by
``clusters.backends.local``): its master's web UI serves the master's pages and proxies
those of its workers and applications under ``/proxy/<id>/``, and every link Spark writes
starts with ``spark.ui.reverseProxyUrl``, the cluster's portal path ``/clusters/<id>/ui``
(``reverse_proxy_url``). This view forwards requests under that path to the master's UI
address recorded for the cluster, and to nothing else; Spark rewrites its own links.

What it guarantees (docs/security.md, "The Spark UI"):

- Only the cluster's owner, signed in, reaches it. Others, staff included, get 404: the
  pages carry markup the cluster's user controls (job descriptions, application names,
  logs), and staff must not meet it on the portal origin.
- Only GET and HEAD (the UI is read-only: its kill links are off).
- The upstream is always ``http://<recorded UI host>:<recorded UI port>``; paths that
  could mean another place (a scheme, ``//``, ``..``, backslashes, control characters)
  are refused with 400, redirects are not followed, and a ``Location`` that leaves the
  cluster's UI is dropped.
- No request header is forwarded but an allow-list (no Cookie, no Authorization, no
  X-Forwarded-*), and no response header comes back but an allow-list (no Set-Cookie).
- Every answer carries ``UI_POLICY``, a CSP whose ``sandbox`` gives the page an opaque
  origin: Spark's inline scripts run, but cannot read or use the portal's cookies.

A sandboxed page's own requests (scripts, styles, images, Spark's REST API) come from
that opaque origin, so the browser sends them without the portal's cookies. Spark's
static files (``.../static/...``: jQuery, Bootstrap, Spark's scripts) are therefore
served by ``spark_static`` without sign-in, from the pyspark installation's jars (the
same files for everyone, never the cluster's answer). Pages that fetch their data from
Spark's REST API by script (the Executors tab, a stage's task table, the log viewer's
"load more") show no data: the price of the sandbox (docs/security.md).
"""

from __future__ import annotations

import functools
import logging
import mimetypes
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pyspark
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import User
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe

from clusters.models import Cluster

log = logging.getLogger(__name__)

#: The CSP of every proxied answer, whatever CSP Spark sends (Spark 4's own, with nonces,
#: is kept as a second policy: a browser enforces both). ``sandbox`` without
#: ``allow-same-origin`` gives the page an opaque origin, so its scripts (Spark's, or
#: markup a user planted) can neither read the portal's cookies nor make requests that
#: carry them. ``allow-forms``: Spark's tables page through GET forms; ``allow-popups``:
#: some links open new tabs. Inline scripts and styles are allowed here because Spark's
#: pages need them; the sandbox, not this list, is what keeps them from the portal.
UI_POLICY = (
    "sandbox allow-scripts allow-forms allow-popups; "
    "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

#: Request headers passed on to Spark; everything else (Cookie, Authorization, the
#: client's address) stays here.
FORWARDED_REQUEST_HEADERS = ("Accept", "Accept-Language", "If-Modified-Since", "If-None-Match")

#: Response headers passed back from Spark; everything else (Set-Cookie, Spark's
#: X-Frame-Options, CORS headers) is dropped. Location is checked (``location_for``).
FORWARDED_RESPONSE_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Content-Disposition",
    "Cache-Control",
    "Expires",
    "Last-Modified",
    "ETag",
)

#: Patience with the cluster's UI, in seconds: connecting on loopback is instant or
#: refused; a page (a long log, a big stage) may take a while to start.
TIMEOUT = httpx.Timeout(30.0, connect=5.0)

#: Where Spark's web UI keeps its static files, by URL prefix under ``static/``: the SQL
#: tab's under ``static/sql/``, the rest from spark-core.
_STATIC_ROOTS = (
    ("sql/", "spark-sql_", "org/apache/spark/sql/execution/ui/static/"),
    ("", "spark-core_", "org/apache/spark/ui/static/"),
)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PathRefused(ValueError):
    """A path under a cluster's UI prefix that could mean another place."""


def reverse_proxy_url(cluster_id: int) -> str:
    """The portal path of the cluster's Spark UI without its final slash, e.g.
    ``/clusters/7/ui``: Spark's ``spark.ui.reverseProxyUrl`` (a server-relative URL, which
    Spark allows since 3.1, so the portal's host need not be known to the cluster)."""
    return reverse("clusters-ui", args=[cluster_id]).rstrip("/")


def check_path(path: str) -> str:
    """``path`` (the decoded part after ``/clusters/<id>/ui/``) as the upstream path,
    with its leading slash.

    Raises PathRefused for anything that is not a plain relative path: a scheme
    (``http:...``), an empty segment (``//host``), a ``.`` or ``..`` segment, a backslash
    or a control character. The upstream's host and port never come from the path (see
    ``upstream_url``); this refuses what a confused browser, Spark or log reader could
    otherwise resolve elsewhere."""
    if _SCHEME.match(path) or "\\" in path or _CONTROL.search(path):
        raise PathRefused(path)
    segments = path.split("/") if path else []
    if segments and segments[-1] == "":  # a trailing slash
        segments.pop()
    if any(s in ("", ".", "..") for s in segments):
        raise PathRefused(path)
    return "/" + path


def upstream_url(cluster: Cluster, path: str, query: str) -> httpx.URL:
    """The URL on the cluster's master UI for ``path`` (from ``check_path``) and the raw
    query string ``query``. Scheme, host and port come from the cluster's recorded
    ``ui_url`` only. Raises Http404 when the cluster records no UI address."""
    base = urlsplit(cluster.ui_url)
    if base.scheme != "http" or not base.hostname or not base.port:
        raise Http404("This cluster has no Spark UI.")
    url = httpx.URL(scheme="http", host=base.hostname, port=base.port, path=path)
    return url.copy_with(query=query.encode()) if query else url


def location_for(location: str, upstream: httpx.URL, prefix: str) -> str | None:
    """Where the browser should go for Spark's redirect to ``location``, or None if it
    leaves the cluster's UI.

    Spark answers redirects with absolute URLs on the address it was asked at (the
    master's loopback UI): those become the same path under ``prefix``. Server-relative
    ones already under ``prefix`` (Spark's reverse-proxy mode wrote them) stay as they are;
    other server-relative ones (the History Server's) are the UI's own paths, and go under
    ``prefix`` too. Any other host or port, and any path ``check_path`` refuses, is
    refused."""
    target = urlsplit(location)
    query = f"?{target.query}" if target.query else ""
    if target.scheme or target.netloc:
        same = (
            target.scheme == "http"
            and target.hostname == upstream.host
            and target.port == upstream.port
        )
        if not same:
            return None
        try:
            return prefix + check_path(target.path.removeprefix("/")) + query
        except PathRefused:
            return None
    if target.path == prefix or target.path.startswith(prefix + "/"):
        return location
    if target.path.startswith("/"):
        try:
            return prefix + check_path(target.path.removeprefix("/")) + query
        except PathRefused:
            return None
    return None


class AuthenticatedRequest(HttpRequest):
    """A request of a signed-in user: LoginRequiredMiddleware admits no other here."""

    user: User


def cluster_for_owner(user: User, pk: int) -> Cluster:
    """The live local cluster ``pk`` if ``user`` owns it, else Http404 (staff too: see
    the module docstring)."""
    return get_object_or_404(
        Cluster.objects.filter(
            owner=user, backend=Cluster.Backend.LOCAL, state__in=Cluster.LIVE_STATES
        ),
        pk=pk,
    )


def refused(message: str, status: int) -> HttpResponse:
    """A plain-text refusal under ``UI_POLICY``."""
    response = HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
    response["Content-Security-Policy"] = UI_POLICY
    return response


@require_safe
def cluster_ui(request: AuthenticatedRequest, pk: int, path: str = "") -> HttpResponseBase:
    """The page ``path`` of cluster ``pk``'s Spark UI, streamed from its master.

    404 for anyone but the owner, for a cluster that is not live and for one without a
    UI address; 400 for a path ``check_path`` refuses; 502 when the UI does not answer.
    Accepted race: between a cluster's processes exiting and the next sync marking it
    FAILED (``CLUSTER_SYNC_INTERVAL``), another cluster could take the freed port; its
    pages would then show here, to this owner, until the sync."""
    cluster = cluster_for_owner(request.user, pk)
    try:
        upstream_path = check_path(path)
    except PathRefused:
        return refused("This path does not lead into the cluster's Spark UI.", 400)
    url = upstream_url(cluster, upstream_path, request.META.get("QUERY_STRING", ""))
    return forward(request, url, reverse_proxy_url(cluster.pk), what="cluster", ident=cluster.pk)


def forward(
    request: HttpRequest,
    url: httpx.URL,
    prefix: str,
    *,
    what: str,
    ident: object,
    transport: httpx.BaseTransport | None = None,
    forwarded_context: bool = False,
) -> HttpResponseBase:
    """``request`` answered by the Spark UI at ``url`` (already checked), streamed back
    under the guarantees of the module docstring; ``prefix`` is the portal path the UI
    lives under (a ``Location`` is kept only within it). ``transport`` reaches the UI
    another way than TCP (a unix socket); ``forwarded_context`` sends ``prefix`` as
    ``X-Forwarded-Context``, with which a Spark UI not in reverse-proxy mode writes its
    links under ``prefix`` (Spark's ``UIUtils.uiRoot``). ``what`` and ``ident`` name the
    UI in the log. 502 when the UI does not answer."""
    headers = {h: request.headers[h] for h in FORWARDED_REQUEST_HEADERS if h in request.headers}
    # Uncompressed: the body goes back byte for byte, and loopback needs no compression.
    headers["Accept-Encoding"] = "identity"
    if forwarded_context:
        headers["X-Forwarded-Context"] = prefix
    # trust_env=False: no HTTP(S)_PROXY variable may send this request anywhere else.
    client = httpx.Client(
        trust_env=False, follow_redirects=False, timeout=TIMEOUT, transport=transport
    )
    try:
        upstream = client.send(
            client.build_request(request.method or "GET", url, headers=headers), stream=True
        )
    except httpx.HTTPError as exc:
        client.close()
        log.info("spark ui unreachable %s=%s: %s", what, ident, exc)
        return refused("This Spark UI does not answer.", 502)

    def body() -> Iterator[bytes]:
        try:
            yield from upstream.iter_raw()
        finally:
            upstream.close()
            client.close()

    response = StreamingHttpResponse(body(), status=upstream.status_code)
    for name in FORWARDED_RESPONSE_HEADERS:
        if name in upstream.headers:
            response[name] = upstream.headers[name]
    if "Location" in upstream.headers:
        target = location_for(upstream.headers["Location"], url, prefix)
        if target is not None:
            response["Location"] = target
    policies = [UI_POLICY]
    if "Content-Security-Policy" in upstream.headers:
        policies.append(upstream.headers["Content-Security-Policy"])
    response["Content-Security-Policy"] = ", ".join(policies)
    # Nothing from the UI's pages needs to know where the owner came from.
    response["Referrer-Policy"] = "no-referrer"
    return response


@functools.cache
def _static_files() -> dict[str, bytes]:
    """Spark's web UI static files from the installed pyspark's jars: ``{name: bytes}``,
    names as under a UI's ``static/`` (``webui.js``, ``sql/spark-sql-viz.js``). Read once
    per process (about 4 MB)."""
    jars = Path(pyspark.__file__).resolve().parent / "jars"
    files: dict[str, bytes] = {}
    for url_prefix, jar_prefix, root in _STATIC_ROOTS:
        for jar in sorted(jars.glob(f"{jar_prefix}*.jar")):
            with zipfile.ZipFile(jar) as archive:
                for entry in archive.namelist():
                    name = entry.removeprefix(root)
                    if entry.startswith(root) and name and not entry.endswith("/"):
                        files.setdefault(url_prefix + name, archive.read(entry))
    return files


@login_not_required
@require_safe
@cache_control(public=True, max_age=3600)
def spark_static(request: HttpRequest, pk: int, name: str, target: str = "") -> HttpResponse:
    """Spark's web UI static file ``name`` (``webui.js``, ``sql/spark-sql-viz.css``), for
    the pages of any cluster's master (``target`` empty) or proxied worker or application
    (``target`` its id); 404 for a name Spark has not.

    Served without sign-in and with ``Access-Control-Allow-Origin: *``: a sandboxed Spark
    page (``UI_POLICY``) asks for them from an opaque origin, without cookies, and some in
    CORS mode (module scripts, templates fetched by script). They are the installed
    Spark's own public files, identical for every cluster and user, and say nothing about
    cluster ``pk`` (which need not exist): nothing reaches a cluster here."""
    content = _static_files().get(name)
    if content is None:
        raise Http404("Spark has no such file.")
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    response = HttpResponse(content, content_type=content_type)
    response["Access-Control-Allow-Origin"] = "*"
    response["Content-Security-Policy"] = UI_POLICY
    return response
