"""The verbs of scheduled notebooks: one domain action each, one transaction each.

The database is the source of truth; Celery only delivers ``execute_run(run_id)``
messages, always after the transaction that created the work has committed. Every
state change of a run is a conditional UPDATE (a claim, or a write fenced by the attempt
number and the expected state), so a duplicate delivery, a late worker or a racing
reaper changes nothing. See README "Architecture".
"""

import logging
import os
import random
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.utils import timezone

from jobs import executor, kernel, notebooks, render, schedule
from jobs.models import Job, NotebookVersion, Run, RunEvent
from portal.db import close_stale_connections

log = logging.getLogger(__name__)

State = Run.State


# --- Jobs -------------------------------------------------------------------------------


@dataclass
class JobSettings:
    """Everything about a job except its notebook, as validated by a form or command."""

    name: str
    description: str = ""
    schedule_kind: str = Job.ScheduleKind.MANUAL
    cron: str = ""
    timezone: str = "UTC"
    parameters: dict | None = None
    timeout_seconds: int = 3600
    max_retries: int = 1
    catchup: str = Job.CatchUp.LATEST
    overlap: str = Job.Overlap.SKIP
    visibility: str = Job.Visibility.PRIVATE
    notify_on_failure: str = ""
    notify_on_success: str = ""
    enabled: bool = True
    spark_target: str = Job.SparkTarget.LOCAL
    cluster: object = None
    cluster_size: int = 1


def _validated_schedule(kind: str, cron: str, tz: str) -> str:
    """Return the cron to store ('' for manual); raises ScheduleError."""
    schedule.validate_timezone(tz)
    if kind == Job.ScheduleKind.MANUAL:
        return ""
    return schedule.validate_cron(cron)


def create_job(
    owner,
    spec: JobSettings,
    notebook_bytes: bytes,
    original_name: str = "",
    now: datetime | None = None,
) -> Job:
    """Create a job with its first notebook version; returns the saved Job.

    Validates everything before writing anything: raises NotebookError (not a usable
    notebook), ScheduleError (bad cron or time zone) or ParameterError (values that do not
    fit the notebook's parameters). The notebook file and the rows are written in one
    transaction, so a failure leaves neither.
    """
    now = now or timezone.now()
    parsed = notebooks.read_notebook(notebook_bytes)
    param_schema = notebooks.inspect_parameters(parsed.nb)
    cron = _validated_schedule(spec.schedule_kind, spec.cron, spec.timezone)
    values = notebooks.coerce_parameters(param_schema, spec.parameters or {})
    with transaction.atomic():
        job = Job(
            owner=owner,
            name=spec.name,
            description=spec.description,
            schedule_kind=spec.schedule_kind,
            cron=cron,
            timezone=spec.timezone,
            parameters=values,
            timeout_seconds=min(spec.timeout_seconds, settings.JOB_MAX_TIMEOUT_SECONDS),
            max_retries=spec.max_retries,
            catchup=spec.catchup,
            overlap=spec.overlap,
            visibility=spec.visibility,
            notify_on_failure=spec.notify_on_failure,
            notify_on_success=spec.notify_on_success,
            enabled=spec.enabled,
            spark_target=spec.spark_target,
            cluster=spec.cluster,
            cluster_size=spec.cluster_size,
        )
        job.next_run_at = job.next_slot_after(now) if job.enabled else None
        job.save()
        _store_version(job, owner, parsed, param_schema, notebook_bytes, original_name)
    log.info("created job=%s owner=%s cron=%r tz=%s", job.pk, owner.pk, job.cron, job.timezone)
    return job


def _store_version(job, user, parsed, param_schema, data, original_name) -> NotebookVersion:
    """Save the notebook file and its version row (inside the caller's transaction).

    The file is written first; if anything after it fails, the file is deleted again, so
    a failed upload leaves neither a row nor a file.
    """
    number = (job.versions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
    key = default_storage.save(f"notebooks/{job.pk}/{number}.ipynb", ContentFile(data))
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
            parameter_schema=param_schema,
            uploaded_by=user,
        )
    except Exception:
        default_storage.delete(key)
        raise


def upload_version(
    job: Job, user, notebook_bytes: bytes, original_name: str = ""
) -> tuple[NotebookVersion, list[str]]:
    """Add a new immutable notebook version to ``job``.

    Returns ``(version, dropped)`` where ``dropped`` names the job's parameter values that
    no longer fit the new notebook and were removed. Raises NotebookError for a bad file.
    Runs already made keep their own version.
    """
    parsed = notebooks.read_notebook(notebook_bytes)
    param_schema = notebooks.inspect_parameters(parsed.nb)
    kept, dropped = {}, []
    for name, value in (job.parameters or {}).items():
        try:
            kept.update(notebooks.coerce_parameters(param_schema, {name: value}))
        except notebooks.ParameterError:
            dropped.append(name)
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        version = _store_version(job, user, parsed, param_schema, notebook_bytes, original_name)
        job.parameters = kept
        job.save(update_fields=["parameters", "updated_at"])
    return version, dropped


def update_job(job: Job, spec: JobSettings, now: datetime | None = None) -> Job:
    """Change a job's settings; recomputes its next slot when the schedule changed.

    Raises ScheduleError or ParameterError without writing anything.
    """
    now = now or timezone.now()
    version = job.latest_version()
    cron = _validated_schedule(spec.schedule_kind, spec.cron, spec.timezone)
    values = notebooks.coerce_parameters(
        version.parameter_schema if version else {}, spec.parameters or {}
    )
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        schedule_changed = (cron, spec.timezone, spec.enabled) != (
            job.cron,
            job.timezone,
            job.enabled,
        )
        for field in (
            "name",
            "description",
            "schedule_kind",
            "timezone",
            "max_retries",
            "catchup",
            "overlap",
            "visibility",
            "notify_on_failure",
            "notify_on_success",
            "enabled",
            "spark_target",
            "cluster",
            "cluster_size",
        ):
            setattr(job, field, getattr(spec, field))
        job.cron = cron
        job.parameters = values
        job.timeout_seconds = min(spec.timeout_seconds, settings.JOB_MAX_TIMEOUT_SECONDS)
        if schedule_changed:
            job.next_run_at = job.next_slot_after(now) if job.enabled else None
        job.save()
    return job


def set_job_enabled(job: Job, enabled: bool, now: datetime | None = None) -> Job:
    """Pause or resume a job. Resuming schedules the next slot after ``now``: slots that
    fell while the job was paused are not caught up."""
    now = now or timezone.now()
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.enabled != enabled:
            job.enabled = enabled
            job.next_run_at = job.next_slot_after(now) if enabled else None
            job.save(update_fields=["enabled", "next_run_at", "updated_at"])
    return job


def delete_job(job: Job) -> None:
    """Delete a job, its versions and runs, and (after commit) their files.

    Active runs are asked to cancel first; a worker still running one finds its run gone
    and stops its kernel at the next heartbeat.
    """
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        keys = list(job.versions.values_list("storage_key", flat=True))
        for output_key, html_key, partial_key in job.runs.values_list(
            "output_key", "html_key", "partial_key"
        ):
            keys += [k for k in (output_key, html_key, partial_key) if k]
        Run.objects.filter(job=job).delete()
        job.delete()
        transaction.on_commit(lambda: _delete_files(keys))


def _delete_files(keys):
    for key in keys:
        try:
            default_storage.delete(key)
        except Exception:
            log.exception("could not delete %s", key)


# --- Creating runs ----------------------------------------------------------------------


def _enqueue(run: Run, countdown: float = 0) -> None:
    """Send ``execute_run(run.id)`` once the current transaction commits, after
    ``countdown`` seconds."""
    _enqueue_all([run.pk], countdown)


def _enqueue_all(run_ids: list[int], countdown: float = 0) -> None:
    """Send ``execute_run`` for each of ``run_ids``, in order, through one broker producer,
    once the current transaction commits. A message that cannot be sent leaves its run
    QUEUED: the reaper enqueues it again after RUN_QUEUED_TIMEOUT."""
    from jobs.tasks import execute_run

    def publish():
        with execute_run.app.producer_or_acquire() as producer:
            for run_id in run_ids:
                execute_run.apply_async((run_id,), countdown=countdown or None, producer=producer)

    if run_ids:
        # robust: a broker that is down must not turn a committed request into an error;
        # the runs stay QUEUED and the reaper enqueues them again.
        transaction.on_commit(publish, robust=True)


def _new_run(
    job: Job,
    *,
    trigger,
    parameters,
    version=None,
    scheduled_for=None,
    created_by=None,
    state=State.QUEUED,
    reason="",
    enqueue=True,
) -> Run:
    version = version or job.latest_version()
    now = timezone.now()
    run = Run.objects.create(
        job=job,
        version=version,
        trigger=trigger,
        scheduled_for=scheduled_for,
        parameters=parameters,
        created_by=created_by,
        state=state,
        state_reason=reason,
        max_attempts=1 + job.max_retries,
        timeout_seconds=job.timeout_seconds,
        enqueued_at=now if state == State.QUEUED else None,
        finished_at=now if state in (State.SKIPPED, State.FAILED) else None,
    )
    RunEvent.objects.create(
        run=run, attempt=0, state=state, message=reason or f"Created ({run.get_trigger_display()})."
    )
    if state == State.QUEUED and enqueue:
        _enqueue(run)
    return run


def run_now(
    job: Job,
    user,
    parameters: dict | None = None,
    trigger: str = Run.Trigger.MANUAL,
    enqueue: bool = True,
) -> Run:
    """Start a run of ``job`` at once with its parameters (overridden by ``parameters``).

    Never moves the job's schedule. With ``enqueue=False`` no message is sent: the caller
    executes the run itself (``manage.py runnotebook --inline``). Raises ParameterError
    for values that do not fit.
    """
    version = job.latest_version()
    values = dict(job.parameters or {})
    if parameters:
        values.update(notebooks.coerce_parameters(version.parameter_schema, parameters))
    with transaction.atomic():
        run = _new_run(
            job,
            trigger=trigger,
            parameters=values,
            version=version,
            created_by=user,
            enqueue=enqueue,
        )
    log.info("run now run=%s job=%s user=%s", run.pk, job.pk, getattr(user, "pk", None))
    return run


def rerun(run: Run, user) -> Run:
    """Start a new run with the same notebook version and parameters as ``run``."""
    with transaction.atomic():
        new = _new_run(
            run.job,
            trigger=Run.Trigger.RERUN,
            parameters=dict(run.parameters),
            version=run.version,
            created_by=user,
        )
    return new


def dispatch_due_runs(now: datetime | None = None, batch: int = 20) -> list[Run]:
    """Create the runs of every job whose next slot is at or before ``now`` (UTC).

    Jobs are handled in small batches (``batch``), each its own transaction, so the first
    runs are enqueued while later ones are still being created. For each due job: choose
    the slots to run by the job's catch-up policy ("latest": the newest missed slot;
    "all": every missed slot, at most CATCHUP_MAX_SLOTS; "none": only a slot less than
    one dispatch interval old), create
    one Run per slot (QUEUED, or SKIPPED when the overlap policy is "skip" and a run is
    still active), advance ``next_run_at`` past ``now``, and enqueue after commit.

    Safe to call concurrently: due jobs are locked with SKIP LOCKED, and the unique
    constraint on (job, scheduled_for) makes a second run for a slot impossible anyway.
    Returns the runs created (queued and skipped).
    """
    now = now or timezone.now()
    created: list[Run] = []
    grace = timedelta(seconds=max(settings.DISPATCH_INTERVAL * 2, 5))
    while True:
        with transaction.atomic():
            jobs = list(
                Job.objects.due(now)
                .select_for_update(skip_locked=True)
                .order_by("next_run_at", "id")[:batch]
            )
            plans = {job.pk: plan for job in jobs if (plan := _plan(job, now, grace)) is not None}
            healthy = [job for job in jobs if job.pk in plans]
            try:
                with transaction.atomic():
                    created += _dispatch_batch(healthy, plans, now)
            except IntegrityError:
                # A run for one of the slots appeared meanwhile (a dispatcher without row
                # locks, e.g. on SQLite): fall back to one job, one savepoint at a time.
                for job in healthy:
                    created += _dispatch_job(job, plans[job.pk])
        if len(jobs) < batch:
            return created


def _slots_to_run(job: Job, now: datetime, grace: timedelta) -> list[datetime]:
    """The due slots of ``job`` that its catch-up policy runs, oldest first."""
    first = job.next_run_at
    missed = [first] + schedule.slots_between(
        job.cron, job.timezone, first, now, settings.CATCHUP_MAX_SLOTS
    )
    if job.catchup == Job.CatchUp.ALL:
        return missed[-settings.CATCHUP_MAX_SLOTS :]
    if job.catchup == Job.CatchUp.NONE:
        return [s for s in missed[-1:] if now - s <= grace]
    return missed[-1:]


def _plan(job: Job, now: datetime, grace: timedelta) -> tuple[list[datetime], datetime] | None:
    """``(slots to run, next slot after now)`` of a due job, or None when its schedule
    cannot be computed (a cron expression or zone that reached the row without the
    portal's validation, e.g. a raw SQL edit, and that croniter or zoneinfo rejects): then
    the job is paused and a FAILED run for its due slot says why, so that one bad row
    never stops the dispatcher for every job behind it."""
    try:
        return _slots_to_run(job, now, grace), job.next_slot_after(now)
    except (
        schedule.ScheduleError,
        ValueError,
        KeyError,
    ) as exc:  # croniter's errors are ValueErrors; zoneinfo's KeyErrors
        reason = (
            f"The schedule cannot be computed ({exc}): the job was paused. "
            "Fix its schedule, then resume it."
        )
        log.error("job=%s paused: %s", job.pk, reason)
        slot, version = job.next_run_at, job.latest_version()
        Job.objects.filter(pk=job.pk).update(enabled=False, next_run_at=None)
        if version is not None:
            try:
                with transaction.atomic():
                    _new_run(
                        job,
                        trigger=Run.Trigger.SCHEDULE,
                        parameters=dict(job.parameters),
                        version=version,
                        scheduled_for=slot,
                        state=State.FAILED,
                        reason=reason,
                    )
            except IntegrityError:
                pass  # that slot already has a run
        return None


def _dispatch_batch(jobs: list[Job], plans: dict, now: datetime) -> list[Run]:
    """Dispatch a batch of locked, due jobs (``plans``: job id -> ``_plan``) with a
    handful of queries in all (latest versions, active runs, existing slots, bulk inserts,
    one bulk update) instead of several per job. Raises IntegrityError if a slot got a
    run meanwhile."""
    ids = [job.pk for job in jobs]
    latest: dict[int, tuple[int, int]] = {}
    for version_id, job_id, number in NotebookVersion.objects.filter(job_id__in=ids).values_list(
        "id", "job_id", "number"
    ):
        if job_id not in latest or number > latest[job_id][1]:
            latest[job_id] = (version_id, number)
    active = set(
        Run.objects.filter(job_id__in=ids, state__in=Run.ACTIVE_STATES).values_list(
            "job_id", flat=True
        )
    )
    earliest = min((slots[0] for slots, _ in plans.values() if slots), default=now)
    existing = set(
        Run.objects.filter(job_id__in=ids, scheduled_for__gte=earliest).values_list(
            "job_id", "scheduled_for"
        )
    )
    runs = []
    for job in jobs:
        slots, job.next_run_at = plans[job.pk]
        for slot in slots:
            if (job.pk, slot) in existing or job.pk not in latest:
                continue
            skipped = job.pk in active and job.overlap == Job.Overlap.SKIP
            runs.append(
                Run(
                    job=job,
                    version_id=latest[job.pk][0],
                    trigger=Run.Trigger.SCHEDULE,
                    scheduled_for=slot,
                    parameters=dict(job.parameters),
                    state=State.SKIPPED if skipped else State.QUEUED,
                    state_reason="Skipped: the previous run was still active." if skipped else "",
                    max_attempts=1 + job.max_retries,
                    timeout_seconds=job.timeout_seconds,
                    enqueued_at=None if skipped else now,
                    finished_at=now if skipped else None,
                )
            )
    Run.objects.bulk_create(runs)
    RunEvent.objects.bulk_create(
        RunEvent(
            run=run, attempt=0, state=run.state, message=run.state_reason or "Created (Schedule)."
        )
        for run in runs
    )
    Job.objects.bulk_update(jobs, ["next_run_at"])
    _enqueue_all([run.pk for run in runs if run.state == State.QUEUED])
    if runs:
        log.info("dispatched %s runs for %s jobs", len(runs), len(jobs))
    return runs


def _dispatch_job(job: Job, plan: tuple[list[datetime], datetime]) -> list[Run]:
    slots, next_run_at = plan
    version = job.latest_version()
    active = job.runs.active().exists()
    runs = []
    for slot in slots:
        state, reason = State.QUEUED, ""
        if active and job.overlap == Job.Overlap.SKIP:
            state, reason = State.SKIPPED, "Skipped: the previous run was still active."
        try:
            with transaction.atomic():
                runs.append(
                    _new_run(
                        job,
                        trigger=Run.Trigger.SCHEDULE,
                        parameters=dict(job.parameters),
                        version=version,
                        scheduled_for=slot,
                        state=state,
                        reason=reason,
                    )
                )
        except IntegrityError:
            log.info("slot already has a run job=%s slot=%s", job.pk, slot.isoformat())
    job.next_run_at = next_run_at
    job.save(update_fields=["next_run_at"])
    if runs:
        log.info("dispatched job=%s slots=%s", job.pk, [r.scheduled_for.isoformat() for r in runs])
    return runs


# --- Executing runs ---------------------------------------------------------------------


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_run(run_id: int, worker: str, now: datetime | None = None) -> Run | None:
    """Move a QUEUED run to RUNNING for ``worker``; return it, or None if not claimable.

    One conditional UPDATE: a second delivery of the same message, a cancelled run, a
    run whose retry is not due yet or a run out of attempts all find nothing to claim.
    """
    now = now or timezone.now()
    with transaction.atomic():
        claimed = (
            Run.objects.filter(pk=run_id, state=State.QUEUED, attempt__lt=F("max_attempts"))
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .update(
                state=State.RUNNING,
                attempt=F("attempt") + 1,
                worker=worker,
                started_at=now,
                heartbeat_at=now,
                finished_at=None,
                cells_done=0,
                cells_total=0,
                current_cell_index=None,
                current_cell_head="",
            )
        )
        if not claimed:
            return None
        run = Run.objects.select_related("job", "version").get(pk=run_id)
        RunEvent.objects.create(
            run=run,
            attempt=run.attempt,
            state=State.RUNNING,
            worker=worker,
            message="Claimed by a worker.",
        )
    return run


def record_progress(run: Run, progress: executor.Progress) -> str:
    """Write the heartbeat and progress of ``run``'s current attempt.

    Returns "continue" while the attempt still owns the run, "cancel" if someone asked
    to cancel it, and "lost" if the run was reaped, finished or deleted meanwhile.
    """
    fields = dict(
        heartbeat_at=timezone.now(),
        cells_total=progress.cells_total,
        cells_done=progress.cells_done,
        current_cell_index=progress.current_index,
        current_cell_head=progress.current_head,
    )
    mine = Run.objects.filter(pk=run.pk, attempt=run.attempt, state=State.RUNNING)
    if mine.filter(cancel_requested_at__isnull=True).update(**fields):
        return "continue"
    if mine.filter(cancel_requested_at__isnull=False).update(**fields):
        return "cancel"
    return "lost"


class SparkTargetError(Exception):
    """The job's Spark target cannot be used for this run; the message says why.

    ``retry`` is True when a later attempt may succeed (a fresh cluster failed to start).
    """

    def __init__(self, message: str, retry: bool = False):
        super().__init__(message)
        self.retry = retry


def spark_target_for(run: Run):
    """``(master_url, cluster, owned)`` for a run: the Spark master or Spark Connect URL its
    kernel connects to, the cluster used (None for the embedded local Spark), and whether
    the cluster was started for this run (and must be terminated after it).

    For "new_cluster" a local standalone cluster is started and awaited here, in the run's
    worker; a retry reuses the cluster a previous attempt left READY. Its lifetime is the
    run's timeout plus ten minutes, so expiry stops it even if this worker dies.
    Raises SparkTargetError.
    """
    from clusters import services as cluster_services
    from clusters.models import Cluster

    job = run.job
    if job.spark_target == Job.SparkTarget.CLUSTER:
        cluster = job.cluster
        if cluster is None or cluster.state != Cluster.State.READY:
            raise SparkTargetError(
                "The job's cluster is not running: start it, or choose another Spark target."
            )
        if cluster.backend != Cluster.Backend.LOCAL or cluster.owner_id != job.owner_id:
            raise SparkTargetError(
                "A job can run on one of its owner's local clusters only; "
                "for EMR choose “a fresh EMR cluster”."
            )
        return cluster.connect_url, cluster, False
    if job.spark_target == Job.SparkTarget.NEW_CLUSTER:
        previous = Cluster.objects.filter(for_run=run).first()
        if previous and previous.state == Cluster.State.READY:
            return previous.connect_url, previous, True
        if previous:
            cluster_services.terminate_cluster(previous, "Replaced by a new attempt.")
            Cluster.objects.filter(pk=previous.pk).update(for_run=None)
        hours = max(1, -(-(run.timeout_seconds + 600) // 3600))
        spec = cluster_services.ClusterSpec(
            name=f"run-{run.pk}-a{run.attempt}", size=job.cluster_size, lifetime_hours=hours
        )
        cluster = cluster_services.launch_cluster(job.owner, spec, for_run=run)
        cluster_services.start_cluster(cluster.pk)

        def still_mine():
            # Keep the run's heartbeat going while the cluster starts, and give up at once
            # if the run was cancelled or taken over meanwhile.
            answer = record_progress(run, executor.Progress())
            if answer != "continue":
                raise cluster_services.ClusterError(
                    "The run was cancelled while its cluster was starting."
                    if answer == "cancel"
                    else "The run was taken over by another attempt."
                )

        try:
            cluster = cluster_services.wait_until_ready(
                cluster, timeout=settings.CLUSTER_START_TIMEOUT, on_poll=still_mine
            )
        except cluster_services.ClusterError as exc:
            cluster_services.terminate_cluster(cluster, str(exc))
            cluster_services.stop_cluster(cluster.pk)
            raise SparkTargetError(str(exc), retry=True) from exc
        return cluster.connect_url, cluster, True
    return settings.LOCAL_SPARK_MASTER, None, False


def execute_run(run_id: int, worker: str | None = None) -> Run | None:
    """Claim, execute and finish one run; the body of the ``execute_run`` task.

    Returns the finished run, or None when there was nothing to claim (a duplicate
    delivery) or the attempt lost the run. Never raises for notebook failures.
    """
    worker = worker or worker_name()
    run = claim_run(run_id, worker)
    if run is None:
        log.info("nothing to claim run=%s", run_id)
        return None
    log.info(
        "executing run=%s job=%s attempt=%s worker=%s", run.pk, run.job_id, run.attempt, worker
    )
    with tempfile.TemporaryDirectory(prefix=f"run-{run.pk}-") as tmp:
        tmp = Path(tmp)
        source = tmp / "input.ipynb"
        with default_storage.open(run.version.storage_key, "rb") as fh:
            source.write_bytes(fh.read())
        partial = tmp / "partial.ipynb"
        uploaded = {"version": 0, "key": "", "next": 0.0}

        def tick(progress: executor.Progress) -> str:
            # The heartbeat first: rendering the live view must never delay it.
            answer = record_progress(run, progress)
            now = time.monotonic()
            # Rendering costs more as the notebook grows and competes with the kernel's
            # client for the GIL: after each render, wait ten times as long as it took.
            if (
                answer == "continue"
                and progress.partial_version != uploaded["version"]
                and partial.exists()
                and now >= uploaded["next"]
            ):
                uploaded["version"] = progress.partial_version
                key = _store_partial(run, partial, uploaded["key"])
                uploaded["next"] = time.monotonic() + 10 * (time.monotonic() - now)
                if key:
                    uploaded["key"] = key
                    Run.objects.filter(pk=run.pk, attempt=run.attempt).update(partial_key=key)
            return answer

        if run.job.spark_target == Job.SparkTarget.EMR_CLUSTER:
            outcome = _execute_on_emr(run, source.read_bytes(), tick, tmp)
            close_stale_connections()
            return finish_run(run, outcome)
        try:
            master, cluster, owned = spark_target_for(run)
        except SparkTargetError as exc:
            return finish_run(
                run,
                executor.Outcome("infra_error" if exc.retry else "failed", None, message=str(exc)),
            )
        if cluster is not None:
            Run.objects.filter(pk=run.pk).update(cluster=cluster)
        try:
            outcome = _execute_in_sandbox(
                run, source, tmp / "output.ipynb", partial, tick, master, cluster
            )
        finally:
            close_stale_connections()  # idle for the whole notebook: it may have been cut meanwhile
            if owned:
                from clusters import services as cluster_services

                cluster_services.terminate_cluster(cluster, "The run it was started for ended.")
                cluster_services.stop_cluster(cluster.pk)
        return finish_run(run, outcome)


#: The port of a cluster's Spark Connect endpoint on a sandbox's own loopback.
SANDBOX_CONNECT_PORT = 15002


def connect_user_id(run: Run) -> str:
    """The Spark Connect user id of ``run``'s sessions: its job owner's, ``u<user id>``."""
    return f"u{run.job.owner_id}"


def _execute_in_sandbox(
    run: Run, source: Path, output: Path, partial: Path, tick, master: str, cluster
) -> executor.Outcome:
    """Execute the notebook of ``run``'s current attempt in a sandbox of its own.

    The sandbox runs as the job owner's uid with no network; for a cluster target it
    reaches exactly that cluster's Spark Connect endpoint, as ``sc://localhost:15002``
    with the cluster's token and a Spark Connect session id of this attempt's own, whose
    operations are interrupted and released on the server when the attempt ends, however
    it ends. When no sandbox can be made the outcome is "failed" with the reason (fail
    closed: nothing runs unsandboxed unless KERNEL_SANDBOX=none).
    """
    from portal.sandbox import SandboxUnavailable

    owner_id = run.job.owner_id
    for earlier in range(1, run.attempt):  # what a killed worker's attempt left behind
        kernel.run_sandbox(f"r{run.pk}-a{earlier}", owner_id).destroy()
    session_id = str(uuid.uuid5(run.uuid, f"attempt-{run.attempt}")) if cluster is not None else ""
    extra_env = {"TELEMETRY_VIEWS_ROOT": kernel.views_root(owner_id)}  # the only views it may write
    try:
        sandbox = kernel.run_sandbox(
            f"r{run.pk}-a{run.attempt}",
            owner_id,
            forward_port=SANDBOX_CONNECT_PORT if cluster is not None else None,
        )
        sandbox.prepare()
    except (SandboxUnavailable, OSError, ValueError) as exc:
        log.error("no sandbox run=%s: %s", run.pk, exc)
        return executor.Outcome("failed", None, message=str(exc))
    try:
        if cluster is not None:
            host, port = cluster.connect_address
            if sandbox.enabled:
                sandbox.relay(host, port)
                port = SANDBOX_CONNECT_PORT
            # pyspark sends a token without TLS only to the host "localhost". A session is
            # (user id, session id) on the server: name both, so that the worker can end it.
            master = (
                f"sc://localhost:{port}/;session_id={session_id};user_id={connect_user_id(run)}"
            )
            extra_env["SPARK_CONNECT_AUTHENTICATE_TOKEN"] = cluster.connect_token
    except (SandboxUnavailable, OSError) as exc:
        sandbox.destroy()
        return executor.Outcome(
            "failed", None, message=f"Could not reach the cluster's Spark Connect endpoint: {exc}"
        )
    parameters = {
        **run.parameters,
        "run_id": str(run.uuid),
        "logical_date": run.logical_date.isoformat(),
        "spark_master": master,
    }
    try:
        return executor.execute(
            source,
            output,
            parameters,
            spark_master=master,
            sandbox=sandbox,
            timeout_seconds=run.timeout_seconds,
            tick=tick,
            tick_interval=settings.RUN_HEARTBEAT_INTERVAL,
            lease_seconds=settings.RUN_STALE_AFTER,
            partial_path=partial,
            partial_interval=settings.RUN_PARTIAL_SAVE_INTERVAL,
            kernel_extra_env=extra_env,
        )
    finally:
        sandbox.destroy()
        if cluster is not None:
            from clusters.backends.local import end_connect_session

            end_connect_session(cluster, session_id, connect_user_id(run))


def _execute_on_emr(run: Run, source: bytes, tick, workdir: Path) -> executor.Outcome:
    """Run the notebook as the step of a transient EMR cluster started for this run."""
    from clusters import services as cluster_services
    from clusters.backends import get_backend
    from clusters.models import Cluster, EMRRelease

    job = run.job
    release = (
        EMRRelease.objects.offered()
        .filter(status=EMRRelease.Status.STABLE)
        .values_list("label", flat=True)
        .first()
    )
    hours = max(1, -(-(run.timeout_seconds + 1800) // 3600))
    spec = cluster_services.ClusterSpec(
        name=f"run-{run.pk}-a{run.attempt}",
        backend=Cluster.Backend.EMR,
        size=job.cluster_size,
        lifetime_hours=hours,
        release=release or settings.EMR_DEFAULT_RELEASE,
    )
    previous = Cluster.objects.filter(for_run=run).first()
    if previous:  # a cluster of an earlier attempt: stop it and let go of it
        cluster_services.terminate_cluster(previous, "Replaced by a new attempt.")
        Cluster.objects.filter(pk=previous.pk).update(for_run=None)
    cluster = cluster_services.launch_cluster(job.owner, spec, for_run=run)
    Run.objects.filter(pk=run.pk).update(cluster=cluster)
    parameters = {
        **run.parameters,
        "run_id": str(run.uuid),
        "logical_date": run.logical_date.isoformat(),
        "spark_master": "yarn",
    }
    from jobs import emr_runner

    return emr_runner.execute_on_emr(
        run, cluster, get_backend("emr"), source, parameters, tick, workdir
    )


def _store_partial(run: Run, partial: Path, previous_key: str) -> str | None:
    """Render the partial output notebook to HTML and store it for the live view."""
    try:
        import nbformat

        html = render.render_html(nbformat.read(str(partial), as_version=4), title=run.job.name)
    except Exception:
        log.exception("could not render the partial notebook run=%s", run.pk)
        return None
    return _replace_file(previous_key or f"runs/{run.uuid}/partial.html", html.encode("utf-8"))


def _replace_file(key: str, data: bytes) -> str:
    """Store ``data`` under ``key``, replacing what was there; returns the key used."""
    if default_storage.exists(key):
        default_storage.delete(key)
    return default_storage.save(key, ContentFile(data))


_OUTCOME_STATE = {
    "succeeded": State.SUCCEEDED,
    "failed": State.FAILED,
    "timed_out": State.TIMED_OUT,
    "cancelled": State.CANCELLED,
}


def retry_delay(attempt: int) -> float:
    """Seconds before retry ``attempt`` + 1: exponential from RUN_RETRY_BACKOFF, capped at
    an hour, with full jitter between half and all of it (AWS "Exponential Backoff And
    Jitter", ATMO's AtmoCelery.backoff)."""
    base = min(3600.0, settings.RUN_RETRY_BACKOFF * (2 ** max(0, attempt - 1)))
    return base / 2 + random.random() * base / 2


def finish_run(run: Run, outcome: executor.Outcome) -> Run | None:
    """Publish an attempt's outcome, fenced by its attempt number.

    Stores the output notebook and its HTML (for every outcome with an output), then moves
    the run from RUNNING to its final state, or back to QUEUED for a retry after an
    infrastructure error while attempts remain. If the attempt no longer owns the run
    (reaped, cancelled while the worker was unreachable, deleted), its files are removed
    and None is returned. Alerts are sent after commit, once per run.
    """
    if outcome.status == "lost":
        log.warning("attempt lost run=%s attempt=%s", run.pk, run.attempt)
        return None
    now = timezone.now()
    if outcome.status == "infra_error" and run.attempt < run.max_attempts:
        delay = retry_delay(run.attempt)
        with transaction.atomic():
            moved = Run.objects.filter(
                pk=run.pk,
                attempt=run.attempt,
                state=State.RUNNING,
                cancel_requested_at__isnull=True,
            ).update(
                state=State.QUEUED,
                not_before=now + timedelta(seconds=delay),
                enqueued_at=now,
                worker="",
                state_reason=outcome.message[:300],
            )
            if moved:
                RunEvent.objects.create(
                    run=run,
                    attempt=run.attempt,
                    state=State.QUEUED,
                    message=f"Infrastructure failure, retrying in {delay:.0f} s: {outcome.message}"[
                        :500
                    ],
                )
                _enqueue(run, countdown=delay)
        if moved:
            log.warning(
                "retrying run=%s attempt=%s in %.0fs: %s",
                run.pk,
                run.attempt,
                delay,
                outcome.message,
            )
            return Run.objects.get(pk=run.pk)
        if not Run.objects.filter(
            pk=run.pk, attempt=run.attempt, state=State.RUNNING, cancel_requested_at__isnull=False
        ).exists():
            return None
        # A cancel was asked for while the kernel died: the run ends CANCELLED, not retried.
        outcome = executor.Outcome(
            "cancelled", outcome.output_path, message="Cancelled on request."
        )

    state = _OUTCOME_STATE.get(outcome.status, State.FAILED)
    keys = {"output_key": "", "html_key": ""}
    if outcome.output_path and outcome.output_path.exists():
        data = outcome.output_path.read_bytes()
        keys["output_key"] = default_storage.save(
            f"runs/{run.uuid}/output.ipynb", ContentFile(data)
        )
        try:
            import nbformat

            html = render.render_html(
                nbformat.reads(data.decode("utf-8"), as_version=4), title=run.job.name
            )
            keys["html_key"] = default_storage.save(
                f"runs/{run.uuid}/output.html", ContentFile(html.encode("utf-8"))
            )
        except Exception:
            log.exception("rendering failed run=%s", run.pk)
    error = outcome.error or {}
    if outcome.progress is not None:
        keys_progress = {
            "cells_done": outcome.progress.cells_done,
            "cells_total": outcome.progress.cells_total,
        }
    else:
        keys_progress = {}
    with transaction.atomic():
        finished = Run.objects.filter(pk=run.pk, attempt=run.attempt, state=State.RUNNING).update(
            **keys_progress,
            state=state,
            finished_at=now,
            state_reason=("" if state == State.SUCCEEDED else outcome.message[:300]),
            error_cell_index=error.get("cell_index"),
            error_ename=(error.get("ename") or "")[:200],
            error_evalue=error.get("evalue") or "",
            error_traceback=error.get("traceback") or "",
            current_cell_index=None,
            current_cell_head="",
            **keys,
        )
        if not finished:
            transaction.on_commit(lambda: _delete_files([k for k in keys.values() if k]))
            log.warning("stale attempt discarded run=%s attempt=%s", run.pk, run.attempt)
            return None
        if state == State.SUCCEEDED:
            Run.objects.filter(pk=run.pk).update(cells_done=F("cells_total"))
        RunEvent.objects.create(
            run=run,
            attempt=run.attempt,
            state=state,
            worker=run.worker,
            message=outcome.message[:500] or "Finished.",
        )
        _send_alert_on_commit(run.pk)
    log.info("finished run=%s job=%s attempt=%s state=%s", run.pk, run.job_id, run.attempt, state)
    return Run.objects.get(pk=run.pk)


def _send_alert_on_commit(run_id: int) -> None:
    from jobs.tasks import send_run_alert

    transaction.on_commit(lambda: send_run_alert.delay(run_id))


# --- Cancelling and reaping -------------------------------------------------------------


def cancel_run(run: Run, user=None) -> Run:
    """Cancel a run: a QUEUED run ends CANCELLED at once; for a RUNNING run the request is
    recorded and its worker stops the kernel within a heartbeat. Final runs are left as
    they are. Returns the run as it now is."""
    now = timezone.now()
    with transaction.atomic():
        if Run.objects.filter(pk=run.pk, state=State.QUEUED).update(
            state=State.CANCELLED,
            finished_at=now,
            cancel_requested_at=now,
            state_reason="Cancelled before it started.",
        ):
            RunEvent.objects.create(
                run=run,
                attempt=run.attempt,
                state=State.CANCELLED,
                message="Cancelled before it started.",
            )
        else:
            Run.objects.filter(
                pk=run.pk, state=State.RUNNING, cancel_requested_at__isnull=True
            ).update(cancel_requested_at=now)
    return Run.objects.get(pk=run.pk)


def reap_runs(now: datetime | None = None) -> dict[str, int]:
    """Recover runs whose worker vanished and messages that were lost.

    - RUNNING with a heartbeat older than RUN_STALE_AFTER: CANCELLED if a cancel was
      asked for; back to QUEUED (with backoff) while attempts remain; else LOST.
    - QUEUED and unclaimed for RUN_QUEUED_TIMEOUT: enqueued again (the claim makes any
      duplicate message harmless).

    Returns counts: {"cancelled", "retried", "lost", "requeued"}.
    """
    now = now or timezone.now()
    counts = {"cancelled": 0, "retried": 0, "lost": 0, "requeued": 0}
    with transaction.atomic():
        stale = Run.objects.stale(now, settings.RUN_STALE_AFTER).select_for_update(skip_locked=True)
        for run in stale:
            mine = Run.objects.filter(pk=run.pk, attempt=run.attempt, state=State.RUNNING)
            last_seen = run.heartbeat_at or run.started_at
            who = run.worker or "the worker"
            message = (
                f"No heartbeat from {who} since {last_seen:%H:%M:%S} UTC: the worker was lost."
            )
            if run.cancel_requested_at:
                mine.update(
                    state=State.CANCELLED,
                    finished_at=now,
                    state_reason="Cancelled (the worker had gone).",
                )
                RunEvent.objects.create(
                    run=run,
                    attempt=run.attempt,
                    state=State.CANCELLED,
                    message="Cancelled; the worker had gone.",
                )
                counts["cancelled"] += 1
            elif run.attempt < run.max_attempts:
                delay = retry_delay(run.attempt)
                mine.update(
                    state=State.QUEUED,
                    not_before=now + timedelta(seconds=delay),
                    enqueued_at=now,
                    worker="",
                    state_reason=message[:300],
                )
                RunEvent.objects.create(
                    run=run,
                    attempt=run.attempt,
                    state=State.LOST,
                    worker=run.worker,
                    message=f"{message} Retrying in {delay:.0f} s."[:500],
                )
                _enqueue(run, countdown=delay)
                counts["retried"] += 1
            else:
                mine.update(state=State.LOST, finished_at=now, state_reason=message[:300])
                RunEvent.objects.create(
                    run=run,
                    attempt=run.attempt,
                    state=State.LOST,
                    worker=run.worker,
                    message=message[:500],
                )
                _send_alert_on_commit(run.pk)
                counts["lost"] += 1
            log.warning("reaped run=%s attempt=%s worker=%s", run.pk, run.attempt, run.worker)
        stuck = Run.objects.stuck_queued(now, settings.RUN_QUEUED_TIMEOUT).select_for_update(
            skip_locked=True
        )
        for run in stuck:
            Run.objects.filter(pk=run.pk, state=State.QUEUED).update(enqueued_at=now)
            _enqueue(run)
            counts["requeued"] += 1
    return counts


# --- Alerts -----------------------------------------------------------------------------


def send_run_alert(run_id: int) -> bool:
    """E-mail the outcome of a finished run to the job's recipients, at most once.

    Failures (FAILED, TIMED_OUT, LOST) go to the job's failure list, successes to its
    success list; cancelled and skipped runs send nothing. ``alert_sent_at`` is set in
    the same transaction that holds the row lock, so concurrent or repeated calls send
    one message. (A crash between the SMTP hand-off and the commit would send it again:
    we accept that over losing an alert.) Returns True if a message was sent.
    """
    with transaction.atomic():
        run = (
            Run.objects.select_for_update()
            .select_related("job", "job__owner")
            .filter(pk=run_id)
            .first()
        )
        if run is None or run.alert_sent_at or not run.is_final:
            return False
        if run.state in (State.FAILED, State.TIMED_OUT, State.LOST):
            recipients, kind = run.job.recipients("failure"), "failure"
        elif run.state == State.SUCCEEDED:
            recipients, kind = run.job.recipients("success"), "success"
        else:
            recipients, kind = [], ""
        sent = False
        if recipients:
            context = {
                "run": run,
                "job": run.job,
                "url": settings.PORTAL_ORIGIN + run.get_absolute_url(),
                "traceback_head": "\n".join(run.error_traceback.splitlines()[-12:]),
            }
            subject = render_to_string(f"jobs/emails/run_{kind}_subject.txt", context).strip()
            body = render_to_string(f"jobs/emails/run_{kind}.txt", context)
            EmailMultiAlternatives(subject, body, to=recipients).send()
            sent = True
        run.alert_sent_at = timezone.now()
        run.save(update_fields=["alert_sent_at"])
    return sent
