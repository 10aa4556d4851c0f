"""Execution: claim a run, run its attempt through the executor of its Spark target, and
publish the outcome (output notebook, HTML, final state) fenced by the attempt number.

``execute_run`` reads as the pipeline it is: claim → workspace → target → executor →
release → finish. Every state change of a run is a conditional UPDATE (a claim, or a write
fenced by the attempt number and the expected state), so a duplicate delivery, a late
worker or a racing reaper changes nothing. See docs/run-states.md.
"""

import io
import logging
import os
import socket
import time
from datetime import datetime, timedelta
from typing import Any, BinaryIO, cast

import nbformat
from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from jobs import compression, logs, render, spark_ui
from jobs.executor import Outcome, OutcomeStatus, Progress, TickAnswer, stop_message
from jobs.models import Run, RunEvent
from jobs.services import fairshare
from jobs.services.alerts import send_alert_on_commit
from jobs.services.attempt import Attempt, SparkTargetError
from jobs.services.dispatch import enqueue_run
from jobs.services.executors import executor_for
from jobs.services.jobs import delete_files
from jobs.services.recovery import retry_delay
from portal.db import close_stale_connections
from quotas.usage import record_run_usage
from recorded import extract as recorded_values

log = logging.getLogger(__name__)

State = Run.State

#: The final state of each outcome (LOST and INFRA_ERROR are decided by ``finish_run``).
OUTCOME_STATE = {
    OutcomeStatus.SUCCEEDED: State.SUCCEEDED,
    OutcomeStatus.FAILED: State.FAILED,
    OutcomeStatus.TIMED_OUT: State.TIMED_OUT,
    OutcomeStatus.CANCELLED: State.CANCELLED,
}


def worker_name() -> str:
    """This process's name in run rows and events: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_run(run_id: int, worker: str, now: datetime | None = None) -> Run | None:
    """Move a QUEUED run to RUNNING for ``worker``; return it, or None if not claimable.

    The run claimed is the one fair share chooses (``fairshare.choose_run``): ``run_id``,
    or an older held run of the same owner; None when the owner is at their concurrency
    limit (``run_id`` then waits, held). The claim itself is one conditional UPDATE by id:
    a second delivery of the same message, a cancelled run, a run whose retry is not due
    yet or a run out of attempts all find nothing to claim.
    """
    now = now or timezone.now()
    with transaction.atomic():
        chosen = fairshare.choose_run(run_id, now)
        if chosen is None:
            return None
        run_id = chosen
        claimed = (
            Run.objects.filter(pk=run_id, state=State.QUEUED, attempt__lt=F("max_attempts"))
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .update(
                state=State.RUNNING,
                held_since=None,
                state_reason="",
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


def record_progress(run: Run, progress: Progress) -> TickAnswer:
    """Write the heartbeat and progress of ``run``'s current attempt.

    Returns CONTINUE while the attempt still owns the run, CANCEL if someone asked to
    cancel it, STOP if someone asked a continuous run to stop gracefully (``streams``),
    and LOST if the run was reaped, finished or deleted meanwhile.
    """
    fields = dict(
        heartbeat_at=timezone.now(),
        cells_total=progress.cells_total,
        cells_done=progress.cells_done,
        current_cell_index=progress.current_index,
        current_cell_head=progress.current_head,
    )
    mine = Run.objects.filter(pk=run.pk, attempt=run.attempt, state=State.RUNNING)
    if mine.filter(cancel_requested_at__isnull=True, stop_requested_at__isnull=True).update(
        **fields
    ):
        return TickAnswer.CONTINUE
    if mine.filter(cancel_requested_at__isnull=True).update(**fields):
        return TickAnswer.STOP
    if mine.filter(cancel_requested_at__isnull=False).update(**fields):
        return TickAnswer.CANCEL
    return TickAnswer.LOST


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
    try:
        return _execute_claimed(run)
    finally:
        _release_waiting(run)


def _execute_claimed(run: Run) -> Run | None:
    """Run the attempt of a claimed ``run`` through its executor and finish it."""
    executor = executor_for(run.job)
    with Attempt.workspace(run, heartbeat) as attempt:
        try:
            attempt.target = executor.acquire_target(attempt)
        except SparkTargetError as exc:
            status = OutcomeStatus.INFRA_ERROR if exc.retry else OutcomeStatus.FAILED
            return finish_run(run, Outcome(status, message=str(exc)))
        outcome = None
        try:
            outcome = executor.run(attempt)
        finally:
            close_stale_connections()  # idle for the whole notebook: it may have been cut
            executor.release_target(attempt, outcome)
            record_run_usage(attempt)  # wall, CPU and node-hours, after the cluster ended
        return finish_run(run, outcome)


def _release_waiting(run: Run) -> None:
    """After an attempt of ``run`` ends (whatever its outcome), send its owner's held runs
    to the queue as far as their concurrency limit now allows (``fairshare.release_held``).
    A failure here is logged: the reaper releases them on its next pass."""
    try:
        close_stale_connections()
        with transaction.atomic():
            fairshare.release_held(run.job.owner_id, timezone.now())
    except Exception:
        log.exception("could not release the held runs of user=%s", run.job.owner_id)


def heartbeat(attempt: Attempt, progress: Progress) -> TickAnswer:
    """An attempt's heartbeat: record ``progress`` (``record_progress``) and, while the
    attempt still owns the run, store the live view's partial output. Called from the
    executor's monitor thread or its polling loop."""
    # This thread's connection may have broken (a database restart): reconnect rather
    # than fail every beat until the lease runs out.
    close_stale_connections()
    # The heartbeat first: rendering the live view must never delay it.
    answer = record_progress(attempt.run, progress)
    if answer == TickAnswer.CONTINUE:
        attempt.partial.maybe_upload(progress)
    return answer


def finish_run(run: Run, outcome: Outcome) -> Run | None:
    """Publish an attempt's outcome, fenced by its attempt number.

    1. LOST: the attempt no longer owns the run; nothing is written, None is returned.
    2. INFRA_ERROR while attempts remain: the run goes back to QUEUED after a backoff
       (``_retry``); a cancel asked for meanwhile turns it into CANCELLED instead.
    3. The output notebook and its HTML are stored (``_store_outputs``), for every
       outcome that has an output; ``output_bytes`` counts them and the run's logs.
    4. The run moves from RUNNING to its final state, with its event and, after commit,
       its alert (``_publish``). If the attempt no longer owns the run (reaped, cancelled
       while the worker was unreachable, deleted), the files just stored are removed and
       None is returned.
    5. In the same transaction, the values the notebook recorded (scrapbook's ``glue``)
       replace the run's earlier ones (recorded.extract); they never fail the run.
    """
    if outcome.status == OutcomeStatus.LOST:
        log.warning("attempt lost run=%s attempt=%s", run.pk, run.attempt)
        return None
    finished_at = timezone.now()  # the run's end, before its outputs are stored
    if outcome.status == OutcomeStatus.INFRA_ERROR and run.attempt < run.max_attempts:
        if _retry(run, outcome):
            return Run.objects.get(pk=run.pk)
        mine_and_cancelled = Run.objects.filter(
            pk=run.pk, attempt=run.attempt, state=State.RUNNING, cancel_requested_at__isnull=False
        )
        if not mine_and_cancelled.exists():
            return None
        # A cancel was asked for while the kernel died: the run ends CANCELLED, not retried.
        message = stop_message(OutcomeStatus.CANCELLED, run.timeout_seconds)
        outcome = Outcome(OutcomeStatus.CANCELLED, outcome.output_path, message=message)
    keys = _store_outputs(run, outcome)
    # Stored by the executor (jobs.logs, jobs.spark_ui).
    keys["output_bytes"] += logs.stored_bytes(run) + spark_ui.event_log_bytes(run)
    # Read before the final write's transaction: it may decode a glued DataFrame.
    values = recorded_values.read_output_values(outcome.output_path)
    return _publish(run, outcome, keys, finished_at, values)


def _retry(run: Run, outcome: Outcome) -> bool:
    """Move the RUNNING attempt back to QUEUED, due after ``retry_delay``, with its event
    and a delayed message; False (nothing written) if the attempt no longer owns the run
    or a cancel was asked for."""
    now = timezone.now()
    delay = retry_delay(run.attempt)
    with transaction.atomic():
        moved = Run.objects.filter(
            pk=run.pk, attempt=run.attempt, state=State.RUNNING, cancel_requested_at__isnull=True
        ).update(
            state=State.QUEUED,
            not_before=now + timedelta(seconds=delay),
            enqueued_at=now,
            worker="",
            state_reason=outcome.message[:300],
        )
        if moved:
            message = f"Infrastructure failure, retrying in {delay:.0f} s: {outcome.message}"
            RunEvent.objects.create(
                run=run, attempt=run.attempt, state=State.QUEUED, message=message[:500]
            )
            enqueue_run(run, countdown=delay)
    if moved:
        log.warning(
            "retrying run=%s attempt=%s in %.0fs: %s", run.pk, run.attempt, delay, outcome.message
        )
    return bool(moved)


def _store_outputs(run: Run, outcome: Outcome) -> dict[str, Any]:
    """Store the output notebook and its rendered HTML under ``runs/<uuid>/``, each with
    its gzip copy (``jobs.compression``); returns ``{"output_key", "html_key",
    "output_gzip_key", "html_gzip_key", "output_bytes"}`` (empty keys for what there is
    not; the bytes of all four files). The .ipynb is copied to storage in chunks, never
    read whole. A notebook over OUTPUT_RENDER_MAX_BYTES is not rendered (rendering costs
    the worker about three times its size in memory: the viewer offers the .ipynb
    instead); one that cannot be rendered is logged. Either way it keeps its .ipynb. A
    gzip copy that cannot be made is logged and left out: the plain file is served."""
    keys: dict[str, Any] = {
        "output_key": "",
        "html_key": "",
        "output_gzip_key": "",
        "html_gzip_key": "",
        "output_bytes": 0,
    }
    path = outcome.output_path
    if not (path and path.exists()):
        return keys
    size = path.stat().st_size
    with path.open("rb") as fh:
        keys["output_key"] = default_storage.save(f"runs/{run.uuid}/output.ipynb", File(fh))
    keys["output_bytes"] = size
    with path.open("rb") as fh:
        keys["output_gzip_key"], packed = _gzip_copy(run, keys["output_key"], fh)
    keys["output_bytes"] += packed
    if size > settings.OUTPUT_RENDER_MAX_BYTES:
        log.info("output too large to render run=%s bytes=%s", run.pk, size)
        return keys
    try:
        nb = nbformat.read(str(path), as_version=4)
        html = render.render_html(nb, title=run.job.name).encode("utf-8")
        keys["html_key"] = default_storage.save(f"runs/{run.uuid}/output.html", ContentFile(html))
        keys["output_bytes"] += len(html)
    except Exception:
        log.exception("rendering failed run=%s", run.pk)
        return keys
    keys["html_gzip_key"], packed = _gzip_copy(run, keys["html_key"], io.BytesIO(html))
    keys["output_bytes"] += packed
    return keys


def _gzip_copy(run: Run, key: str, source: BinaryIO) -> tuple[str, int]:
    """``compression.store_gzip_copy`` of ``key``, timed and logged; ``("", 0)`` when it
    fails (logged: the run keeps its plain file, which is then what every client gets)."""
    started = time.monotonic()
    try:
        gzip_key, packed = compression.store_gzip_copy(key, source)
    except Exception:
        log.exception("gzip copy failed run=%s key=%s", run.pk, key)
        return "", 0
    log.info(
        "gzip copy run=%s key=%s bytes=%s seconds=%.2f",
        run.pk,
        gzip_key or "(none: small or incompressible)",
        packed,
        time.monotonic() - started,
    )
    return gzip_key, packed


#: (plain key field, gzip copy field) of a run's outputs that get a gzip copy.
_GZIP_FIELDS = (("output_key", "output_gzip_key"), ("html_key", "html_gzip_key"))


def backfill_gzip_copies(limit: int = 0) -> dict[str, int]:
    """Make the gzip copies (``jobs.compression``) of finished runs stored before the
    portal made them, newest first, at most ``limit`` runs (0: all): each plain output
    without a copy is read from storage, a chunk at a time, and its copy stored, added to
    ``Run.output_bytes`` and recorded only if the run still has that output and no copy
    (else the copy is deleted: retention or a new attempt got there first). Outputs that
    are small or incompressible get none, as at the end of a run, and are looked at again
    by a later call. Returns counts: {"runs", "copies", "bytes" (of the copies), "none"
    (small or incompressible), "missing" (the plain file is gone)}."""
    counts = {"runs": 0, "copies": 0, "bytes": 0, "none": 0, "missing": 0}
    wanting = Q()
    for field, gzip_field in _GZIP_FIELDS:
        wanting |= Q(**{gzip_field: ""}) & ~Q(**{field: ""})
    runs = Run.objects.filter(wanting, state__in=Run.FINAL_STATES).order_by("-finished_at", "-pk")
    for run in runs[:limit] if limit else runs.iterator():
        counts["runs"] += 1
        for field, gzip_field in _GZIP_FIELDS:
            key = getattr(run, field)
            if not key or getattr(run, gzip_field):
                continue
            try:
                with default_storage.open(key, "rb") as fh:
                    gzip_key, packed = _gzip_copy(run, key, cast(BinaryIO, fh))
            except (FileNotFoundError, OSError):
                counts["missing"] += 1
                continue
            if not gzip_key:
                counts["none"] += 1
                continue
            recorded = Run.objects.filter(pk=run.pk, **{field: key, gzip_field: ""}).update(
                **{gzip_field: gzip_key}, output_bytes=F("output_bytes") + packed
            )
            if not recorded:
                delete_files([gzip_key])
                continue
            counts["copies"] += 1
            counts["bytes"] += packed
    return counts


def _clip(text: str, limit: int, keep_end: bool = False) -> str:
    """``text`` cut to at most ``limit`` characters, saying how much was cut; the end is
    kept for a traceback (where the exception is), the start otherwise."""
    if len(text) <= limit:
        return text
    note = f"[{len(text) - limit:,} characters cut]"
    room = max(limit - len(note) - 1, 0)
    return f"{note}\n{text[-room:] if room else ''}" if keep_end else f"{text[:room]}\n{note}"


def _final_reason(state: str, outcome: Outcome) -> str:
    """The ``state_reason`` of a run ending in ``state``: none for a success, but "Stopped
    on request." for a continuous run that ended after it was asked to stop, and the
    outcome's message for one its executor stopped (an EMR cluster's lifetime)."""
    if state == State.SUCCEEDED:
        return Run.STOPPED_ON_REQUEST if outcome.stopped else outcome.message[:300]
    return outcome.message[:300]


def _publish(
    run: Run,
    outcome: Outcome,
    keys: dict[str, Any],
    finished_at: datetime,
    values: recorded_values.Extraction | None = None,
) -> Run | None:
    """The fenced final UPDATE of an attempt, its event, its recorded ``values`` (in a
    savepoint: an error there is logged and leaves the run's earlier values) and its alert
    (after commit); None, with ``keys``' files removed after commit, if the attempt lost
    the run.

    The error's name, value and traceback are cut to RUN_ERROR_MAX_CHARS (a notebook may
    raise with a message of any size). The live view's partial HTML is deleted after
    commit and its key cleared: the output replaces it."""
    state = OUTCOME_STATE.get(outcome.status, State.FAILED)
    error = outcome.error or {}
    most = settings.RUN_ERROR_MAX_CHARS
    progress = {}
    if outcome.progress is not None:
        progress = {
            "cells_done": outcome.progress.cells_done,
            "cells_total": outcome.progress.cells_total,
        }
    files = [
        key
        for key in (
            keys["output_key"],
            keys["html_key"],
            keys["output_gzip_key"],
            keys["html_gzip_key"],
        )
        if key
    ]
    with transaction.atomic():
        mine = Run.objects.filter(pk=run.pk, attempt=run.attempt, state=State.RUNNING)
        # The heartbeat that stored the partial has stopped: its key cannot change now.
        partial = mine.values_list("partial_key", flat=True).first()
        finished = mine.update(
            **progress,
            state=state,
            finished_at=finished_at,
            state_reason=_final_reason(state, outcome),
            error_cell_index=error.get("cell_index"),
            error_ename=(error.get("ename") or "")[: min(200, most)],
            error_evalue=_clip(error.get("evalue") or "", most),
            error_traceback=_clip(error.get("traceback") or "", most, keep_end=True),
            current_cell_index=None,
            current_cell_head="",
            partial_key="",
            **keys,
        )
        if not finished:
            transaction.on_commit(lambda: delete_files(files))
            log.warning("stale attempt discarded run=%s attempt=%s", run.pk, run.attempt)
            return None
        if partial and partial not in files:
            transaction.on_commit(lambda: delete_files([partial]))
        if state == State.SUCCEEDED:
            Run.objects.filter(pk=run.pk).update(cells_done=F("cells_total"))
        recorded_values.record_values(run, values or recorded_values.Extraction())
        RunEvent.objects.create(
            run=run,
            attempt=run.attempt,
            state=state,
            worker=run.worker,
            message=outcome.message[:500] or "Finished.",
        )
        send_alert_on_commit(run.pk)
    log.info("finished run=%s job=%s attempt=%s state=%s", run.pk, run.job_id, run.attempt, state)
    return Run.objects.get(pk=run.pk)
