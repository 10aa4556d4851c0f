"""Job editing: create a job from a notebook, change its settings, upload a new
notebook version, pause, resume and delete it.

Everything is validated before anything is written, and each verb is one transaction;
the notebook file of a version is removed again when its row cannot be written, and the
files of a deleted job are removed after commit.
"""

import logging
import os
from datetime import datetime
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from jobs import compare, notebooks, schedule
from jobs.models import Job, NotebookVersion, Run
from jobs.services import streams
from jobs.services.alerts import check_recipients
from quotas import limits

if TYPE_CHECKING:
    from django.contrib.auth.models import User

log = logging.getLogger(__name__)


def _validate(job: Job) -> None:
    """Check and normalise ``job``'s schedule in place: the time zone must exist, the cron
    expression is emptied for a manual job and normalised otherwise, and the timeout is
    capped at JOB_MAX_TIMEOUT_SECONDS. Raises ScheduleError, or ValidationError for a
    per-run cluster on a backend that is not enabled (``Job.check_spark_target``) or a
    continuous job with a schedule, or with a per-run cluster other than a private job's
    EMR cluster with STREAMS_S3_URI set (``Job.check_continuous``)."""
    job.check_spark_target()
    schedule.validate_timezone(job.timezone)
    if job.schedule_kind == Job.ScheduleKind.MANUAL:
        job.cron = ""
    else:
        job.cron = schedule.validate_cron(job.cron)
    job.check_continuous()
    job.timeout_seconds = min(job.timeout_seconds, settings.JOB_MAX_TIMEOUT_SECONDS)


def _without_stream_parameters(job: Job) -> dict:
    """``job.parameters`` without ``notebooks.STREAM_PARAMETERS`` when the job is
    continuous (the portal injects the job's own directories into its runs,
    ``Run.injected_parameters``, so a stored value would never be used), else as they are.

    Dropped rather than refused here, so that every caller follows one rule, including a
    job switched to continuous that kept such values from before; the API refuses values
    a client sends for them (``api.jobs.JobSettingsSerializer``)."""
    values = job.parameters or {}
    if not job.continuous:
        return values
    return {k: v for k, v in values.items() if k not in notebooks.STREAM_PARAMETERS}


def create_job(
    owner: "User",
    job: Job,
    notebook: notebooks.ParsedNotebook | bytes,
    original_name: str = "",
    now: datetime | None = None,
) -> Job:
    """Save ``job`` (an unsaved Job with its settings, e.g. from ``JobForm.save(commit=False)``)
    as ``owner``'s, with its first notebook version; returns it.

    ``notebook`` is the file's bytes, or the notebook a form read from them already
    (``NotebookUpload.parsed``), which is not read again. What is stored is the notebook
    without its outputs (``notebooks.read_notebook``).

    Validates everything before writing anything: raises NotebookError (not a usable
    notebook), ScheduleError (bad cron or time zone), ParameterError (values that do not
    fit the notebook's parameters) or LimitExceeded (too many uploads, too many jobs, a
    schedule more frequent than the owner may have, or alert recipients the portal does not
    take: ``alerts.check_recipients``). The notebook file and the rows are
    written in one transaction, so a failure leaves neither. A continuous job's values
    for ``notebooks.STREAM_PARAMETERS`` are dropped, unchecked (the portal sets them).
    """
    now = now or timezone.now()
    limits.throttle(owner, "upload")
    parsed = notebooks.as_parsed(notebook)
    param_schema = parsed.parameter_schema
    _validate(job)
    limits.check_schedule_interval(owner, job.cron, job.timezone)
    check_recipients(job)
    job.parameters = notebooks.coerce_parameters(
        param_schema, _without_stream_parameters(job), free=not parsed.has_parameters_cell
    )
    job.owner = owner
    with transaction.atomic():
        limits.lock_user(owner.pk)  # two concurrent creations cannot both pass the count
        limits.check_job_count(owner)
        job.reschedule(now)
        job.save()
        _store_version(job, owner, parsed, original_name)
    log.info("created job=%s owner=%s cron=%r tz=%s", job.pk, owner.pk, job.cron, job.timezone)
    return job


def _store_version(
    job: Job,
    user: "User",
    parsed: notebooks.ParsedNotebook,
    original_name: str,
) -> NotebookVersion:
    """Save the notebook file and its version row (inside the caller's transaction).

    The file is written first; if anything after it fails, the file is deleted again, so
    a failed upload leaves neither a row nor a file.
    """
    number = (job.versions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
    key = default_storage.save(f"notebooks/{job.pk}/{number}.ipynb", ContentFile(parsed.data))
    try:
        return NotebookVersion.objects.create(
            job=job,
            number=number,
            storage_key=key,
            original_name=os.path.basename(original_name)[:255],
            size_bytes=parsed.size_bytes,
            sha256=parsed.sha256,
            cell_count=parsed.cell_count,
            code_cell_count=parsed.code_cell_count,
            parameter_schema=parsed.parameter_schema,
            has_parameters_cell=parsed.has_parameters_cell,
            uploaded_by=user,
        )
    except Exception:
        default_storage.delete(key)
        raise


def upload_version(
    job: Job,
    user: "User",
    notebook: notebooks.ParsedNotebook | bytes,
    original_name: str = "",
) -> tuple[NotebookVersion, list[str]]:
    """Add a new immutable notebook version to ``job``: ``notebook`` is the file's bytes or
    the notebook a form read from them (as for ``create_job``).

    Returns ``(version, dropped)`` where ``dropped`` names the job's parameter values that
    no longer fit the new notebook and were removed. Raises NotebookError for a bad file,
    LimitExceeded past ``user``'s upload rate. Runs already made keep their own version,
    but a continuous job restarts on the new one (``streams.restart_on_version``).
    """
    limits.throttle(user, "upload")
    parsed = notebooks.as_parsed(notebook)
    param_schema = parsed.parameter_schema
    kept, dropped = {}, []
    for name, value in (job.parameters or {}).items():
        try:
            kept.update(
                notebooks.coerce_parameters(
                    param_schema, {name: value}, free=not parsed.has_parameters_cell
                )
            )
        except notebooks.ParameterError:
            dropped.append(name)
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        version = _store_version(job, user, parsed, original_name)
        job.parameters = kept
        job.save(update_fields=["parameters", "updated_at"])
        if job.continuous:
            streams.restart_on_version(job, version)
    return version, dropped


def sync_version(
    job: Job,
    user: "User",
    notebook: notebooks.ParsedNotebook | bytes,
    original_name: str = "",
) -> tuple[NotebookVersion | None, list[str]]:
    """Upload ``notebook`` as a new version of ``job`` only if it differs from the latest
    version (by the SHA-256 of the stored file, which ignores outputs).

    Returns ``(version, dropped)`` as ``upload_version`` does, or ``(None, [])`` when the
    latest version is that notebook already. Raises NotebookError or LimitExceeded (the
    upload rate) only when it uploads.
    """
    parsed = notebooks.as_parsed(notebook)
    latest = job.latest_version()
    if latest is not None and latest.sha256 == parsed.sha256:
        return None, []
    return upload_version(job, user, parsed, original_name)


#: The name of the manual job of a notebook file run from a client: "CLI: report.ipynb".
NOTEBOOK_JOB_PREFIX = "CLI: "


def job_for_notebook(
    owner: "User",
    notebook: notebooks.ParsedNotebook | bytes,
    file_name: str,
    timeout_seconds: int | None = None,
) -> Job:
    """The one manual job of ``owner`` for the notebook file ``file_name`` (its base name:
    the job is named "CLI: <file name>"), as ``manage.py runnotebook`` and ``POST
    /api/runs/`` use it: created on first use (manual, no retries), and given a new version
    when ``notebook`` differs from its latest one. Returns the job.

    ``timeout_seconds``, if given, becomes the job's timeout (capped at
    JOB_MAX_TIMEOUT_SECONDS); None keeps it (3600 s for a new job).

    Raises NotebookError, or LimitExceeded (upload rate, number of jobs) as ``create_job``
    and ``upload_version`` do. The owner's row is locked while the job is looked up and
    made, so that two first uses at once make one job, not two.
    """
    parsed = notebooks.as_parsed(notebook)
    base = os.path.basename(file_name) or "notebook.ipynb"
    name = f"{NOTEBOOK_JOB_PREFIX}{base}"[: Job._meta.get_field("name").max_length]
    with transaction.atomic():
        limits.lock_user(owner.pk)
        job = Job.objects.filter(owner=owner, name=name).order_by("pk").first()
        if job is None:
            spec = Job(
                name=name,
                schedule_kind=Job.ScheduleKind.MANUAL,
                timeout_seconds=timeout_seconds or Job._meta.get_field("timeout_seconds").default,
                max_retries=0,
            )
            return create_job(owner, spec, parsed, base)
        sync_version(job, owner, parsed, base)
        if timeout_seconds is not None:
            timeout = min(timeout_seconds, settings.JOB_MAX_TIMEOUT_SECONDS)
            if job.timeout_seconds != timeout:
                job.timeout_seconds = timeout
                job.save(update_fields=["timeout_seconds", "updated_at"])
    job.refresh_from_db()  # parameters may have changed with the new version
    return job


def update_job(job: Job, now: datetime | None = None) -> Job:
    """Save the settings (``Job.SETTINGS_FIELDS``) changed on ``job`` in memory, e.g. by
    ``JobForm.save(commit=False)``; a changed schedule, zone or enabled flag moves the next
    run. Returns the job.

    Raises ScheduleError, ParameterError (checked against the latest notebook version) or
    LimitExceeded (a changed schedule more frequent than the owner may have, or alert
    recipients the portal does not take) without writing anything. Only the settings are
    written, so a slot the dispatcher advanced meanwhile is kept. A continuous job's
    values for ``notebooks.STREAM_PARAMETERS`` are dropped, unchecked (the portal sets
    them).
    """
    now = now or timezone.now()
    version = job.latest_version()
    _validate(job)
    values = _without_stream_parameters(job)
    job.parameters = (
        version.coerce_parameters(values) if version else notebooks.coerce_parameters({}, values)
    )
    check_recipients(job)
    with transaction.atomic():
        stored = Job.objects.select_for_update().get(pk=job.pk)
        if (job.cron, job.timezone) != (stored.cron, stored.timezone):
            # Only a changed schedule: a lowered limit must not block editing the rest.
            limits.check_schedule_interval(job.owner, job.cron, job.timezone)
        job.next_run_at = stored.next_run_at
        if (job.cron, job.timezone, job.enabled) != (stored.cron, stored.timezone, stored.enabled):
            job.reschedule(now)
        job.save(update_fields=[*Job.SETTINGS_FIELDS, "next_run_at", "updated_at"])
    return job


def set_job_enabled(job: Job, enabled: bool, now: datetime | None = None) -> Job:
    """Pause or resume a job. Resuming schedules the next slot after ``now``: slots that
    fell while the job was paused are not caught up."""
    now = now or timezone.now()
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.enabled != enabled:
            job.enabled = enabled
            job.reschedule(now)
            job.save(update_fields=["enabled", "next_run_at", "updated_at"])
    return job


def delete_job(job: Job) -> None:
    """Delete a job, its versions and runs, and (after commit) their files.

    Active runs are asked to cancel first; a worker still running one finds its run gone
    and stops its kernel at the next heartbeat. A job that is or was continuous also
    gets its checkpoints and sinks removed after commit, by the clusters worker, whose
    host has them (``streams.remove_stream_dirs``; ``prune_stream_dirs`` catches a lost
    message, and whatever a dying run wrote after the removal).
    """
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.continuous or job.runs.filter(trigger=Run.Trigger.CONTINUOUS).exists():
            owner_id, job_id = job.owner_id, job.pk
            s3_prefix = job.stream_s3_prefix if settings.STREAMS_S3_URI else ""
            # robust: a broker that is down must not turn the committed delete into an
            # error; the hourly sweep removes the directories then.
            transaction.on_commit(
                lambda: _remove_stream_dirs(owner_id, job_id, s3_prefix), robust=True
            )
        keys = list(job.versions.values_list("storage_key", flat=True))
        for run_keys in job.runs.values_list(
            "output_key", "html_key", "partial_key", "output_gzip_key", "html_gzip_key"
        ):
            keys += [k for k in run_keys if k]
        uuids = list(job.runs.values_list("uuid", flat=True))
        Run.objects.filter(job=job).delete()
        job.delete()
        transaction.on_commit(lambda: delete_files(keys))
        # Comparison pages stored with the runs (jobs.compare), listed once the rows are gone.
        transaction.on_commit(
            lambda: delete_files([k for u in uuids for k in compare.stored_pages(u)])
        )


def _remove_stream_dirs(owner_id: int, job_id: int, s3_prefix: str) -> None:
    from jobs.tasks import remove_stream_dirs  # jobs.tasks imports this package

    remove_stream_dirs.delay(owner_id, job_id, s3_prefix)


def delete_files(keys: list[str]) -> None:
    """Delete stored files by key; a file that cannot be deleted is logged, not raised
    (callers run this after commit, when the rows are gone already)."""
    for key in keys:
        try:
            default_storage.delete(key)
        except Exception:
            log.exception("could not delete %s", key)
