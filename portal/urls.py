from django.contrib import admin
from django.urls import include, path

from portal import views

admin.site.site_header = "Analysis Portal administration"
admin.site.site_title = "Analysis Portal admin"
admin.site.index_template = "admin/portal_index.html"

urlpatterns = [
    path("health/", views.health, name="health"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("", include("clusters.urls")),
    path("", include("jobs.urls")),
]
