from django.urls import path

from clusters import emr_logs, ui_proxy, views

urlpatterns = [
    path("clusters/", views.cluster_list, name="clusters-list"),
    path("clusters/new/", views.cluster_create, name="clusters-new"),
    path("clusters/<int:pk>/", views.cluster_detail, name="clusters-detail"),
    path("clusters/<int:pk>/status/", views.cluster_status, name="clusters-status"),
    path("clusters/<int:pk>/extend/", views.cluster_extend, name="clusters-extend"),
    path("clusters/<int:pk>/terminate/", views.cluster_terminate, name="clusters-terminate"),
    path(
        "clusters/<int:pk>/rotate-token/", views.cluster_rotate_token, name="clusters-rotate-token"
    ),
    # The cluster's Spark UI through its master's reverse proxy (clusters.ui_proxy).
    path("clusters/<int:pk>/ui/", ui_proxy.cluster_ui, name="clusters-ui"),
    path(
        "clusters/<int:pk>/ui/static/<path:name>", ui_proxy.spark_static, name="clusters-ui-static"
    ),
    path(
        "clusters/<int:pk>/ui/proxy/<str:target>/static/<path:name>",
        ui_proxy.spark_static,
        name="clusters-ui-proxied-static",
    ),
    path("clusters/<int:pk>/ui/<path:path>", ui_proxy.cluster_ui, name="clusters-ui-path"),
    # EMR's logs of a cluster, read from S3 (clusters.emr_logs).
    path("clusters/<int:pk>/logs/", emr_logs.cluster_logs, name="clusters-logs"),
    path("clusters/<int:pk>/logs/<path:path>", emr_logs.cluster_log, name="clusters-log"),
    path("keys/", views.key_list, name="keys-list"),
    path("keys/new/", views.key_create, name="keys-new"),
    path("keys/<int:pk>/delete/", views.key_delete, name="keys-delete"),
]
