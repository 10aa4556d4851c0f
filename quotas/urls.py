from django.urls import path

from quotas import views

urlpatterns = [
    path("usage/", views.usage_page, name="usage"),
]
