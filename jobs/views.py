"""Views of scheduled notebooks: parse a form, call a service, redirect.

User-owned objects are fetched only through the scoped helpers below, which answer 404
for objects the user may not see (never 403: it would leak their existence).
"""

import datetime as dt
import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import OuterRef, Subquery
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from clusters import services as cluster_services
from clusters.models import Cluster
from jobs import compare, logs, notebooks, schedule, services, spark_ui
from jobs.downloads import attachment
from jobs.forms import InspectForm, JobForm, ParametersForm, UploadVersionForm
from jobs.models import Job, Run
from jobs.render import standalone_chunks
from jobs.services import streams
from portal.celery import app
from portal.htmx import refresh_page
from portal.sandbox import FAILURE_PREFIX as SANDBOX_FAILURE_PREFIX
from portal.usercontent import content_url
from quotas import limits
from quotas.limits import LimitExceeded

# --- Scoped fetch helpers ----------------------------------------------------------------


def job_for_viewer(user, pk) -> Job:
    """The job ``pk`` if ``user`` may see it, else Http404."""
    return get_object_or_404(Job.objects.visible_to(user), pk=pk)


def job_for_owner(user, pk) -> Job:
    """The job ``pk`` if ``user`` may change it (owner or staff), else Http404."""
    return get_object_or_404(Job.objects.owned_by(user), pk=pk)


def run_for_viewer(user, pk) -> Run:
    """The run ``pk`` if ``user`` may see its job, else Http404."""
    return get_object_or_404(
        Run.objects.visible_to(user).select_related("job", "version", "job__owner"), pk=pk
    )


def run_for_owner(user, pk) -> Run:
    """The run ``pk`` if ``user`` may act on its job (owner or staff), else Http404."""
    return get_object_or_404(Run.objects.owned_by(user).select_related("job", "version"), pk=pk)


# --- Dashboard ------------------------------------------------------------------------------


@require_GET
def dashboard(request):
    last_run = Run.objects.filter(job=OuterRef("pk")).order_by("-created_at", "-id")
    my_jobs = (
        Job.objects.filter(owner=request.user)
        .annotate(
            last_state=Subquery(last_run.values("state")[:1]),
            last_run_id=Subquery(last_run.values("pk")[:1]),
        )
        .order_by("name")
    )
    shared = (
        Job.objects.filter(visibility=Job.Visibility.SIGNED_IN)
        .exclude(owner=request.user)
        .select_related("owner")
        .order_by("name")[:100]
    )
    recent = (
        Run.objects.visible_to(request.user)
        .select_related("job")
        .order_by("-created_at", "-id")[:20]
    )
    return render(
        request,
        "jobs/dashboard.html",
        {"jobs": my_jobs, "shared_jobs": shared, "recent_runs": recent},
    )


# --- Jobs ------------------------------------------------------------------------------------


def _job_form_context(form, job=None):
    if form.params_form is not None and (form.schema or form.free or form.is_bound):
        params = form.params_form
    elif job is not None:
        params = ParametersForm(form.schema, values=job.parameters, free=form.free)
    else:
        params = None  # no notebook chosen yet
    return {
        "form": form,
        "job": job,
        "params_form": params,
        "timezones": schedule.timezone_choices(),
    }


@require_http_methods(["GET", "POST"])
def job_create(request):
    if request.method == "POST":
        form = JobForm(request.POST, request.FILES, user=request.user)
        if form.is_valid():
            upload = form.cleaned_data["notebook"]
            try:
                job = services.create_job(request.user, form.save(), upload.parsed, upload.name)
            except LimitExceeded as exc:
                form.add_error(exc.field, exc.message)
            except (
                notebooks.NotebookError,
                notebooks.ParameterError,
                schedule.ScheduleError,
            ) as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Job “{job.name}” created.")
                return redirect(job)
    else:
        form = JobForm(initial={"notify_on_failure": request.user.email}, user=request.user)
    return render(request, "jobs/job_form.html", _job_form_context(form))


@require_POST
def job_inspect(request):
    """htmx: read an uploaded notebook's parameters and answer the typed fields (a fragment)."""
    try:
        limits.throttle(request.user, "inspect")
    except LimitExceeded as exc:
        context = {"params_form": None, "inspect_error": exc.message}
        return render(request, "jobs/_parameters.html", context)
    form = InspectForm(request.POST, request.FILES)
    error, params_form = "", None
    if form.is_valid():
        upload = form.cleaned_data["notebook"]
        params_form = ParametersForm(
            upload.parsed.parameter_schema, free=not upload.parsed.has_parameters_cell
        )
    else:
        error = str(form.errors["notebook"][0])
    return render(
        request, "jobs/_parameters.html", {"params_form": params_form, "inspect_error": error}
    )


@require_GET
def schedule_preview(request):
    """htmx: the schedule in words and its next 5 slots, for the values in the form."""
    form = JobForm(request.GET, user=request.user)
    form.is_valid()
    cron = form.cleaned_data.get("cron")
    tz = form.cleaned_data.get("timezone")
    context: dict[str, Any] = {"error": "", "words": "", "slots": []}
    errors = [
        e
        for f in ("schedule_kind", "at_time", "minute", "weekday", "day", "cron", "timezone")
        for e in form.errors.get(f, [])
    ]
    if errors:
        context["error"] = errors[0]
    elif cron == "":
        context["words"] = "Manual only: runs start with “Run now”."
    elif cron and tz:
        context["words"] = schedule.describe(cron, tz)
        zone = schedule.validate_timezone(tz)
        context["slots"] = [
            (s.astimezone(zone), s) for s in schedule.upcoming_slots(cron, tz, timezone.now(), 5)
        ]
        context["tz"] = zone
    return render(request, "jobs/_schedule_preview.html", context)


@require_GET
def job_detail(request, pk):
    job = job_for_viewer(request.user, pk)
    runs = Paginator(
        job.runs.select_related("version").order_by("-created_at", "-id"), 50
    ).get_page(request.GET.get("page"))
    chart_runs = list(
        job.runs.filter(started_at__isnull=False)
        .order_by("-created_at")[:200]
        .values("pk", "state", "started_at", "finished_at")
    )
    chart = [
        {
            "id": r["pk"],
            "state": r["state"],
            "label": Run.State(r["state"]).label,
            "started": started.isoformat(),
            "seconds": round(((r["finished_at"] or timezone.now()) - started).total_seconds(), 1),
        }
        for r in reversed(chart_runs)
        if (started := r["started_at"]) is not None
    ]
    latest = job.latest_version()
    return render(
        request,
        "jobs/job_detail.html",
        {
            "job": job,
            "active_stream": streams.active_run(job) if job.continuous else None,
            "runs": runs,
            "chart": chart,
            "can_change": job.can_change(request.user),
            "versions": job.versions.all(),
            "latest": latest,
            "upcoming": [s.astimezone(job.tz) for s in job.upcoming_slots(timezone.now(), 5)]
            if job.enabled
            else [],
            "upload_form": UploadVersionForm(),
            "param_rows": [
                (name, spec, job.parameters.get(name, spec.get("default")))
                for name, spec in (latest.parameter_schema if latest else {}).items()
            ],
            # A notebook without a parameters cell takes any parameters (injected at the top).
            "free_params": latest is not None and not latest.has_parameters_cell,
            "free_rows": [
                (name, notebooks.free_type(value), value)
                for name, value in job.parameters.items()
                if latest is not None and not latest.has_parameters_cell
            ],
        },
    )


@require_http_methods(["GET", "POST"])
def job_edit(request, pk):
    job = job_for_owner(request.user, pk)
    if request.method == "POST":
        # The form changes its own copy of the job: ``job`` stays as stored.
        form = JobForm(request.POST, request.FILES, instance=job_for_owner(request.user, pk))
        if form.is_valid():
            try:
                upload = form.cleaned_data.get("notebook")
                if upload is not None:
                    _, dropped = services.upload_version(
                        job, request.user, upload.parsed, upload.name
                    )
                    if dropped:
                        messages.warning(
                            request,
                            "Dropped parameter values the new notebook does not take: "
                            + ", ".join(dropped),
                        )
                job = services.update_job(form.save())
            except LimitExceeded as exc:
                form.add_error(exc.field, exc.message)
            except (
                notebooks.NotebookError,
                notebooks.ParameterError,
                schedule.ScheduleError,
            ) as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, "Job saved.")
                return redirect(job)
    else:
        form = JobForm(instance=job)
    return render(request, "jobs/job_form.html", _job_form_context(form, job))


@require_http_methods(["GET", "POST"])
def job_delete(request, pk):
    job = job_for_owner(request.user, pk)
    if request.method == "POST":
        name = job.name
        services.delete_job(job)
        messages.success(request, f"Job “{name}” deleted.")
        return redirect("dashboard")
    return render(request, "jobs/job_delete.html", {"job": job, "run_count": job.runs.count()})


@require_POST
def job_run(request, pk):
    job = job_for_owner(request.user, pk)
    try:
        run = services.run_now(job, request.user)
    except LimitExceeded as exc:
        messages.error(request, exc.message)
        return redirect(job)
    messages.success(request, "Run queued: it starts as soon as a worker is free.")
    return redirect(run)


@require_POST
def job_pause(request, pk):
    job = services.set_job_enabled(job_for_owner(request.user, pk), False)
    messages.success(request, "Job paused: no scheduled runs until you resume it.")
    return redirect(job)


@require_POST
def job_resume(request, pk):
    job = services.set_job_enabled(job_for_owner(request.user, pk), True)
    messages.success(request, "Job resumed.")
    return redirect(job)


@require_POST
def job_stop(request, pk):
    """Stop a continuous job: its active run stops gracefully and the job is paused."""
    job = job_for_owner(request.user, pk)
    run = streams.active_run(job)
    if run is None:
        services.set_job_enabled(job, False)
        messages.success(request, "Job paused: it has no active run.")
        return redirect(job)
    run = streams.stop_run(run)
    messages.success(request, _stop_message(run))
    return redirect(run)


def _stop_message(run: Run) -> str:
    if run.is_active:
        return "Stopping: the notebook's queries are asked to stop; the job is paused."
    return f"Run {run.get_state_display().lower()}; the job is paused."


@require_http_methods(["GET", "POST"])
def job_reset_checkpoint(request, pk):
    """Confirm, then reset a continuous job's checkpoint (refused while a run is active)."""
    job = job_for_owner(request.user, pk)
    if not job.continuous:
        raise Http404("Only continuous jobs have a checkpoint.")
    if request.method == "POST":
        try:
            streams.reset_checkpoint(job)
        except streams.CheckpointBusy as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, "Checkpoint reset: the next run starts from scratch.")
        return redirect(job)
    return render(
        request,
        "jobs/job_reset_checkpoint.html",
        {"job": job, "active": streams.active_run(job)},
    )


@require_POST
def job_upload(request, pk):
    job = job_for_owner(request.user, pk)
    form = UploadVersionForm(request.POST, request.FILES)
    if not form.is_valid():
        for error in form.errors.get("notebook", []):
            messages.error(request, str(error))
        return redirect(job)
    upload = form.cleaned_data["notebook"]
    try:
        version, dropped = services.upload_version(job, request.user, upload.parsed, upload.name)
    except LimitExceeded as exc:
        messages.error(request, exc.message)
        return redirect(job)
    messages.success(request, f"Uploaded version {version.number}.")
    if dropped:
        messages.warning(
            request,
            "Dropped parameter values the new notebook does not take: " + ", ".join(dropped),
        )
    return redirect(job)


@require_GET
def version_download(request, pk, number):
    job = job_for_viewer(request.user, pk)
    version = get_object_or_404(job.versions, number=number)
    return attachment(
        version.storage_key, f"{job.name}-v{version.number}.ipynb", "application/x-ipynb+json"
    )


# --- Runs ------------------------------------------------------------------------------------


def _frame_url(run: Run) -> str:
    key = run.html_key if run.is_final else run.partial_key
    return content_url(key, run.pk, run.attempt) if key else ""


def _too_large_to_render(run: Run) -> bool:
    """Whether the run's output notebook was kept without HTML for its size
    (OUTPUT_RENDER_MAX_BYTES; ``output_bytes`` is then the .ipynb alone)."""
    return bool(
        run.output_key and not run.html_key and run.output_bytes > settings.OUTPUT_RENDER_MAX_BYTES
    )


@require_GET
def run_detail(request, pk):
    run = run_for_viewer(request.user, pk)
    # The values the notebook ran with: the run's own, else the notebook's defaults
    # (a job that keeps every default stores none).
    schema = run.version.parameter_schema or {}
    effective = {name: spec.get("default") for name, spec in schema.items()}
    effective.update(run.parameters)
    return render(
        request,
        "jobs/run_detail.html",
        {
            "run": run,
            "job": run.job,
            "frame_url": _frame_url(run),
            "too_large": _too_large_to_render(run),
            "can_change": run.job.can_change(request.user),
            "events": run.events.all(),
            "parameters": json.dumps(effective, indent=1),
            "defaults_used": [name for name in schema if name not in run.parameters],
            # papermill injects the values at the top of a notebook without the cell.
            "injected_at_top": not run.version.has_parameters_cell,
            # A failed run links to its comparison with the job's last success before it.
            "last_success": compare.last_success_before(run) if run.is_failure else None,
            # The Logs tab, for the job's owner and staff only (see run_logs).
            "logs": _logs_context(run)["logs"] if run.job.can_change(request.user) else None,
            "log_shown_bytes": LOG_SHOWN_BYTES,
            **_spark_ui_links(request.user, run),
        },
    )


def _spark_ui_links(user, run: Run) -> dict[str, bool]:
    """Which Spark UIs of ``run`` its page offers ``user``: the job's owner only, like the
    proxies (jobs.spark_ui, clusters.ui_proxy): ``spark_ui_live`` while it runs on the
    embedded local Spark, ``spark_history`` once finished with an event log,
    ``cluster_ui`` while its local cluster is live."""
    if run.job.owner_id != user.pk:
        return {}
    cluster = run.cluster
    return {
        "spark_ui_live": spark_ui.has_live_ui(run),
        "spark_history": run.is_final and spark_ui.has_event_log(run),
        "cluster_ui": bool(
            cluster
            and cluster.backend == Cluster.Backend.LOCAL
            and cluster.owner_id == user.pk
            and cluster.is_live
        ),
    }


@require_GET
def run_progress(request, pk):
    """htmx: the live status block; asks the page to reload when the run has ended or
    changed state or attempt since the block was drawn (``state``/``attempt`` in the
    query), so that started, worker and attempt on the page are never stale."""
    run = run_for_viewer(request.user, pk)
    if request.GET.get("live"):
        drawn = (request.GET.get("state"), request.GET.get("attempt"))
        if run.is_final or (drawn[0] and drawn != (run.state, str(run.attempt))):
            return refresh_page()
    return render(request, "jobs/_run_progress.html", {"run": run})


@require_GET
def run_stream_progress(request, pk):
    """JSON: a continuous run's live metrics for its chart (``static/jobs/stream-chart.js``):
    ``active``, ``points`` (``Run.stream_progress``), ``sources`` and ``last_batch_at``.
    The job's owner and staff only, like the logs: the sources' offsets describe its
    input."""
    run = run_for_owner(request.user, pk)
    stored = run.stream_progress or {}
    return JsonResponse(
        {
            "active": run.is_active,
            "points": stored.get("points") or [],
            "sources": stored.get("sources") or {},
            "last_batch_at": run.last_batch_at.isoformat() if run.last_batch_at else None,
        }
    )


@require_GET
def run_partial(request, pk):
    """htmx: the partial output frame, only when it changed (204 otherwise)."""
    run = run_for_viewer(request.user, pk)
    if request.GET.get("key") == run.partial_key or not run.partial_key:
        return HttpResponse(status=204)
    return render(
        request,
        "jobs/_run_partial.html",
        {"run": run, "frame_url": content_url(run.partial_key, run.pk, run.attempt)},
    )


@require_POST
def run_cancel(request, pk):
    run = services.cancel_run(run_for_owner(request.user, pk), request.user)
    if run.state == Run.State.CANCELLED:
        messages.success(request, "Run cancelled.")
    elif run.cancel_requested_at and run.is_active:
        messages.info(request, "Cancelling: the kernel is being stopped.")
    else:
        messages.info(request, f"The run had already ended ({run.get_state_display()}).")
    return redirect(run)


@require_POST
def run_stop(request, pk):
    """Stop a continuous run gracefully and pause its job."""
    run = run_for_owner(request.user, pk)
    if run.trigger != Run.Trigger.CONTINUOUS:
        raise Http404("Only continuous runs stop gracefully: cancel it instead.")
    run = streams.stop_run(run)
    messages.success(request, _stop_message(run))
    return redirect(run)


@require_POST
def run_rerun(request, pk):
    run = run_for_owner(request.user, pk)
    try:
        run = services.rerun(run, request.user)
    except LimitExceeded as exc:
        messages.error(request, exc.message)
        return redirect(run)
    messages.success(request, "Re-run started with the same notebook version and parameters.")
    return redirect(run)


@require_GET
def run_download(request, pk, kind):
    run = run_for_viewer(request.user, pk)
    if kind == "ipynb":
        return attachment(
            run.output_key,
            f"{run.job.name}-run-{run.pk}.ipynb",
            "application/x-ipynb+json",
            request=request,
            gzip_key=run.output_gzip_key,
        )
    if kind == "html":
        return attachment(
            run.html_key,
            f"{run.job.name}-run-{run.pk}.html",
            "application/octet-stream",
            standalone_chunks,
            request=request,
        )
    raise Http404


# --- Logs ---------------------------------------------------------------------------------------

#: Bytes of each log shown on the run page (its tail); the download has the whole log.
LOG_SHOWN_BYTES = 64 * 2**10


def _logs_context(run: Run) -> dict[str, Any]:
    """The Logs tab's context: each stored log of ``run`` with the tail shown."""
    shown = [
        (entry, logs.read_stored(run, entry.name, LOG_SHOWN_BYTES))
        for entry in logs.stored_logs(run)
    ]
    return {"run": run, "logs": shown, "shown_bytes": LOG_SHOWN_BYTES}


@require_GET
def run_logs(request, pk):
    """htmx: the Logs tab of a run (kernel, Spark driver, executors), for its job's owner
    and staff only (``jobs.logs``: logs are not shared with a shared job's output). Logs
    are untrusted text: the template escapes them; they were masked when stored."""
    run = run_for_owner(request.user, pk)
    return render(request, "jobs/_run_logs.html", _logs_context(run))


@require_GET
def run_log_download(request, pk, name):
    """A run's whole stored log as text/plain (``nosniff``, an attachment), for its job's
    owner and staff; 404 for an unknown name."""
    run = run_for_owner(request.user, pk)
    try:
        key = logs.storage_key(run, name)
    except ValueError:
        raise Http404 from None
    return attachment(key, f"{run.job.name}-run-{run.pk}-{name}", "text/plain; charset=utf-8")


# --- Operations --------------------------------------------------------------------------------


@require_GET
def operations(request):
    """Staff only: queued and running runs, live workers, recent failures, clusters.
    Other signed-in users get a plain 403 page (not the admin's sign-in form)."""
    if not request.user.is_staff:
        raise PermissionDenied("The operations page is for the portal's staff.")
    now = timezone.now()
    try:
        # Every live worker answers with whether it can make sandboxes (portal.celery).
        answers = app.control.broadcast("sandbox", reply=True, timeout=1.0) or []
    except Exception as exc:  # the broker is down: say so rather than fail the page
        answers, broker_error = [], str(exc)
    else:
        broker_error = ""
    workers = sorted((name, status) for answer in answers for name, status in answer.items())
    since = now - dt.timedelta(hours=24)
    return render(
        request,
        "jobs/operations.html",
        {
            "queued": Run.objects.filter(state=Run.State.QUEUED)
            .select_related("job")
            .order_by("created_at")[:100],
            "running": Run.objects.filter(state=Run.State.RUNNING)
            .select_related("job")
            .order_by("started_at")[:100],
            "failures": Run.objects.filter(
                state__in=Run.FAILURE_STATES,
                finished_at__gte=since,
            )
            .select_related("job")
            .order_by("-finished_at")[:100],
            "workers": workers,
            "sandbox_failures": Run.objects.filter(
                state=Run.State.FAILED,
                finished_at__gte=since,
                state_reason__startswith=SANDBOX_FAILURE_PREFIX,
            ).count(),
            "streams": _continuous_rows(now),
            "clusters": Cluster.objects.live().select_related("owner").order_by("expires_at")[:100],
            "usage": cluster_services.usage_by_user(now - dt.timedelta(days=30)),
            "broker_error": broker_error,
            "due_jobs": Job.objects.due(now).count(),
        },
    )


def _continuous_rows(now: dt.datetime) -> list[dict[str, Any]]:
    """The operations page's continuous jobs: each with its active run (or None), that
    run's current rates, seconds since its last batch, and whether it is stalled
    (``Run.stream_stalled``: STREAM_STALLED_INTERVALS of its trigger intervals), and
    that interval. A job on EMR reports no live metrics (``metrics`` False): it is never
    flagged."""
    jobs = list(Job.objects.filter(continuous=True).select_related("owner").order_by("name")[:100])
    runs = {
        run.job_id: run
        for run in Run.objects.filter(
            job__in=jobs, trigger=Run.Trigger.CONTINUOUS, state__in=Run.ACTIVE_STATES
        )
    }
    rows = []
    for job in jobs:
        run = runs.get(job.pk)
        last = run.last_batch_at if run else None
        metrics = not job.streams_in_s3
        rows.append(
            {
                "job": job,
                "run": run,
                "metrics": metrics,
                "rates": run.stream_rates() if run else {},
                "since_batch": (now - last).total_seconds() if last else None,
                "interval": run.stream_interval() if run else None,
                "stalled": bool(
                    run
                    and metrics
                    and run.stream_stalled(
                        now, settings.STREAM_STALLED_INTERVALS, settings.STREAM_STALLED_AFTER
                    )
                ),
            }
        )
    return rows
