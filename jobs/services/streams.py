"""Continuous jobs: the supervisor that keeps exactly one run of each enabled continuous
job active, the graceful stop, and the job's checkpoint directory.

A continuous job's notebook starts streaming queries and blocks until they end
(``telemetry.streaming.run_until_stopped``). ``supervise_streams`` (beat, every
STREAM_SUPERVISE_INTERVAL s, control queue) creates a run for each enabled continuous job
without an active one: at once after a clean end, after an exponential backoff after
failures (``restart_delay``, through the run's ``not_before``), and not at all after
``stream_max_failures`` failures within the job's window: then the job is paused and its
failure list and owner get one e-mail. Continuous runs go to the ``streams`` queue
(``dispatch._enqueue_all``); their timeout is unlimited in effect
(``models.CONTINUOUS_TIMEOUT_SECONDS``) and their heartbeat keeps the reaper away.

Exactly one: the supervisor holds the job's row lock while it looks and creates, and the
unique partial constraint ``one_active_continuous_run`` refuses a second QUEUED or RUNNING
continuous run of a job whoever inserts it.

A run's notebook gets two durable directories as parameters, bound writable into its
sandbox and kept after it: ``checkpoint_dir`` (its queries' checkpoints) and
``output_dir`` (its sinks), of the job's current checkpoint generation
(``prepare_stream_dirs``). A job on a transient EMR cluster gets S3 URIs instead
(``Job.stream_locations``, ``executors.EmrStream``).

Stop (``stop_run``) records ``stop_requested_at``; the run's worker learns of it at its
next heartbeat (``TickAnswer.STOP``) and writes the stop flag in the sandbox (on EMR: an
S3 object beside the run's files), which the kernel's helper watches; the notebook ends
and the run ends SUCCEEDED "Stopped on request.". A stop not done within
STREAM_STOP_TIMEOUT seconds kills the run as a cancel
does (CANCELLED). See docs/run-states.md.
"""

import logging
import os
import re
import shutil
import stat
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs.models import Job, NotebookVersion, Run
from jobs.services import dispatch
from portal.sandbox import DIR_NOFOLLOW, root_dir

log = logging.getLogger(__name__)

State = Run.State


class CheckpointBusy(Exception):
    """The checkpoint cannot be reset while the job has an active run."""


def restart_delay(failures: int) -> float:
    """Seconds to wait before restarting a continuous job after ``failures`` consecutive
    failed runs: none after a clean end (0), then STREAM_RESTART_BACKOFF doubled for each
    further failure, capped at STREAM_RESTART_BACKOFF_MAX. No jitter: one supervisor
    restarts one run per job, so there is no herd to spread."""
    if failures <= 0:
        return 0.0
    delay = settings.STREAM_RESTART_BACKOFF * 2 ** (failures - 1)
    return float(min(settings.STREAM_RESTART_BACKOFF_MAX, delay))


def active_run(job: Job) -> Run | None:
    """The continuous job's QUEUED or RUNNING run, or None."""
    return job.runs.filter(trigger=Run.Trigger.CONTINUOUS, state__in=Run.ACTIVE_STATES).first()


def supervise_streams(now: datetime | None = None) -> dict[str, int]:
    """One pass of the supervisor over the enabled continuous jobs (see the module doc).

    Each job is handled in its own transaction, under its row lock (SKIP LOCKED: a job
    another pass or an edit holds is seen at the next pass). Returns counts: {"started",
    "waiting" (a restart whose backoff is not over is created with its ``not_before``,
    so this counts starts that are delayed), "paused"}.
    """
    now = now or timezone.now()
    counts = {"started": 0, "waiting": 0, "paused": 0}
    ids = list(Job.objects.filter(continuous=True, enabled=True).values_list("pk", flat=True))
    for job_id in ids:
        with transaction.atomic():
            job = (
                Job.objects.select_for_update(skip_locked=True)
                .filter(pk=job_id, continuous=True, enabled=True)
                .first()
            )
            if job is None:
                continue
            result = _supervise(job, now)
        if result:
            counts[result] += 1
    return counts


def _supervise(job: Job, now: datetime) -> str:
    """Start, delay or pause one locked continuous job; which of "started", "waiting",
    "paused" happened, or "" (it has an active run, or no notebook)."""
    if active_run(job) is not None:
        return ""
    version = job.latest_version()
    if version is None:
        return ""
    finished = job.runs.filter(trigger=Run.Trigger.CONTINUOUS, finished_at__isnull=False)
    if job.stream_paused_at is not None:  # failures before the last pause were dealt with
        finished = finished.filter(finished_at__gt=job.stream_paused_at)
    window_start = now - timedelta(minutes=job.stream_failure_window_minutes)
    failures = finished.filter(state__in=Run.FAILURE_STATES, finished_at__gt=window_start).count()
    if failures >= job.stream_max_failures:
        return "paused" if pause_after_failures(job, failures, now) else ""
    streak, last_end = 0, None
    recent = finished.order_by("-finished_at", "-id").values_list("state", "finished_at")
    for state, finished_at in recent[: job.stream_max_failures + 1]:
        last_end = last_end or finished_at
        if state not in Run.FAILURE_STATES:
            break
        streak += 1
    delay = restart_delay(streak)
    not_before = last_end + timedelta(seconds=delay) if last_end and delay else None
    if not_before is not None and not_before <= now:
        not_before = None
    reason = (
        f"Restart after {streak} failed run{'s' if streak != 1 else ''}, "
        f"not before {not_before:%H:%M:%S} UTC."
        if not_before
        else ""
    )
    run = start_run(job, version, now, not_before=not_before, reason=reason)
    if run is None:
        return ""
    return "waiting" if not_before else "started"


def start_run(
    job: Job,
    version: NotebookVersion,
    now: datetime,
    not_before: datetime | None = None,
    reason: str = "",
) -> Run | None:
    """Create the QUEUED continuous run of ``job`` on ``version`` with the job's parameters,
    due at ``not_before`` (None: now), and publish ``execute_stream_run`` after commit with
    the matching countdown. Call under the job's row lock. Continuous runs are never held
    (``fairshare``: they do not take batch capacity). None when the job has an active
    continuous run already (the unique constraint, in a savepoint)."""
    run = Run.build(
        job,
        trigger=Run.Trigger.CONTINUOUS,
        version_id=version.pk,
        parameters=dict(job.parameters or {}),
        now=now,
    )
    run.not_before = not_before
    run.state_reason = reason
    try:
        with transaction.atomic():
            dispatch._save_new_run(run, enqueue=False)
    except IntegrityError:
        log.info("job=%s has an active continuous run already", job.pk)
        return None
    countdown = (not_before - now).total_seconds() if not_before else 0
    dispatch.enqueue_run(run, countdown=countdown)
    log.info(
        "continuous run=%s job=%s version=%s countdown=%.0f", run.pk, job.pk, version.pk, countdown
    )
    return run


def pause_after_failures(job: Job, failures: int, now: datetime) -> bool:
    """Pause the continuous ``job`` after ``failures`` failed runs within its window, and
    queue one e-mail to its failure list and owner after commit. The conditional UPDATE
    (``enabled`` still True) makes a second pass or a racing resume send nothing more.
    Returns True if this call paused it."""
    from jobs.tasks import send_stream_paused_alert  # jobs.tasks imports this package
    from notify.tasks import notify_job_paused  # notify imports jobs' models

    paused = Job.objects.filter(pk=job.pk, enabled=True).update(
        enabled=False, next_run_at=None, stream_paused_at=now
    )
    if paused:
        log.warning("paused continuous job=%s after %s failures", job.pk, failures)
        send_stream_paused_alert.delay_on_commit(job.pk, failures)
        notify_job_paused.delay_on_commit(job.pk, failures)
    return bool(paused)


def stop_run(run: Run, pause: bool = True, now: datetime | None = None) -> Run:
    """Ask the continuous ``run`` to stop gracefully and, with ``pause``, pause its job so
    that the supervisor does not restart it (a new notebook version stops without pausing:
    the supervisor then restarts the job on it).

    A QUEUED run ends CANCELLED at once (``recovery.cancel_run``). A RUNNING run gets
    ``stop_requested_at`` (once); its worker writes the stop flag at its next heartbeat.
    Final runs are left as they are. Returns the run as it now is."""
    from jobs.services.recovery import cancel_run  # recovery imports dispatch too

    now = now or timezone.now()
    if pause:
        Job.objects.filter(pk=run.job_id).update(enabled=False, next_run_at=None)
    # By the row, never by ``run.state``: the caller's copy may be older than a claim.
    stopping = Run.objects.filter(
        pk=run.pk,
        trigger=Run.Trigger.CONTINUOUS,
        state=State.RUNNING,
        stop_requested_at__isnull=True,
        cancel_requested_at__isnull=True,
    ).update(stop_requested_at=now)
    if not stopping and Run.objects.filter(pk=run.pk, state=State.QUEUED).exists():
        # (A claim between these two statements turns the stop into a cancel: accepted.)
        return cancel_run(run)
    log.info("stop requested run=%s job=%s pause=%s", run.pk, run.job_id, pause)
    return Run.objects.get(pk=run.pk)


def restart_on_version(job: Job, version: NotebookVersion, now: datetime | None = None) -> None:
    """After ``version`` of the continuous ``job`` was uploaded: a QUEUED run of the job
    switches to it, a RUNNING one is asked to stop gracefully (its job stays enabled, so the
    supervisor restarts it on the new version). Call inside the upload's transaction."""
    now = now or timezone.now()
    continuous = Run.objects.filter(job=job, trigger=Run.Trigger.CONTINUOUS)
    continuous.filter(state=State.QUEUED).update(version=version)
    continuous.filter(
        state=State.RUNNING, stop_requested_at__isnull=True, cancel_requested_at__isnull=True
    ).update(stop_requested_at=now)


def reset_checkpoint(job: Job) -> Job:
    """Start the continuous ``job`` from scratch at its next run: its checkpoint
    generation goes up, so the next run gets a new, empty ``Job.checkpoint_dir``, and the
    worker that prepares it deletes the older ones (``prepare_checkpoint``; the web
    process may run on another host and never owns those files). Raises CheckpointBusy
    while the job has an active run (its queries hold the checkpoint). The job's row lock
    keeps the supervisor from starting a run meanwhile. Returns the job."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if active_run(job) is not None:
            raise CheckpointBusy("Stop the job's run before resetting its checkpoint.")
        job.checkpoint_generation += 1
        job.save(update_fields=["checkpoint_generation", "updated_at"])
    log.info("reset checkpoint job=%s generation=%s", job.pk, job.checkpoint_generation)
    return job


def prepare_checkpoint(job: Job) -> Path:
    """On the worker, before a continuous run of ``job``: remove the checkpoint and sink
    directories of earlier generations (a reset starts from scratch, sink included),
    create the current ones if they are missing (the sandbox then gives them to the
    owner's uid) and return the checkpoint's path (``prepare_stream_dirs``: both)."""
    return prepare_stream_dirs(job)[0]


def prepare_stream_dirs(job: Job) -> tuple[Path, Path]:
    """``prepare_checkpoint``, returning ``(Job.checkpoint_dir, Job.output_dir)``: the
    directories a continuous run's sandbox writes.

    ``streams_root(owner)`` and the job's directory are made root's first
    (``_root_parents``): before that the owner's clusters could write them and plant
    symlinks. Removal goes through ``_remove_entry`` (no symlink followed: one is unlinked
    rather than given to the run). An older generation that cannot be removed is logged
    and left for the next run's preparation: it does not fail this run. Raises OSError
    when the directories cannot be made."""
    current = (job.checkpoint_dir, job.output_dir)
    parent = job.stream_dir
    owner, name = str(job.owner_id), parent.name
    # First: from now on only this (root) process can add or swap entries in the job's
    # directory, so what the scan below finds stays what it is.
    Path(settings.STREAMS_ROOT).mkdir(parents=True, exist_ok=True)
    _root_parents(job)
    stale = []
    if parent.is_dir():
        stale += [
            (name, old.name)
            for old in [*parent.glob("checkpoint-*"), *parent.glob("output-*")]
            if old not in current or old.is_symlink()
        ]
    for names in stale:
        try:
            if _remove_entry(owner, *names):
                log.info("removed %s of job=%s", "/".join(names), job.pk)
        except OSError as exc:
            log.warning("could not remove %s of job=%s: %s", "/".join(names), job.pk, exc)
    for path in current:
        path.mkdir(parents=True, exist_ok=True)
    return current


def _root_parents(job: Job) -> None:
    """Make ``streams_root(owner)`` and ``Job.stream_dir`` directories of root's
    (``sandbox.root_dir``), replacing a symlink in their place: only the checkpoint and
    sink directories inside are the owner's uid's, so neither the run nor the owner's
    local clusters can swap a path the root worker later opens, owns or binds."""
    parent = job.stream_dir
    root_dir(parent.parent)
    root_dir(parent)


# --- A deleted job's directories ------------------------------------------------------------

#: A job's directory under its owner's ``streams_root`` (``Job.stream_dir``).
_JOB_DIR = re.compile(r"job-([1-9][0-9]*)")


def remove_stream_dirs(owner_id: int, job_id: int) -> bool:
    """Remove ``STREAMS_ROOT/<owner_id>/job-<job_id>`` (``Job.stream_dir``) with every
    checkpoint and sink generation in it: the one entry point for a deleted continuous
    job's streaming state. On the host of the local clusters, which has STREAMS_ROOT (task
    ``remove_stream_dirs``, queue "clusters"); the web process may run elsewhere and never
    calls it.

    The files are the sandbox's and the owner's local clusters' (the owner's uid); the
    worker is root without a user namespace (``portal.sandbox``), so it removes them like
    its own. Never follows a symlink: the owner's clusters write ``STREAMS_ROOT/<owner>``
    and may plant one, so a symlink named ``job-<id>`` is unlinked, a symlink inside is
    unlinked (``shutil.rmtree`` by descriptors), and a symlinked ``STREAMS_ROOT/<owner>``
    is refused. Returns True if something was removed, False if nothing was there.
    Raises ValueError for ids that are not positive integers, OSError when the directory
    cannot be removed (e.g. a process still writes into it: ``prune_stream_dirs`` tries
    again later)."""
    owner, job = int(owner_id), int(job_id)
    if owner <= 0 or job <= 0:
        raise ValueError(f"no streams directory for owner={owner_id} job={job_id}")
    removed = _remove_entry(str(owner), f"job-{job}")
    if removed:
        log.info("removed streams directory of job=%s owner=%s", job, owner)
    return removed


def prune_stream_dirs() -> int:
    """Remove every ``STREAMS_ROOT/<owner>/job-<id>`` that is no job's ``Job.stream_dir``
    (its job was deleted: a removal message lost, or sent while no clusters worker ran).
    Beat, hourly, on the clusters worker's host (it has STREAMS_ROOT). Returns how many
    were removed.

    A job that exists but is no longer continuous keeps its directories: turning it back
    on resumes from its checkpoint. Other names under STREAMS_ROOT are left alone. A
    directory that cannot be removed now is logged and tried at the next pass. Job ids are
    never reused, so a directory listed before its job's row was read cannot belong to a
    newer job."""
    root = Path(settings.STREAMS_ROOT)
    if not root.is_dir():
        return 0
    owners: dict[int, list[int]] = {}  # job id -> the owners under which it has one
    for owner in root.iterdir():
        if not owner.name.isdigit() or owner.is_symlink() or not owner.is_dir():
            continue
        for entry in owner.iterdir():
            match = _JOB_DIR.fullmatch(entry.name)
            if match:
                owners.setdefault(int(match[1]), []).append(int(owner.name))
    live = set(Job.objects.filter(pk__in=owners).values_list("pk", "owner_id"))
    removed = 0
    for job_id, owner_ids in owners.items():
        for owner_id in owner_ids:
            if (job_id, owner_id) in live:
                continue
            try:
                removed += remove_stream_dirs(owner_id, job_id)
            except OSError:
                log.exception("could not remove streams directory of job=%s", job_id)
    return removed


#: A stream key's prefix under STREAMS_S3_URI (``Job.stream_key.hex``).
_STREAM_KEY = re.compile(r"[0-9a-f]{32}")


def remove_stream_prefix(prefix_uri: str) -> int:
    """Delete a deleted continuous job's checkpoints and sinks in S3: every object under
    ``prefix_uri``, which must be one stream key's prefix directly under STREAMS_S3_URI
    (``Job.stream_s3_prefix``). Returns how many objects were deleted. Raises ValueError
    for any other URI (or none configured), OSError when S3 refused some objects,
    botocore's ClientError or BotoCoreError."""
    from jobs import emr_runner  # boto3 only where S3 is used

    base = settings.STREAMS_S3_URI.rstrip("/") + "/"
    key = prefix_uri[len(base) :].rstrip("/") if prefix_uri.startswith(base) else ""
    if not settings.STREAMS_S3_URI or not _STREAM_KEY.fullmatch(key):
        raise ValueError(f"not a stream prefix under STREAMS_S3_URI: {prefix_uri!r}")
    deleted = emr_runner.remove_s3_prefix(emr_runner.s3_client(), f"{base}{key}/")
    log.info("removed %s objects under %s", deleted, prefix_uri)
    return deleted


def prune_stream_prefixes() -> int:
    """Delete the S3 checkpoints and sinks of continuous jobs that no longer exist: every
    stream key's prefix under STREAMS_S3_URI that is no job's ``stream_key`` (listed
    first, then the jobs read, so a job created meanwhile is known). Other names are left
    alone; STREAMS_S3_URI must be this portal's own. Returns how many prefixes went;
    nothing without STREAMS_S3_URI. Raises ClientError or BotoCoreError."""
    if not settings.STREAMS_S3_URI:
        return 0
    from jobs import emr_runner

    s3 = emr_runner.s3_client()
    base = settings.STREAMS_S3_URI.rstrip("/") + "/"
    bucket, prefix = emr_runner.split_s3_uri(base)
    found = set()
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, Delimiter="/"
    )
    for page in pages:
        for common in page.get("CommonPrefixes", []):
            key = common["Prefix"][len(prefix) :].rstrip("/")
            if _STREAM_KEY.fullmatch(key):
                found.add(key)
    live = {key.hex for key in Job.objects.values_list("stream_key", flat=True)}
    removed = 0
    for key in sorted(found - live):
        try:
            remove_stream_prefix(f"{base}{key}/")
        except OSError as exc:  # tried again at the next pass
            log.warning("could not remove stream prefix %s: %s", key, exc)
            continue
        removed += 1
    return removed


def _remove_entry(*names: str) -> bool:
    """Remove ``STREAMS_ROOT/<names...>``: a directory with its contents, anything else
    (a symlink) by unlinking it. Each directory on the way is opened without following a
    symlink (OSError ELOOP or ENOTDIR otherwise), and the removal goes through those
    descriptors, so a symlink swapped in meanwhile is never followed. Each name must be a
    single path component. False when something on the way is missing."""
    if any(not n or "/" in n or n in (".", "..") for n in names):
        raise ValueError(f"not a name under STREAMS_ROOT: {names!r}")
    fds = []
    try:
        try:
            fds.append(os.open(settings.STREAMS_ROOT, DIR_NOFOLLOW))
            for name in names[:-1]:
                fds.append(os.open(name, DIR_NOFOLLOW, dir_fd=fds[-1]))
            mode = os.lstat(names[-1], dir_fd=fds[-1]).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(mode):
            shutil.rmtree(names[-1], dir_fd=fds[-1])
        else:
            os.unlink(names[-1], dir_fd=fds[-1])
        return True
    finally:
        for fd in reversed(fds):
            os.close(fd)
