from django.urls import path

from notify import views

urlpatterns = [
    path("jobs/<int:pk>/targets/new/", views.target_new, name="targets-new"),
    path("targets/<int:pk>/edit/", views.target_edit, name="targets-edit"),
    path("targets/<int:pk>/delete/", views.target_delete, name="targets-delete"),
    path("targets/<int:pk>/secret/", views.target_secret, name="targets-secret"),
]
