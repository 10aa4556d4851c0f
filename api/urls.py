"""URLs of the API under /api/: the resources, /api/schema/ (OpenAPI 3) and /api/docs/
(Swagger UI, Redoc at /api/docs/redoc/), served offline from drf-spectacular-sidecar.

Every API view is exempt from the portal's sign-in redirect (LoginRequiredMiddleware):
the API answers 401 in JSON itself.
"""

from django.contrib.auth.decorators import login_not_required
from django.urls import URLPattern, URLResolver, path, re_path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)
from rest_framework.routers import SimpleRouter

from api import clusters, compare, groups, jobs, views

router = SimpleRouter(use_regex_path=False)
for prefix, viewset, basename in [*jobs.ROUTES, *clusters.ROUTES, *groups.ROUTES]:
    router.register(prefix, viewset, basename=basename)


def _exempt(patterns: list[URLPattern | URLResolver]) -> list[URLPattern | URLResolver]:
    for pattern in patterns:
        if isinstance(pattern, URLPattern):
            pattern.callback = login_not_required(pattern.callback)
    return patterns


urlpatterns = _exempt(
    [
        path("me/", views.me, name="api-me"),
        path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
        path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
        path("docs/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
        *jobs.URLS,
        *compare.URLS,
        *groups.URLS,
        *router.urls,
        # Last: any other path under /api/ (e.g. /api/runs/-1/) is a JSON 404, not a page.
        re_path(r"^(?P<rest>.*)$", views.not_found, name="api-not-found"),
    ]
)
