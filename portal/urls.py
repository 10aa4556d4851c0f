from django.contrib import admin
from django.urls import include, path

from api import pages as api_pages
from portal import metrics, views

admin.site.site_header = "Analysis Portal administration"
admin.site.site_title = "Analysis Portal admin"
admin.site.index_template = "admin/portal_index.html"

urlpatterns = [
    path("health/", views.health, name="health"),
    # Prometheus' default path; a bearer token, not a session (portal.metrics).
    path("metrics", metrics.metrics, name="metrics"),
    path("accounts/", include("allauth.urls")),
    # Before the admin's own URLs: its sign-in form has no rate limit (portal.views.admin_login).
    path("admin/login/", views.admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    # The API tokens page is a signed-in page, not part of the API (which answers 401s).
    path("tokens/", api_pages.token_list, name="tokens-list"),
    path("tokens/<int:pk>/revoke/", api_pages.token_revoke, name="tokens-revoke"),
    path("", include("clusters.urls")),
    path("", include("jobs.urls")),
    path("", include("quotas.urls")),
    path("", include("notify.urls")),
]
