from django.contrib import admin
from django.urls import include, path

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
    path("", include("clusters.urls")),
    path("", include("jobs.urls")),
    path("", include("quotas.urls")),
]
