"""The user-content origin: where untrusted notebook HTML is served, and nothing else.

Requests whose host is ``USERCONTENT_HOST`` are answered by ``UserContentMiddleware``
before WhiteNoise, the session, authentication and CSRF middleware run, so this origin can
neither set nor read a cookie. It serves only ``/content/<token>/`` and the static files
the viewer page loads (plotly.js, full or basic, and the figure loader). The token is a
signature made by the portal after its own permission check (``content_url``), naming one
stored file of one run's current attempt, valid for at most two minutes. Every response carries
the sandbox CSP (README "Security model"); anything else on this host redirects to the portal.
"""

import os

from django.conf import settings
from django.contrib.staticfiles import finders
from django.core import signing
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponse, HttpResponseNotFound, HttpResponseRedirect

from jobs import compression

SALT = "portal.usercontent"
PREFIX = "/content/"


def content_url(storage_key: str, run_id: int, attempt: int) -> str:
    """An absolute, signed URL on the user-content origin for one stored HTML file of run
    ``run_id``'s attempt ``attempt`` (its output or its partial output).

    Valid for ``USERCONTENT_URL_MAX_AGE`` seconds (at most 120), and only while that
    attempt is the run's current one and the file is still its output. The caller must
    have checked that the viewer may see the run.
    """
    token = signing.dumps({"k": storage_key, "r": run_id, "a": attempt}, salt=SALT, compress=True)
    return f"{settings.USERCONTENT_ORIGIN}{PREFIX}{token}/"


def comparison_url(storage_key: str, a_id: int, a_attempt: int, b_id: int, b_attempt: int) -> str:
    """An absolute, signed URL on the user-content origin for the stored page comparing
    runs ``a_id`` and ``b_id`` at those attempts (``jobs.compare``). Valid as long as a
    ``content_url``, and only while both attempts are current and have their output. The
    caller must have checked that the viewer may see both runs."""
    claims = {"k": storage_key, "c": [a_id, a_attempt, b_id, b_attempt]}
    token = signing.dumps(claims, salt=SALT, compress=True)
    return f"{settings.USERCONTENT_ORIGIN}{PREFIX}{token}/"


def content_security_policy() -> str:
    origin = settings.USERCONTENT_ORIGIN
    return "; ".join(
        [
            "sandbox allow-scripts",
            "default-src 'none'",
            f"script-src 'self' {origin}",
            f"style-src 'self' {origin} 'unsafe-inline'",
            f"img-src 'self' {origin} data: blob:",
            f"font-src 'self' {origin} data:",
            "connect-src 'none'",
            "form-action 'none'",
            "base-uri 'none'",
            f"frame-ancestors {settings.PORTAL_ORIGIN}",
        ]
    )


def _harden(response):
    response["Content-Security-Policy"] = content_security_policy()
    response["X-Content-Type-Options"] = "nosniff"
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "private, no-store"
    response["Cross-Origin-Resource-Policy"] = "cross-origin"
    response.cookies.clear()
    return response


def serve(request):
    """Serve the signed file, or 404 for a bad, expired or unknown token, or a file that
    is no longer its run's current output (a newer attempt, a deleted run)."""
    from jobs.models import Run  # this middleware module loads before the app registry

    if request.method not in ("GET", "HEAD"):
        return _harden(HttpResponse(status=405))
    token = request.path[len(PREFIX) :].strip("/")
    try:
        claims = signing.loads(token, salt=SALT, max_age=settings.USERCONTENT_URL_MAX_AGE)
        if "c" in claims:
            return _serve_comparison(claims["k"], [int(n) for n in claims["c"]])
        key, run_id, attempt = claims["k"], int(claims["r"]), int(claims["a"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return _harden(
            HttpResponseNotFound(
                "This link is invalid or has expired. Reload the portal page.",
                content_type="text/plain",
            )
        )
    current = (
        Run.objects.filter(pk=run_id, attempt=attempt)
        .values_list("html_key", "partial_key", "html_gzip_key")
        .first()
    )
    if (
        not key.endswith(".html")
        or current is None
        or key not in current[:2]
        or not default_storage.exists(key)
    ):
        return _harden(HttpResponseNotFound("Not found.", content_type="text/plain"))
    # The final HTML has a gzip copy (jobs.compression); the live partial HTML has none.
    sent, encoded = compression.choose(request, key, current[2] if key == current[0] else "")
    response = FileResponse(
        default_storage.open(sent, "rb"),
        content_type="text/html; charset=utf-8",
        filename=os.path.basename(key),
    )
    return _harden(compression.mark(response, encoded))


def _serve_comparison(key: str, ids: list[int]):
    """Serve the stored comparison page ``key`` of ``comparison_url``, or 404 when it is
    no longer current (``jobs.compare.is_current_comparison``)."""
    from jobs.compare import is_current_comparison  # loads models: see serve()

    a_id, a_attempt, b_id, b_attempt = ids
    if not is_current_comparison(key, a_id, a_attempt, b_id, b_attempt) or not (
        default_storage.exists(key)
    ):
        return _harden(HttpResponseNotFound("Not found.", content_type="text/plain"))
    response = FileResponse(
        default_storage.open(key, "rb"), content_type="text/html; charset=utf-8"
    )
    return _harden(response)


def viewer_static_paths() -> set[str]:
    """The URL paths of the only static files this origin serves: what the viewer loads."""
    from jobs.render import VIEWER_SCRIPT_URLS  # loads models: see serve()

    return set(VIEWER_SCRIPT_URLS)


def serve_static(request):
    """Serve one of the viewer's own static files, with the sandbox CSP; cacheable (they
    are public and change only with a release)."""
    if request.method not in ("GET", "HEAD"):
        return _harden(HttpResponse(status=405))
    name = request.path.removeprefix("/" + settings.STATIC_URL.strip("/") + "/")
    collected = os.path.join(settings.STATIC_ROOT, name)
    path = collected if os.path.isfile(collected) else finders.find(name)
    if not path:
        return _harden(HttpResponseNotFound("Not found.", content_type="text/plain"))
    # collectstatic with STATIC_MANIFEST (WhiteNoise) writes a gzip copy next to each file:
    # plotly.js is 4.6 MB, 1.4 MB gzipped.
    packed = path + ".gz" if path == collected and os.path.isfile(path + ".gz") else ""
    sent, encoded = compression.choose(request, path, packed)
    response = _harden(
        FileResponse(open(sent, "rb"), content_type="text/javascript; charset=utf-8")
    )
    compression.mark(response, encoded)
    response["Cache-Control"] = "public, max-age=86400"
    return response


class UserContentMiddleware:
    """Route requests for the user-content host to ``serve`` and nowhere else."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        host = request.get_host().rsplit(":", 1)[0] if request.get_host() else ""
        if host != settings.USERCONTENT_HOST:
            return self.get_response(request)
        if request.path.startswith(PREFIX):
            return serve(request)
        if request.path in viewer_static_paths():
            return serve_static(request)
        return _harden(HttpResponseRedirect(settings.PORTAL_ORIGIN + "/"))
