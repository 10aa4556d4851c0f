"""Answers for htmx requests."""

from django.http import HttpResponse


def refresh_page() -> HttpResponse:
    """204 with ``HX-Refresh``: htmx reloads the whole page (a live block saw a change it
    cannot render in place, e.g. a run that ended and now has an output frame)."""
    response = HttpResponse(status=204)
    response["HX-Refresh"] = "true"
    return response
