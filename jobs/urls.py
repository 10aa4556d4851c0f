from django.urls import path

from clusters import ui_proxy
from jobs import compare_views, group_views, spark_ui, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("jobs/new/", views.job_create, name="jobs-new"),
    path("jobs/inspect/", views.job_inspect, name="jobs-inspect"),
    path("jobs/schedule-preview/", views.schedule_preview, name="jobs-schedule-preview"),
    path("jobs/<int:pk>/", views.job_detail, name="jobs-detail"),
    path("jobs/<int:pk>/edit/", views.job_edit, name="jobs-edit"),
    path("jobs/<int:pk>/delete/", views.job_delete, name="jobs-delete"),
    path("jobs/<int:pk>/run/", views.job_run, name="jobs-run"),
    path("jobs/<int:pk>/pause/", views.job_pause, name="jobs-pause"),
    path("jobs/<int:pk>/resume/", views.job_resume, name="jobs-resume"),
    path("jobs/<int:pk>/upload/", views.job_upload, name="jobs-upload"),
    # Continuous jobs (jobs.services.streams).
    path("jobs/<int:pk>/stop/", views.job_stop, name="jobs-stop"),
    path(
        "jobs/<int:pk>/reset-checkpoint/",
        views.job_reset_checkpoint,
        name="jobs-reset-checkpoint",
    ),
    path(
        "jobs/<int:pk>/versions/<int:number>/download/",
        views.version_download,
        name="jobs-version-download",
    ),
    path("runs/<int:pk>/", views.run_detail, name="runs-detail"),
    # Two runs side by side (jobs.compare_views); the job page's picker redirects there.
    path("runs/<int:pk>/compare/<int:other>/", compare_views.run_compare, name="runs-compare"),
    path("jobs/<int:pk>/compare/", compare_views.job_compare_pick, name="jobs-compare"),
    path("runs/<int:pk>/progress/", views.run_progress, name="runs-progress"),
    path("runs/<int:pk>/partial/", views.run_partial, name="runs-partial"),
    path(
        "runs/<int:pk>/stream-progress/",
        views.run_stream_progress,
        name="runs-stream-progress",
    ),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="runs-cancel"),
    path("runs/<int:pk>/rerun/", views.run_rerun, name="runs-rerun"),
    path("runs/<int:pk>/stop/", views.run_stop, name="runs-stop"),
    path("runs/<int:pk>/download/<str:kind>/", views.run_download, name="runs-download"),
    path("runs/<int:pk>/logs/", views.run_logs, name="runs-logs"),
    path("runs/<int:pk>/logs/<str:name>", views.run_log_download, name="runs-log-download"),
    # The run's Spark UI while it runs, and its history after (jobs.spark_ui).
    path("runs/<int:pk>/ui/", spark_ui.run_ui, name="runs-ui"),
    path("runs/<int:pk>/ui/static/<path:name>", ui_proxy.spark_static, name="runs-ui-static"),
    path("runs/<int:pk>/ui/<path:path>", spark_ui.run_ui, name="runs-ui-path"),
    path("runs/<int:pk>/history/", spark_ui.run_history, name="runs-history"),
    path(
        "runs/<int:pk>/history/static/<path:name>",
        ui_proxy.spark_static,
        name="runs-history-static",
    ),
    path("runs/<int:pk>/history/<path:path>", spark_ui.run_history, name="runs-history-path"),
    # Backfills and sweeps (jobs.group_views).
    path("jobs/<int:pk>/backfill/", group_views.backfill_new, name="jobs-backfill"),
    path("jobs/<int:pk>/sweep/", group_views.sweep_new, name="jobs-sweep"),
    path("groups/<int:pk>/", group_views.group_detail, name="groups-detail"),
    path("groups/<int:pk>/cancel/", group_views.group_cancel, name="groups-cancel"),
    path("groups/<int:pk>/retry/", group_views.group_retry, name="groups-retry"),
    path("ops/", views.operations, name="operations"),
]
