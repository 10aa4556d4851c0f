from django.urls import path

from clusters import views

urlpatterns = [
    path("clusters/", views.cluster_list, name="clusters-list"),
    path("clusters/new/", views.cluster_create, name="clusters-new"),
    path("clusters/<int:pk>/", views.cluster_detail, name="clusters-detail"),
    path("clusters/<int:pk>/status/", views.cluster_status, name="clusters-status"),
    path("clusters/<int:pk>/extend/", views.cluster_extend, name="clusters-extend"),
    path("clusters/<int:pk>/terminate/", views.cluster_terminate, name="clusters-terminate"),
    path("keys/", views.key_list, name="keys-list"),
    path("keys/new/", views.key_create, name="keys-new"),
    path("keys/<int:pk>/delete/", views.key_delete, name="keys-delete"),
]
